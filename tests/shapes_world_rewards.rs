//! The shapes world's shipped reward models load through `RewardKind::load`, the path of
//! `--reward KIND --reward-model DIR [--reward-head FILE]` in `rocm train` / `rocm eval` and of the
//! `score` example, with nothing special for them: a red disc on gray scores above a blue one for
//! "a red circle" (CLIPScore, PickScore), and a clean disc above a noisy one (aesthetic).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use burn::prelude::*;
use rocm::reward::RewardKind;

fn world(folder: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/rocm-shapes/assets/world")
        .join(folder)
}

/// A 32 × 32 disc of `rgb` (radius 7, 4 × 4 supersampled) on gray, plus uniform noise of
/// amplitude `noise` from a fixed LCG.
fn disc(rgb: [f32; 3], noise: f32) -> Vec<f32> {
    let mut state = 12345u32;
    let mut out = vec![0.0; 3 * 32 * 32];
    for i in 0..32 {
        for j in 0..32 {
            let mut cover = 0.0;
            for a in 0..4 {
                for b in 0..4 {
                    let y = i as f32 + (a as f32 + 0.5) / 4.0 - 16.0;
                    let x = j as f32 + (b as f32 + 0.5) / 4.0 - 16.0;
                    cover += f32::from(u8::from(x * x + y * y <= 49.0)) / 16.0;
                }
            }
            for c in 0..3 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let u = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let v = cover * rgb[c] + (1.0 - cover) * 0.5 + noise * u;
                out[c * 1024 + i * 32 + j] = v.clamp(0.0, 1.0);
            }
        }
    }
    out
}

fn scores(kind: RewardKind, model: &str, head: Option<PathBuf>, images: &[Vec<f32>]) -> Vec<f32> {
    let device = Device::flex();
    let reward = kind
        .load(
            Some(world(model).to_str().unwrap()),
            head.as_deref(),
            &device,
        )
        .unwrap();
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    let x = Tensor::<4>::from_data(TensorData::new(data, [images.len(), 3, 32, 32]), &device);
    let prompts = vec!["a red circle".to_string(); images.len()];
    reward
        .reward(x, &prompts)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn clipscore_and_pickscore_prefer_the_prompted_colour() {
    let images = [disc([0.9, 0.1, 0.1], 0.0), disc([0.1, 0.1, 0.9], 0.0)];
    for (kind, model) in [
        (RewardKind::ClipScore, "clip"),
        (RewardKind::PickScore, "pref"),
    ] {
        let s = scores(kind, model, None, &images);
        assert!(s[0] > s[1], "{kind}: red {} vs blue {}", s[0], s[1]);
    }
}

#[test]
fn the_aesthetic_head_prefers_the_clean_render() {
    let images = [disc([0.9, 0.1, 0.1], 0.0), disc([0.9, 0.1, 0.1], 0.6)];
    let head = world("aesthetic").join("head.safetensors");
    let s = scores(RewardKind::Aesthetic, "aesthetic", Some(head), &images);
    assert!(s[0] > s[1], "aesthetic: clean {} vs noisy {}", s[0], s[1]);
}
