//! [`LoraConfig`]: rank, alpha, targets, dropout and initialisation, with PEFT's meanings.

use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};
use rand_distr::StandardNormal;
use regex::Regex;

use crate::Error;

/// Which layers get an adapter: PEFT's `target_modules`.
///
/// * [`Names`](Self::Names): a layer whose dotted path equals a name or ends with `.` + name
///   (whole path components: `to_q` matches `attn1.to_q` but not `attn1.xto_q`;
///   `to_out.0` matches `attn1.to_out.0`). This is PEFT's rule for a list of strings.
/// * [`Regex`](Self::Regex): the regex must match the whole dotted path (Python's
///   `re.fullmatch`), PEFT's rule for a single string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes.
    Names(Vec<String>),
    /// A regex over the full dotted module path.
    Regex(String),
}

impl TargetModules {
    /// Suffix targets from string literals.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        Self::Names(names.iter().map(|s| s.as_ref().to_string()).collect())
    }

    /// Compile into a matcher; fails on an invalid regex.
    pub fn matcher(&self) -> Result<TargetMatcher, Error> {
        Ok(match self {
            Self::Names(names) => TargetMatcher(Matcher::Names(names.clone())),
            Self::Regex(pattern) => {
                let anchored = format!("^(?:{pattern})$");
                let re = Regex::new(&anchored).map_err(|e| Error::InvalidRegex {
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
                TargetMatcher(Matcher::Regex(re))
            }
        })
    }
}

impl std::fmt::Display for TargetModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Names(n) => write!(f, "{n:?}"),
            Self::Regex(r) => write!(f, "regex `{r}`"),
        }
    }
}

/// A compiled [`TargetModules`].
#[derive(Debug, Clone)]
pub struct TargetMatcher(Matcher);

#[derive(Debug, Clone)]
enum Matcher {
    Names(Vec<String>),
    Regex(Regex),
}

impl TargetMatcher {
    /// Whether the layer at dotted `path` is a target.
    pub fn matches(&self, path: &str) -> bool {
        match &self.0 {
            Matcher::Names(names) => names.iter().any(|n| {
                path == n
                    || (path.len() > n.len()
                        && path.ends_with(n.as_str())
                        && path.as_bytes()[path.len() - n.len() - 1] == b'.')
            }),
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// PEFT's `init_lora_weights`. In configuration files: `"default"`, `"gaussian"`, `"random"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitLoraWeights {
    /// `True` (PEFT's default): `A` Kaiming-uniform with `a = √5` (torch's `nn.Linear`/`nn.Conv2d`
    /// default, bound `1/√fan_in`), `B = 0`.
    #[default]
    Default,
    /// `"gaussian"`: `A ~ N(0, σ = 1/r)`, `B = 0`. The paper's setting.
    Gaussian,
    /// `False`: both factors keep torch's default layer init (`B ≠ 0`, so the adapter is
    /// not a no-op at start; for tests).
    Random,
}

impl InitLoraWeights {
    /// The JSON value PEFT writes for it (`true`, `"gaussian"`, `false`).
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Self::Default => serde_json::Value::Bool(true),
            Self::Gaussian => serde_json::Value::String("gaussian".into()),
            Self::Random => serde_json::Value::Bool(false),
        }
    }

    /// Parse PEFT's JSON value; other schemes (`"pissa"`, `"olora"`, ...) only change the
    /// initial values, which a loaded file overwrites, so they read as `Default`.
    pub fn from_json(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Bool(false) => Self::Random,
            serde_json::Value::String(s) if s == "gaussian" => Self::Gaussian,
            _ => Self::Default,
        }
    }
}

/// A LoRA setup, with PEFT's `LoraConfig` field names and defaults.
///
/// Defaults: `lora_dropout = 0`, `init_lora_weights = Default`, `use_rslora = false`, `seed = 0`.
/// The paper's setting is [`LoraConfig::paper`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r`.
    pub r: usize,
    /// `α`; the adapter output is scaled by `α / r` (or `α / √r` with `use_rslora`).
    pub lora_alpha: f64,
    /// Which layers get adapters.
    pub target_modules: TargetModules,
    /// Dropout probability on the adapter input (active only on an autodiff device in training).
    pub lora_dropout: f64,
    /// Initialisation scheme of the factors.
    pub init_lora_weights: InitLoraWeights,
    /// Rank-stabilised scaling `α / √r`.
    pub use_rslora: bool,
    /// Seed of the host RNG that draws the factors (ChaCha8, in traversal order).
    pub seed: u64,
}

impl LoraConfig {
    /// A configuration with PEFT's defaults for everything but `r`, `α` and the targets.
    pub fn new(r: usize, lora_alpha: f64, target_modules: TargetModules) -> Self {
        Self {
            r,
            lora_alpha,
            target_modules,
            lora_dropout: 0.0,
            init_lora_weights: InitLoraWeights::Default,
            use_rslora: false,
            seed: 0,
        }
    }

