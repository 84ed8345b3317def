//! The aesthetic stage: the LAION head format ([`rocm_rewards::AestheticHead`]: Linear layers
//! without activations, keys `layers.{0,2,4,6,7}`) on the L2-normalised image embeddings of a
//! world CLIP, regressed (MSE) on `10 · T`, ten times h's taste part, on renders with up to two
//! random taste perturbations.
//!
//! The CLIP's vision tower is fine-tuned together with the head (starting from the preference
//! model): the contrastive CLIP is trained to ignore exactly what taste measures (its captions
//! hold for perturbed renders too), so a head on frozen embeddings ranks taste poorly. The
//! result is still what [`rocm_rewards::Aesthetic`] loads: a `CLIPModel` folder and a head file.

use std::path::Path;

use burn::prelude::*;
use rocm_models::clip::CLIPModel;
use rocm_rewards::AestheticHead;
use rocm_rewards::clip_rewards::l2_normalize;
use rocm_rewards::preprocess::ClipPreprocess;

use super::{OnStep, StageOptions, StepReport, Trainer, random_render, random_scene};
use crate::Error;
use crate::export::{Storage, module_bytes};
use crate::hidden::preference;
use crate::render::Image;
use crate::world::{IMAGE_SIZE, Split};

/// The head's widths after the embedding: `d → 128 → 64 → 32 → 16 → 1` (LAION's has five Linear
/// layers too: `768 → 1024 → 128 → 64 → 16 → 1`).
pub const HEAD_WIDTHS: [usize; 5] = [128, 64, 32, 16, 1];

/// The regression target of an image: `10 · taste`.
pub fn target(image: &Image, prompt: &str) -> f32 {
    10.0 * preference(image, prompt).taste
}

/// A batch of `n` (image, target) of `split` from `rng`: renders clean with probability 0.2,
/// else with up to two random taste perturbations.
pub fn batch(rng: &mut rand::rngs::ChaCha8Rng, split: Split, n: usize) -> (Vec<Image>, Vec<f32>) {
    (0..n)
        .map(|_| {
            let scene = random_scene(rng, split);
            let image = random_render(rng, &scene, 0.2, false);
            let t = target(&image, &scene.caption);
            (image, t)
        })
        .unzip()
}

/// A fresh head on `dim`-dimensional embeddings.
pub fn init_head(dim: usize, device: &Device) -> AestheticHead {
    let widths: Vec<usize> = std::iter::once(dim).chain(HEAD_WIDTHS).collect();
    AestheticHead::init_with_widths(&widths, device)
}

/// The CLIP model and the head trained together.
#[derive(Module, Debug)]
pub struct AestheticTrain {
    /// The CLIP model (only its vision tower and projection receive gradients).
    pub clip: CLIPModel,
    /// The head.
    pub head: AestheticHead,
}

impl AestheticTrain {
    /// `clip` with a fresh head on its projection and its text tower frozen
    /// ([`AestheticTrain::with_text_frozen`]).
    pub fn new(clip: CLIPModel, device: &Device) -> Self {
        let dim = clip.visual_projection.weight.dims()[1];
        Self {
            clip,
            head: init_head(dim, device),
        }
        .with_text_frozen()
    }

    /// The model with the text tower and its projection untracked: the score never reads them,
    /// and a tracked parameter that no loss reads leaves an orphaned autodiff leaf in every
    /// shard's fork of every step, which Burn's graph cleaner then walks on every backward pass
    /// (a step of this stage slowed from 71 ms to 700 ms over 2,000 steps).
    pub fn with_text_frozen(mut self) -> Self {
        self.clip.text_model = self.clip.text_model.no_grad();
        self.clip.text_projection = self.clip.text_projection.no_grad();
        self
    }

    /// The score of images in `[0, 1]` (what [`rocm_rewards::Aesthetic`] computes).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<1> {
        let x = ClipPreprocess::new(IMAGE_SIZE).forward(images);
        self.head
            .forward(l2_normalize(self.clip.get_image_features(x)))
    }

    /// MSE between the scores of `images` and `targets`.
    pub fn loss(&self, images: &[Image], targets: &[f32]) -> Tensor<1> {
        let device = self.head.layers[0].weight.device();
        let y = Tensor::<1>::from_data(TensorData::new(targets.to_vec(), [targets.len()]), &device);
        (self.forward(Image::batch(images, &device)) - y)
            .square()
            .mean()
    }
}

/// Trains (or resumes) the head and the vision tower from `init`; checkpoints go to
/// `work/checkpoint` (`model.safetensors` + `head.safetensors`).
pub fn train(
    init: CLIPModel,
    options: &StageOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<AestheticTrain, Error> {
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let ckpt = work.join("checkpoint");
    let mut model = AestheticTrain::new(init, &device);
    let start = super::clip::resume(&mut model.clip, &ckpt)?;
    if start > 0 {
        model.head = AestheticHead::from_file(ckpt.join("head.safetensors"), &device)?;
    }
    let mut trainer = if start > 0 {
        Trainer::resume(model, &ckpt)?
    } else {
        Trainer::new(model)
    };
    // Loading a checkpoint may hand the text tower back as tracked.
    trainer.model = trainer.model.with_text_frozen();
    for k in start..options.steps {
        let (images, targets) = batch(&mut options.rng(k), Split::Train, options.batch);
        let loss = trainer.apply_sharded(options.lr_at(k), options.batch, |model, shard| {
            model.loss(shard.slice(&images), shard.slice(&targets)) * shard.weight()
        });
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        let done = k + 1;
        if options.checkpoint_due(done) {
            let valid = trainer.model.valid();
            super::clip::save_clip(&valid.clip, Storage::F32, &ckpt.join("model.safetensors"))?;
            export(&valid.head, &ckpt.join("head.safetensors"))?;
            trainer.save_state(&ckpt)?;
            super::write_checkpoint_step(&ckpt, done)?;
        }
    }
    Ok(trainer.model.valid())
}

/// Spearman's rank correlation of `a` and `b` (average ranks for ties).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    fn ranks(v: &[f32]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut k = 0;
        while k < idx.len() {
            let mut e = k;
            while e + 1 < idx.len() && v[idx[e + 1]] == v[idx[k]] {
                e += 1;
            }
            let avg = (k + e) as f64 / 2.0;
            for &i in &idx[k..=e] {
                r[i] = avg;
            }
            k = e + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-12)
}

/// Writes the head as a LAION-layout safetensors file (keys `layers.{0,2,4,6,7}.*`, f32: the
/// LAION loader keeps a file's dtype, as the upstream head is f32).
pub fn export(head: &AestheticHead, path: &Path) -> Result<(), Error> {
    const LAION_INDEX: [&str; 5] = ["0", "2", "4", "6", "7"];
    let rename = |key: &str| -> String {
        let mut parts = key.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("layers"), Some(i), Some(rest)) => {
                let i = i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| LAION_INDEX.get(i))
                    .copied()
                    .unwrap_or(i);
                format!("layers.{i}.{rest}")
            }
            _ => key.to_string(),
        }
    };
    let bytes = module_bytes(head, &[], Storage::F32, &rename, path)?;
    crate::io::write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 90.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0, 1.0, 1.0, 2.0]) > 0.7);
    }
}
