//! The distillation stage: latent consistency distillation (Luo et al. 2023, Algorithm 1) of the
//! teacher into an LCM, step for step as diffusers' `train_lcm_distill_sd_wds.py`:
//!
//! ```text
//! i ~ U{0..49},  t = τ_i on the 50-step skip grid τ = [19, 39, …, 999],  s = max(t − 20, 0)
//! w ~ U[w_min, w_max],  x_t = √ā_t x_0 + √(1 − ā_t) ε
//! student:  f_θ(x_t, t, w, c) = c_skip(t) x_t + c_out(t) x̂_0(ε_θ(x_t, t, w, c))
//! teacher (CFG, the DDIM solver):  x̂_0 = x̂_0^c + w (x̂_0^c − x̂_0^u),  ε̂ = ε̂^c + w (ε̂^c − ε̂^u)
//!                                   x_s = √ā_s x̂_0 + √(1 − ā_s) ε̂
//! target:   f_θ⁻(x_s, s, w, c)  (θ⁻ the EMA of θ, decay μ)
//! loss:     Huber_c(f_θ − f_θ⁻) = mean(√((f_θ − f_θ⁻)² + c²) − c)
//! ```
//!
//! The skip grid is [`LcmScheduler::origin_timesteps`] and `c_skip`, `c_out` are
//! [`LcmScheduler::boundary_condition`]: the same scalings the LCM sampler applies. The student
//! starts from the teacher's weights plus a guidance embedding (`time_cond_proj_dim`, diffusers'
//! `guidance_scale_embedding` of `w`), whose layer is freshly initialised; the target starts as
//! the student.

use std::path::Path;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use rand::RngExt;
use rocm_models::{UNet2DConditionModel, UNet2DConditionModelConfig};
use rocm_sampler::LcmScheduler;

use super::latents::{LatentCache, per_sample};
use super::teacher::{add_noise, timestep_tensor};
use super::{OnStep, Shard, StageOptions, StepReport, Trainer, host_noise};
use crate::Error;
use crate::export::Storage;

/// The distillation's settings beyond [`StageOptions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillOptions {
    /// Smallest guidance `w` (diffusers' `w_min`).
    pub w_min: f32,
    /// Largest guidance `w` (diffusers' `w_max`).
    pub w_max: f32,
    /// EMA decay `μ` of the target network (diffusers' `ema_decay`, 0.95).
    pub ema_decay: f32,
    /// Huber `c` (diffusers' `huber_c`, 0.001); `None` for the L2 loss.
    pub huber_c: Option<f32>,
    /// Width of the guidance embedding (`time_cond_proj_dim`).
    pub time_cond_proj_dim: usize,
}

impl Default for DistillOptions {
    /// `w ∈ [2, 8]` (guidance scales 3 to 9 in diffusers' `w = g − 1`), μ = 0.95, Huber c = 0.001,
    /// a 32-wide guidance embedding.
    fn default() -> Self {
        Self {
            w_min: 2.0,
            w_max: 8.0,
            ema_decay: 0.95,
            huber_c: Some(0.001),
            time_cond_proj_dim: 32,
        }
    }
}

/// The student's config: the teacher's with a guidance embedding.
pub fn student_config(
    teacher: &UNet2DConditionModelConfig,
    distill: &DistillOptions,
) -> UNet2DConditionModelConfig {
    teacher
        .clone()
        .with_time_cond_proj_dim(Some(distill.time_cond_proj_dim))
}

/// A student on `device`: `config`'s UNet with every weight the teacher has copied from it
/// (the guidance embedding's layer keeps its fresh initialisation).
pub fn student_from_teacher(
    teacher: &UNet2DConditionModel,
    config: &UNet2DConditionModelConfig,
    device: &Device,
) -> Result<UNet2DConditionModel, Error> {
    let err = |message: String| Error::Weights {
        path: "<teacher>".into(),
        message,
    };
    let mut save = SafetensorsStore::from_bytes(None);
    teacher
        .save_into(&mut save)
        .map_err(|e| err(format!("collecting the teacher's tensors: {e}")))?;
    let bytes = save
        .get_bytes()
        .map_err(|e| err(format!("serialising the teacher: {e}")))?;
    let mut student = config.init(device);
    let mut load = SafetensorsStore::from_bytes(Some(bytes)).allow_partial(true);
    let result = student
        .load_from(&mut load)
        .map_err(|e| err(format!("loading the teacher into the student: {e}")))?;
    let unexpected: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| !p.starts_with("time_embedding.cond_proj"))
        .chain(result.unused.iter().cloned())
        .collect();
    if !unexpected.is_empty() || !result.errors.is_empty() {
        return Err(err(format!(
            "teacher and student differ beyond cond_proj: {unexpected:?} {:?}",
            result.errors
        )));
    }
    Ok(student)
}

