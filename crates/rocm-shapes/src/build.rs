//! The reproducible build of the world's models (what `examples/build_world.rs` runs): each
//! [`Stage`] trains from its seed, exports its folder, measures its quality on held-out data
//! through the same loaders the rest of ROCM uses, and writes the folder's README and a line of
//! `report.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use rocm_models::clip::CLIPModel;
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_models::{AutoencoderKL, LcmPipeline};
use rocm_rewards::{Aesthetic, ClipBackbone, PickScore, RewardModel};

mod diffusion;
pub use diffusion::{
    CACHE_SCENES, EVAL_COMPOSITIONAL, EVAL_TEST, LCM_EVAL, TEACHER_EVAL, pipeline_weights,
};

use crate::Error;
use crate::evaluate::Grid;
use crate::render::{Image, render};
use crate::tokenizer::WorldBpe;
use crate::train::{self, StageOptions, StepReport, aesthetic, clip, pref, vae};
use crate::world::Split;

/// Fails, naming `dir`, when it cannot be created or written (checked before a stage trains).
pub fn check_writable(dir: &Path) -> Result<(), Error> {
    crate::io::create_dir(dir)?;
    let probe = dir.join(".write-probe");
    crate::io::write(&probe, b"")?;
    std::fs::remove_file(&probe).map_err(|source| Error::Io {
        path: probe,
        source,
    })
}

/// Optimisation steps of the teacher (at `--scale 1`).
pub const TEACHER_STEPS: usize = 7000;
/// Optimisation steps of the distillation (at `--scale 1`).
pub const DISTILL_STEPS: usize = 1800;

/// A stage of the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The VAE (`vae/`).
    Vae,
    /// The CLIP model and tokenizer (`clip/`).
    Clip,
    /// The preference model (`pref/`, needs `clip/`).
    Pref,
    /// The aesthetic model (`aesthetic/`: a CLIP folder and its head, needs `pref/`).
    Aesthetic,
    /// The diffusion teacher (`shapes-teacher/`, a `StableDiffusionPipeline` folder; needs
    /// `vae/` and `clip/`).
    Teacher,
    /// The distilled latent consistency model (`shapes-lcm/`, a
    /// `LatentConsistencyModelPipeline` folder; needs `shapes-teacher/`).
    Distill,
}

/// Every stage, in build order: the preference model comes after the LCM, whose samples it is
/// also trained on (a stage's seed depends on the stage, not on this order).
pub const STAGES: [Stage; 6] = [
    Stage::Vae,
    Stage::Clip,
    Stage::Teacher,
    Stage::Distill,
    Stage::Pref,
    Stage::Aesthetic,
];

/// LCM samples per prompt in the preference stage's pools, and the sampling (4 steps, g = 5).
const POOL_SEEDS: usize = 4;
/// Training prompts of the preference stage's LCM sample pool (at `--scale 1`).
const POOL_TRAIN_PROMPTS: usize = 1024;
/// Held-out (test-split) prompts of its evaluation pool (at `--scale 1`).
const POOL_TEST_PROMPTS: usize = 256;

impl Stage {
    /// The stage's name and output folder.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vae => "vae",
            Self::Clip => "clip",
            Self::Pref => "pref",
            Self::Aesthetic => "aesthetic",
            Self::Teacher => "teacher",
            Self::Distill => "distill",
        }
    }

    /// The stage's output folder under the build's `out`.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Teacher => "shapes-teacher",
            Self::Distill => "shapes-lcm",
            other => other.name(),
        }
    }

    /// Parses a name (`all` is the caller's business).
    pub fn parse(name: &str) -> Result<Self, Error> {
        STAGES
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| Error::Setting {
                name: "stage".into(),
                value: name.into(),
                reason: "expected vae, clip, pref, aesthetic, teacher, distill or all".into(),
            })
    }
}

/// Where and how to build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    /// The shipped folders go to `out/<stage>`.
    pub out: PathBuf,
    /// Checkpoints go to `work/<stage>/checkpoint`.
    pub work: PathBuf,
    /// The seed of every stage's data and initialisation.
    pub seed: u64,
    /// Multiplies every stage's step count (1 for the shipped build; small for smoke runs).
    pub scale: f64,
}

