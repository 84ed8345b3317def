//! Win rates of arm A over arm B with 95 % Wilson score intervals, per criterion, per rater and
//! pooled over raters.
//!
//! A tie counts half a win for each arm, so the win rate of A is `(wins_A + ties/2) / n` and
//! 0.5 means no preference. The interval is Wilson's score interval for a binomial proportion,
//! with `p̂` that win rate and `n` the votes:
//!
//! ```text
//! centre = (p̂ + z²/2n) / (1 + z²/n),   half-width = z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²)
//! ```
//!
//! with `z = Φ⁻¹(0.975) ≈ 1.96`. Unlike the normal approximation it stays inside `[0, 1]` and is
//! not degenerate at 0 or n wins.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Criterion, Vote, Winner};

/// `Φ⁻¹(0.975)`: the standard normal quantile of a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval `(low, high)` for `successes` of `n` trials at normal quantile `z`
/// (`successes` may be fractional: ties count ½). `None` for `n = 0`.
pub fn wilson_interval(successes: f64, n: f64, z: f64) -> Option<(f64, f64)> {
    if n <= 0.0 {
        return None;
    }
    let p = successes / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The votes of one criterion (and one rater, or all): how often each arm won.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Votes for arm A.
    pub a: u64,
    /// Votes for arm B.
    pub b: u64,
    /// Ties.
    pub tie: u64,
}

impl Tally {
    /// Counts `winner`.
    pub fn add(&mut self, winner: Winner) {
        match winner {
            Winner::A => self.a += 1,
            Winner::B => self.b += 1,
            Winner::Tie => self.tie += 1,
        }
    }

    /// All votes.
    pub fn n(&self) -> u64 {
        self.a + self.b + self.tie
    }

    /// A's win rate, ties counting ½; `None` without votes.
    pub fn win_rate(&self) -> Option<f64> {
        let n = self.n();
        (n > 0).then(|| (self.a as f64 + 0.5 * self.tie as f64) / n as f64)
    }

    /// The 95 % Wilson interval of [`Tally::win_rate`].
    pub fn interval(&self) -> Option<(f64, f64)> {
        wilson_interval(self.a as f64 + 0.5 * self.tie as f64, self.n() as f64, Z_95)
    }
}

/// One line of the results: a criterion, a rater (or all of them), the tally and the rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// The criterion.
    pub criterion: Criterion,
    /// The rater, or `None` for all raters pooled.
    pub rater: Option<String>,
    /// The votes.
    pub tally: Tally,
    /// A's win rate over B (ties ½).
    pub win_rate: Option<f64>,
    /// Its 95 % Wilson interval, low end.
    pub low: Option<f64>,
    /// Its 95 % Wilson interval, high end.
    pub high: Option<f64>,
}

impl ResultRow {
    fn new(criterion: Criterion, rater: Option<String>, tally: Tally) -> Self {
        let interval = tally.interval();
        Self {
            criterion,
            rater,
            tally,
            win_rate: tally.win_rate(),
            low: interval.map(|i| i.0),
            high: interval.map(|i| i.1),
        }
    }
}

/// The results table: for each criterion (in [`Criterion::ALL`]'s order), all raters pooled,
/// then each rater by name.
pub fn results(votes: &[Vote]) -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for criterion in Criterion::ALL {
        let mut pooled = Tally::default();
        let mut by_rater: BTreeMap<&str, Tally> = BTreeMap::new();
        for vote in votes {
            let winner = vote.winner(criterion);
            pooled.add(winner);
            by_rater.entry(&vote.rater).or_default().add(winner);
        }
        rows.push(ResultRow::new(criterion, None, pooled));
        rows.extend(
            by_rater
                .into_iter()
                .map(|(rater, tally)| ResultRow::new(criterion, Some(rater.to_string()), tally)),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: (f64, f64), want: (f64, f64)) {
        assert!(
            (got.0 - want.0).abs() < 1e-11 && (got.1 - want.1).abs() < 1e-11,
            "{got:?} vs {want:?}"
        );
    }

    /// Reference values: scipy's `binomtest(k, n).proportion_ci(method="wilson")` and the closed
    /// form in mpmath at 30 digits (the half-integer case: mpmath only), printed by
    /// `tests/fixtures/scripts/wilson.py` at the repository root.
    #[test]
    fn wilson_matches_reference_values() {
        let cases = [
            (5.0, 10.0, (0.236_593_090_513, 0.763_406_909_487)),
            (81.0, 263.0, (0.255_288_519_878, 0.366_209_576_983)),
            (0.0, 10.0, (0.0, 0.277_532_799_863)),
            (10.0, 10.0, (0.722_467_200_137, 1.0)),
            (2.5, 4.0, (0.219_426_520_065, 0.908_100_770_821)),
        ];
        for (s, n, want) in cases {
            close(wilson_interval(s, n, Z_95).unwrap(), want);
        }
        assert_eq!(wilson_interval(0.0, 0.0, Z_95), None);
    }

    #[test]
    fn ties_count_half_and_rows_cover_raters_and_pool() {
        use Winner::{A, B, Tie};
        let vote = |id, rater: &str, w: [Winner; 3]| Vote {
            id,
            rater: rater.into(),
            pair_id: id,
            prompt: "p".into(),
            seed: 0,
            left: A,
            visual_appeal: w[0],
            general_preference: w[1],
            prompt_alignment: w[2],
            voted_at: String::new(),
        };
        let votes = [
            vote(1, "bob", [A, A, Tie]),
            vote(2, "ann", [B, A, Tie]),
            vote(3, "ann", [Tie, A, A]),
        ];
        let rows = results(&votes);
        assert_eq!(rows.len(), 9); // 3 criteria × (pooled + 2 raters)
        let visual_pooled = &rows[0];
        assert_eq!(
            (visual_pooled.criterion, &visual_pooled.rater),
            (Criterion::VisualAppeal, &None)
        );
        assert_eq!(visual_pooled.tally, Tally { a: 1, b: 1, tie: 1 });
        assert_eq!(visual_pooled.win_rate, Some(0.5));
        assert_eq!(rows[1].rater.as_deref(), Some("ann"));
        assert_eq!(rows[1].tally, Tally { a: 0, b: 1, tie: 1 });
        assert_eq!(rows[1].win_rate, Some(0.25));
        assert_eq!(rows[3].tally, Tally { a: 3, b: 0, tie: 0 });
        close(
            (rows[3].low.unwrap(), rows[3].high.unwrap()),
            wilson_interval(3.0, 3.0, Z_95).unwrap(),
        );
    }
}
