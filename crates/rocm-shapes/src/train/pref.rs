//! The preference-model stage ("PickScore" of the world): the world CLIP fine-tuned with a
//! Bradley–Terry loss on pairs of renders of one scene, labelled by the hidden preference with
//! logistic noise. Its score is PickScore's, `exp(logit_scale) · cos(image, prompt)`, so the
//! exported folder loads as [`rocm_rewards::PickScore`].
//!
//! A pair is two renders of a training scene, each clean (30 %) or with up to two random
//! perturbations of any kind, or, when a [`SamplePool`] of the world LCM's samples is given, with
//! probability [`MODEL_SAMPLE_FRACTION`] two samples of one training prompt (the images a reward
//! model has to judge during fine-tuning). Its label is `A ≻ B` with probability
//! `σ((h_A − h_B) / τ)`, [`LABEL_TEMPERATURE`] `τ`.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use rand::RngExt;
use rocm_models::LcmPipeline;
use rocm_models::clip::CLIPModel;
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_rewards::RewardModel;

use super::clip::{ClipTrain, checkpoint, resume};
use super::{OnStep, StageOptions, StepReport, Trainer, random_render, random_scene};
use crate::Error;
use crate::evaluate::lcm_samples;
use crate::hidden::{h, logistic};
use crate::render::Image;
use crate::world::Split;

/// `τ` of the label noise: `P(A ≻ B) = σ((h_A − h_B) / τ)`.
pub const LABEL_TEMPERATURE: f32 = 0.05;

/// A labelled comparison.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The prompt both images were made for.
    pub prompt: String,
    /// The first image.
    pub a: Image,
    /// The second image.
    pub b: Image,
    /// `h(a) − h(b)`.
    pub h_diff: f32,
    /// The noisy label: 1 when `a` was preferred.
    pub a_wins: bool,
}

/// The share of a batch's pairs drawn from the [`SamplePool`] when there is one.
pub const MODEL_SAMPLE_FRACTION: f64 = 0.5;

/// Samples of a model for a set of prompts: `images[i]` holds `prompts[i]`'s samples, one per
/// seed, so any two of them make a pair.
#[derive(Debug, Clone, Default)]
pub struct SamplePool {
    /// The prompts (captions of one split's scenes).
    pub prompts: Vec<String>,
    /// Each prompt's samples (at least two).
    pub images: Vec<Vec<Image>>,
}

impl SamplePool {
    /// Samples of the first `n` scenes' captions of `split` from `pipeline`, `seeds` samples
    /// each: `steps` LCM steps at guidance scale `guidance`, seeded `seed`, `seed + 1000`, ….
    pub fn sample(
        pipeline: &LcmPipeline,
        split: Split,
        n: usize,
        seeds: usize,
        (steps, guidance): (usize, f32),
        seed: u64,
    ) -> Result<Self, Error> {
        let prompts: Vec<String> = split.scenes(0, n).into_iter().map(|s| s.caption).collect();
        let mut images = vec![Vec::with_capacity(seeds); prompts.len()];
        for k in 0..seeds {
            let seed = seed + 1000 * k as u64;
            let samples = lcm_samples(pipeline, &prompts, steps, guidance, seed)?;
            for (slot, image) in images.iter_mut().zip(samples) {
                slot.push(image);
            }
        }
        Ok(Self { prompts, images })
    }

    /// Whether the pool has nothing to pair.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty() || self.images.iter().all(|v| v.len() < 2)
    }
}

/// A pair labelled by `h` with logistic noise.
fn labelled(rng: &mut rand::rngs::ChaCha8Rng, prompt: String, a: Image, b: Image) -> Pair {
    let h_diff = h(&a, &prompt) - h(&b, &prompt);
    let p = logistic(h_diff / LABEL_TEMPERATURE);
    let a_wins = rng.random_bool(f64::from(p));
    Pair {
        prompt,
        a,
        b,
        h_diff,
        a_wins,
    }
}

