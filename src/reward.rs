//! The built-in rewards by name ([`RewardKind`]): one list for the run configuration, the CLI's
//! help and its error messages. A reward of your own needs no name here: pass it to
//! [`crate::run::RunConfig::build_with_reward`] (or to the trainer builder directly).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::rewards::{
    Aesthetic, ClipScore, ColorTarget, Compressibility, HpsV2, PickScore, RewardModel,
};

/// A built-in reward.
///
/// ```
/// use rocm::reward::RewardKind;
///
/// let kind: RewardKind = "pickscore".parse()?;
/// assert_eq!(kind.default_model(), Some("yuvalkirstain/PickScore_v1"));
/// assert!("pickscor".parse::<RewardKind>().unwrap_err().to_string().contains("hpsv2"));
/// # Ok::<(), rocm::reward::UnknownReward>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    /// The LAION aesthetic predictor: a linear head on CLIP ViT-L/14 image embeddings.
    Aesthetic,
    /// CLIPScore, `max(100 · cos, 0)` of image and prompt embeddings.
    #[serde(rename = "clipscore")]
    ClipScore,
    /// CLIPScore as the paper scales it (`cos` without the 100 and the clamp).
    #[serde(rename = "clipscore-paper")]
    ClipScorePaper,
    /// PickScore (`logit_scale · cos` of a CLIP-H fine-tuned on Pick-a-Pic).
    #[serde(rename = "pickscore")]
    PickScore,
    /// HPSv2 (an open_clip ViT-H/14 fine-tuned on human preferences).
    #[serde(rename = "hpsv2")]
    HpsV2,
    /// Redness: a colour surrogate without a model (for tests and smoke runs).
    Color,
    /// JPEG-style compressibility surrogate without a model.
    Compressibility,
    /// The 2-D toy's proxy reward, the x-coordinate of a point (`model = "toy"` only).
    X,
    /// The shapes world's hidden preference `h = fidelity + taste`
    /// ([`rocm_shapes::HiddenPreference`], 32 × 32 images): the held-out truth, for
    /// evaluation only (`[[held_out]]`), never a training reward (not differentiable).
    #[serde(rename = "shapes-h")]
    ShapesH,
}

impl RewardKind {
    /// Every built-in reward, in the order help texts list them.
    pub const ALL: [Self; 9] = [
        Self::Aesthetic,
        Self::ClipScore,
        Self::ClipScorePaper,
        Self::PickScore,
        Self::HpsV2,
        Self::Color,
        Self::Compressibility,
        Self::X,
        Self::ShapesH,
    ];

