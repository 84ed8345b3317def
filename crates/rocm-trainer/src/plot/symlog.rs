//! A symmetric-log axis for plotters: positions by [`symlog`]`(v) = sign(v)·ln(1 + |v|)`, ticks
//! at round data values (0, ±1, ±2, ±5, ±10, …), so a run that diverges to −500 and one that
//! stays near +1 are both readable on one chart.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;

/// `sign(v) ln(1 + |v|)`: linear near 0, logarithmic far from it.
pub fn symlog(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

/// A data range `[lo, hi]` drawn on a [`symlog`] scale.
#[derive(Clone, Debug)]
pub struct SymlogRange {
    lo: f64,
    hi: f64,
}

impl SymlogRange {
    /// The axis over data values `range` (in data units, not transformed).
    pub fn new(range: Range<f64>) -> Self {
        Self {
            lo: range.start,
            hi: range.end,
        }
    }
}

impl Ranged for SymlogRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (symlog(self.lo), symlog(self.hi));
        let t = (symlog(*value) - a) / (b - a).max(1e-12);
        (f64::from(limit.0) + t * f64::from(limit.1 - limit.0)).round() as i32
    }

    /// Round values `0, ±{1, 2, 5}·10^k` inside the range, thinned to decades (and every other
    /// decade) when there are more than the hint allows; a range too narrow for two of them
    /// gets plotters' linear ticks.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let max = hint.max_num_points();
        let inside = |v: &f64| (self.lo..=self.hi).contains(v);
        let magnitude = self.lo.abs().max(self.hi.abs()).max(1.0);
        let decades = magnitude.log10().ceil() as i32;
        for (mantissas, stride) in [(&[1.0, 2.0, 5.0][..], 1), (&[1.0], 1), (&[1.0], 2)] {
            let mut ticks = vec![0.0];
            for k in (0..=decades).step_by(stride) {
                for m in mantissas {
                    let v = m * 10f64.powi(k);
                    ticks.extend([v, -v]);
                }
            }
            ticks.retain(inside);
            ticks.sort_by(f64::total_cmp);
            if ticks.len() >= 2 && ticks.len() <= max {
                return ticks;
            }
            if ticks.len() < 2 {
                break;
            }
        }
        RangedCoordf64::from(self.lo..self.hi).key_points(hint)
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlog_is_odd_and_logarithmic() {
        assert_eq!(symlog(0.0), 0.0);
        assert!((symlog(-3.0) + symlog(3.0)).abs() < 1e-15);
        assert!((symlog(std::f64::consts::E - 1.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ticks_are_round_values_inside_the_range() {
        let axis = SymlogRange::new(-600.0..25.0);
        let ticks = axis.key_points(12usize);
        assert!(ticks.len() >= 2 && ticks.len() <= 12, "{ticks:?}");
        assert!(ticks.contains(&0.0) && ticks.contains(&-100.0), "{ticks:?}");
        assert!(
            ticks.iter().all(|t| (-600.0..=25.0).contains(t)),
            "{ticks:?}"
        );
        // monotone pixel positions, the ends of the range at the ends of the axis
        assert_eq!(axis.map(&-600.0, (0, 100)), 0);
        assert_eq!(axis.map(&25.0, (0, 100)), 100);
        assert!(axis.map(&-1.0, (0, 100)) < axis.map(&1.0, (0, 100)));
        // narrow ranges fall back to linear ticks
        let narrow = SymlogRange::new(0.1..0.4).key_points(5usize);
        assert!(narrow.len() >= 2, "{narrow:?}");
    }
}
