//! `--shard i/N`: disjoint slices of a plan that together cover it.

use std::fmt;
use std::str::FromStr;

use super::{GridError, PlannedRun};

/// The `i`-th of `count` slices of a plan, **1-based** (`1/3`, `2/3`, `3/3`), as Slurm's
/// `$SLURM_ARRAY_TASK_ID` runs with `--array=1-N`; a 0-based index (Kubernetes'
/// `$JOB_COMPLETION_INDEX`) is `$((JOB_COMPLETION_INDEX + 1))/N`.
///
/// Slice `i` holds the runs whose plan index is `i − 1` modulo `count`: round-robin, so the
/// slices differ in size by at most one run and each gets a spread of the axes' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The slice, `1 ≤ index ≤ count`.
    pub index: usize,
    /// The number of slices, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole plan as one slice.
    pub const ALL: Self = Self { index: 1, count: 1 };

    /// Whether the run at plan position `position` is in this slice.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// The runs of this slice, in plan order.
    pub fn select<'a>(&self, runs: &'a [PlannedRun]) -> Vec<&'a PlannedRun> {
        runs.iter().filter(|r| self.contains(r.index)).collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = GridError;

    fn from_str(s: &str) -> Result<Self, GridError> {
        let err = |message: String| GridError::Shard {
            given: s.to_string(),
            message,
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| err("expected i/N, e.g. 1/4 (1-based)".into()))?;
        let parse = |part: &str, what: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|e| err(format!("{what} `{part}` is not a whole number: {e}")))
        };
        let (index, count) = (parse(i, "i")?, parse(n, "N")?);
        if count == 0 {
            return Err(err("N must be at least 1".into()));
        }
        if index == 0 || index > count {
            return Err(err(format!(
                "i must be in 1..={count} (shards are 1-based: 1/{count} … {count}/{count})"
            )));
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(n: usize) -> Vec<PlannedRun> {
        (0..n)
            .map(|index| PlannedRun {
                index,
                id: format!("r{index}"),
                labels: Vec::new(),
                config: toml::Table::new(),
            })
            .collect()
    }

    #[test]
    fn slices_are_disjoint_and_cover_the_plan() {
        for total in [0, 1, 2, 7, 12] {
            let runs = runs(total);
            for count in 1..=5 {
                let mut seen = vec![0; total];
                for index in 1..=count {
                    let slice = Shard { index, count }.select(&runs);
                    assert!(slice.len() <= total.div_ceil(count));
                    for r in slice {
                        seen[r.index] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{total} runs, {count} shards");
            }
        }
        assert_eq!(Shard::ALL.select(&runs(3)).len(), 3);
    }

    #[test]
    fn parses_and_refuses_clearly() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
        for (given, want) in [
            ("3", "expected i/N"),
            ("0/3", "1-based"),
            ("4/3", "1..=3"),
            ("1/0", "at least 1"),
            ("a/3", "`a` is not a whole number"),
            ("1/-2", "`-2` is not a whole number"),
        ] {
            let e = given.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(given) && e.contains(want), "{given}: {e}");
        }
    }
}
