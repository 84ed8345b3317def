//! The pieces the policy-gradient baselines share (docs/baselines.md): the per-prompt stat
//! tracker and the per-step losses of RLCM/DDPO (PPO), DPOK and D3PO, as functions of the
//! per-step log-probabilities ([`rocm_sampler::gaussian_log_prob`]).

mod losses;
mod stat_tracker;

pub use losses::{StepLoss, d3po_step_loss, dpok_step_loss, ppo_step_loss};
pub use stat_tracker::PerPromptStatTracker;
