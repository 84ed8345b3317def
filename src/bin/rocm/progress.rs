//! Training progress on stderr: an `indicatif` bar on a terminal, one line per iteration
//! otherwise (logs, pipes, CI).

use indicatif::{ProgressBar, ProgressStyle};
use rocm::trainer::IterationMetrics;

/// Progress of a run of `total` iterations.
pub struct Progress {
    bar: ProgressBar,
    total: usize,
}

impl Progress {
    /// A bar at iteration `start` (non-zero after `--resume`) of `total`.
    pub fn new(total: usize, start: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len}  {msg}  (eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(start as u64);
        bar.reset_eta();
        Self { bar, total }
    }

    /// Shows iteration `m`: reward, divergence and seconds per iteration.
    pub fn update(&self, m: &IterationMetrics) {
        let msg = format!(
            "reward {:+.4}  divergence {:.4}  {:.2} s/it",
            m.reward_mean, m.divergence_mean, m.seconds
        );
        if self.bar.is_hidden() {
            eprintln!(
                "step {:>5}/{}  {msg}  loss {:+.4}  grad norm {:.3}  lr {:.2e}",
                m.step, self.total, m.loss, m.grad_norm, m.lr
            );
        } else {
            self.bar.set_message(msg);
            self.bar.set_position(m.step as u64);
        }
    }

    /// Leaves the bar (with its last message) on screen.
    pub fn finish(&self) {
        self.bar.abandon();
    }
}
