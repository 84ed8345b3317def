//! `LcmPipeline` end to end against diffusers' `LatentConsistencyModelPipeline` on a tiny random
//! pipeline folder with injected noise (fixtures: `tests/fixtures/scripts/models_pipeline.py`),
//! plus the real `SimianLuo/LCM_Dreamshaper_v7` when present (`#[ignore]`).
//!
//! Measured max abs image difference on flex: see `PIPELINE_A_TOLERANCE`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::bridge::to_data;
use burn::store::{ModuleStore, SafetensorsStore};
use rocm_models::Error;
use rocm_models::pipeline::{LcmPipeline, NoiseSource, PipelineError};
use rocm_sampler::SamplerNoise;

/// Asserted bound on `max |rust − diffusers|` over the images of pipeline A (pixels in [0, 1]).
const PIPELINE_A_TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `latents`, `noise` and `image` of a pipeline folder's `expected.safetensors`.
fn expected(dir: &Path, device: &Device) -> (SamplerNoise<4>, Tensor<4>) {
    let mut store = SafetensorsStore::from_file(dir.join("expected.safetensors"));
    let all = store.get_all_tensors().expect("expected.safetensors");
    let mut t: HashMap<String, TensorData> = all
        .iter()
        .map(|(k, v)| (k.clone(), to_data(v).expect("data").convert::<f32>()))
        .collect();
    let latents = Tensor::<4>::from_data(t.remove("latents").unwrap(), device);
    let noise = Tensor::<5>::from_data(t.remove("noise").unwrap(), device);
    let image = Tensor::<4>::from_data(t.remove("image").unwrap(), device);
    let steps = (0..noise.dims()[0])
        .map(|k| noise.clone().narrow(0, k, 1).squeeze_dim::<4>(0))
        .collect();
    (SamplerNoise::new(latents, steps), image)
}

