//! Our loaders and models against diffusers / transformers on the shipped world folders: the
//! outputs `tests/fixtures/scripts/shapes_parity.py` recorded (diffusers `AutoencoderKL` decode and
//! encode, transformers `CLIPTokenizer` ids and `CLIPModel` features and logits) to 1e-4.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::*;
use rocm_models::AutoencoderKL;
use rocm_models::clip::CLIPModel;
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_rewards::clip_rewards::l2_normalize;
use rocm_testing::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> (HashMap<String, TensorData>, Vec<String>) {
    let dir = root().join("tests/fixtures");
    let tensors = rocm_testing::read_safetensors(&dir.join("shapes_parity.safetensors"));
    let versions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("versions.json")).unwrap()).unwrap();
    let captions = versions["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (tensors, captions)
}

fn f32_tensor<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone().convert::<f32>(), device)
}

fn world(name: &str) -> PathBuf {
    root().join("assets/world").join(name)
}

#[test]
fn the_vae_matches_diffusers() {
    let (t, _) = fixture();
    let device = Device::flex();
    let vae = AutoencoderKL::from_pretrained(world("vae"), &device).unwrap();
    let decoded = vae.decode(f32_tensor(&t["vae.latents"], &device));
    let d = max_abs_diff(decoded, &t["vae.decoded"]);
    eprintln!("vae decode: max |Δ| {d}");
    assert!(d < TOLERANCE, "decode: max |Δ| {d}");
    let (mean, _) = vae.encode(f32_tensor(&t["vae.images"], &device));
    let d = max_abs_diff(mean, &t["vae.mean"]);
    eprintln!("vae encode mean: max |Δ| {d}");
    assert!(d < TOLERANCE, "encode mean: max |Δ| {d}");
}

#[test]
fn the_clip_models_and_tokenizer_match_transformers() {
    let (t, captions) = fixture();
    let device = Device::flex();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let pixels = f32_tensor::<4>(&t["pixel_values"], &device);
    for name in ["clip", "pref", "aesthetic"] {
        let tokenizer = CLIPTokenizer::from_dir(world(name)).unwrap();
        let ids = tokenizer.encode_to_tensor(&refs, &device).unwrap();
        assert_eq!(
            ids.to_data().convert::<i64>().try_to_vec::<i64>().unwrap(),
            t["text.input_ids"]
                .clone()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap(),
            "{name}: token ids"
        );
        let model = CLIPModel::from_pretrained(world(name), &device).unwrap();
        let img = model.get_image_features(pixels.clone());
        let txt = model.get_text_features(ids);
        let d = max_abs_diff(img.clone(), &t[&format!("{name}.image_embeds")]);
        assert!(d < TOLERANCE, "{name}: image features max |Δ| {d}");
        let d = max_abs_diff(txt.clone(), &t[&format!("{name}.text_embeds")]);
        assert!(d < TOLERANCE, "{name}: text features max |Δ| {d}");
        let logits =
            l2_normalize(img).matmul(l2_normalize(txt).transpose()) * model.logit_scale.exp();
        let d = max_abs_diff(logits, &t[&format!("{name}.logits_per_image")]);
        eprintln!("{name}: logits_per_image max |Δ| {d}");
        assert!(d < TOLERANCE, "{name}: logits_per_image max |Δ| {d}");
    }
}
