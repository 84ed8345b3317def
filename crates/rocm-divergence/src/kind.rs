//! The built-in divergences by name ([`DivergenceKind`]) and with their settings
//! ([`DivergenceConfig`]): one list for configuration files, command-line help and error messages.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    DEFAULT_QUADRATURE_NODES, Estimator, FDivergence, Fisher, GeneralF, JensenShannon, Kl,
    ReverseKl, SquaredHellinger,
};

/// A boxed divergence that can be shared between threads: what [`DivergenceConfig::build`]
/// returns and what a trainer holds.
pub type BoxedDivergence = Box<dyn FDivergence + Send + Sync>;

/// A built-in divergence, by its configuration name.
///
/// ```
/// use rocm_divergence::DivergenceKind;
///
/// let kind: DivergenceKind = "js".parse()?;
/// assert_eq!(kind, DivergenceKind::Js);
/// assert_eq!(kind.name(), "js");
/// let err = "kll".parse::<DivergenceKind>().unwrap_err();
/// assert!(err.to_string().contains("kl, reverse_kl, js"));
/// # Ok::<(), rocm_divergence::UnknownDivergence>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DivergenceKind {
    /// `KL(π_θ ‖ π_ref)`, closed form (the paper's main setting).
    Kl,
    /// `KL(π_ref ‖ π_θ)`, closed form.
    ReverseKl,
    /// Jensen–Shannon, by Gauss–Hermite quadrature.
    Js,
    /// Squared Hellinger, closed form.
    HellingerSq,
    /// Fisher divergence, closed form.
    Fisher,
    /// Pearson χ², from its generator by quadrature.
    Chi2,
    /// Total variation, from its generator by quadrature.
    Tv,
}

impl DivergenceKind {
    /// Every built-in divergence, in the order help texts list them.
    pub const ALL: [Self; 7] = [
        Self::Kl,
        Self::ReverseKl,
        Self::Js,
        Self::HellingerSq,
        Self::Fisher,
        Self::Chi2,
        Self::Tv,
    ];

    /// The configuration name (`kl`, `reverse_kl`, `js`, `hellinger_sq`, `fisher`, `chi2`,
    /// `tv`), also the built divergence's [`FDivergence::name`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Kl => "kl",
            Self::ReverseKl => "reverse_kl",
            Self::Js => "js",
            Self::HellingerSq => "hellinger_sq",
            Self::Fisher => "fisher",
            Self::Chi2 => "chi2",
            Self::Tv => "tv",
        }
    }

    /// The names of [`DivergenceKind::ALL`], comma-separated (for help texts and errors).
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Whether the divergence is estimated by quadrature (and so takes a `nodes` setting).
    pub fn uses_quadrature(self) -> bool {
        matches!(self, Self::Js | Self::Chi2 | Self::Tv)
    }

    /// The divergence with its default settings.
    pub fn build(self) -> BoxedDivergence {
        DivergenceConfig::from(self).build()
    }
}

impl fmt::Display for DivergenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A divergence name that is not one of [`DivergenceKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown divergence `{name}`, expected one of {}",
    DivergenceKind::names()
)]
pub struct UnknownDivergence {
    /// The name that was given.
    pub name: String,
}

impl FromStr for DivergenceKind {
    type Err = UnknownDivergence;

    /// The configuration names, and the long aliases `jensen_shannon`, `hellinger`,
    /// `pearson_chi2`, `total_variation`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "kl" => Self::Kl,
            "reverse_kl" => Self::ReverseKl,
            "js" | "jensen_shannon" => Self::Js,
            "hellinger_sq" | "hellinger" => Self::HellingerSq,
            "fisher" => Self::Fisher,
            "chi2" | "pearson_chi2" => Self::Chi2,
            "tv" | "total_variation" => Self::Tv,
            _ => {
                return Err(UnknownDivergence {
                    name: name.to_string(),
                });
            }
        })
    }
}

/// A built-in divergence with its settings: what a configuration file names.
///
/// In TOML, a divergence without settings is its name, one with settings a table with `kind`:
///
/// ```toml
/// divergence = "kl"
/// # or
/// divergence = { kind = "js", nodes = 32 }
/// ```
///
/// `nodes` (the Gauss–Hermite nodes per element, default
/// [`DEFAULT_QUADRATURE_NODES`]) applies to `js`, `chi2` and `tv` only; any other key, or
/// `nodes` on a closed-form divergence, is refused with the list of valid ones.
///
/// ```
/// use rocm_divergence::{DivergenceConfig, FDivergence};
///
/// let js = DivergenceConfig::Js { nodes: 32 };
/// assert_eq!(js.build().name(), "js");
/// assert_eq!(DivergenceConfig::default(), DivergenceConfig::Kl);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DivergenceConfig {
    /// `KL(π_θ ‖ π_ref)` (default).
    #[default]
    Kl,
    /// `KL(π_ref ‖ π_θ)`.
    ReverseKl,
    /// Jensen–Shannon by quadrature.
    Js {
        /// Gauss–Hermite nodes per element.
        nodes: usize,
    },
    /// Squared Hellinger.
    HellingerSq,
    /// Fisher divergence.
    Fisher,
    /// Pearson χ² by quadrature.
    Chi2 {
        /// Gauss–Hermite nodes per element.
        nodes: usize,
    },
    /// Total variation by quadrature.
    Tv {
        /// Gauss–Hermite nodes per element.
        nodes: usize,
    },
}