/// Collects every float parameter, flattened, in visiting order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten::<1>(0, D - 1));
    }
}

/// `θ⁻ ← μ θ⁻ + (1 − μ) θ` over the parameters, in visiting order.
struct Ema {
    online: std::vec::IntoIter<Tensor<1>>,
    decay: f32,
}

impl ModuleMapper for Ema {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(online) = self.online.next() else {
            return param;
        };
        let decay = self.decay;
        param.map(|target| {
            let online = online.reshape(target.dims());
            target * decay + online * (1.0 - decay)
        })
    }
}

/// The EMA update of `target` towards `online` (diffusers' `update_ema`); both have one
/// architecture.
pub fn update_ema(
    target: UNet2DConditionModel,
    online: &UNet2DConditionModel,
    decay: f32,
) -> UNet2DConditionModel {
    let mut collect = Collect(Vec::new());
    online.visit(&mut collect);
    target.map(&mut Ema {
        online: collect.0.into_iter(),
        decay,
    })
}

/// The frozen models of a distillation step (on the device without autodiff).
#[derive(Debug)]
pub struct Frozen<'a> {
    /// The teacher.
    pub teacher: &'a UNet2DConditionModel,
    /// The EMA target network.
    pub target: &'a UNet2DConditionModel,
}

/// The consistency-distillation loss of step `k` (module docs) on `shard`'s rows of the step's
/// batch (their mean times [`Shard::weight`]; [`Shard::whole`] gives the batch's loss): the
/// student's prediction on `device` (with autodiff when training), the teacher's DDIM step and
/// the target on `inner`.
#[allow(clippy::too_many_arguments)]
pub fn loss(
    student: &UNet2DConditionModel,
    frozen: &Frozen<'_>,
    cache: &LatentCache,
    scheduler: &LcmScheduler,
    options: &StageOptions,
    distill: &DistillOptions,
    k: usize,
    shard: &Shard,
    device: &Device,
    inner: &Device,
) -> Tensor<1> {
    let mut rng = options.rng(k);
    let batch = cache.batch(&mut rng, options.batch, 0.0, inner);
    let grid = scheduler.origin_timesteps(); // descending: [999, …, 19]
    let skip = scheduler.config().num_train_timesteps / scheduler.config().original_inference_steps;
    let start: Vec<usize> = (0..options.batch)
        .map(|_| grid[rng.random_range(0..grid.len())])
        .collect();
    let w: Vec<f32> = (0..options.batch)
        .map(|_| rng.random_range(distill.w_min..=distill.w_max))
        .collect();
    let noise = shard.narrow(host_noise(batch.latents.dims(), &mut rng, inner));
    // This shard's rows from here on.
    let b = shard.len();
    let (start, w) = (shard.slice(&start).to_vec(), shard.slice(&w).to_vec());
    let prev: Vec<usize> = start.iter().map(|&t| t.saturating_sub(skip)).collect();
    let (latents, text) = (shard.narrow(batch.latents), shard.narrow(batch.text));
    let empty = shard.narrow(batch.empty);
    let x_t = add_noise(scheduler.schedule(), latents, noise, &start);
    let w_inner = Tensor::<1>::from_data(TensorData::new(w.clone(), [b]), inner);
    let w_cond = per_sample(&w, inner);

    // The teacher's CFG estimate and one DDIM step from t to s.
    let t_inner = timestep_tensor(&start, inner);
    let eps_both = frozen.teacher.forward(
        Tensor::cat(vec![x_t.clone(), x_t.clone()], 0),
        Tensor::cat(vec![t_inner.clone(), t_inner], 0),
        Tensor::cat(vec![text.clone(), empty], 0),
        None,
    );
    let eps_c = eps_both.clone().narrow(0, 0, b);
    let eps_u = eps_both.narrow(0, b, b);
    let (sig_t, sigma_t) = signal_sigma(scheduler, &start, inner);
    let x0 = |eps: Tensor<4>| (x_t.clone() - eps * sigma_t.clone()) / sig_t.clone();
    let (x0_c, x0_u) = (x0(eps_c.clone()), x0(eps_u.clone()));
    let x0_hat = x0_c.clone() + (x0_c - x0_u) * w_cond.clone();
    let eps_hat = eps_c.clone() + (eps_c - eps_u) * w_cond;
    let (sig_s, sigma_s) = signal_sigma(scheduler, &prev, inner);
    let x_s = x0_hat * sig_s.clone() + eps_hat * sigma_s.clone();

    // The target f_θ⁻(x_s, s).
    let cond = frozen.target.timestep_cond(Some(&w_inner));
    let eps_target = frozen.target.forward(
        x_s.clone(),
        timestep_tensor(&prev, inner),
        text.clone(),
        cond,
    );
    let target = consistency(scheduler, &prev, x_s.clone(), eps_target, &sig_s, &sigma_s);

    // The student f_θ(x_t, t).
    let to_device = |x: Tensor<4>| Tensor::<4>::from_data(x.into_data(), device);
    let x_t = to_device(x_t);
    let target = to_device(target);
    let w_dev = Tensor::<1>::from_data(TensorData::new(w, [b]), device);
    let text = Tensor::<3>::from_data(text.into_data(), device);
    let eps_student = student.forward(
        x_t.clone(),
        timestep_tensor(&start, device),
        text,
        student.timestep_cond(Some(&w_dev)),
    );
    let (sig_t, sigma_t) = signal_sigma(scheduler, &start, device);
    let pred = consistency(scheduler, &start, x_t, eps_student, &sig_t, &sigma_t);
    let diff = pred - target;
    let mean = match distill.huber_c {
        Some(c) => ((diff.square() + c * c).sqrt() - c).mean(),
        None => diff.square().mean(),
    };
    mean * shard.weight()
}

