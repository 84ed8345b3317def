//! The diffusion stages of the build: the teacher (`shapes-teacher/`) and the distilled LCM
//! (`shapes-lcm/`), each trained on the cached latents of training scenes, exported as a diffusers
//! pipeline folder, loaded back through [`LcmPipeline`] and sampled on held-out prompts.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::clip::CLIPTextModel;
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_models::{AutoencoderKL, LcmPipeline, TextEncoder, UNet2DConditionModel};
use rocm_models::{UNet2DConditionModelConfig, clip::CLIPConfig};

use super::{BuildPlan, Stage};
use crate::Error;
use crate::evaluate::{Grid, accuracy, ddim_samples, held_out_prompts, lcm_samples};
use crate::pipelines::{self, PipelineKind};
use crate::train::distill::{self, DistillOptions};
use crate::train::latents::LatentCache;
use crate::train::{StageOptions, StepReport, teacher};
use crate::world::Split;

/// Training scenes encoded into the latent cache (at `--scale 1`).
pub const CACHE_SCENES: usize = 8192;
/// Held-out prompts of the test split (at `--scale 1`).
pub const EVAL_TEST: usize = 300;
/// Held-out prompts of the compositional split (at `--scale 1`).
pub const EVAL_COMPOSITIONAL: usize = 200;
/// The teacher's evaluation: DDIM steps and classifier-free guidance scale.
pub const TEACHER_EVAL: (usize, f32) = (20, 5.0);
/// The LCM's evaluation: step counts, and the guidance scale `g` (embedded as `w = g − 1`).
pub const LCM_EVAL: ([usize; 2], f32) = ([4, 8], 5.0);
/// Prompts per grid (test prompts, then compositional ones).
const GRID: (usize, usize) = (12, 4);

/// A stage's held-out measurements `(name, value)` and its sample grids.
type Measured = (Vec<(String, f64)>, Vec<Grid>);

/// The weight files of a pipeline folder.
pub fn pipeline_weights(dir: &Path) -> Vec<PathBuf> {
    vec![
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        dir.join("vae/diffusion_pytorch_model.safetensors"),
        dir.join("text_encoder/model.safetensors"),
    ]
}

impl BuildPlan {
    fn scaled(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.scale.min(1.0)).round() as usize).max(min)
    }

    /// The latent cache of the training split: the shipped VAE and the CLIP text tower.
    fn latent_cache(&self, work: &Path, device: &Device) -> Result<LatentCache, Error> {
        let clip_dir = self.dir(Stage::Clip);
        let text_dir = work.join("text_encoder");
        pipelines::write_text_encoder(&clip_dir, &text_dir)?;
        let text = TextEncoder::new(
            CLIPTokenizer::from_dir(&clip_dir)?,
            CLIPTextModel::from_pretrained(&text_dir, device)?,
            device,
        );
        let vae = AutoencoderKL::from_pretrained(self.dir(Stage::Vae), device)?;
        LatentCache::build(
            &vae,
            &text,
            Split::Train,
            1 << 34,
            self.scaled(CACHE_SCENES, 64),
            device,
        )
    }

    /// Trains, exports and evaluates the teacher or the LCM; returns the metrics and grids.
    pub(super) fn run_diffusion(
        &self,
        stage: Stage,
        options: &StageOptions,
        work: &Path,
        device: &Device,
        report: &mut dyn FnMut(StepReport),
    ) -> Result<Measured, Error> {
        let dir = self.dir(stage);
        let cache = self.latent_cache(work, device)?;
        let (vae_dir, clip_dir) = (self.dir(Stage::Vae), self.dir(Stage::Clip));
        let (test, comp) = (
            self.scaled(EVAL_TEST, 16),
            self.scaled(EVAL_COMPOSITIONAL, 8),
        );
        let prompts = held_out_prompts(test, comp);
        let mut metrics = Vec::new();
        let mut grids = Vec::new();
        let mut score = |label: &str, images: Vec<crate::render::Image>, what: String| {
            let (t, c) = (
                accuracy(&images[..test], &prompts[..test]),
                accuracy(&images[test..], &prompts[test..]),
            );
            let all = accuracy(&images, &prompts);
            metrics.push((format!("colour_shape_right_{label}_held_out"), all));
            metrics.push((format!("colour_shape_right_{label}_test"), t));
            metrics.push((format!("colour_shape_right_{label}_compositional"), c));
            grids.push(grid(&images, &prompts, test, label, what));
        };
        match stage {
            Stage::Teacher => {
                let width = CLIPConfig::from_file(clip_dir.join("config.json"))?
                    .text_config
                    .hidden_size;
                let config = teacher::world_unet_config(width);
                let model = teacher::train(&config, &cache, options, work, device, report)?;
                pipelines::export(
                    PipelineKind::StableDiffusionDdim,
                    &model,
                    &config,
                    &vae_dir,
                    &clip_dir,
                    &dir,
                )?;
                let pipeline = LcmPipeline::from_folder(&dir, device)?;
                let (steps, g) = TEACHER_EVAL;
                let images = ddim_samples(&pipeline, &prompts, steps, g, 0)?;
                score(
                    &format!("ddim_{steps}_cfg_{g}"),
                    images,
                    format!("{steps} DDIM steps, CFG {g}"),
                );
            }
            _ => {
                let teacher_dir = self.dir(Stage::Teacher).join("unet");
                let teacher = UNet2DConditionModel::from_pretrained(&teacher_dir, device)?;
                let teacher_config =
                    UNet2DConditionModelConfig::from_file(teacher_dir.join("config.json"))?;
                let settings = DistillOptions::default();
                let config = distill::student_config(&teacher_config, &settings);
                let model = distill::train(
                    &teacher, &config, &cache, options, &settings, work, device, report,
                )?;
                pipelines::export(
                    PipelineKind::Lcm,
                    &model,
                    &config,
                    &vae_dir,
                    &clip_dir,
                    &dir,
                )?;
                let pipeline = LcmPipeline::from_folder(&dir, device)?;
                let (steps, g) = LCM_EVAL;
                for k in steps {
                    let images = lcm_samples(&pipeline, &prompts, k, g, 0)?;
                    score(
                        &format!("lcm_{k}_steps"),
                        images,
                        format!("LCM, {k} steps, guidance {g}"),
                    );
                }
            }
        }
        Ok((metrics, grids))
    }
}

/// A grid of the first test and compositional prompts' samples, one row of four per prompt pair.
fn grid(
    images: &[crate::render::Image],
    prompts: &[String],
    test: usize,
    label: &str,
    what: String,
) -> Grid {
    let (t, c) = GRID;
    let picks: Vec<usize> = (0..t.min(test))
        .chain((test..prompts.len()).take(c))
        .collect();
    let caption = std::iter::once(format!(
        "{what}; seed 0; the last {c} prompts are held-out colour-shape pairs"
    ))
    .chain(
        picks
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{}: {}", n + 1, prompts[i])),
    )
    .collect();
    Grid {
        file: format!("samples_{label}.png"),
        images: picks.iter().map(|&i| images[i].clone()).collect(),
        cols: 4,
        caption,
    }
}
