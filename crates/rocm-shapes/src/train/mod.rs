//! Training the world's models on Burn, each stage resumable from its checkpoint:
//! [`vae`] (AutoencoderKL), [`clip`] (contrastive CLIPModel + tokenizer), [`pref`] (a CLIPModel
//! scored like PickScore, Bradley–Terry on h-labelled pairs) and [`aesthetic`] (the LAION head
//! format on CLIP image embeddings, regressed on h's taste), and the diffusion stages on the
//! [`latents`] cache: [`teacher`] (a `UNet2DConditionModel`, ε-prediction with prompt dropout)
//! and [`distill`] (latent consistency distillation with an EMA target).
//!
//! Every stage's step runs data-parallel over the host's cores ([`shards`]: two half-batches side
//! by side, each on its own fork of the model, their gradients summed), with the batch one
//! worker would draw. Data are drawn per step from the step's own seed, so a resumed run sees the same batches; a
//! checkpoint holds the weights (f32), the module with its parameter ids and AdamW's moments
//! ([`Trainer::save_state`]) and the step, so a resumed stage continues the optimisation where
//! it stopped (a checkpoint from before the moments were saved restarts them).

pub mod aesthetic;
pub mod clip;
pub mod clip_init;
pub mod distill;
pub mod latents;
pub mod pref;
pub mod shards;
pub mod teacher;
pub mod vae;

use std::path::Path;

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::Error;
use crate::render::{Image, PERTURBATIONS, Perturbation, TASTE_PERTURBATIONS, render_perturbed};
use crate::world::{Scene, Split};
pub use shards::Shard;

/// What a stage reports after each step (for progress bars and logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps done (1-based).
    pub step: usize,
    /// Steps in the stage.
    pub total: usize,
    /// The step's training loss.
    pub loss: f32,
}

/// A callback for [`StepReport`]s.
pub type OnStep<'a> = &'a mut dyn FnMut(StepReport);

/// Options every stage shares.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOptions {
    /// Optimisation steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 5 % of the steps, cosine decay to 5 %).
    pub lr: f64,
    /// Seed of the data stream and the initialisation.
    pub seed: u64,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: usize,
}

impl StageOptions {
    /// The learning rate at step `k` (0-based).
    pub fn lr_at(&self, k: usize) -> f64 {
        let warm = (self.steps / 20).max(1);
        if k < warm {
            return self.lr * (k + 1) as f64 / warm as f64;
        }
        let p = (k - warm) as f64 / (self.steps - warm).max(1) as f64;
        self.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }

    /// Whether a checkpoint is due after `done` steps (every `checkpoint_every`, and the last).
    pub fn checkpoint_due(&self, done: usize) -> bool {
        self.checkpoint_every > 0
            && (done.is_multiple_of(self.checkpoint_every) || done == self.steps)
    }

    /// Seeds `device`'s generator with [`StageOptions::seed`], so that a stage's initial weights
    /// (drawn by Burn from the backend's generator) are the same on every run.
    pub fn seed_device(&self, device: &Device) {
        device.seed(self.seed);
    }

    /// The RNG of step `k`'s batch.
    pub fn rng(&self, k: usize) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64))
    }
}

/// Gaussian noise drawn on the host (the same values on every backend).
pub fn host_noise<const D: usize>(
    shape: [usize; D],
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Tensor<D> {
    let v: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.sample(StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A random training scene (uniform over the training split's first 2^32 scenes).
pub fn random_scene(rng: &mut ChaCha8Rng, split: Split) -> Scene {
    split.scene(rng.random_range(0..1u64 << 32))
}

/// Up to `max` random perturbations from `from`, each with a strength uniform in `[0, 1]`.
pub fn random_perturbations(
    rng: &mut ChaCha8Rng,
    from: &[Perturbation],
    max: usize,
) -> Vec<(Perturbation, f32)> {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| {
            (
                from[rng.random_range(0..from.len())],
                rng.random_range(0.0..1.0),
            )
        })
        .collect()
}

/// A render of `scene`, clean with probability `clean`, else with up to two random perturbations
/// (any kind when `fidelity` is true, else taste only).
pub fn random_render(rng: &mut ChaCha8Rng, scene: &Scene, clean: f64, fidelity: bool) -> Image {
    if rng.random_bool(clean) {
        return render_perturbed(scene, &[], 0);
    }
    let kinds: &[Perturbation] = if fidelity {
        &PERTURBATIONS
    } else {
        &TASTE_PERTURBATIONS
    };
    let p = random_perturbations(rng, kinds, 2);
    render_perturbed(scene, &p, rng.random())
}

/// The step a checkpoint in `dir` was written at, if there is one.
pub fn checkpoint_step(dir: &Path) -> Result<Option<usize>, Error> {
    let path = dir.join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let state = crate::io::read_json(&path)?;
    let step = state
        .get("step")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Setting {
            name: format!("{}: step", path.display()),
            value: state.to_string(),
            reason: "a checkpoint state needs an integer `step`".into(),
        })?;
    Ok(Some(step as usize))
}

/// Records that the checkpoint in `dir` holds step `step` (written after the weights).
pub fn write_checkpoint_step(dir: &Path, step: usize) -> Result<(), Error> {
    crate::io::write_json(
        &dir.join("state.json"),
        &serde_json::json!({ "step": step }),
    )
}

/// Host values of a tensor as `f32`.
pub fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// The scalar of a one-element tensor.
pub fn scalar(t: Tensor<1>) -> f32 {
    host_values(t).first().copied().unwrap_or(f32::NAN)
}

/// A module under AdamW (weight decay 1e-4).
pub struct Trainer<M> {
    /// The module (on an autodiff device).
    pub model: M,
    optimizer: ModuleOptimizer,
}

impl<M> std::fmt::Debug for Trainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").finish_non_exhaustive()
    }
}