    /// The configuration and CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aesthetic => "aesthetic",
            Self::ClipScore => "clipscore",
            Self::ClipScorePaper => "clipscore-paper",
            Self::PickScore => "pickscore",
            Self::HpsV2 => "hpsv2",
            Self::Color => "color",
            Self::Compressibility => "compressibility",
            Self::X => "x",
            Self::ShapesH => "shapes-h",
        }
    }

    /// The names of [`RewardKind::ALL`], comma-separated.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Whether the reward scores images (every built-in one but the toy's `x`).
    pub fn is_image_reward(self) -> bool {
        self != Self::X
    }

    /// The name the loaded reward reports ([`RewardModel::name`]): what `eval.jsonl` and the
    /// metrics call it (`clipscore-paper` is still `clipscore`, `shapes-h` is `h`).
    pub fn reward_name(self) -> &'static str {
        match self {
            Self::ClipScorePaper => Self::ClipScore.name(),
            Self::ShapesH => "h",
            other => other.name(),
        }
    }

    /// Whether a trainer can follow the reward's gradient (all but the evaluation-only
    /// [`RewardKind::ShapesH`]).
    pub fn is_differentiable(self) -> bool {
        self != Self::ShapesH
    }

    /// The model the reward loads when none is given (a hub id, resolved in the local Hugging
    /// Face cache), or `None` for rewards without a model.
    pub fn default_model(self) -> Option<&'static str> {
        match self {
            Self::PickScore => Some(PickScore::REPO),
            Self::Aesthetic | Self::ClipScore | Self::ClipScorePaper => Some(Aesthetic::CLIP_REPO),
            Self::HpsV2 => Some("xswu/HPSv2"),
            Self::Color | Self::Compressibility | Self::X | Self::ShapesH => None,
        }
    }

    /// Loads the image reward from `model` (a folder or hub id; default
    /// [`RewardKind::default_model`]) and, for `aesthetic`, the head file `head` (default: the
    /// LAION head embedded in the rewards crate).
    pub fn load(
        self,
        model: Option<&str>,
        head: Option<&Path>,
        device: &Device,
    ) -> Result<Box<dyn RewardModel>, RewardError> {
        let model = || -> Result<String, RewardError> {
            model
                .map(str::to_string)
                .or_else(|| self.default_model().map(str::to_string))
                .ok_or(RewardError::NoModel(self))
        };
        let err = |source| RewardError::Load { kind: self, source };
        Ok(match self {
            Self::Aesthetic => Box::new(
                match head {
                    Some(head) => Aesthetic::from_pretrained(&model()?, head, device),
                    None => Aesthetic::laion(&model()?, device),
                }
                .map_err(err)?,
            ),
            Self::ClipScore => {
                Box::new(ClipScore::from_pretrained(&model()?, device).map_err(err)?)
            }
            Self::ClipScorePaper => Box::new(
                ClipScore::from_pretrained(&model()?, device)
                    .map_err(err)?
                    .paper(),
            ),
            Self::PickScore => {
                Box::new(PickScore::from_pretrained(&model()?, device).map_err(err)?)
            }
            Self::HpsV2 => Box::new(HpsV2::from_pretrained(&model()?, device).map_err(err)?),
            Self::Color => Box::new(ColorTarget::new([1.0, 0.0, 0.0])),
            Self::Compressibility => Box::new(Compressibility),
            Self::ShapesH => Box::new(rocm_shapes::HiddenPreference),
            Self::X => return Err(RewardError::NotAnImageReward(self)),
        })
    }
}

impl fmt::Display for RewardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reward name that is not one of [`RewardKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown reward `{name}`, expected one of {}", RewardKind::names())]
pub struct UnknownReward {
    /// The name that was given.
    pub name: String,
}

impl FromStr for RewardKind {
    type Err = UnknownReward;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| UnknownReward {
                name: name.to_string(),
            })
    }
}

/// Loading a built-in reward failed.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// The reward needs a model and has no default.
    #[error("reward `{0}` needs a model (`--reward-model`)")]
    NoModel(RewardKind),
    /// The reward is not an image reward.
    #[error("reward `{0}` scores 2-D points, not images: it is the toy's (`model = \"toy\"`)")]
    NotAnImageReward(RewardKind),
    /// The reward's model did not load.
    #[error("reward `{kind}`: {source}")]
    Load {
        /// The reward.
        kind: RewardKind,
        /// What the rewards crate said (names the file).
        #[source]
        source: crate::rewards::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse_and_serde() {
        for kind in RewardKind::ALL {
            assert_eq!(kind.name().parse::<RewardKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }

    #[test]
    fn unknown_names_list_every_reward() {
        let msg = "aesthetics".parse::<RewardKind>().unwrap_err().to_string();
        for kind in RewardKind::ALL {
            assert!(msg.contains(kind.name()), "{msg}");
        }
    }

    #[test]
    fn model_free_rewards_report_their_reward_name() {
        let device = Device::flex();
        for kind in [
            RewardKind::Color,
            RewardKind::Compressibility,
            RewardKind::ShapesH,
        ] {
            let reward = kind
                .load(None, None, &device)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(reward.name(), kind.reward_name());
        }
        assert_eq!(RewardKind::ClipScorePaper.reward_name(), "clipscore");
        assert!(!RewardKind::ShapesH.is_differentiable());
        assert!(RewardKind::ALL[..8].iter().all(|k| k.is_differentiable()));
    }
}
