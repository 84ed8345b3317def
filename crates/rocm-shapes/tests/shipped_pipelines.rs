//! The shipped diffusion pipelines (`assets/world/shapes-lcm`, `assets/world/shapes-teacher`)
//! sampled by our loaders and samplers against diffusers on the same injected noise: the outputs
//! `tests/fixtures/scripts/shapes_lcm_parity.py` recorded with `LatentConsistencyModelPipeline`
//! (4 LCM steps, embedded guidance) and `StableDiffusionPipeline` + its `DDIMScheduler` (DDIM,
//! η = 0, classifier-free guidance with the empty negative prompt), each loaded unchanged with
//! `from_pretrained`. Final latents and images agree to 1e-4; the images are finite and in
//! `[0, 1]`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::*;
use rocm_models::{LcmPipeline, NoiseSource};
use rocm_sampler::{DdimSampler, DdimSamplerOptions, Guidance, SamplerNoise, SamplerOptions};
use rocm_testing::max_abs_diff;
use serde_json::Value;

/// The bound on every max |Δ|: images in `[0, 1]`, latents relative to their largest value.
const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The recorded tensors and the script's settings.
fn fixture() -> (HashMap<String, TensorData>, Value) {
    let dir = root().join("tests/fixtures");
    let tensors = rocm_testing::read_safetensors(&dir.join("shapes_lcm_parity.safetensors"));
    let text = std::fs::read_to_string(dir.join("shapes_lcm_parity.json")).unwrap();
    (tensors, serde_json::from_str(&text).unwrap())
}

fn tensor<const D: usize>(
    t: &HashMap<String, TensorData>,
    key: &str,
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(t[key].clone().convert::<f32>(), device)
}

fn prompts(settings: &Value) -> Vec<String> {
    settings["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn timesteps(settings: &Value) -> Vec<usize> {
    settings["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect()
}

fn pipeline(name: &str, device: &Device) -> LcmPipeline {
    LcmPipeline::from_folder(root().join("assets/world").join(name), device).unwrap()
}

/// The final latent within `TOLERANCE` of the reference relative to its scale, the image
/// within `TOLERANCE`, the image finite and in `[0, 1]` and not blank.
fn check(name: &str, latent: Tensor<4>, image: Tensor<4>, t: &HashMap<String, TensorData>) {
    let want = &t[&format!("{name}.final_latent")];
    let scale = want
        .clone()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .iter()
        .fold(1.0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(latent, want);
    eprintln!("{name}: final latent max |Δ| {d:e} (max |x| {scale:.3})");
    assert!(d < TOLERANCE * scale, "{name}: final latent max |Δ| {d}");
    let d = max_abs_diff(image.clone(), &t[&format!("{name}.image")]);
    eprintln!("{name}: image max |Δ| {d:e}");
    assert!(d < TOLERANCE, "{name}: image max |Δ| {d}");
    let pixels = image.into_data().try_into_vec::<f32>().unwrap();
    assert!(
        pixels
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
        "{name}: pixels outside [0, 1]"
    );
    let mean = pixels.iter().sum::<f32>() / pixels.len() as f32;
    let var = pixels.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / pixels.len() as f32;
    assert!(
        var.sqrt() > 0.01,
        "{name}: a blank image (std {})",
        var.sqrt()
    );
}

#[test]
fn the_shipped_lcm_matches_diffusers_latent_consistency_pipeline() {
    let (t, settings) = fixture();
    let lcm = &settings["lcm"];
    let device = Device::flex();
    let pipe = pipeline("shapes-lcm", &device);
    let prompts = prompts(&settings);
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let steps = lcm["steps"].as_u64().unwrap() as usize;
    let guidance = lcm["guidance_scale"].as_f64().unwrap() as f32;
    let noise = tensor::<5>(&t, "lcm.noise", &device);
    let noise = SamplerNoise::new(
        tensor(&t, "lcm.latents", &device),
        (0..noise.dims()[0])
            .map(|k| noise.clone().narrow(0, k, 1).squeeze_dim::<4>(0))
            .collect(),
    );
    let options = SamplerOptions::new(steps).with_guidance(Guidance::embedded(guidance));
    let sampler = pipe.sampler();
    assert_eq!(sampler.timesteps(&options).unwrap(), timesteps(lcm));
    let text = pipe.encode_prompts(&refs).unwrap();
    let trajectory = sampler
        .sample(&pipe.unet, &text, noise.clone(), &options)
        .unwrap();
    // The pipeline's own path (tokenizer, text encoder, sampler, VAE) gives the same image.
    let image = pipe
        .generate(&refs, steps, guidance, NoiseSource::Injected(noise))
        .unwrap();
    let decoded = pipe.vae.decode_to_image(trajectory.final_latent.clone());
    assert!(max_abs_diff(decoded, &image.to_data()) < 1e-6);
    check("lcm", trajectory.final_latent, image, &t);
}

#[test]
fn the_shipped_teacher_matches_diffusers_ddim_with_classifier_free_guidance() {
    let (t, settings) = fixture();
    let teacher = &settings["teacher"];
    let device = Device::flex();
    let pipe = pipeline("shapes-teacher", &device);
    let prompts = prompts(&settings);
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let steps = teacher["steps"].as_u64().unwrap() as usize;
    let guidance = teacher["guidance_scale"].as_f64().unwrap() as f32;
    assert_eq!(teacher["eta"].as_f64(), Some(0.0));
    let unconditional = pipe.encode_prompts(&vec![""; refs.len()]).unwrap();
    let options =
        DdimSamplerOptions::new(steps)
            .with_eta(0.0)
            .with_guidance(Guidance::ClassifierFree {
                scale: guidance,
                unconditional,
            });
    let sampler = DdimSampler::new(pipe.ddim_scheduler().unwrap());
    assert_eq!(sampler.timesteps(&options).unwrap(), timesteps(teacher));
    let latents = tensor::<4>(&t, "teacher.latents", &device);
    // η = 0: deterministic, the re-noising draws are never used.
    let unused = (0..steps)
        .map(|_| Tensor::zeros(latents.dims(), &device))
        .collect();
    let text = pipe.encode_prompts(&refs).unwrap();
    let trajectory = sampler
        .sample(
            &pipe.unet,
            &text,
            SamplerNoise::new(latents, unused),
            &options,
        )
        .unwrap();
    let image = pipe.vae.decode_to_image(trajectory.final_latent.clone());
    check("teacher", trajectory.final_latent, image, &t);
}
