//! The paper's configuration (`configs/lcm_dreamshaper_pickscore.toml`) run end to end for a few
//! iterations on a tiny random diffusers pipeline (`rocm-models`' `pipeline-a` fixture) with
//! PickScore on a tiny random `CLIPModel` (`rocm-rewards`' `tiny-clip` fixture): only the sizes
//! shrink (iterations, K, LoRA rank); LoRA targets, AdamW, β and the divergence stay the paper's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use rocm_models::UNet2DConditionModel;
use rocm_models::pipeline::LcmPipeline;
use rocm_rewards::PickScore;
use rocm_trainer::{DecodedReward, RocmTrainer, TrainConfig, checkpoint};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pipeline_dir() -> PathBuf {
    root().join("crates/rocm-models/tests/fixtures/pipeline-a")
}

/// Every UNet tensor's bytes by path.
fn weights(unet: &UNet2DConditionModel) -> HashMap<String, Vec<u8>> {
    unet.collect(None, None, false)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().expect("tensor bytes").to_vec();
            (t.name, bytes)
        })
        .collect()
}

/// The tensor names in a safetensors file's header.
fn safetensors_keys(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut keys: Vec<String> = header
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect();
    keys.sort();
    keys
}

#[test]
fn paper_config_trains_lora_on_a_tiny_diffusers_pipeline() {
    // The `[train]` table of the paper's run configuration (the rest is the `rocm` crate's).
    let path = root().join("configs/lcm_dreamshaper_pickscore.toml");
    let run: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let train = toml::to_string(run["train"].as_table().unwrap()).unwrap();
    let mut config = TrainConfig::from_toml_str(&train, &path).unwrap();
    let paper = config.clone();
    // Shrink for CI; everything else stays the paper's run.
    let out = std::env::temp_dir().join(format!("rocm-trainer-e2e-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    config.iterations = 2;
    config.num_steps = 2;
    config.batch_size = 1;
    config.lora.r = 4;
    config.lora.alpha = 8.0; // α / r = 2, as r16 / α32
    config.checkpoint_every = 1;
    config.output_dir = out.clone();
    assert_eq!(
        config.lora.target_modules,
        ["to_q", "to_k", "to_v", "to_out.0"]
    );
    assert_eq!(
        (config.divergence, config.beta, config.learning_rate),
        (rocm_divergence::DivergenceConfig::Kl, paper.beta, 6e-5)
    );

    let device = Device::flex().autodiff();
    let parts = LcmPipeline::from_folder(pipeline_dir(), &device)
        .unwrap()
        .into_training_parts();
    let mut unet = parts.unet;
    let lora = config.lora.to_lora_config();
    let report = rocm_lora::apply_lora(&mut unet, &lora).unwrap();
    assert!(!report.wrapped.is_empty());
    let before = weights(&unet);

    let clip = root().join("crates/rocm-rewards/tests/fixtures/tiny-clip");
    let pick = PickScore::from_pretrained(clip.to_str().unwrap(), &device).unwrap();
    let reward = DecodedReward::new(parts.vae.no_grad(), pick);
    let encoder = parts.text_encoder;
    let prompts = config.eval_prompts.clone();
    encoder.check_prompts(&prompts).unwrap();
    let embeddings = encoder.encode(&prompts).unwrap();
    assert_eq!(embeddings.dims()[0], prompts.len());
    assert!(!embeddings.is_require_grad(), "the text encoder is frozen");
    let mut trainer = RocmTrainer::builder(config)
        .model(unet)
        .reward(reward)
        .prompts(prompts, encoder)
        .sampler(parts.sampler)
        .latent_shape(parts.latent_shape)
        .device(device)
        .build()
        .unwrap();

    let metrics = trainer.run(|_| {}).unwrap();
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        assert_eq!(m.divergence_per_step.len(), 1); // K = 2: no term on the last step
        let values = [m.reward_mean, m.divergence_mean, m.loss, m.grad_norm];
        assert!(values.iter().all(|v| v.is_finite()), "{m:?}");
    }
    // lora_B starts at zero: the policy is the base until the first update, not after.
    assert_eq!(metrics[0].divergence_mean, 0.0);
    assert!(metrics[1].divergence_mean > 0.0, "{:?}", metrics[1]);

    // Only the adapters moved: base weights are bit for bit the same, some lora_B is not.
    let after = weights(trainer.model());
    let (mut adapters_moved, mut base_checked) = (0, 0);
    for (name, old) in &before {
        let new = &after[name];
        if rocm_lora::is_adapter_param_path(name) {
            adapters_moved += usize::from(name.ends_with("lora_b") && new != old);
        } else {
            assert_eq!(new, old, "base weight {name} changed");
            base_checked += 1;
        }
    }
    assert!(
        base_checked > 0 && adapters_moved > 0,
        "{adapters_moved} lora_B moved"
    );

    // The checkpoint's LoRA file: diffusers' keys, and it loads into a fresh UNet.
    let dir = checkpoint::latest_checkpoint(&trainer.checkpoints_dir())
        .unwrap()
        .expect("a checkpoint");
    let file = dir.join("pytorch_lora_weights.safetensors");
    let keys = safetensors_keys(&file);
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            k.starts_with("unet.")
                && (k.ends_with(".lora_A.weight") || k.ends_with(".lora_B.weight")),
            "{k}"
        );
    }
    assert!(
        keys.iter().any(|k| k.contains(".to_out.0.lora_A.weight")),
        "{keys:?}"
    );
    let mut fresh =
        UNet2DConditionModel::from_pretrained(pipeline_dir().join("unet"), &Device::flex())
            .unwrap();
    let loaded = rocm_lora::load_adapters(&mut fresh, &file).unwrap();
    let trained = weights(trainer.model());
    let reloaded = weights(&fresh);
    let lora_b: Vec<_> = trained.keys().filter(|k| k.ends_with("lora_b")).collect();
    assert!(!lora_b.is_empty(), "{loaded:?}");
    for k in lora_b {
        assert_eq!(trained[k], reloaded[k], "{k} after load_adapters");
    }
    std::fs::remove_dir_all(&out).ok();
}

