//! The real LAION aesthetic head (`tests/fixtures/aesthetic/*.pth` and `assets/*.safetensors`,
//! copied and converted by `tests/fixtures/scripts/rewards_aesthetic.py`) against PyTorch's
//! outputs in `aesthetic_head_golden.json`, loaded from the `.pth`, the `.safetensors` file and
//! the copy embedded in the crate.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_rewards::AestheticHead;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aesthetic")
        .join(name)
}

/// The golden inputs: `sin(0.37 (i+1) + 0.011 j) + 0.1 cos(0.5 j)`, L2-normalised (f64, then f32).
fn golden_inputs(device: &Device) -> Tensor<2> {
    let mut data = Vec::with_capacity(4 * 768);
    for i in 0..4 {
        let row: Vec<f64> = (0..768)
            .map(|j| {
                let j = j as f64;
                (0.37 * (i + 1) as f64 + 0.011 * j).sin() + 0.1 * (0.5 * j).cos()
            })
            .collect();
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        data.extend(row.iter().map(|v| (v / norm) as f32));
    }
    Tensor::from_data(TensorData::new(data, [4, 768]), device)
}

fn golden_scores() -> Vec<f32> {
    let json = std::fs::read_to_string(fixture("aesthetic_head_golden.json")).expect("golden");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    value["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .map(|v| v.as_f64().expect("f64") as f32)
        .collect()
}

fn check(head: &AestheticHead, device: &Device, what: &str) {
    let scores = head
        .forward(golden_inputs(device))
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32");
    let golden = golden_scores();
    assert_eq!(scores.len(), golden.len(), "{what}: score count");
    for (got, want) in scores.iter().zip(golden) {
        assert!((got - want).abs() < 1e-5, "{what}: {got} vs {want}");
    }
}

#[test]
fn safetensors_head_reproduces_pytorch() {
    let device = Device::flex();
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(rocm_rewards::aesthetic_head::LAION_HEAD_NAME);
    let head = AestheticHead::from_file(&file, &device).expect("load head");
    check(&head, &device, "safetensors");
    let bytes = std::fs::read(&file).expect("read head");
    let head = AestheticHead::from_safetensors_bytes(bytes, &device).expect("load bytes");
    check(&head, &device, "safetensors bytes");
}

#[test]
fn embedded_laion_head_reproduces_pytorch() {
    let device = Device::flex();
    let head = AestheticHead::laion(&device).expect("embedded head");
    check(&head, &device, "embedded");
}

#[test]
fn pth_head_reproduces_pytorch() {
    let device = Device::flex();
    let file = fixture("sac+logos+ava1-l14-linearMSE.pth");
    let head = AestheticHead::from_file(file, &device).expect("load head");
    check(&head, &device, "pth");
}