/// What a stage measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary {
    /// The stage.
    pub stage: Stage,
    /// Optimisation steps.
    pub steps: usize,
    /// Wall-clock seconds (training, export and evaluation).
    pub seconds: f64,
    /// The last step's loss.
    pub final_loss: f32,
    /// `(name, value)` of the held-out measurements.
    pub metrics: Vec<(String, f64)>,
    /// Sample grids to write into the stage's folder (the diffusion stages).
    pub grids: Vec<Grid>,
    /// Bytes of the exported weights.
    pub weight_bytes: u64,
}

impl BuildPlan {
    fn options(&self, stage: Stage) -> StageOptions {
        let (steps, batch, lr) = match stage {
            Stage::Vae => (6000, 16, 2e-3),
            Stage::Clip => (5400, 64, 1e-3),
            Stage::Pref => (2000, 32, 2e-4),
            Stage::Aesthetic => (5400, 64, 2e-3),
            Stage::Teacher => (TEACHER_STEPS, 64, 1e-3),
            Stage::Distill => (DISTILL_STEPS, 32, 1e-4),
        };
        StageOptions {
            steps: ((steps as f64 * self.scale).round() as usize).max(1),
            batch,
            lr,
            seed: self.seed.wrapping_add(stage as u64 * 1000),
            checkpoint_every: 100,
        }
    }

    /// The shipped folder of `stage`.
    pub fn dir(&self, stage: Stage) -> PathBuf {
        self.out.join(stage.folder())
    }

    fn eval_count(&self, full: usize) -> usize {
        ((full as f64 * self.scale.min(1.0)).round() as usize).max(16)
    }