    /// The paper's setting (docs/method.md §5, as RLCM): r = 16, α = 32 on `to_q`, `to_k`, `to_v`,
    /// `to_out.0`, `A ~ N(0, σ = 1/r)`, `B = 0`, scale α/r = 2.
    pub fn paper() -> Self {
        Self::new(
            16,
            32.0,
            TargetModules::names(&["to_q", "to_k", "to_v", "to_out.0"]),
        )
        .with_init_lora_weights(InitLoraWeights::Gaussian)
    }

    /// Set the dropout probability.
    pub fn with_lora_dropout(mut self, p: f64) -> Self {
        self.lora_dropout = p;
        self
    }

    /// Set the initialisation scheme.
    pub fn with_init_lora_weights(mut self, init: InitLoraWeights) -> Self {
        self.init_lora_weights = init;
        self
    }

    /// Switch rank-stabilised scaling on or off.
    pub fn with_use_rslora(mut self, on: bool) -> Self {
        self.use_rslora = on;
        self
    }

    /// Set the RNG seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The scale applied to `B A x`: `α / r`, or `α / √r` with `use_rslora`.
    pub fn scale(&self) -> f64 {
        lora_scale(self.r, self.lora_alpha, self.use_rslora)
    }

    /// Check ranges (`r ≥ 1`, `0 ≤ dropout < 1`, finite α).
    pub fn validate(&self) -> Result<(), Error> {
        if self.r == 0 {
            return Err(Error::InvalidConfig("r must be at least 1".into()));
        }
        if !self.lora_alpha.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "lora_alpha must be finite, got {}",
                self.lora_alpha
            )));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::InvalidConfig(format!(
                "lora_dropout must be in [0, 1), got {}",
                self.lora_dropout
            )));
        }
        Ok(())
    }
}

/// `α / r`, or `α / √r` when `use_rslora`.
pub fn lora_scale(r: usize, alpha: f64, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// Host-side draws of the factors, so every backend gets the same bits for a seed.
pub(crate) struct FactorInit {
    rng: ChaCha8Rng,
    scheme: InitLoraWeights,
}

impl FactorInit {
    pub(crate) fn new(seed: u64, scheme: InitLoraWeights) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            scheme,
        }
    }

    /// `n` values of `A` (fan-in `fan_in`) for rank `r`.
    pub(crate) fn a(&mut self, n: usize, fan_in: usize, r: usize) -> Vec<f32> {
        match self.scheme {
            InitLoraWeights::Gaussian => {
                let std = 1.0 / r as f64;
                (0..n)
                    .map(|_| (self.rng.sample::<f64, _>(StandardNormal) * std) as f32)
                    .collect()
            }
            InitLoraWeights::Default | InitLoraWeights::Random => self.kaiming(n, fan_in),
        }
    }

    /// `n` values of `B` (fan-in `r`).
    pub(crate) fn b(&mut self, n: usize, r: usize) -> Vec<f32> {
        match self.scheme {
            InitLoraWeights::Random => self.kaiming(n, r),
            _ => vec![0.0; n],
        }
    }

    /// torch's `kaiming_uniform_(w, a=√5)`: `U(-1/√fan_in, 1/√fan_in)`.
    fn kaiming(&mut self, n: usize, fan_in: usize) -> Vec<f32> {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        (0..n)
            .map(|_| self.rng.random_range(-bound..bound) as f32)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whole_components() {
        let m = TargetModules::names(&["to_q", "to_out.0"])
            .matcher()
            .unwrap();
        assert!(m.matches("to_q"));
        assert!(m.matches("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
        assert!(m.matches("attn2.to_out.0"));
        assert!(!m.matches("attn1.xto_q"));
        assert!(!m.matches("attn1.to_out.01"));
        assert!(!m.matches("attn1.to_q.lora"));
    }

    #[test]
    fn regex_is_full_match() {
        let m = TargetModules::Regex(r".*attn1\.to_(q|v)".into())
            .matcher()
            .unwrap();
        assert!(m.matches("blocks.0.attn1.to_q"));
        assert!(!m.matches("blocks.0.attn1.to_q.x"));
        assert!(!m.matches("blocks.0.attn2.to_q"));
        assert!(TargetModules::Regex("(".into()).matcher().is_err());
    }

    #[test]
    fn scales() {
        let c = LoraConfig::paper();
        assert_eq!((c.r, c.scale()), (16, 2.0));
        assert_eq!(c.init_lora_weights, InitLoraWeights::Gaussian);
        assert_eq!(c.clone().with_use_rslora(true).scale(), 8.0);
        assert!(c.clone().with_lora_dropout(1.0).validate().is_err());
    }

    #[test]
    fn gaussian_init_has_std_one_over_r() {
        let mut init = FactorInit::new(3, InitLoraWeights::Gaussian);
        let a = init.a(40_000, 8, 4);
        let var = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var.sqrt() - 0.25).abs() < 0.01, "std {}", var.sqrt());
        assert!(init.b(8, 4).iter().all(|b| *b == 0.0));
    }

    #[test]
    fn default_init_is_bounded_kaiming() {
        let mut init = FactorInit::new(3, InitLoraWeights::Default);
        let a = init.a(10_000, 16, 4);
        let max = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(max <= 0.25 && max > 0.24, "max {max}");
    }
}