/// A trainer of `algorithm` with PickScore on the tiny CLIP, K = 2: on the tiny LCM pipeline
/// with the LCM sampler, or on the tiny diffusion pipeline (`pipeline-ddim`, classifier-free
/// guidance) with DDIM.
fn tiny_trainer(
    algorithm: rocm_trainer::AlgorithmKind,
    sampler: rocm_trainer::SamplerKind,
    out: &Path,
) -> RocmTrainer<4, UNet2DConditionModel> {
    let device = Device::flex().autodiff();
    let ddim = sampler == rocm_trainer::SamplerKind::Ddim;
    let config = TrainConfig {
        algorithm,
        sampler: Some(sampler),
        guidance: if ddim {
            rocm_trainer::GuidanceKind::ClassifierFree
        } else {
            rocm_trainer::GuidanceKind::Embedded
        },
        num_steps: 2,
        batch_size: 1,
        iterations: 4,
        checkpoint_every: 0,
        eval_every: 0,
        learning_rate: 1e-3,
        output_dir: out.to_path_buf(),
        lora: rocm_trainer::LoraSection {
            r: 4,
            alpha: 8.0,
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    let folder = if ddim {
        root().join("crates/rocm-models/tests/fixtures/pipeline-ddim")
    } else {
        pipeline_dir()
    };
    let pipeline = LcmPipeline::from_folder(folder, &device).unwrap();
    let ddim_scheduler = pipeline.ddim_scheduler().unwrap();
    let parts = pipeline.into_training_parts();
    let mut unet = parts.unet;
    rocm_lora::apply_lora(&mut unet, &config.lora.to_lora_config()).unwrap();
    let clip = root().join("crates/rocm-rewards/tests/fixtures/tiny-clip");
    let pick = PickScore::from_pretrained(clip.to_str().unwrap(), &device).unwrap();
    let prompts = vec!["a photo of a cat".to_string(), "a red car".to_string()];
    RocmTrainer::builder(config)
        .model(unet)
        .reward(DecodedReward::new(parts.vae.no_grad(), pick))
        .prompts(prompts, parts.text_encoder)
        .sampler(parts.sampler)
        .ddim_scheduler(ddim_scheduler)
        .latent_shape(parts.latent_shape)
        .device(device)
        .build()
        .unwrap()
}

/// Every baseline trains two iterations on a tiny diffusers pipeline (the LCM one for RLCM, the
/// diffusion one with DDIM for DDPO, DPOK and D3PO), saves, resumes in a new trainer and
/// continues exactly as an uninterrupted run (one thread: bitwise sums).
#[test]
fn every_baseline_trains_saves_and_resumes_bit_for_bit_on_a_tiny_pipeline() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        use rocm_trainer::{AlgorithmKind, SamplerKind};
        for (algorithm, sampler) in [
            (AlgorithmKind::Rlcm, SamplerKind::Lcm),
            (AlgorithmKind::Ddpo, SamplerKind::Ddim),
            (AlgorithmKind::Dpok, SamplerKind::Ddim),
            (AlgorithmKind::D3po, SamplerKind::Ddim),
        ] {
            let out = std::env::temp_dir().join(format!(
                "rocm-trainer-e2e-{}-{}-{}",
                algorithm.name(),
                sampler.name(),
                std::process::id()
            ));
            std::fs::remove_dir_all(&out).ok();
            let mut straight = tiny_trainer(algorithm, sampler, &out);
            let all: Vec<_> = (0..4)
                .map(|_| straight.train_iteration().unwrap().without_time())
                .collect();
            for m in &all {
                assert!(
                    m.loss.is_finite() && m.grad_norm > 0.0,
                    "{algorithm:?}: {m:?}"
                );
            }
            let mut first = tiny_trainer(algorithm, sampler, &out);
            for m in &all[..2] {
                assert_eq!(&first.train_iteration().unwrap().without_time(), m);
            }
            let dir = first.save_checkpoint(&out.join("checkpoints")).unwrap();
            let mut resumed = tiny_trainer(algorithm, sampler, &out);
            resumed.resume(&dir).unwrap();
            for m in &all[2..] {
                assert_eq!(
                    &resumed.train_iteration().unwrap().without_time(),
                    m,
                    "{algorithm:?} after resume"
                );
            }
            assert_eq!(
                weights(resumed.model()),
                weights(straight.model()),
                "{algorithm:?}"
            );
            std::fs::remove_dir_all(&out).ok();
        }
    });
}
