//! `CLIPVisionModelWithProjection` against transformers on a tiny seeded model (fixture written by
//! `tests/fixtures/scripts/rewards_clip.py`: width 32, 2 layers, 4 heads, image 32, patch 8, projection 16).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::clip::{CLIPVisionConfig, CLIPVisionModelWithProjection};
use rocm_testing::{max_abs_diff, read_safetensors_f32};

fn expected() -> HashMap<String, TensorData> {
    read_safetensors_f32(&dir().join("expected.safetensors"))
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tiny-vision-proj")
}

#[test]
fn vision_model_with_projection_matches_transformers() {
    let device = Device::flex();
    let e = expected();
    let config = CLIPVisionConfig::from_file(dir().join("config.json")).expect("config");
    assert_eq!(
        (config.image_size, config.patch_size, config.projection_dim),
        (32, 8, Some(16))
    );
    let model = CLIPVisionModelWithProjection::from_pretrained(dir(), &device).expect("load");
    let pixels = Tensor::<4>::from_data(e["pixel_values"].clone(), &device);
    let out = model.vision_model.forward(pixels.clone());
    let hidden = max_abs_diff(out.last_hidden_state, &e["last_hidden_state"]);
    let pooled = max_abs_diff(out.pooler_output, &e["pooler_output"]);
    let embeds = max_abs_diff(model.forward(pixels), &e["image_embeds"]);
    assert!(
        hidden < 1e-4 && pooled < 1e-4 && embeds < 1e-4,
        "{hidden} {pooled} {embeds}"
    );
}

#[test]
fn a_vision_only_folder_is_not_a_clip_model() {
    let err = rocm_models::clip::CLIPModel::from_pretrained(dir(), &Device::flex())
        .map(|_| ())
        .expect_err("no text tower in the file");
    let message = err.to_string();
    assert!(message.contains("tiny-vision-proj"), "{message}");
}

#[test]
#[ignore = "needs openai/clip-vit-large-patch14 in the Hugging Face cache"]
fn real_vit_l14_loads() {
    let dir = rocm_models::hub::model_dir(
        "openai/clip-vit-large-patch14",
        &["config.json", "model.safetensors"],
    )
    .expect("in the cache");
    let model = rocm_models::clip::CLIPModel::from_pretrained(dir, &Device::flex()).expect("load");
    let embeds = model.get_image_features(Tensor::zeros([1, 3, 224, 224], &Device::flex()));
    assert_eq!(embeds.dims(), [1, 768]);
}
