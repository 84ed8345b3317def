//! An ε-prediction diffusion UNet sampled with `rocm_sampler::DdimSampler` against diffusers'
//! `StableDiffusionPipeline` + `DDIMScheduler` (η = 1, classifier-free guidance 7.5 with the
//! empty negative prompt, K = 3) on a tiny random pipeline with injected noise (fixture:
//! `tests/fixtures/scripts/ddim_pipeline.py`): the sampler the DDPO, DPOK and D3PO baselines
//! roll out with, on the model class they train (e.g. `Lykon/dreamshaper-7`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::bridge::to_data;
use burn::store::{ModuleStore, SafetensorsStore};
use rocm_models::pipeline::LcmPipeline;
use rocm_sampler::{DdimSampler, DdimSamplerOptions, Guidance, SamplerNoise};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline-ddim")
}

/// Every tensor of `expected.safetensors`, as f32.
fn expected() -> HashMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(dir().join("expected.safetensors"));
    let all = store.get_all_tensors().expect("expected.safetensors");
    all.iter()
        .map(|(k, v)| (k.clone(), to_data(v).expect("data").convert::<f32>()))
        .collect()
}

fn max_abs(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

const PROMPTS: [&str; 2] = [
    "a photo of a cat",
    "an astronaut riding a horse on the moon",
];

#[test]
fn ddim_with_cfg_on_a_diffusion_unet_matches_diffusers() {
    let device = Device::flex();
    let pipeline = LcmPipeline::from_folder(dir(), &device).unwrap();
    let scheduler = pipeline.ddim_scheduler().unwrap();
    assert_eq!(scheduler.config().steps_offset, 1);
    assert!(!scheduler.config().set_alpha_to_one);
    let mut t = expected();
    let latents = Tensor::<4>::from_data(t.remove("latents").unwrap(), &device);
    let noise = Tensor::<5>::from_data(t.remove("noise").unwrap(), &device);
    let want_latent = Tensor::<4>::from_data(t.remove("final_latent").unwrap(), &device);
    let want_image = Tensor::<4>::from_data(t.remove("image").unwrap(), &device);
    let steps = (0..noise.dims()[0])
        .map(|k| noise.clone().narrow(0, k, 1).squeeze_dim::<4>(0))
        .collect();
    let conditioning = pipeline.encode_prompts(&PROMPTS).unwrap();
    let unconditional = pipeline.encode_prompts(&["", ""]).unwrap();
    let options =
        DdimSamplerOptions::new(3)
            .with_eta(1.0)
            .with_guidance(Guidance::ClassifierFree {
                scale: 7.5,
                unconditional,
            });
    let sampler = DdimSampler::new(scheduler);
    let trajectory = sampler
        .sample(
            &pipeline.unet,
            &conditioning,
            SamplerNoise::new(latents, steps),
            &options,
        )
        .unwrap();
    assert_eq!(trajectory.timesteps(), [667, 334, 1]);
    // η = 1 with set_alpha_to_one = false: all three steps are Gaussian policies (DDPO's K).
    assert_eq!(trajectory.log_probs().len(), 3);
    let scale = want_latent.clone().abs().max().into_scalar::<f32>();
    let latent_diff = max_abs(trajectory.final_latent.clone(), want_latent);
    println!("pipeline-ddim: max abs latent difference {latent_diff:e} (max |x| {scale})");
    assert!(
        latent_diff < 1e-5 * scale.max(1.0),
        "latent diff {latent_diff}"
    );
    let image = pipeline.vae.decode_to_image(trajectory.final_latent);
    let image_diff = max_abs(image, want_image);
    println!("pipeline-ddim: max abs image difference {image_diff:e}");
    assert!(image_diff < 1e-4, "image diff {image_diff}");
}
