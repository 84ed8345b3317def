//! What a study compares ([`StudySpec`]), its pairs, the content keys of their images, and the
//! per-rater order and sides.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Winner;

/// One side of a study: a label for people and an identity for the image cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// What the results page calls it (`base`, a checkpoint's path, …).
    pub label: String,
    /// The content hash of what makes its images differ (e.g. the adapter file's bytes):
    /// two arms with the same identity share images.
    pub identity: String,
}

impl Arm {
    /// An arm named `label` whose images are keyed by `identity`.
    pub fn new(label: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            identity: identity.into(),
        }
    }
}

/// A whole study: two arms, the generation settings they share, and the prompts × seeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudySpec {
    /// Arm A (win rates are A's over B).
    pub a: Arm,
    /// Arm B.
    pub b: Arm,
    /// Everything else that decides an image besides the arm, prompt and seed, as one string
    /// (the pipeline's identity, steps, guidance): part of every image key.
    pub settings: String,
    /// The prompts, in order.
    pub prompts: Vec<String>,
    /// The seeds: each prompt is generated with each seed.
    pub seeds: Vec<u64>,
}

impl StudySpec {
    /// The content key of `arm`'s image of `prompt` with `seed` under these settings: SHA-256
    /// of the length-prefixed fields, so the same inputs find the same cached image in any
    /// study.
    pub fn image_key(&self, arm: &Arm, prompt: &str, seed: u64) -> ImageKey {
        let mut hash = Sha256::new();
        for field in [
            "rocm-review image v1",
            &arm.identity,
            &self.settings,
            prompt,
            &seed.to_string(),
        ] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field.as_bytes());
        }
        ImageKey(hex(&hash.finalize()))
    }

    /// The pairs, prompt-major: pair `i·S + j + 1` is prompt `i` with seed `j` (`S` seeds).
    pub fn pairs(&self) -> Vec<Pair> {
        let mut pairs = Vec::with_capacity(self.prompts.len() * self.seeds.len());
        for prompt in &self.prompts {
            for &seed in &self.seeds {
                pairs.push(Pair {
                    id: pairs.len() as i64 + 1,
                    prompt: prompt.clone(),
                    seed,
                    image_a: self.image_key(&self.a, prompt, seed),
                    image_b: self.image_key(&self.b, prompt, seed),
                });
            }
        }
        pairs
    }
}

/// The content key of an image: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageKey(pub String);

impl ImageKey {
    /// Whether `s` has the form of a key (so that a request path can be refused before SQL).
    pub fn is_well_formed(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One (prompt, seed) and the images of both arms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// 1-based id.
    pub id: i64,
    /// The prompt both images were generated from.
    pub prompt: String,
    /// The noise seed both images were generated with.
    pub seed: u64,
    /// Arm A's image.
    pub image_a: ImageKey,
    /// Arm B's image.
    pub image_b: ImageKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` as lowercase hex (images, adapter files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn rater_hash(rater: &str, pair_id: i64) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((rater.len() as u64).to_le_bytes());
    hash.update(rater.as_bytes());
    hash.update(pair_id.to_le_bytes());
    hash.finalize().into()
}

/// The arm shown on the left to `rater` for `pair_id`: A or B with equal frequency, fixed per
/// rater and pair (a reload shows the same layout), drawn from SHA-256 of both.
pub fn left_arm(rater: &str, pair_id: i64) -> Winner {
    if rater_hash(rater, pair_id)[31] & 1 == 0 {
        Winner::A
    } else {
        Winner::B
    }
}

/// The order in which `rater` sees the pairs: `pair_ids` sorted by a hash of rater and pair,
/// so raters see different orders and a rater resumes where they left off.
pub fn rater_order(rater: &str, pair_ids: &[i64]) -> Vec<i64> {
    let mut ids = pair_ids.to_vec();
    ids.sort_by_cached_key(|&id| (rater_hash(rater, id), id));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StudySpec {
        StudySpec {
            a: Arm::new("base", "base"),
            b: Arm::new("lora", "abc"),
            settings: "s".into(),
            prompts: vec!["p".into(), "q".into()],
            seeds: vec![0, 7],
        }
    }

    #[test]
    fn keys_depend_on_every_input_and_nothing_else() {
        let s = spec();
        let k = s.image_key(&s.a, "p", 0);
        assert_eq!(k, s.image_key(&Arm::new("other label", "base"), "p", 0));
        assert!(ImageKey::is_well_formed(&k.0));
        assert_ne!(k, s.image_key(&s.b, "p", 0));
        assert_ne!(k, s.image_key(&s.a, "q", 0));
        assert_ne!(k, s.image_key(&s.a, "p", 1));
        let other = StudySpec {
            settings: "t".into(),
            ..spec()
        };
        assert_ne!(k, other.image_key(&other.a, "p", 0));
        // Length prefixes: moving a character between fields changes the key.
        assert_ne!(
            s.image_key(&Arm::new("", "ab"), "c", 0),
            s.image_key(&Arm::new("", "a"), "bc", 0)
        );
    }

    #[test]
    fn pairs_are_prompt_major() {
        let pairs = spec().pairs();
        let ids: Vec<(i64, &str, u64)> = pairs
            .iter()
            .map(|p| (p.id, p.prompt.as_str(), p.seed))
            .collect();
        assert_eq!(ids, [(1, "p", 0), (2, "p", 7), (3, "q", 0), (4, "q", 7)]);
    }

    #[test]
    fn sides_are_balanced_and_orders_differ_between_raters() {
        let lefts = (1..=1000)
            .filter(|&i| left_arm("ann", i) == Winner::A)
            .count();
        assert!((450..=550).contains(&lefts), "{lefts} of 1000 on the left");
        let ids: Vec<i64> = (1..=20).collect();
        let ann = rater_order("ann", &ids);
        let mut sorted = ann.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert_ne!(ann, rater_order("bob", &ids));
        assert_eq!(ann, rater_order("ann", &ids));
    }
}