    /// Runs `stage` (resuming from its checkpoint when there is one).
    pub fn run(
        &self,
        stage: Stage,
        device: &Device,
        on_step: &mut dyn FnMut(StepReport),
    ) -> Result<StageSummary, Error> {
        let start = Instant::now();
        let options = self.options(stage);
        let work = self.work.join(stage.name());
        let dir = self.dir(stage);
        crate::io::create_dir(&dir)?;
        let mut last = f32::NAN;
        let mut report = |r: StepReport| {
            last = r.loss;
            on_step(r);
        };
        let bpe = WorldBpe::learn();
        let mut grids = Vec::new();
        let (metrics, weights) = match stage {
            Stage::Vae => {
                let config = vae::world_vae_config();
                let model = vae::train(&config, &options, &work, device, &mut report)?;
                let factor = vae::measure_scaling_factor(&model, self.eval_count(512), device);
                vae::export(&model, &config, factor, &dir)?;
                let shipped = AutoencoderKL::from_pretrained(&dir, device)?;
                let test: Vec<Image> = Split::Test
                    .scenes(0, self.eval_count(512))
                    .iter()
                    .map(render)
                    .collect();
                let comp: Vec<Image> = Split::Compositional
                    .scenes(0, self.eval_count(256))
                    .iter()
                    .map(render)
                    .collect();
                let metrics = vec![
                    ("scaling_factor".into(), factor),
                    ("psnr_test_db".into(), vae::psnr(&shipped, &test, device)),
                    (
                        "psnr_compositional_db".into(),
                        vae::psnr(&shipped, &comp, device),
                    ),
                ];
                (
                    metrics,
                    vec![dir.join("diffusion_pytorch_model.safetensors")],
                )
            }
            Stage::Clip => {
                let config = clip::world_clip_config(&bpe, 64, 2);
                bpe.write(&dir)?;
                let tokenizer = CLIPTokenizer::from_dir(&dir)?;
                let model = clip::train(&config, &tokenizer, &options, &work, device, &mut report)?;
                clip::export(&model, &config, &bpe, &dir)?;
                let backbone = ClipBackbone::from_pretrained(&path_str(&dir)?, device)?;
                let (c, s) = clip::zero_shot(
                    &backbone,
                    &Split::Test.scenes(0, self.eval_count(1000)),
                    device,
                );
                let (cc, sc) = clip::zero_shot(
                    &backbone,
                    &Split::Compositional.scenes(0, self.eval_count(500)),
                    device,
                );
                let metrics = vec![
                    ("zero_shot_colour_test".into(), c),
                    ("zero_shot_shape_test".into(), s),
                    ("zero_shot_colour_compositional".into(), cc),
                    ("zero_shot_shape_compositional".into(), sc),
                ];
                (metrics, vec![dir.join("model.safetensors")])
            }
            Stage::Pref => {
                let clip_dir = self.dir(Stage::Clip);
                let init = CLIPModel::from_pretrained(&clip_dir, &device.clone().autodiff())?;
                let config =
                    rocm_models::clip::CLIPConfig::from_file(clip_dir.join("config.json"))?;
                let tokenizer = CLIPTokenizer::from_dir(&clip_dir)?;
                // The LCM's samples, when it has been built: training prompts for the pairs,
                // test prompts for the held-out agreement on samples.
                let lcm_dir = self.dir(Stage::Distill);
                let lcm = if lcm_dir.join("model_index.json").is_file() {
                    Some(LcmPipeline::from_folder(&lcm_dir, device)?)
                } else {
                    None
                };
                let pool = |split: Split, prompts: usize, seed: u64| {
                    lcm.as_ref()
                        .map(|p| {
                            pref::SamplePool::sample(
                                p,
                                split,
                                self.eval_count(prompts),
                                POOL_SEEDS,
                                (LCM_EVAL.0[0], LCM_EVAL.1),
                                seed,
                            )
                        })
                        .transpose()
                };
                let train_pool = pool(Split::Train, POOL_TRAIN_PROMPTS, options.seed)?;
                let model = pref::train(
                    init,
                    &tokenizer,
                    train_pool.as_ref(),
                    &options,
                    &work,
                    device,
                    &mut report,
                )?;
                clip::export(&model, &config, &bpe, &dir)?;
                let shipped = PickScore::from_pretrained(&path_str(&dir)?, device)?;
                let base = PickScore::from_pretrained(&path_str(&clip_dir)?, device)?;
                let mut rng = StageOptions {
                    seed: 77,
                    ..options.clone()
                }
                .rng(0);
                let held_out = pref::pairs(&mut rng, Split::Test, self.eval_count(1000));
                let mut metrics = vec![
                    (
                        "agreement_with_h_test".into(),
                        pref::agreement(&shipped, &held_out, device),
                    ),
                    (
                        "agreement_of_untuned_clip".into(),
                        pref::agreement(&base, &held_out, device),
                    ),
                ];
                if let Some(test_pool) = pool(Split::Test, POOL_TEST_PROMPTS, 77)? {
                    let held_out = pref::sample_pairs(&mut rng, &test_pool, self.eval_count(1000));
                    metrics.push((
                        "agreement_with_h_lcm_samples_test".into(),
                        pref::agreement(&shipped, &held_out, device),
                    ));
                    metrics.push((
                        "agreement_of_untuned_clip_lcm_samples_test".into(),
                        pref::agreement(&base, &held_out, device),
                    ));
                }
                (metrics, vec![dir.join("model.safetensors")])
            }
            Stage::Aesthetic => {
                let pref_dir = self.dir(Stage::Pref);
                let init = CLIPModel::from_pretrained(&pref_dir, &device.clone().autodiff())?;
                let config =
                    rocm_models::clip::CLIPConfig::from_file(pref_dir.join("config.json"))?;
                let trained = aesthetic::train(init, &options, &work, device, &mut report)?;
                clip::export(&trained.clip, &config, &bpe, &dir)?;
                let path = dir.join("head.safetensors");
                aesthetic::export(&trained.head, &path)?;
                crate::io::write_json(
                    &dir.join("head_config.json"),
                    &serde_json::json!({
                        "format": "LAION improved-aesthetic-predictor head (Linear layers, no activations)",
                        "input": "L2-normalised image embedding of this folder's CLIPModel (get_image_features)",
                        "widths": std::iter::once(config.projection_dim).chain(aesthetic::HEAD_WIDTHS).collect::<Vec<_>>(),
                        "target": "10 * taste part of h",
                    }),
                )?;
                let shipped = Aesthetic::from_pretrained(&path_str(&dir)?, &path, device)?;
                let mut rng = options.rng(1 << 51);
                let (scores, tastes) =
                    held_out_aesthetic(&shipped, &mut rng, self.eval_count(1000), device);
                let metrics = vec![(
                    "spearman_with_taste_test".into(),
                    aesthetic::spearman(&scores, &tastes),
                )];
                (metrics, vec![dir.join("model.safetensors"), path])
            }
            Stage::Teacher | Stage::Distill => {
                let (metrics, grid) =
                    self.run_diffusion(stage, &options, &work, device, &mut report)?;
                grids = grid;
                (metrics, pipeline_weights(&dir))
            }
        };
        let weight_bytes = weights
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(StageSummary {
            stage,
            steps: options.steps,
            seconds: start.elapsed().as_secs_f64(),
            final_loss: last,
            metrics,
            grids,
            weight_bytes,
        })
    }
}