/// A stage checkpoint's module with its parameter ids (what the optimiser state is keyed by).
pub const MODULE_STATE_FILE: &str = "module.bpk";
/// A stage checkpoint's AdamW moments.
pub const OPTIMIZER_STATE_FILE: &str = "optimizer.bpk";

fn store_error(path: &Path) -> impl FnOnce(String) -> Error + '_ {
    move |message| Error::Weights {
        path: path.to_path_buf(),
        message,
    }
}

impl<M: Module> Trainer<M> {
    /// Wraps `model` with a fresh optimiser.
    pub fn new(model: M) -> Self {
        Self {
            model,
            optimizer: AdamWConfig::new().with_weight_decay(1e-4).init(),
        }
    }

    /// Writes the module with its parameter ids ([`MODULE_STATE_FILE`]) and the optimiser's
    /// state ([`OPTIMIZER_STATE_FILE`]) into `dir`, for [`Trainer::resume`].
    pub fn save_state(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let module = dir.join(MODULE_STATE_FILE);
        let mut store = BurnpackStore::from_file(&module).overwrite(true);
        self.model
            .save_into(&mut store)
            .map_err(|e| store_error(&module)(e.to_string()))?;
        let optim = dir.join(OPTIMIZER_STATE_FILE);
        self.optimizer
            .save(&optim)
            .map_err(|e| store_error(&optim)(e.to_string()))
    }

    /// `model` under its optimiser as [`Trainer::save_state`] left them in `dir` (the module's
    /// values and parameter ids, then AdamW's moments keyed by those ids), or with a fresh
    /// optimiser when `dir` holds no such state (a checkpoint written before the state was).
    pub fn resume(mut model: M, dir: &Path) -> Result<Self, Error> {
        let (module, optim) = (dir.join(MODULE_STATE_FILE), dir.join(OPTIMIZER_STATE_FILE));
        if !module.is_file() || !optim.is_file() {
            return Ok(Self::new(model));
        }
        let mut store = BurnpackStore::from_file(&module);
        let result = model
            .load_from(&mut store)
            .map_err(|e| store_error(&module)(e.to_string()))?;
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(store_error(&module)(format!(
                "does not fit the stage's model: missing {:?}, unused {:?}, errors {:?}",
                result.missing, result.unused, result.errors
            )));
        }
        let fresh = Self::new(model);
        // burn-optim 0.22.1 panics (an `expect`) on a record tensor without a parameter id,
        // which a damaged file can hold: a panic here is a damaged file.
        let optimizer = fresh.optimizer;
        let loaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optimizer.load(&optim)));
        let optimizer = match loaded {
            Ok(result) => result.map_err(|e| store_error(&optim)(e.to_string()))?,
            Err(_) => {
                return Err(store_error(&optim)(
                    "damaged optimizer state (a tensor without a parameter id)".into(),
                ));
            }
        };
        Ok(Self {
            model: fresh.model,
            optimizer,
        })
    }

    /// Back-propagates `loss` and takes one step at `lr`; returns the loss value.
    pub fn apply(&mut self, loss: Tensor<1>, lr: f64) -> f32 {
        let value = scalar(loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.step(lr, grads);
        value
    }

    /// Takes one step at `lr` with `grads` (of this trainer's model).
    pub fn step(&mut self, lr: f64, grads: GradientsParams) {
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
    }
}

impl<M: Module + Send> Trainer<M> {
    /// One data-parallel step at `lr`: `sharded(model)` gives the batch's loss value and summed
    /// gradients ([`shards`]); returns the loss. While the model still has lazily initialised
    /// parameters ([`shards::is_materialized`]) the step instead back-propagates `whole(model)`,
    /// the batch's loss on this thread, so that they are drawn in the order a forward pass reads
    /// them.
    pub fn step_data_parallel(
        &mut self,
        lr: f64,
        whole: impl FnOnce(&M) -> Tensor<1>,
        sharded: impl FnOnce(&M) -> (f32, GradientsParams),
    ) -> f32 {
        if !shards::is_materialized(&self.model) {
            let l = whole(&self.model);
            return self.apply(l, lr);
        }
        let (value, grads) = sharded(&self.model);
        self.step(lr, grads);
        value
    }

    /// [`Trainer::step_data_parallel`] of a loss that is a sum over shards: `loss(model, shard)`
    /// is the shard's share of the batch's loss ([`shards::gradients`]) for a batch of `batch`.
    pub fn apply_sharded(
        &mut self,
        lr: f64,
        batch: usize,
        loss: impl Fn(&M, &Shard) -> Tensor<1> + Sync,
    ) -> f32 {
        self.step_data_parallel(
            lr,
            |model| loss(model, &Shard::whole(batch)),
            |model| shards::gradients(model, batch, &loss),
        )
    }
}