/// Two different samples of one random prompt of `pool` (which must not be empty).
fn pool_pair(rng: &mut rand::rngs::ChaCha8Rng, pool: &SamplePool) -> Pair {
    loop {
        let i = rng.random_range(0..pool.prompts.len());
        let samples = &pool.images[i];
        if samples.len() < 2 {
            continue;
        }
        let a = rng.random_range(0..samples.len());
        let b = (a + rng.random_range(1..samples.len())) % samples.len();
        return labelled(
            rng,
            pool.prompts[i].clone(),
            samples[a].clone(),
            samples[b].clone(),
        );
    }
}

/// `n` pairs of renders of `split` drawn from `rng` (labels sampled with logistic noise).
pub fn pairs(rng: &mut rand::rngs::ChaCha8Rng, split: Split, n: usize) -> Vec<Pair> {
    mixed_pairs(rng, split, None, n)
}

/// `n` pairs of `split`: each, with probability [`MODEL_SAMPLE_FRACTION`] when `pool` is given
/// and not empty, two samples of one pool prompt, else two renders of one scene.
pub fn mixed_pairs(
    rng: &mut rand::rngs::ChaCha8Rng,
    split: Split,
    pool: Option<&SamplePool>,
    n: usize,
) -> Vec<Pair> {
    let pool = pool.filter(|p| !p.is_empty());
    (0..n)
        .map(|_| match pool {
            Some(pool) if rng.random_bool(MODEL_SAMPLE_FRACTION) => pool_pair(rng, pool),
            _ => {
                let scene = random_scene(rng, split);
                let a = random_render(rng, &scene, 0.3, true);
                let b = random_render(rng, &scene, 0.3, true);
                labelled(rng, scene.caption, a, b)
            }
        })
        .collect()
}

/// `n` pairs of samples of `pool` only (for evaluation on a held-out pool).
pub fn sample_pairs(rng: &mut rand::rngs::ChaCha8Rng, pool: &SamplePool, n: usize) -> Vec<Pair> {
    if pool.is_empty() {
        return Vec::new();
    }
    (0..n).map(|_| pool_pair(rng, pool)).collect()
}

/// The Bradley–Terry loss of a batch of pairs: `−log σ(±(s_a − s_b))`, `s = exp(logit_scale) · cos`.
pub fn bradley_terry_loss(model: &ClipTrain, pairs: &[Pair], ids: Tensor<2, Int>) -> Tensor<1> {
    let device = ids.device();
    let n = pairs.len();
    let images: Vec<Image> = pairs
        .iter()
        .map(|p| p.a.clone())
        .chain(pairs.iter().map(|p| p.b.clone()))
        .collect();
    let img = model.image_embeds(Image::batch(&images, &device));
    let txt = model.text_embeds(ids);
    let a = (img.clone().narrow(0, 0, n) * txt.clone())
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    let b = (img.narrow(0, n, n) * txt).sum_dim(1).squeeze_dim::<1>(1);
    let sign: Vec<f32> = pairs
        .iter()
        .map(|p| if p.a_wins { 1.0 } else { -1.0 })
        .collect();
    let sign = Tensor::<1>::from_data(TensorData::new(sign, [n]), &device);
    -log_sigmoid((a - b) * model.scale() * sign).mean()
}