fn held_out_aesthetic(
    reward: &dyn RewardModel,
    rng: &mut rand::rngs::ChaCha8Rng,
    n: usize,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let (mut scores, mut tastes) = (Vec::new(), Vec::new());
    let mut images = Vec::new();
    let mut prompts = Vec::new();
    for k in 0..n {
        let scene = train::random_scene(rng, Split::Test);
        let image = train::random_render(rng, &scene, 0.2, false);
        tastes.push(crate::hidden::preference(&image, &scene.caption).taste);
        images.push(image);
        prompts.push(scene.caption);
        if images.len() == 64 || k + 1 == n {
            scores.extend(train::host_values(
                reward.reward(Image::batch(&images, device), &prompts),
            ));
            images.clear();
            prompts.clear();
        }
    }
    (scores, tastes)
}

fn path_str(dir: &Path) -> Result<String, Error> {
    dir.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Setting {
            name: "path".into(),
            value: dir.display().to_string(),
            reason: "must be UTF-8".into(),
        })
}

/// How each folder was made (the README's first section).
fn how_made(stage: Stage) -> &'static str {
    match stage {
        Stage::Vae => {
            "A diffusers `AutoencoderKL` (3 levels, 16/32/32 channels, 4 latent channels, 32 × 32 → 8 × 8) \
             trained on renders of the training split (85 % clean, 15 % with up to two random perturbations) with \
             `mean|x̂ − x| + mean(x̂ − x)² + 1e-4 · KL` on the [−1, 1] scale, AdamW, warm-up + cosine learning rate. \
             `scaling_factor` is `1 / std` of the latent means of 512 training renders."
        }
        Stage::Clip => {
            "A transformers `CLIPModel` (text and vision towers of width 64, 2 layers, 4 heads; 4 × 4 patches; \
             projection 64), initialised as transformers' `CLIPModel` is (`_init_weights`: embeddings N(0, 0.02²), \
             width- and depth-scaled attention and MLP weights, zero biases), trained with the symmetric contrastive \
             loss (captions equal within a batch count as positives) on (render, caption) pairs of the training \
             split, half of the scenes followed by a twin that differs in one object's shape only (a hard negative: \
             the shape is otherwise hardly needed to tell captions apart), 20 % of the renders mildly perturbed, \
             plus a training-only auxiliary loss: one linear head reads which shapes the caption names off both the \
             image and the text embedding (binary cross-entropy, weight 1; not part of the exported model). \
             The tokenizer is byte-level BPE in OpenAI CLIP's layout whose merges make every grammar word one token \
             (`vocab.json`, `merges.txt`, length 20)."
        }
        Stage::Pref => {
            "The world CLIP (`../clip`) fine-tuned as a PickScore-style preference model: score \
             `exp(logit_scale) · cos(image, prompt)`, Bradley–Terry loss on pairs of renders of one training scene \
             (each clean or with up to two random perturbations) and, for half the pairs when `../shapes-lcm` exists, \
             on pairs of two of the LCM's samples of one training prompt (4 seeds of 1,024 prompts, 4 steps, g = 5), \
             labelled A ≻ B with probability `σ((h_A − h_B) / 0.05)` by the hidden preference h of `rocm_shapes::hidden`."
        }
        Stage::Aesthetic => {
            "A LAION-format aesthetic head (`AestheticHead`: five Linear layers without activations, keys \
             `layers.{0,2,4,6,7}`, `head.safetensors`) on the L2-normalised image embeddings of a world CLIP \
             (this folder's `CLIPModel`), regressed with MSE on 10 × the taste part of h, on renders of the \
             training split with up to two random taste perturbations (a fifth clean). The CLIP starts from the \
             preference model (`../pref`) and its vision tower is fine-tuned with the head: the contrastive CLIP \
             learns to ignore what taste measures, so a head on frozen embeddings ranks taste poorly. \
             Load it with `--reward aesthetic --reward-model <world>/aesthetic --reward-head <world>/aesthetic/head.safetensors`."
        }
        Stage::Teacher => {
            "A diffusers `StableDiffusionPipeline` folder (`DDIMScheduler` with Stable Diffusion 1.x's settings, for \
             the diffusion baselines DDPO, DPOK and D3PO). `unet/` is a `UNet2DConditionModel` (two levels of 32 and 64 \
             channels on the 4 × 8 × 8 latents, one resnet per down block, cross-attention with 4 heads in every block, \
             `cross_attention_dim` 64) trained from scratch with the ε-prediction loss on SD's scaled-linear \
             1000-step schedule, on the scaled latents of 8192 training renders (times `--scale` below 1) encoded by the world VAE (`../vae`, \
             copied as `vae/`), conditioned on the world CLIP's text tower (`../clip`'s `text_model`, copied as \
             `text_encoder/` with its tokenizer), each caption replaced by the empty prompt with probability 0.1 \
             (classifier-free guidance). AdamW, batch 64, warm-up + cosine learning rate."
        }
        Stage::Distill => {
            "A diffusers `LatentConsistencyModelPipeline` folder (`LCMScheduler`, 50 original steps). `unet/` is the \
             teacher's (`../shapes-teacher`) `UNet2DConditionModel` plus a guidance embedding (`time_cond_proj_dim` \
             32, diffusers' `guidance_scale_embedding` of `w`), trained by latent consistency distillation as \
             diffusers' `train_lcm_distill_sd_wds.py` does: a timestep `t` of the 50-step skip grid, `w ~ U[2, 8]`, \
             one DDIM step of the teacher with classifier-free guidance `w` from `t` to `t − 20`, an EMA target \
             network (decay 0.95) evaluated there, a Huber loss (c = 0.001) between the student's and the target's \
             consistency functions `c_skip x + c_out x̂_0` with the `LCMScheduler`'s boundary scalings. AdamW, \
             batch 32, warm-up + cosine learning rate. `vae/`, `text_encoder/` and `tokenizer/` are the teacher's. \
             Sample it with guidance scale `g` (diffusers' `w = g − 1`), e.g. 4 to 8 steps at `g = 5`."
        }
    }
}

