//! Checkpoints: LoRA adapters in the diffusers layout, the adapter parameters with their ids and
//! the optimizer state (burnpack), and the run's position (step, RNG), written atomically.
//!
//! ```text
//! <output_dir>/checkpoints/
//!   step-000100/
//!     pytorch_lora_weights.safetensors   diffusers/PEFT keys (rocm_lora::save_adapters)
//!     adapters.bpk                       the adapter parameters with their ParamIds
//!     optimizer.bpk                      AdamW moments, keyed by ParamId
//!     state.json                         CheckpointState
//!   latest                               the name of the newest complete checkpoint
//! ```
//!
//! A checkpoint directory is first written as `.step-000100.tmp` and renamed into place, and
//! `latest` is replaced by renaming a temporary file, so a crash never leaves a half-written
//! checkpoint where a resume would read it. Durable as well as atomic: every file and the
//! temporary directory are fsynced before the rename that publishes them, and the parent
//! directory after it, so a power loss cannot publish a directory whose files are not on disk
//! (docs/reliability.md).

use std::path::{Component, Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use rocm_lora::LoraContainer;
use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::{Error, durable};

/// The adapter-parameter file of a checkpoint.
pub const ADAPTERS_FILE: &str = "adapters.bpk";
/// The optimizer-state file of a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The run-state file of a checkpoint.
pub const STATE_FILE: &str = "state.json";
/// The file naming the newest checkpoint.
pub const LATEST_FILE: &str = "latest";

/// Where a run is: enough to continue it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Iterations completed.
    pub step: usize,
    /// The seed of the run's host RNG (ChaCha8).
    pub seed: u64,
    /// The RNG's position in its stream, in 32-bit words (a decimal string: it is a u128).
    pub rng_word_pos: String,
    /// The per-prompt reward buffers of RLCM and DPOK (absent for ROCM and D3PO).
    #[serde(default, skip_serializing_if = "crate::PerPromptStatTracker::is_empty")]
    pub stat_tracker: crate::PerPromptStatTracker,
    /// The devices (data-parallel replicas) the run trained on (1 when absent: checkpoints
    /// from before data parallelism).
    #[serde(default = "one")]
    pub devices: usize,
    /// Prompts per update, `batch_size × gradient_accumulation_steps × devices`, which a
    /// resume on another device count keeps ([`crate::parallel::accumulation_for`]); absent in
    /// checkpoints from before data parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_batch: Option<usize>,
}

/// The default device count of a [`CheckpointState`].
fn one() -> usize {
    1
}

/// The checkpoint directory of `step` under `root`.
pub fn checkpoint_dir(root: &Path, step: usize) -> PathBuf {
    root.join(format!("step-{step:06}"))
}

fn record_err(path: &Path) -> impl FnOnce(String) -> Error + '_ {
    move |message| Error::Record {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes a checkpoint of `model`'s adapters, `optimizer` and `state` under `root`
/// (usually `<output_dir>/checkpoints`) and points `latest` at it. Returns its directory.
pub fn save_checkpoint<M: Module + LoraContainer>(
    root: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let dir = checkpoint_dir(root, state.step);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    rocm_lora::save_adapters(model, &tmp)?;
    let adapters = tmp.join(ADAPTERS_FILE);
    let mut store = BurnpackStore::from_file(&adapters)
        .with_regex(rocm_lora::ADAPTER_PARAM_REGEX)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| record_err(&adapters)(e.to_string()))?;
    let optim = tmp.join(OPTIMIZER_FILE);
    optimizer
        .save(&optim)
        .map_err(|e| record_err(&optim)(e.to_string()))?;
    let state_path = tmp.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::Json {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&state_path, text).map_err(io(&state_path))?;
    durable::sync_tree(&tmp)?;

    // A checkpoint of this step from before a resume is moved aside by one rename, never
    // deleted in place: a kill at any instant leaves either it or the new one complete.
    let old = root.join(format!(".{name}.old"));
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&dir, &old).map_err(io(&old))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    durable::sync_dir(root)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    let latest_tmp = root.join(format!(".{LATEST_FILE}.tmp"));
    durable::write_synced(&latest_tmp, name.as_bytes())?;
    std::fs::rename(&latest_tmp, root.join(LATEST_FILE)).map_err(io(root.join(LATEST_FILE)))?;
    durable::sync_dir(root)?;
    log::info!("checkpoint {}", dir.display());
    Ok(dir)
}

/// The newest complete checkpoint under `root` (from `latest`), if any; a `latest` that does
/// not name a checkpoint directory of `root` is an error naming it.
pub fn latest_checkpoint(root: &Path) -> Result<Option<PathBuf>, Error> {
    let latest = root.join(LATEST_FILE);
    if !latest.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&latest).map_err(io(&latest))?;
    let name = text.trim();
    // One plain name inside `root`: never an absolute path or `..` that leads elsewhere.
    let mut parts = Path::new(name).components();
    if !matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(Error::Resume {
            path: latest,
            message: format!("`{name}` is not the name of a checkpoint directory"),
        });
    }
    let dir = root.join(name);
    if !dir.join(STATE_FILE).is_file() {
        return Err(Error::Resume {
            path: latest,
            message: format!("names `{name}`, which holds no {STATE_FILE}"),
        });
    }
    Ok(Some(dir))
}

/// Reads a checkpoint's [`CheckpointState`].
pub fn read_state(dir: &Path) -> Result<CheckpointState, Error> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path,
        message: e.to_string(),
    })
}

/// Loads a checkpoint's adapter values (and their `ParamId`s, which the optimizer state is keyed
/// by) into `model`, which must carry adapters of the same shapes at the same paths, and returns
/// the optimizer with its state and the run state.
pub fn load_checkpoint<M: Module + LoraContainer>(
    dir: &Path,
    model: &mut M,
    optimizer: ModuleOptimizer,
) -> Result<(ModuleOptimizer, CheckpointState), Error> {
    let state = read_state(dir)?;
    let adapters = dir.join(ADAPTERS_FILE);
    if !adapters.exists() {
        return Err(Error::Resume {
            path: dir.to_path_buf(),
            message: format!("{ADAPTERS_FILE} is missing"),
        });
    }
    let mut store = BurnpackStore::from_file(&adapters)
        .with_regex(rocm_lora::ADAPTER_PARAM_REGEX)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| record_err(&adapters)(e.to_string()))?;
    let missing: Vec<_> = result
        .missing
        .iter()
        .map(|m| m.0.clone())
        .filter(|p| rocm_lora::is_adapter_param_path(p))
        .collect();
    if !result.errors.is_empty() || !result.unused.is_empty() || !missing.is_empty() {
        return Err(Error::Resume {
            path: dir.to_path_buf(),
            message: format!(
                "adapter parameters do not fit the model: missing {missing:?}, unused {:?}, \
                 errors {:?}",
                result.unused, result.errors
            ),
        });
    }
    let optim = dir.join(OPTIMIZER_FILE);
    // burn-optim 0.22.1 panics (an `expect` in `ModuleOptimizer::load`) on a record tensor
    // without a parameter id, which a damaged file can hold: a panic here is a damaged file.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optimizer.load(&optim)));
    let optimizer = match loaded {
        Ok(result) => result.map_err(|e| record_err(&optim)(e.to_string()))?,
        Err(_) => {
            let message = "damaged optimizer state (a tensor without a parameter id)";
            return Err(record_err(&optim)(message.into()));
        }
    };
    Ok((optimizer, state))
}
