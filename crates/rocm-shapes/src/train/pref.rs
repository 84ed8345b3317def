//! The preference-model stage ("PickScore" of the world): the world CLIP fine-tuned with a
//! Bradley–Terry loss on pairs of renders of one scene, labelled by the hidden preference with
//! logistic noise. Its score is PickScore's, `exp(logit_scale) · cos(image, prompt)`, so the
//! exported folder loads as [`rocm_rewards::PickScore`].
//!
//! A pair is two renders of a training scene, each clean (30 %) or with up to two random
//! perturbations of any kind; its label is `A ≻ B` with probability `σ((h_A − h_B) / τ)`,
//! [`LABEL_TEMPERATURE`] `τ`.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use rand::RngExt;
use rocm_models::clip::CLIPModel;
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_rewards::RewardModel;

use super::clip::{ClipTrain, checkpoint, resume};
use super::{OnStep, StageOptions, StepReport, Trainer, random_render, random_scene};
use crate::Error;
use crate::hidden::h;
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

/// `n` pairs of `split` drawn from `rng` (labels sampled with logistic noise).
pub fn pairs(rng: &mut rand::rngs::ChaCha8Rng, split: Split, n: usize) -> Vec<Pair> {
    (0..n)
        .map(|_| {
            let scene = random_scene(rng, split);
            let a = random_render(rng, &scene, 0.3, true);
            let b = random_render(rng, &scene, 0.3, true);
            let h_diff = h(&a, &scene.caption) - h(&b, &scene.caption);
            let p = 1.0 / (1.0 + (-h_diff / LABEL_TEMPERATURE).exp());
            let a_wins = rng.random_bool(f64::from(p));
            Pair {
                prompt: scene.caption,
                a,
                b,
                h_diff,
                a_wins,
            }
        })
        .collect()
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

/// Fine-tunes (or resumes) the preference model from the world CLIP `init`.
pub fn train(
    init: CLIPModel,
    tokenizer: &CLIPTokenizer,
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
        let batch = pairs(&mut options.rng(k), Split::Train, options.batch);
        let prompts: Vec<&str> = batch.iter().map(|p| p.prompt.as_str()).collect();
        let ids = tokenizer.encode_to_tensor(&prompts, &device)?;
        let l = bradley_terry_loss(&trainer.model, &batch, ids);
        let loss = trainer.apply(l, options.lr_at(k));
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
