//! A second UNet configuration against diffusers 0.42.1: three levels, per-block head counts as a
//! list, no guidance embedding (`time_cond_proj_dim = None`), an fp32 file, 5 text tokens
//! (`tests/fixtures/scripts/models_unet_variants.py`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::UNet2DConditionModel;
use rocm_sampler::{ConsistencyModel, ModelInput};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet-3-levels-no-cond")
}

/// One f32 tensor of `io.safetensors`.
fn io<const D: usize>(key: &str, device: &Device) -> Tensor<D> {
    let bytes = std::fs::read(dir().join("io.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(key).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let shape: [usize; D] = view.shape().try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[test]
fn three_level_unet_without_guidance_embedding_matches_diffusers() {
    let device = Device::flex();
    let unet = UNet2DConditionModel::from_pretrained(dir(), &device).unwrap();
    let (latent, t, ehs) = (
        io::<4>("latent", &device),
        io::<1>("timestep", &device),
        io::<3>("encoder_hidden_states", &device),
    );
    let want = io::<4>("out", &device);
    assert!(unet.timestep_cond(None).is_none());
    let got = unet.forward(latent.clone(), t.clone(), ehs.clone(), None);
    let diff = (got - want.clone()).abs().max().into_scalar::<f32>();
    eprintln!("max abs diff vs diffusers: {diff:e}");
    assert!(diff < 1e-4, "max abs diff {diff}");

    // The same call through the sampler's trait.
    let input = ModelInput {
        latent,
        timestep: t,
        guidance: None,
    };
    let pred = unet.predict(&input, &ehs).output;
    assert!((pred - want).abs().max().into_scalar::<f32>() < 1e-4);
}

#[test]
fn strict_reload_reports_nothing_missing_or_unused() {
    // `load_safetensors` is strict: any missing or unused key (or shape mismatch) is an error.
    let device = Device::flex();
    let mut unet = UNet2DConditionModel::from_pretrained(dir(), &device).unwrap();
    unet.load_safetensors(dir().join("diffusion_pytorch_model.safetensors"))
        .unwrap();
}
