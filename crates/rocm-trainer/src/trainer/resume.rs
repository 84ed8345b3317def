//! Checkpoints of a [`RocmTrainer`]: saving the adapters, optimizer state, RNG position and step,
//! and resuming from them (the file layout is [`crate::checkpoint`]'s).

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rocm_lora::LoraContainer;

use super::{RocmTrainer, TrainableModel, adamw};
use crate::Error;
use crate::checkpoint::{self, CheckpointState};

impl<const D: usize, M: TrainableModel<D> + LoraContainer> RocmTrainer<D, M> {
    /// Writes a checkpoint of the current step under `root` (see [`crate::checkpoint`]).
    pub fn save_checkpoint(&self, root: &Path) -> Result<PathBuf, Error> {
        let state = CheckpointState {
            step: self.step,
            seed: self.config.seed,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            stat_tracker: self.tracker.clone(),
            devices: self.devices(),
            effective_batch: Some(self.effective_batch()),
        };
        checkpoint::save_checkpoint(root, &self.model, &self.optimizer, &state)
    }

    /// Continues from the checkpoint in `dir`: adapter values (with their ids), optimizer state,
    /// RNG position and step. The trainer must have been built like the saved run's (same
    /// model and adapters, same seed). On another device count than the checkpoint's, the
    /// gradient accumulation is set to keep its effective batch (`batch_size ×
    /// gradient_accumulation_steps × devices`), or the resume is refused when no whole number
    /// of steps does (docs/scaling.md).
    pub fn resume(&mut self, dir: &Path) -> Result<(), Error> {
        let optimizer = std::mem::replace(&mut self.optimizer, adamw(&self.config));
        let (optimizer, state) = checkpoint::load_checkpoint(dir, &mut self.model, optimizer)?;
        if state.seed != self.config.seed {
            return Err(Error::Resume {
                path: dir.to_path_buf(),
                message: format!(
                    "seed {} in the checkpoint, {} in the config",
                    state.seed, self.config.seed
                ),
            });
        }
        let accumulation = self.kept_accumulation(dir, &state)?;
        let pos: u128 = state.rng_word_pos.parse().map_err(|_| Error::Resume {
            path: dir.to_path_buf(),
            message: format!("bad rng_word_pos `{}`", state.rng_word_pos),
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed);
        rng.set_word_pos(pos);
        self.rng = rng;
        self.optimizer = optimizer;
        self.step = state.step;
        let before = self.config.gradient_accumulation_steps;
        if accumulation != before {
            self.config.gradient_accumulation_steps = accumulation;
            log::warn!(
                "resumed on {} devices from a checkpoint of {}: gradient_accumulation_steps \
                 {before} → {accumulation}, keeping its effective batch of {}",
                self.devices(),
                state.devices,
                self.effective_batch()
            );
        }
        if !state.stat_tracker.is_empty() {
            self.tracker = state.stat_tracker;
        }
        log::info!("resumed from {} at step {}", dir.display(), self.step);
        Ok(())
    }

    /// The gradient accumulation that keeps the checkpoint's effective batch on this run's
    /// device count: the configured one on the checkpoint's device count (or for a checkpoint
    /// that did not record it).
    fn kept_accumulation(&self, dir: &Path, state: &CheckpointState) -> Result<usize, Error> {
        let configured = self.config.gradient_accumulation_steps;
        let (Some(effective), devices) = (state.effective_batch, self.devices()) else {
            return Ok(configured);
        };
        if state.devices == devices {
            return Ok(configured);
        }
        crate::parallel::accumulation_for(effective, self.config.batch_size, devices).map_err(
            |why| Error::Resume {
                path: dir.to_path_buf(),
                message: format!(
                    "the checkpoint trained on {} devices; on {devices} its effective batch \
                     cannot be kept: {why}",
                    state.devices
                ),
            },
        )
    }
}
