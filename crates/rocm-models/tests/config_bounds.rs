//! Sizes a `config.json` declares are bounded before anything is allocated from them
//! (`rocm_models::bounds`): an absurd `sample_size`, channel count, layer or head count is an
//! error naming the file and the field, never a capacity-overflow panic (docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::clip::{CLIPTextConfig, CLIPVisionConfig};
use rocm_models::{AutoencoderKLConfig, LcmPipeline, NoiseSource, UNet2DConditionModelConfig};
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The fixture's JSON with `field` set to `value`.
fn with(rel: &str, field: &str, value: Value) -> String {
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap();
    json[field] = value;
    json.to_string()
}

fn assert_names(err: impl std::fmt::Display, field: &str) {
    let err = err.to_string();
    assert!(err.contains("<string>"), "{err}");
    assert!(err.contains(&format!("`{field}`")), "{err}");
}

#[test]
fn unet_config_refuses_absurd_sizes_naming_the_field() {
    let unet = "pipeline-a/unet/config.json";
    for (field, value) in [
        ("sample_size", Value::from(1u64 << 40)),
        ("sample_size", Value::from(0)),
        ("in_channels", Value::from(1u64 << 33)),
        ("out_channels", Value::from(0)),
        ("block_out_channels", serde_json::json!([16, 1u64 << 40])),
        ("block_out_channels", serde_json::json!(vec![16; 9])),
        ("layers_per_block", Value::from(1_000_000)),
        ("transformer_layers_per_block", Value::from(1_000_000)),
        ("cross_attention_dim", Value::from(1u64 << 50)),
        ("time_cond_proj_dim", Value::from(1u64 << 50)),
        ("norm_num_groups", Value::from(0)),
        ("norm_num_groups", Value::from(3)),
        ("norm_eps", Value::from(-1.0)),
        ("num_attention_heads", Value::from(0)),
    ] {
        let err = UNet2DConditionModelConfig::from_json_str(&with(unet, field, value.clone()))
            .expect_err(&format!("{field} = {value} was accepted"));
        assert_names(err, field);
    }
    // The bounds leave real models alone.
    let ok = UNet2DConditionModelConfig::from_json_str(&with(unet, "sample_size", 128.into()));
    assert_eq!(ok.unwrap().sample_size, 128);
}

#[test]
fn vae_and_clip_configs_refuse_absurd_sizes() {
    let vae = "pipeline-a/vae/config.json";
    for (field, value) in [
        ("block_out_channels", serde_json::json!([8, 1u64 << 40])),
        ("latent_channels", Value::from(0)),
        ("layers_per_block", Value::from(1u64 << 32)),
        ("norm_num_groups", Value::from(5)),
        ("scaling_factor", Value::from(0.0)),
    ] {
        let err = AutoencoderKLConfig::from_json_str(&with(vae, field, value.clone()))
            .expect_err(&format!("{field} = {value} was accepted"));
        assert_names(err, field);
    }
    let text = "pipeline-a/text_encoder/config.json";
    for (field, value) in [
        ("vocab_size", Value::from(1u64 << 40)),
        ("hidden_size", Value::from(0)),
        ("num_hidden_layers", Value::from(1u64 << 20)),
        ("max_position_embeddings", Value::from(1u64 << 40)),
    ] {
        let json = with(text, field, value.clone());
        let err = CLIPTextConfig::from_json_str(&json, Path::new("<string>"))
            .expect_err(&format!("{field} = {value} was accepted"));
        assert_names(err, field);
    }
    let dir = std::env::temp_dir().join(format!("rocm-bounds-vision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    let vision = "clip/tiny-vision-proj/config.json";
    for (field, value) in [
        ("image_size", Value::from(1u64 << 40)),
        ("num_channels", Value::from(0)),
    ] {
        std::fs::write(&path, with(vision, field, value.clone())).unwrap();
        let err = CLIPVisionConfig::from_file(&path)
            .expect_err(&format!("{field} = {value} was accepted"))
            .to_string();
        assert!(err.contains("config.json") && err.contains(field), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The reported bug: a pipeline folder whose UNet declares `sample_size = 10^12` aborted
/// `rocm sample` with a capacity overflow when the noise was drawn.
#[test]
fn pipeline_with_an_absurd_sample_size_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("rocm-bounds-pipeline-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let from = fixture("pipeline-a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(from.join("model_index.json"), dir.join("model_index.json")).unwrap();
    for component in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(dir.join(component)).unwrap();
        for file in std::fs::read_dir(from.join(component)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), dir.join(component).join(file.file_name())).unwrap();
        }
    }
    let config = dir.join("unet/config.json");
    std::fs::write(
        &config,
        with(
            "pipeline-a/unet/config.json",
            "sample_size",
            Value::from(1_000_000_000_000u64),
        ),
    )
    .unwrap();
    let err = LcmPipeline::from_folder(&dir, &Device::flex())
        .expect_err("sample_size = 10^12 was accepted")
        .to_string();
    assert!(
        err.contains("unet/config.json") && err.contains("`sample_size`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A non-finite guidance scale or an absurd step count is refused before any noise is drawn.
#[test]
fn generate_refuses_non_finite_guidance_and_absurd_steps() {
    let pipeline = LcmPipeline::from_folder(fixture("pipeline-a"), &Device::flex()).unwrap();
    for g in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = pipeline
            .generate(&["a cat"], 2, g, NoiseSource::Seed(0))
            .expect_err("a non-finite guidance scale was accepted")
            .to_string();
        assert!(err.contains("guidance"), "{err}");
    }
    let err = pipeline
        .generate(&["a cat"], 1 << 40, 8.0, NoiseSource::Seed(0))
        .expect_err("2^40 steps were accepted")
        .to_string();
    assert!(err.contains("steps"), "{err}");
}