impl From<DivergenceKind> for DivergenceConfig {
    /// The kind with its default settings.
    fn from(kind: DivergenceKind) -> Self {
        let nodes = DEFAULT_QUADRATURE_NODES;
        match kind {
            DivergenceKind::Kl => Self::Kl,
            DivergenceKind::ReverseKl => Self::ReverseKl,
            DivergenceKind::Js => Self::Js { nodes },
            DivergenceKind::HellingerSq => Self::HellingerSq,
            DivergenceKind::Fisher => Self::Fisher,
            DivergenceKind::Chi2 => Self::Chi2 { nodes },
            DivergenceKind::Tv => Self::Tv { nodes },
        }
    }
}

impl DivergenceConfig {
    /// Which divergence this is.
    pub fn kind(&self) -> DivergenceKind {
        match self {
            Self::Kl => DivergenceKind::Kl,
            Self::ReverseKl => DivergenceKind::ReverseKl,
            Self::Js { .. } => DivergenceKind::Js,
            Self::HellingerSq => DivergenceKind::HellingerSq,
            Self::Fisher => DivergenceKind::Fisher,
            Self::Chi2 { .. } => DivergenceKind::Chi2,
            Self::Tv { .. } => DivergenceKind::Tv,
        }
    }

    /// The quadrature nodes, for the divergences estimated by quadrature.
    pub fn nodes(&self) -> Option<usize> {
        match *self {
            Self::Js { nodes } | Self::Chi2 { nodes } | Self::Tv { nodes } => Some(nodes),
            _ => None,
        }
    }

    /// The configuration name (see [`DivergenceKind::name`]).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Checks the settings: at least 2 quadrature nodes (and at most 1024).
    pub fn validate(&self) -> Result<(), String> {
        match self.nodes() {
            Some(n) if !(2..=1024).contains(&n) => Err(format!(
                "divergence `{}`: nodes must be in 2..=1024, got {n}",
                self.name()
            )),
            _ => Ok(()),
        }
    }

    /// The divergence this configures.
    pub fn build(&self) -> BoxedDivergence {
        match *self {
            Self::Kl => Box::new(Kl),
            Self::ReverseKl => Box::new(ReverseKl),
            Self::Js { nodes } => Box::new(JensenShannon::quadrature(nodes)),
            Self::HellingerSq => Box::new(SquaredHellinger),
            Self::Fisher => Box::new(Fisher),
            Self::Chi2 { nodes } => {
                Box::new(GeneralF::pearson_chi2().with_estimator(Estimator::Quadrature(nodes)))
            }
            Self::Tv { nodes } => {
                Box::new(GeneralF::total_variation().with_estimator(Estimator::Quadrature(nodes)))
            }
        }
    }
}

impl fmt::Display for DivergenceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nodes() {
            Some(n) => write!(f, "{} ({n} nodes)", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

impl Serialize for DivergenceConfig {
    /// A name when there are no settings, else `{ kind, nodes }`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.nodes() {
            None => serializer.serialize_str(self.name()),
            Some(nodes) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("kind", self.name())?;
                map.serialize_entry("nodes", &nodes)?;
                map.end()
            }
        }
    }
}

/// The keys of the table form.
const KEYS: &[&str] = &["kind", "nodes"];

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = DivergenceConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a divergence name ({}) or a table {{ kind = \"js\", nodes = 32 }}",
            DivergenceKind::names()
        )
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        name.parse::<DivergenceKind>()
            .map(DivergenceConfig::from)
            .map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut kind, mut nodes): (Option<String>, Option<usize>) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => kind = Some(map.next_value()?),
                "nodes" => nodes = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        let kind: DivergenceKind = kind
            .ok_or_else(|| de::Error::missing_field("kind"))?
            .parse()
            .map_err(de::Error::custom)?;
        let config = match (DivergenceConfig::from(kind), nodes) {
            (DivergenceConfig::Js { .. }, Some(nodes)) => DivergenceConfig::Js { nodes },
            (DivergenceConfig::Chi2 { .. }, Some(nodes)) => DivergenceConfig::Chi2 { nodes },
            (DivergenceConfig::Tv { .. }, Some(nodes)) => DivergenceConfig::Tv { nodes },
            (_, Some(_)) => {
                return Err(de::Error::custom(format!(
                    "divergence `{kind}` is closed-form and takes no `nodes` \
                     (only js, chi2 and tv do)"
                )));
            }
            (config, None) => config,
        };
        config.validate().map_err(de::Error::custom)?;
        Ok(config)
    }
}

impl<'de> Deserialize<'de> for DivergenceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ConfigVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_and_builds_under_it() {
        for kind in DivergenceKind::ALL {
            assert_eq!(kind.name().parse::<DivergenceKind>(), Ok(kind));
            assert_eq!(kind.build().name(), kind.name());
            let config = DivergenceConfig::from(kind);
            assert_eq!(config.kind(), kind);
            assert_eq!(config.nodes().is_some(), kind.uses_quadrature());
        }
        assert_eq!("hellinger".parse(), Ok(DivergenceKind::HellingerSq));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let msg = "kll".parse::<DivergenceKind>().unwrap_err().to_string();
        assert!(msg.contains("`kll`"), "{msg}");
        for kind in DivergenceKind::ALL {
            assert!(msg.contains(kind.name()), "{msg}");
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(DivergenceConfig::Js { nodes: 1 }.validate().is_err());
        assert!(DivergenceConfig::Js { nodes: 16 }.validate().is_ok());
        assert!(DivergenceConfig::Kl.validate().is_ok());
    }
}
