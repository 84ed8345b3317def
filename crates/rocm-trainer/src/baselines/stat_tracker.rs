//! [`PerPromptStatTracker`]: per-prompt reward normalisation of the PPO-family baselines.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Advantages from rewards, normalised per prompt over a rolling buffer, as DDPO's and RLCM's
/// `PerPromptStatTracker.update` do:
///
/// ```text
/// for each prompt p of the batch:
///     buffer[p].extend(rewards of p)                 (the current rewards first)
///     if len(buffer[p]) < min_count: m, s = mean(batch rewards), std(batch rewards) + 1e-6
///     else:                          m, s = mean(buffer[p]),     std(buffer[p]) + 1e-6
///     advantage = (r − m) / s                        (population std, ddof = 0)
/// ```
///
/// The buffers persist across iterations (and checkpoints: the tracker is serialisable).
/// With one sample per rollout the whole-batch fallback has zero spread and every advantage is
/// 0: the trainer refuses such configurations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerPromptStatTracker {
    /// The most recent rewards per prompt, oldest first.
    buffers: BTreeMap<String, VecDeque<f32>>,
    /// The buffer length per prompt.
    buffer_size: usize,
    /// The count from which a prompt's own buffer is used.
    min_count: usize,
}

/// `(mean, std + 1e-6)` of `values` in f64 (population std).
fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().map(f64::from).sum::<f64>() / n;
    let var = values.map(|v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() + 1e-6)
}

impl PerPromptStatTracker {
    /// An empty tracker keeping `buffer_size` rewards per prompt, used from `min_count` on.
    pub fn new(buffer_size: usize, min_count: usize) -> Self {
        Self {
            buffers: BTreeMap::new(),
            buffer_size,
            min_count,
        }
    }

    /// Adds the batch's rewards and returns their advantages, in order.
    pub fn update(&mut self, prompts: &[String], rewards: &[f32]) -> Vec<f32> {
        let batch = mean_std(rewards.iter().copied());
        let mut advantages = vec![0.0; rewards.len()];
        let mut seen: Vec<&String> = Vec::new();
        for p in prompts {
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            let idx: Vec<usize> = (0..prompts.len()).filter(|&i| &prompts[i] == p).collect();
            let buffer = self.buffers.entry(p.clone()).or_default();
            for &i in &idx {
                buffer.push_back(rewards[i]);
                if buffer.len() > self.buffer_size {
                    buffer.pop_front();
                }
            }
            let (m, s) = if buffer.len() < self.min_count {
                batch
            } else {
                mean_std(buffer.iter().copied())
            };
            for &i in &idx {
                advantages[i] = ((f64::from(rewards[i]) - m) / s) as f32;
            }
        }
        advantages
    }

    /// The running mean of a prompt's buffer (`None` before its first reward): DPOK's
    /// per-prompt baseline.
    pub fn mean(&self, prompt: &str) -> Option<f64> {
        let b = self.buffers.get(prompt).filter(|b| !b.is_empty())?;
        Some(mean_std(b.iter().copied()).0)
    }

    /// Adds rewards to the buffers without computing advantages.
    pub fn record(&mut self, prompts: &[String], rewards: &[f32]) {
        for (p, &r) in prompts.iter().zip(rewards) {
            let buffer = self.buffers.entry(p.clone()).or_default();
            buffer.push_back(r);
            if buffer.len() > self.buffer_size {
                buffer.pop_front();
            }
        }
    }

    /// How many prompts have a buffer.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Whether no reward was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn falls_back_to_the_batch_until_min_count_then_uses_the_prompt_buffer() {
        let mut t = PerPromptStatTracker::new(4, 3);
        // Two samples of "a", one of "b": below min_count, batch statistics.
        let adv = t.update(&s(&["a", "a", "b"]), &[1.0, 3.0, 2.0]);
        let (m, sd) = (2.0f64, (2.0f64 / 3.0).sqrt() + 1e-6);
        for (a, r) in adv.iter().zip([1.0, 3.0, 2.0]) {
            assert!((f64::from(*a) - (r - m) / sd).abs() < 1e-5, "{adv:?}");
        }
        // "a" now has 4 ≥ 3 rewards: its own buffer [1, 3, 5, 7] (mean 4, std √5).
        let adv = t.update(&s(&["a", "a"]), &[5.0, 7.0]);
        let sd = 5f64.sqrt() + 1e-6;
        assert!((f64::from(adv[0]) - (1.0 / sd)).abs() < 1e-5, "{adv:?}");
        assert!((f64::from(adv[1]) - (3.0 / sd)).abs() < 1e-5, "{adv:?}");
        // The buffer keeps the last 4: [3, 5, 7, 9].
        t.update(&s(&["a"]), &[9.0]);
        assert_eq!(t.mean("a"), Some(6.0));
    }

    #[test]
    fn one_sample_gives_zero_advantage_and_two_do_not() {
        let mut t = PerPromptStatTracker::new(32, 16);
        assert_eq!(t.update(&s(&["a"]), &[0.7]), vec![0.0]);
        let adv = t.update(&s(&["a", "a"]), &[0.1, 0.9]);
        assert!(adv[0] < 0.0 && adv[1] > 0.0, "{adv:?}");
    }

    #[test]
    fn round_trips_through_json() {
        let mut t = PerPromptStatTracker::new(8, 2);
        t.update(&s(&["a", "b"]), &[1.0, 2.0]);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            serde_json::from_str::<PerPromptStatTracker>(&json).unwrap(),
            t
        );
    }
}
