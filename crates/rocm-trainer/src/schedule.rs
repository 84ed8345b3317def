//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over the run's iterations.
///
/// With base rate `η`, warm-up `W` and `T` iterations in all, at iteration `s` (0-based):
///
/// ```text
/// constant:       η
/// linear_warmup:  η · min(1, (s + 1) / W)
/// cosine:         warm-up as above, then η · (m + (1 − m) · ½ (1 + cos(π (s − W) / (T − W))))
/// ```
///
/// where `m` is `min_lr_ratio`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// A constant rate (the paper's).
    #[default]
    Constant,
    /// Linear warm-up from `η / W` to `η` over `W` iterations, then constant.
    LinearWarmup,
    /// Linear warm-up, then a cosine decay to `min_lr_ratio · η` at the last iteration.
    Cosine,
}

impl LrSchedule {
    /// The learning rate of iteration `step` (0-based) of `total`.
    pub fn lr(self, base: f64, step: usize, total: usize, warmup: usize, min_ratio: f64) -> f64 {
        let warm = if warmup > 0 && step < warmup {
            (step + 1) as f64 / warmup as f64
        } else {
            1.0
        };
        match self {
            Self::Constant => base,
            Self::LinearWarmup => base * warm,
            Self::Cosine if step < warmup => base * warm,
            Self::Cosine => {
                let span = total.saturating_sub(warmup).saturating_sub(1).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * (min_ratio + (1.0 - min_ratio) * cosine)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_their_shapes() {
        let lr = |s: LrSchedule, step| s.lr(1.0, step, 11, 2, 0.1);
        assert_eq!(lr(LrSchedule::Constant, 0), 1.0);
        assert_eq!(lr(LrSchedule::LinearWarmup, 0), 0.5);
        assert_eq!(lr(LrSchedule::LinearWarmup, 5), 1.0);
        assert_eq!(lr(LrSchedule::Cosine, 1), 1.0);
        assert!((lr(LrSchedule::Cosine, 2) - 1.0).abs() < 1e-12);
        assert!((lr(LrSchedule::Cosine, 10) - 0.1).abs() < 1e-12);
        let mid = lr(LrSchedule::Cosine, 6);
        assert!((mid - 0.55).abs() < 1e-12, "{mid}");
    }
}