fn max_abs(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

const PROMPTS: [&str; 2] = [
    "a photo of a cat",
    "an astronaut riding a horse on the moon",
];

#[test]
fn pipeline_a_matches_diffusers() {
    let device = Device::flex();
    let dir = fixture("pipeline-a");
    let pipeline = LcmPipeline::from_folder(&dir, &device).unwrap();
    let (noise, want) = expected(&dir, &device);
    let mut calls = Vec::new();
    let got = pipeline
        .generate_with_progress(&PROMPTS, 4, 8.0, NoiseSource::Injected(noise), |k, n| {
            calls.push((k, n))
        })
        .unwrap();
    assert_eq!(calls, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert_eq!(got.dims(), [2, 3, 16, 16]);
    let diff = max_abs(got, want);
    println!("pipeline A: max abs image difference {diff:e}");
    assert!(diff < PIPELINE_A_TOLERANCE, "max abs diff {diff}");
}

#[test]
fn seeded_generation_is_reproducible_and_in_range() {
    let device = Device::flex();
    let pipeline = LcmPipeline::from_folder(fixture("pipeline-a"), &device).unwrap();
    let run = || {
        pipeline
            .generate(&PROMPTS[..1], 2, 8.0, NoiseSource::Seed(3))
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.dims(), [1, 3, 16, 16]);
    assert_eq!(max_abs(a.clone(), b), 0.0);
    let (lo, hi) = (
        a.clone().min().into_scalar::<f32>(),
        a.max().into_scalar::<f32>(),
    );
    assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo < hi);
}

#[test]
fn bad_inputs_are_errors() {
    let device = Device::flex();
    let missing = LcmPipeline::from_folder(fixture("no-such-pipeline"), &device).unwrap_err();
    assert!(matches!(missing, PipelineError::Folder { .. }), "{missing}");
    let partial = LcmPipeline::from_folder(fixture("tiny-lcm"), &device).unwrap_err();
    assert!(partial.to_string().contains("text_encoder"), "{partial}");

    let dir = fixture("pipeline-a");
    let pipeline = LcmPipeline::from_folder(&dir, &device).unwrap();
    let (noise, _) = expected(&dir, &device);
    // Three prompts for a batch of two latents.
    let err = pipeline
        .generate(
            &["a", "b", "c"],
            4,
            8.0,
            NoiseSource::Injected(noise.clone()),
        )
        .unwrap_err();
    assert!(matches!(err, PipelineError::BadNoise(_)), "{err}");
    // Three re-noising draws are for K = 4, not 3.
    let err = pipeline
        .generate(&PROMPTS, 3, 8.0, NoiseSource::Injected(noise))
        .unwrap_err();
    assert!(matches!(err, PipelineError::Sampler(_)), "{err}");
}

#[test]
fn from_pretrained_takes_a_folder_before_a_repo_id_and_names_other_strings() {
    let device = Device::flex();
    let dir = fixture("pipeline-a");
    let pipeline = LcmPipeline::from_pretrained(dir.to_str().expect("utf-8"), &device).unwrap();
    assert_eq!(
        pipeline.latent_shape(2),
        LcmPipeline::from_folder(&dir, &device)
            .unwrap()
            .latent_shape(2)
    );

    // Tests run in the package root: `tests/fixtures` reads as `org/name` but is a folder, so it
    // loads as one (and is not a pipeline folder), without a look at the hub cache.
    let err = LcmPipeline::from_pretrained("tests/fixtures", &device).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Folder { path, .. } if path == Path::new("tests/fixtures")),
        "{err}"
    );

    for bad in [
        "./no/such/pipeline",
        "no-such-pipeline",
        "runs/a/b",
        "~/lcm",
    ] {
        let err = LcmPipeline::from_pretrained(bad, &device).unwrap_err();
        assert!(
            matches!(&err, PipelineError::Model(Error::NotFolderOrRepoId { name }) if name == bad),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(bad) && message.contains("neither an existing folder"),
            "{message}"
        );
    }

    // A repo id that is not a folder goes to the hub cache (which does not have it).
    #[cfg(not(feature = "download"))]
    {
        let err =
            LcmPipeline::from_pretrained("rocm-rs-tests/no-such-pipeline", &device).unwrap_err();
        assert!(
            matches!(&err, PipelineError::Model(Error::HubFilesMissing { repo_id, .. })
                if repo_id == "rocm-rs-tests/no-such-pipeline"),
            "{err}"
        );
    }
    let err = LcmPipeline::from_hub(dir.to_str().expect("utf-8"), &device).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Model(Error::InvalidRepoId { .. })),
        "from_hub never loads a folder: {err}"
    );
}

/// The real model: `ROCM_LCM_DIR=/path/to/LCM_Dreamshaper_v7 cargo test --release -p rocm-models
/// --test pipeline -- --ignored`, or with `SimianLuo/LCM_Dreamshaper_v7` in the Hugging Face cache.
#[test]
#[ignore = "needs the LCM_Dreamshaper_v7 weights (about 4 GB)"]
fn lcm_dreamshaper_v7_generates() {
    let device = Device::flex();
    let pipeline = match std::env::var("ROCM_LCM_DIR") {
        Ok(dir) => LcmPipeline::from_folder(&dir, &device)
            .unwrap_or_else(|e| panic!("ROCM_LCM_DIR={dir}: {e}")),
        Err(_) => {
            LcmPipeline::from_hub("SimianLuo/LCM_Dreamshaper_v7", &device).unwrap_or_else(|e| {
                panic!("ROCM_LCM_DIR is not set and the Hugging Face cache has no usable copy: {e}")
            })
        }
    };
    assert_eq!(pipeline.latent_shape(1), [1, 4, 96, 96]);
    // A smaller latent than the native 96×96 keeps the CPU run to minutes.
    let noise = SamplerNoise::from_seed([1, 4, 32, 32], 2, 0, &device);
    let image = pipeline
        .generate(&["a photo of a cat"], 2, 8.0, NoiseSource::Injected(noise))
        .unwrap();
    assert_eq!(image.dims(), [1, 3, 256, 256]);
    let mean = image.clone().mean().into_scalar::<f32>();
    let std = image.var(1).mean().into_scalar::<f32>().sqrt();
    assert!(
        (0.05..0.95).contains(&mean) && std > 0.01,
        "mean {mean}, std {std}"
    );
}