/// Fine-tunes (or resumes) the preference model from the world CLIP `init`, on pairs of renders
/// and, when `pool` is given, of its samples ([`mixed_pairs`]).
pub fn train(
    init: CLIPModel,
    tokenizer: &CLIPTokenizer,
    pool: Option<&SamplePool>,
    options: &StageOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<CLIPModel, Error> {
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let mut clip = init;
    let ckpt = work.join("checkpoint");
    let start = resume(&mut clip, &ckpt)?;
    let model = ClipTrain::new(clip, &device);
    let mut trainer = if start > 0 {
        Trainer::resume(model, &ckpt)?
    } else {
        Trainer::new(model)
    };
    for k in start..options.steps {
        let batch = mixed_pairs(&mut options.rng(k), Split::Train, pool, options.batch);
        let prompts: Vec<&str> = batch.iter().map(|p| p.prompt.as_str()).collect();
        let ids = tokenizer.encode_to_tensor(&prompts, &device)?;
        let loss = trainer.apply_sharded(options.lr_at(k), options.batch, |model, shard| {
            bradley_terry_loss(model, shard.slice(&batch), shard.narrow_int(ids.clone()))
                * shard.weight()
        });
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        checkpoint(&trainer, options, k + 1, &ckpt)?;
    }
    Ok(trainer.model.to_clip())
}

/// Agreement with h on `pairs`: the fraction whose reward difference has the sign of
/// `h_a − h_b`, over the pairs with `|h_a − h_b| ≥ 0.01` (the others are ties to h).
pub fn agreement(reward: &dyn RewardModel, pairs: &[Pair], device: &Device) -> f64 {
    let (mut agree, mut counted) = (0usize, 0usize);
    for chunk in pairs.chunks(64) {
        let prompts: Vec<String> = chunk.iter().map(|p| p.prompt.clone()).collect();
        let score = |images: Vec<Image>| {
            super::host_values(reward.reward(Image::batch(&images, device), &prompts))
        };
        let sa = score(chunk.iter().map(|p| p.a.clone()).collect());
        let sb = score(chunk.iter().map(|p| p.b.clone()).collect());
        for ((p, a), b) in chunk.iter().zip(sa).zip(sb) {
            if p.h_diff.abs() >= 0.01 {
                counted += 1;
                agree += usize::from((a - b) * p.h_diff > 0.0);
            }
        }
    }
    agree as f64 / counted.max(1) as f64
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    use super::*;
    use crate::render::{Perturbation, render_perturbed};

    /// A pool of renders standing in for model samples: 8 prompts × 3 images, noised at three
    /// different strengths (so no two are equal).
    fn pool() -> SamplePool {
        let scenes = Split::Train.scenes(100, 8);
        SamplePool {
            prompts: scenes.iter().map(|s| s.caption.clone()).collect(),
            images: scenes
                .iter()
                .map(|s| {
                    [0.2, 0.5, 0.8]
                        .map(|x| render_perturbed(s, &[(Perturbation::Noise, x)], 1))
                        .to_vec()
                })
                .collect(),
        }
    }

    #[test]
    fn without_a_pool_the_pairs_are_the_render_pairs() {
        let plain = pairs(&mut ChaCha8Rng::seed_from_u64(1), Split::Train, 16);
        let mixed = mixed_pairs(&mut ChaCha8Rng::seed_from_u64(1), Split::Train, None, 16);
        let empty = SamplePool::default();
        let with_empty = mixed_pairs(
            &mut ChaCha8Rng::seed_from_u64(1),
            Split::Train,
            Some(&empty),
            16,
        );
        for other in [&mixed, &with_empty] {
            for (p, q) in plain.iter().zip(other.iter()) {
                assert_eq!(
                    (&p.prompt, p.h_diff, p.a_wins),
                    (&q.prompt, q.h_diff, q.a_wins)
                );
            }
        }
    }

    #[test]
    fn about_half_the_pairs_are_two_different_samples_of_one_pool_prompt() {
        let pool = pool();
        let batch = mixed_pairs(
            &mut ChaCha8Rng::seed_from_u64(2),
            Split::Train,
            Some(&pool),
            400,
        );
        let mut from_pool = 0;
        for p in &batch {
            // A pool pair's images are pool samples of its prompt (a render of a random scene
            // may share a pool prompt's caption, never its perturbed pixels).
            let Some(i) = pool.prompts.iter().position(|q| *q == p.prompt) else {
                continue;
            };
            let index = |x: &Image| pool.images[i].iter().position(|y| y.pixels == x.pixels);
            let (Some(a), Some(b)) = (index(&p.a), index(&p.b)) else {
                continue;
            };
            from_pool += 1;
            assert_ne!(a, b, "a pair of one sample with itself");
            let h_diff = h(&p.a, &p.prompt) - h(&p.b, &p.prompt);
            assert_eq!(p.h_diff, h_diff);
        }
        assert!(
            (150..=250).contains(&from_pool),
            "{from_pool} of 400 from the pool"
        );
        let held_out = sample_pairs(&mut ChaCha8Rng::seed_from_u64(3), &pool, 50);
        assert_eq!(held_out.len(), 50);
        assert!(held_out.iter().all(|p| pool.prompts.contains(&p.prompt)));
        assert!(
            sample_pairs(&mut ChaCha8Rng::seed_from_u64(3), &SamplePool::default(), 5).is_empty()
        );
    }
}
