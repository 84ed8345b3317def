//! The shipped world models (`assets/world/`) load through the loaders every hub model goes
//! through (`rocm_models::AutoencoderKL`, `rocm_rewards::{ClipScore, PickScore, Aesthetic}`), and
//! each reward scores the exact render of a prompt above perturbed renders of it.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use burn::prelude::*;
use rocm_models::AutoencoderKL;
use rocm_rewards::{Aesthetic, ClipScore, PickScore, RewardModel};
use rocm_shapes::render::{Image, Perturbation, render, render_perturbed};
use rocm_shapes::world::{IMAGE_SIZE, Scene, Split};

fn world(folder: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/world")
        .join(folder);
    dir.to_str().unwrap().to_string()
}

fn scenes() -> Vec<Scene> {
    Split::Test.scenes(0, 12)
}

fn scores(
    reward: &dyn RewardModel,
    images: &[Image],
    prompts: &[String],
    device: &Device,
) -> Vec<f32> {
    reward
        .reward(Image::batch(images, device), prompts)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// The fraction of scenes whose exact render scores above its render with `perturbation` at
/// full strength, and the mean score gap.
fn wins(reward: &dyn RewardModel, perturbation: Perturbation, device: &Device) -> (f64, f32) {
    let scenes = scenes();
    let prompts: Vec<String> = scenes.iter().map(|s| s.caption.clone()).collect();
    let clean: Vec<Image> = scenes.iter().map(render).collect();
    let worse: Vec<Image> = scenes
        .iter()
        .map(|s| render_perturbed(s, &[(perturbation, 1.0)], 7))
        .collect();
    let (a, b) = (
        scores(reward, &clean, &prompts, device),
        scores(reward, &worse, &prompts, device),
    );
    let won = a.iter().zip(&b).filter(|(x, y)| x > y).count();
    let gap = a.iter().zip(&b).map(|(x, y)| x - y).sum::<f32>() / a.len() as f32;
    (won as f64 / a.len() as f64, gap)
}

fn assert_prefers_clean(
    name: &str,
    reward: &dyn RewardModel,
    kinds: &[Perturbation],
    device: &Device,
) {
    for &p in kinds {
        let (won, gap) = wins(reward, p, device);
        assert!(
            won >= 0.75 && gap > 0.0,
            "{name} vs {p:?}: clean won {won}, mean gap {gap}"
        );
    }
}

#[test]
fn the_vae_loads_and_reconstructs_renders() {
    let device = Device::flex();
    let vae = AutoencoderKL::from_pretrained(world("vae"), &device).unwrap();
    let images: Vec<Image> = scenes().iter().map(render).collect();
    let x = Image::batch(&images, &device);
    let (mean, _) = vae.encode(x.clone() * 2.0 - 1.0);
    assert_eq!(
        mean.dims(),
        [images.len(), 4, IMAGE_SIZE / 4, IMAGE_SIZE / 4]
    );
    let y = rocm_models::to_unit_range(vae.decode(mean));
    let mse: f32 = (y - x).square().mean().into_scalar();
    let psnr = -10.0 * mse.log10();
    assert!(psnr > 20.0, "PSNR {psnr} dB");
}

/// The VAE ceiling the README reports (`examples/vae_ceiling.rs`): large single objects come back
/// with their colour and shape, small crosses do not.
#[test]
fn vae_reconstructions_keep_large_shapes_and_most_small_ones() {
    use rocm_shapes::evaluate::{colour_and_shape_right, reconstructions};
    use rocm_shapes::world::{Shape, Size};
    let device = Device::flex();
    let vae = AutoencoderKL::from_pretrained(world("vae"), &device).unwrap();
    let single: Vec<Scene> = Split::Test
        .scenes(0, 200)
        .into_iter()
        .filter(|s| s.objects.len() == 1)
        .collect();
    let pick = |size: Size, cross: bool| -> Vec<Scene> {
        single
            .iter()
            .filter(|s| s.objects[0].size == size && (s.objects[0].shape == Shape::Cross) == cross)
            .take(8)
            .cloned()
            .collect()
    };
    let right = |scenes: &[Scene]| -> usize {
        let images: Vec<Image> = scenes.iter().map(render).collect();
        let rebuilt = reconstructions(&vae, &images, &device);
        assert_eq!(rebuilt.len(), scenes.len());
        scenes
            .iter()
            .zip(&rebuilt)
            .filter(|(s, r)| colour_and_shape_right(r, &s.caption))
            .count()
    };
    let large = pick(Size::Large, false);
    assert_eq!(large.len(), 8);
    assert_eq!(right(&large), 8, "large objects should survive the VAE");
    // The 6,000-step VAE keeps small shapes (README: small circles and triangles 100 %, squares
    // 90 %, crosses 62 % on 600 scenes; measured here 8 / 8 and 5 / 8). The first, 2,000-step VAE
    // lost nearly every small cross (1.4 %), and this test failed on it.
    let small_others = pick(Size::Small, false);
    assert_eq!(small_others.len(), 8);
    assert!(
        right(&small_others) >= 7,
        "small circles, squares and triangles should survive"
    );
    let small_crosses = pick(Size::Small, true);
    assert!(small_crosses.len() >= 4);
    assert!(
        right(&small_crosses) * 4 > small_crosses.len(),
        "more than a quarter of the small crosses should survive"
    );
}

#[test]
fn clipscore_on_the_world_clip_prefers_the_prompted_render() {
    let device = Device::flex();
    let reward = ClipScore::from_pretrained(&world("clip"), &device).unwrap();
    assert_prefers_clean("clipscore", &reward, &[Perturbation::WrongColour], &device);
}

#[test]
fn pickscore_on_the_world_preference_model_prefers_the_prompted_render() {
    let device = Device::flex();
    let reward = PickScore::from_pretrained(&world("pref"), &device).unwrap();
    assert_prefers_clean(
        "pickscore",
        &reward,
        &[
            Perturbation::WrongColour,
            Perturbation::Noise,
            Perturbation::Blur,
        ],
        &device,
    );
}

#[test]
fn the_world_aesthetic_head_prefers_clean_renders() {
    let device = Device::flex();
    let dir = world("aesthetic");
    let head = PathBuf::from(&dir).join("head.safetensors");
    let reward = Aesthetic::from_pretrained(&dir, head, &device).unwrap();
    assert_prefers_clean(
        "aesthetic",
        &reward,
        &[
            Perturbation::Noise,
            Perturbation::Blur,
            Perturbation::LowContrast,
        ],
        &device,
    );
}