/// Writes `<out>/<stage>/README.md`: how it was made, the command, the measured quality, the license.
pub fn write_readme(plan: &BuildPlan, summary: &StageSummary) -> Result<(), Error> {
    let stage = summary.stage;
    let mut text = format!(
        "# The shapes world: `{}`\n\n{}\n\n",
        stage.folder(),
        how_made(stage)
    );
    text.push_str(&format!(
        "Made by `cargo run --release -p rocm-shapes --example build_world -- --stage {} --seed {}{}` \
         ({} steps, {:.1} minutes on this machine, final training loss {:.4}).\n\n",
        stage.name(),
        plan.seed,
        if plan.scale == 1.0 { String::new() } else { format!(" --scale {}", plan.scale) },
        summary.steps,
        summary.seconds / 60.0,
        summary.final_loss
    ));
    text.push_str("## Measured on held-out data (test seed range; compositional = held-out colour–shape pairs)\n\n");
    text.push_str("| metric | value |\n|---|---|\n");
    for (k, v) in &summary.metrics {
        text.push_str(&format!("| {k} | {v:.4} |\n"));
    }
    for grid in &summary.grids {
        crate::evaluate::write_grid(grid, 4, &plan.dir(stage).join(&grid.file))?;
        let (head, prompts) = grid.caption.split_first().unzip();
        text.push_str(&format!(
            "\n{} (rows of {}, left to right):\n\n![{}]({})\n\n{}\n",
            head.map(String::as_str).unwrap_or(""),
            grid.cols,
            grid.file,
            grid.file,
            prompts.unwrap_or_default().join("; ")
        ));
    }
    text.push_str(&format!(
        "\nWeights: {} bytes ({}).\n\n",
        summary.weight_bytes,
        match stage {
            Stage::Aesthetic => "CLIP f16, head f32",
            Stage::Teacher | Stage::Distill => "UNet, VAE and text encoder, f16",
            _ => "f16",
        }
    ));
    text.push_str(
        "## License\n\nTrained from scratch by the rocm-rs developers on procedurally generated data; \
         released under MIT OR Apache-2.0, like the rest of the workspace.\n",
    );
    crate::io::write(&plan.dir(stage).join("README.md"), text.as_bytes())
}

/// Updates `<out>/report.json` with this stage's summary.
pub fn record(plan: &BuildPlan, summary: &StageSummary) -> Result<(), Error> {
    let path = plan.out.join("report.json");
    let mut report = if path.is_file() {
        crate::io::read_json(&path)?
    } else {
        serde_json::json!({})
    };
    let metrics: serde_json::Map<String, serde_json::Value> = summary
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
        .collect();
    report[summary.stage.name()] = serde_json::json!({
        "steps": summary.steps,
        "seconds": summary.seconds,
        "final_loss": summary.final_loss,
        "weight_bytes": summary.weight_bytes,
        "seed": plan.seed,
        "scale": plan.scale,
        "metrics": metrics,
    });
    crate::io::write_json(&path, &report)
}
