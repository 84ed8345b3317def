//! Parity of `UNet2DConditionModel` and `AutoencoderKL` with diffusers 0.42.1 on the tiny seeded
//! models of `tests/fixtures/scripts/models_unet_vae.py`, strict loading, and LoRA wiring.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use rocm_lora::{LoraConfig, TargetModules, adapter_paths, apply_lora, lora_capable_paths};
use rocm_models::{
    AutoencoderKL, AutoencoderKLConfig, Error, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use rocm_sampler::{ConsistencyModel, ModelInput};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-lcm")
}

/// Reads every tensor of a safetensors file: (dtype, shape, raw bytes).
fn read_safetensors(path: &Path) -> HashMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = HashMap::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize);
        let off = v["data_offsets"].as_array().unwrap();
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let dtype = v["dtype"].as_str().unwrap().to_string();
        out.insert(k.clone(), (dtype, shape.collect(), data[a..b].to_vec()));
    }
    out
}

struct Io(HashMap<String, (String, Vec<usize>, Vec<u8>)>, Device);

impl Io {
    fn load(device: &Device) -> Self {
        Io(
            read_safetensors(&fixtures().join("io.safetensors")),
            device.clone(),
        )
    }
    fn get<const D: usize>(&self, key: &str) -> Tensor<D> {
        let (dtype, shape, bytes) = &self.0[key];
        assert_eq!(dtype, "F32", "{key}");
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::<1>::from_floats(v.as_slice(), &self.1)
            .reshape(<[usize; D]>::try_from(shape.as_slice()).unwrap())
    }
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

fn unet(device: &Device) -> UNet2DConditionModel {
    UNet2DConditionModel::from_pretrained(fixtures().join("unet"), device).unwrap()
}

#[test]
fn unet_config_json_matches_tiny_preset() {
    let parsed =
        UNet2DConditionModelConfig::from_file(fixtures().join("unet/config.json")).unwrap();
    assert_eq!(
        parsed.to_string(),
        UNet2DConditionModelConfig::tiny().to_string()
    );
    let sd15 =
        UNet2DConditionModelConfig::from_json_str(r#"{"cross_attention_dim": 768}"#).unwrap();
    assert_eq!(
        sd15.to_string(),
        UNet2DConditionModelConfig::sd15().to_string()
    );
    let vae = AutoencoderKLConfig::from_file(fixtures().join("vae/config.json")).unwrap();
    assert_eq!(vae.to_string(), AutoencoderKLConfig::tiny().to_string());
}

#[test]
fn config_errors_name_the_field() {
    let err = UNet2DConditionModelConfig::from_json_str(r#"{"act_fn": "gelu"}"#).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedConfig { field, .. } if field == "act_fn"),
        "{err}"
    );
    // SD 2.x style per-block `attention_head_dim` (head widths there, heads here, as diffusers),
    // and `num_attention_heads` taking precedence.
    let c = UNet2DConditionModelConfig::from_json_str(r#"{"attention_head_dim": [5, 10, 20, 20]}"#);
    assert_eq!(c.unwrap().num_attention_heads, [5, 10, 20, 20]);
    let json = r#"{"attention_head_dim": 8, "num_attention_heads": [4, 8, 16, 16]}"#;
    let c = UNet2DConditionModelConfig::from_json_str(json).unwrap();
    assert_eq!(c.num_attention_heads, [4, 8, 16, 16]);
    let err = UNet2DConditionModelConfig::from_json_str(r#"{"attention_head_dim": [8, 8]}"#);
    assert!(matches!(err, Err(Error::UnsupportedConfig { .. })));
    let err = UNet2DConditionModelConfig::from_json_str("{ not json").unwrap_err();
    assert!(matches!(err, Error::ConfigJson { .. }));
    let err = AutoencoderKLConfig::from_file(fixtures().join("missing.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn unet_matches_diffusers_with_and_without_guidance() {
    let device = Device::flex();
    let (model, io) = (unet(&device), Io::load(&device));
    let (latent, t, ehs) = (
        io.get::<4>("unet.latent"),
        io.get::<1>("unet.timestep"),
        io.get::<3>("unet.encoder_hidden_states"),
    );
    let cond = model.timestep_cond(Some(&io.get::<1>("unet.w"))).unwrap();
    assert!(max_abs_diff(cond.clone(), io.get::<2>("unet.timestep_cond")) < 1e-5);
    let out = model.forward(latent.clone(), t.clone(), ehs.clone(), Some(cond));
    let d_cond = max_abs_diff(out, io.get::<4>("unet.out_cond"));
    let out = model.forward(latent, t, ehs, None);
    let d_nocond = max_abs_diff(out, io.get::<4>("unet.out_nocond"));
    eprintln!("unet max |diff|: cond {d_cond:e}, nocond {d_nocond:e}");
    assert!(d_cond < TOL && d_nocond < TOL, "{d_cond} {d_nocond}");
}

#[test]
fn vae_matches_diffusers_decode_and_encode() {
    let device = Device::flex();
    let (vae, io) = (
        AutoencoderKL::from_pretrained(fixtures().join("vae"), &device).unwrap(),
        Io::load(&device),
    );
    let d_dec = max_abs_diff(
        vae.decode(io.get::<4>("vae.latents")),
        io.get::<4>("vae.decoded"),
    );
    let (mean, logvar) = vae.encode(io.get::<4>("vae.image"));
    let d_mean = max_abs_diff(mean, io.get::<4>("vae.mean"));
    let d_logvar = max_abs_diff(logvar, io.get::<4>("vae.logvar"));
    eprintln!("vae max |diff|: decode {d_dec:e}, mean {d_mean:e}, logvar {d_logvar:e}");
    assert!(
        d_dec < TOL && d_mean < TOL && d_logvar < TOL,
        "{d_dec} {d_mean} {d_logvar}"
    );
    let img = vae.decode_to_image(io.get::<4>("vae.latents") * vae.scaling_factor);
    let (lo, hi) = (
        img.clone().min().into_scalar::<f32>(),
        img.max().into_scalar::<f32>(),
    );
    assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
}

#[test]
fn strict_loading_rejects_a_wrong_file_and_names_keys() {
    let device = Device::flex();
    let mut model = UNet2DConditionModelConfig::tiny().init(&device);
    let vae_file = fixtures().join("vae/diffusion_pytorch_model.safetensors");
    match model.load_safetensors(&vae_file).unwrap_err() {
        Error::WeightsMismatch {
            path,
            missing,
            unused,
            ..
        } => {
            assert_eq!(path, vae_file);
            assert!(
                missing
                    .iter()
                    .any(|k| k.starts_with("time_embedding.linear_1")),
                "{missing:?}"
            );
            assert!(
                unused.iter().any(|k| k.starts_with("encoder.")),
                "{unused:?}"
            );
        }
        other => panic!("expected WeightsMismatch, got {other}"),
    }
    // A VAE without its mid-block attention leaves the file's attention keys unused.
    let mut vae = AutoencoderKLConfig::tiny()
        .with_mid_block_add_attention(false)
        .init(&device);
    let err = vae.load_safetensors(&vae_file).unwrap_err();
    assert!(
        err.to_string()
            .contains("mid_block.attentions.0.to_q.weight"),
        "{err}"
    );
}

/// diffusers module paths of every attention projection, read from the weight file's keys.
fn attention_projection_paths() -> Vec<String> {
    let keys = read_safetensors(&fixtures().join("unet/diffusion_pytorch_model.fp16.safetensors"));
    let mut paths: Vec<String> = keys
        .keys()
        .filter_map(|k| k.strip_suffix(".weight"))
        .filter(|p| ["attn1.", "attn2."].iter().any(|a| p.contains(a)))
        .filter(|p| {
            ["to_q", "to_k", "to_v", "to_out.0"]
                .iter()
                .any(|s| p.ends_with(s))
        })
        .map(String::from)
        .collect();
    paths.sort();
    paths
}

/// diffusers module paths of every `nn.Linear` and `nn.Conv2d` of the UNet, read from the weight
/// file: the modules whose `weight` is a matrix or a 4-d kernel (the norms' weights are vectors,
/// and this UNet has no embedding table).
fn linear_and_conv_paths() -> Vec<String> {
    let keys = read_safetensors(&fixtures().join("unet/diffusion_pytorch_model.fp16.safetensors"));
    let mut paths: Vec<String> = keys
        .iter()
        .filter(|(_, (_, shape, _))| matches!(shape.len(), 2 | 4))
        .filter_map(|(k, _)| k.strip_suffix(".weight"))
        .map(String::from)
        .collect();
    paths.sort();
    paths
}

/// Burn's own walk of the module tree ([`ModuleVisitor`], independent of the `LoraContainer`
/// impls): the path of every `Linear` and `Conv2d`, found as the module whose `weight` field is
/// visited inside a `Linear` / `Conv2d` struct, with paths written as diffusers names modules:
/// enum variants (`proj_in` is `Conv` or `Linear`) leave no component, and FeedForward's fields
/// `net_0` / `net_2` are diffusers' `net.0` / `net.2`.
#[derive(Default)]
struct BurnLayers {
    /// `(name, container type)` of the modules entered.
    stack: Vec<(String, String)>,
    found: Vec<String>,
}

impl ModuleVisitor for BurnLayers {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
        let Some(((field, container), parents)) = self.stack.split_last() else {
            return;
        };
        if field == "weight" && matches!(container.as_str(), "Struct:Linear" | "Struct:Conv2d") {
            let path: Vec<String> = parents
                .iter()
                .filter(|(_, container)| !container.starts_with("Enum:"))
                .map(|(name, _)| name.replace("net_", "net."))
                .collect();
            self.found.push(path.join("."));
        }
    }
}

#[test]
fn every_linear_and_conv_of_the_unet_takes_an_adapter_by_its_diffusers_path() {
    let device = Device::flex();
    let model = unet(&device);
    let expected = linear_and_conv_paths();
    // Tiny UNet: 4 transformers × (proj_in, proj_out, 8 attention projections, ff.net.0.proj,
    // ff.net.2) + 8 resnets × (conv1, conv2, time_emb_proj) + 5 conv_shortcuts + a downsampler
    // and an upsampler conv + conv_in, conv_out + the 3 time_embedding linears = 84.
    assert_eq!(expected.len(), 84, "{expected:#?}");

    // Burn's module tree has exactly the file's Linear / Conv2d modules ...
    let mut burn_layers = BurnLayers::default();
    model.visit(&mut burn_layers);
    burn_layers.found.sort();
    assert_eq!(
        burn_layers.found, expected,
        "Burn's module tree vs the file"
    );
    // ... and the LoRA walk reaches every one of them, under its diffusers path.
    let mut capable = lora_capable_paths(&model);
    capable.sort();
    let unreached: Vec<&String> = expected.iter().filter(|p| !capable.contains(p)).collect();
    let unknown: Vec<&String> = capable.iter().filter(|p| !expected.contains(p)).collect();
    assert!(
        unreached.is_empty() && unknown.is_empty(),
        "LoRA-capable paths differ from the UNet's Linear/Conv2d modules: not reachable \
         {unreached:?}, not in the file {unknown:?}"
    );
    for known in [
        "conv_in",
        "conv_out",
        "time_embedding.linear_1",
        "time_embedding.cond_proj",
        "down_blocks.0.attentions.0.proj_in",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
        "down_blocks.0.downsamplers.0.conv",
        "down_blocks.1.resnets.0.conv_shortcut",
        "mid_block.resnets.0.conv1",
        "mid_block.resnets.1.time_emb_proj",
        "mid_block.attentions.0.proj_out",
        "up_blocks.0.upsamplers.0.conv",
        "up_blocks.1.resnets.1.conv2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_v",
    ] {
        assert!(
            capable.iter().any(|p| p == known),
            "{known} is not LoRA-capable"
        );
    }

    // Each path alone targets exactly its layer (a full path matches only itself) ...
    for path in &expected {
        let mut one = model.clone();
        let report = apply_lora(
            &mut one,
            &LoraConfig::new(2, 2.0, TargetModules::names(&[path.as_str()])),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(report.wrapped, [path.as_str()], "{path}");
        assert_eq!(adapter_paths(&one), [path.as_str()], "{path}");
    }
    // ... and all of them together give every LoRA-capable layer an adapter.
    let mut all = model;
    let report = apply_lora(
        &mut all,
        &LoraConfig::new(2, 2.0, TargetModules::Names(expected.clone())),
    )
    .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let mut adapted = adapter_paths(&all);
    adapted.sort();
    assert_eq!(adapted.len(), capable.len());
    assert_eq!(adapted, expected);
}

#[test]
fn lora_wraps_exactly_the_attention_projections_and_switches_off() {
    let device = Device::flex();
    let (mut model, io) = (unet(&device), Io::load(&device));
    let input = ModelInput {
        latent: io.get::<4>("unet.latent"),
        timestep: io.get::<1>("unet.timestep"),
        guidance: Some(io.get::<1>("unet.w")),
    };
    let ehs = io.get::<3>("unet.encoder_hidden_states");
    let before = model.predict(&input, &ehs).output;
    assert!(max_abs_diff(before.clone(), io.get::<4>("unet.out_cond")) < TOL);

    let report = apply_lora(&mut model, &LoraConfig::paper()).unwrap();
    let mut wrapped = report.wrapped.clone();
    wrapped.sort();
    // Tiny UNet: 1 transformer in down_blocks.0, 1 in the mid block, 2 in up_blocks.1 → 4
    // transformers × (attn1 + attn2) × (to_q, to_k, to_v, to_out.0) = 32.
    assert_eq!(wrapped.len(), 32);
    assert_eq!(wrapped, attention_projection_paths());

    let base = model.predict_base(&input, &ehs).output;
    assert_eq!(base.clone().into_data(), before.clone().into_data());
    // B = 0 at initialisation: the adapted model still equals the base.
    assert!(max_abs_diff(model.predict(&input, &ehs).output, before.clone()) < 1e-6);

    let lin = &mut model.down_blocks[0].attentions[0].transformer_blocks[0]
        .attn1
        .to_q;
    let lora = lin.lora.as_mut().unwrap();
    let b = lora.lora_b.val();
    lora.lora_b = Param::from_tensor(b.ones_like() * 0.1);
    let tuned = model.predict(&input, &ehs).output;
    assert!(max_abs_diff(tuned, before.clone()) > 1e-3);
    let base = model.predict_base(&input, &ehs).output;
    assert_eq!(base.into_data(), before.into_data());
}

#[test]
fn lora_gradients_flow_to_adapters_only_on_autodiff() {
    let device = Device::flex().autodiff();
    let (mut model, io) = (unet(&device), Io::load(&device));
    apply_lora(&mut model, &LoraConfig::paper()).unwrap();
    let input = ModelInput {
        latent: io.get::<4>("unet.latent"),
        timestep: io.get::<1>("unet.timestep"),
        guidance: Some(io.get::<1>("unet.w")),
    };
    let ehs = io.get::<3>("unet.encoder_hidden_states");
    let grads = model
        .predict(&input, &ehs)
        .output
        .square()
        .mean()
        .backward();
    let lin = &model.up_blocks[1].attentions[1].transformer_blocks[0]
        .attn2
        .to_out[0];
    let lora = lin.lora.as_ref().unwrap();
    let g_b = lora.lora_b.val().grad(&grads).unwrap();
    assert!(g_b.abs().max().into_scalar::<f32>() > 0.0);
    assert!(
        lin.weight.val().grad(&grads).is_none(),
        "base weights are frozen"
    );
    assert!(model.conv_in.weight.val().grad(&grads).is_none());
}

/// The real LCM Dreamshaper v7 folder (`$ROCM_LCM_DIR`, containing `unet/` and `vae/`): every
/// key loads, and one UNet step and a VAE decode run with finite output.
#[test]
#[ignore = "needs the real LCM_Dreamshaper_v7 weights in $ROCM_LCM_DIR (3.4 GB)"]
fn real_lcm_dreamshaper_v7_loads_strictly() {
    let dir = PathBuf::from(std::env::var_os("ROCM_LCM_DIR").unwrap_or_else(|| {
        panic!(
            "ROCM_LCM_DIR is not set: point it at an LCM_Dreamshaper_v7 folder (with unet/ and \
             vae/) to run this ignored test"
        )
    }));
    let device = Device::flex();
    let config = UNet2DConditionModelConfig::from_file(dir.join("unet/config.json")).unwrap();
    assert_eq!(
        config.to_string(),
        UNet2DConditionModelConfig::lcm_dreamshaper_v7().to_string()
    );
    let unet = UNet2DConditionModel::from_pretrained(dir.join("unet"), &device).unwrap();
    let vae = AutoencoderKL::from_pretrained(dir.join("vae"), &device).unwrap();
    let latent = Tensor::<4>::zeros([1, 4, 16, 16], &device);
    let t = Tensor::<1>::from_floats([999.0], &device);
    let ehs = Tensor::<3>::zeros([1, 77, 768], &device);
    let cond = unet.timestep_cond(Some(&Tensor::from_floats([7.0], &device)));
    let out = unet.forward(latent.clone(), t, ehs, cond);
    assert!(out.abs().max().into_scalar::<f32>().is_finite());
    let img = vae.decode_to_image(latent);
    assert_eq!(img.dims(), [1, 3, 128, 128]);
}

#[test]
fn prediction_type_comes_from_the_sibling_scheduler_config() {
    let root = std::env::temp_dir().join(format!("rocm-models-sched-{}", std::process::id()));
    let unet_dir = root.join("unet");
    std::fs::create_dir_all(&unet_dir).unwrap();
    std::fs::create_dir_all(root.join("scheduler")).unwrap();
    for name in ["config.json", "diffusion_pytorch_model.fp16.safetensors"] {
        std::fs::copy(fixtures().join("unet").join(name), unet_dir.join(name)).unwrap();
    }
    let sched = root.join("scheduler/scheduler_config.json");
    std::fs::write(
        &sched,
        r#"{"prediction_type": "v_prediction", "beta_start": 0.00085}"#,
    )
    .unwrap();
    let model = UNet2DConditionModel::from_pretrained(&unet_dir, &Device::flex()).unwrap();
    assert_eq!(
        model.prediction_type,
        rocm_sampler::Parameterization::VPrediction
    );
    std::fs::write(&sched, r#"{"prediction_type": "flow"}"#).unwrap();
    let err = UNet2DConditionModel::from_pretrained(&unet_dir, &Device::flex()).unwrap_err();
    assert!(
        matches!(&err, Error::ConfigJson { path, .. } if path == &sched),
        "{err}"
    );
    std::fs::remove_dir_all(&root).ok();
}
