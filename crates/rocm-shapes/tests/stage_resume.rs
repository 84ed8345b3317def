//! A training stage of the shapes world killed after a checkpoint and resumed ends where an
//! uninterrupted run does. In its own test binary: the stages seed the device's generator
//! (`StageOptions::seed_device`), which concurrent tests in one process would share.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use burn::prelude::*;
use rocm_shapes::train::{StageOptions, vae};

mod common;
use common::{losses, options, scratch};

/// The latent means of a few renders: what two VAEs are compared by.
fn latents(vae: &rocm_models::AutoencoderKL, device: &Device) -> Vec<f32> {
    let images: Vec<rocm_shapes::Image> = rocm_shapes::Split::Test
        .scenes(0, 4)
        .iter()
        .map(rocm_shapes::render)
        .collect();
    let (mean, _) = vae.encode(rocm_shapes::Image::batch(&images, device) * 2.0 - 1.0);
    mean.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// A stage killed after its step-4 checkpoint and resumed ends where an uninterrupted run
/// does: the checkpoint holds AdamW's moments and the parameter ids they are keyed by. Without
/// them (a checkpoint of the weights alone) the moments restart and the run ends elsewhere.
#[test]
fn a_resumed_stage_continues_the_optimisation_exactly() {
    let device = Device::flex();
    let config = vae::tiny_vae_config();
    let opts = StageOptions {
        checkpoint_every: 4,
        ..options(8, 4, 3e-3)
    };
    let whole = vae::train(&config, &opts, &scratch("vae-whole"), &device, &mut |_| {}).unwrap();
    let interrupted = |work: &Path| {
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = vae::train(&config, &opts, work, &device, &mut |r| {
                assert!(r.step <= 4, "killed after the step-4 checkpoint");
            });
        }));
        assert!(stopped.is_err());
        assert!(work.join("checkpoint/optimizer.bpk").is_file());
    };
    let work = scratch("vae-killed");
    interrupted(&work);
    let diff = |vae: &rocm_models::AutoencoderKL| {
        let (a, b) = (latents(&whole, &device), latents(vae, &device));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    let resumed = losses(|f| {
        let vae = vae::train(&config, &opts, &work, &device, f).unwrap();
        let d = diff(&vae);
        assert!(d <= 1e-5, "resumed run differs by {d}");
    });
    assert_eq!(resumed.len(), 4);
    // The same kill without the optimiser state: the moments restart, the weights differ.
    let work = scratch("vae-weights-only");
    interrupted(&work);
    for f in ["optimizer.bpk", "module.bpk"] {
        std::fs::remove_file(work.join("checkpoint").join(f)).unwrap();
    }
    let restarted = vae::train(&config, &opts, &work, &device, &mut |_| {}).unwrap();
    let d = diff(&restarted);
    assert!(
        d > 1e-3,
        "restarted moments should change the result, differs by {d}"
    );
}