/// `(√ā_t, √(1 − ā_t))` per sample, `[B, 1, 1, 1]` each.
fn signal_sigma(
    scheduler: &LcmScheduler,
    timesteps: &[usize],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let abar: Vec<f32> = timesteps
        .iter()
        .map(|&t| scheduler.alpha_cumprod(t))
        .collect();
    let signal: Vec<f32> = abar.iter().map(|a| a.sqrt()).collect();
    let sigma: Vec<f32> = abar.iter().map(|a| (1.0 - a).sqrt()).collect();
    (per_sample(&signal, device), per_sample(&sigma, device))
}

/// `c_skip(t) x + c_out(t) x̂_0(ε)` per sample, the scalings of [`LcmScheduler::boundary_condition`].
fn consistency(
    scheduler: &LcmScheduler,
    timesteps: &[usize],
    x: Tensor<4>,
    eps: Tensor<4>,
    signal: &Tensor<4>,
    sigma: &Tensor<4>,
) -> Tensor<4> {
    let device = x.device();
    let (skip, out): (Vec<f32>, Vec<f32>) = timesteps
        .iter()
        .map(|&t| {
            let (s, o) = scheduler.boundary_condition(t);
            (s as f32, o as f32)
        })
        .unzip();
    let x0 = (x.clone() - eps * sigma.clone()) / signal.clone();
    x * per_sample(&skip, &device) + x0 * per_sample(&out, &device)
}

/// Trains (or resumes) the LCM student of `teacher` on `cache`; checkpoints (student and target)
/// go to `work/checkpoint`. Returns the student.
#[allow(clippy::too_many_arguments)]
pub fn train(
    teacher: &UNet2DConditionModel,
    config: &UNet2DConditionModelConfig,
    cache: &LatentCache,
    options: &StageOptions,
    distill: &DistillOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<UNet2DConditionModel, Error> {
    let ckpt = work.join("checkpoint");
    let inner = device.clone();
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let scheduler = LcmScheduler::sd15();
    let (student, mut target, start) = match super::checkpoint_step(&ckpt)? {
        Some(step) => {
            let mut student = config.init(&device);
            student.load_safetensors(ckpt.join("unet.safetensors"))?;
            let mut target = config.init(&inner);
            target.load_safetensors(ckpt.join("target.safetensors"))?;
            (student, target, step)
        }
        None => {
            let student = student_from_teacher(teacher, config, &device)?;
            let target = student.valid();
            (student, target, 0)
        }
    };
    let mut trainer = if start > 0 {
        Trainer::resume(student, &ckpt)?
    } else {
        Trainer::new(student)
    };
    for k in start..options.steps {
        let frozen = Frozen {
            teacher,
            target: &target,
        };
        let loss = trainer.apply_sharded(options.lr_at(k), options.batch, |student, shard| {
            loss(
                student, &frozen, cache, &scheduler, options, distill, k, shard, &device, &inner,
            )
        });
        target = update_ema(target, &trainer.model.valid(), distill.ema_decay);
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        if options.checkpoint_due(k + 1) {
            crate::pipelines::save_unet(
                &trainer.model.valid(),
                Storage::F32,
                &ckpt.join("unet.safetensors"),
            )?;
            crate::pipelines::save_unet(&target, Storage::F32, &ckpt.join("target.safetensors"))?;
            trainer.save_state(&ckpt)?;
            super::write_checkpoint_step(&ckpt, k + 1)?;
        }
    }
    Ok(trainer.model.valid())
}
