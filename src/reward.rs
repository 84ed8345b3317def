//! Reward models by name, for the `rocm` CLI and the `score` example.

use std::path::Path;

use crate::rewards::{
    Aesthetic, ClipScore, ColorTarget, Compressibility, HpsV2, PickScore, RewardModel,
};
use burn::prelude::Device;

/// The reward names `by_name` accepts.
pub const NAMES: &str =
    "aesthetic, clipscore, clipscore-paper, pickscore, hpsv2, color, compressibility";

/// The model a reward loads when `--reward-model` is not given (a hub id, resolved in the local
/// Hugging Face cache), or `None` for rewards without a model.
pub fn default_model(name: &str) -> Option<&'static str> {
    match name {
        "pickscore" => Some(PickScore::REPO),
        "aesthetic" | "clipscore" | "clipscore-paper" => Some(Aesthetic::CLIP_REPO),
        "hpsv2" => Some("xswu/HPSv2"),
        _ => None,
    }
}

/// Loads the reward `name` from `model` (a folder or hub id; default [`default_model`]) and, for
/// `aesthetic`, the head file `head` (default: the LAION head embedded in the rewards crate).
pub fn by_name(
    name: &str,
    model: Option<&str>,
    head: Option<&Path>,
    device: &Device,
) -> Result<Box<dyn RewardModel>, String> {
    let model = || -> Result<String, String> {
        model
            .map(str::to_string)
            .or_else(|| default_model(name).map(str::to_string))
            .ok_or_else(|| format!("reward `{name}` needs a model"))
    };
    let err = |e: crate::rewards::Error| format!("reward `{name}`: {e}");
    Ok(match name {
        "aesthetic" => Box::new(
            match head {
                Some(head) => Aesthetic::from_pretrained(&model()?, head, device),
                None => Aesthetic::laion(&model()?, device),
            }
            .map_err(err)?,
        ),
        "clipscore" => Box::new(ClipScore::from_pretrained(&model()?, device).map_err(err)?),
        "clipscore-paper" => Box::new(
            ClipScore::from_pretrained(&model()?, device)
                .map_err(err)?
                .paper(),
        ),
        "pickscore" => Box::new(PickScore::from_pretrained(&model()?, device).map_err(err)?),
        "hpsv2" => Box::new(HpsV2::from_pretrained(&model()?, device).map_err(err)?),
        "color" => Box::new(ColorTarget::new([1.0, 0.0, 0.0])),
        "compressibility" => Box::new(Compressibility),
        other => return Err(format!("unknown reward `{other}` ({NAMES})")),
    })
}
