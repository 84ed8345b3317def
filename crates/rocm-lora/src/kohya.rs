//! The kohya-ss layout of LoRA files, which A1111, ComfyUI and kohya's own tools read:
//! one key prefix per component (`lora_unet_`, `lora_te_`), the module path flattened with `_`,
//! `.lora_down.weight` (A) / `.lora_up.weight` (B) and a per-module `.alpha` scalar (the real
//! α: every such loader scales by `alpha / r`).
//!
//! ```text
//! lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  [r, in]
//! lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight    [out, r]
//! lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha             []
//! ```
//!
//! For SD 1.x UNets kohya writes the diffusers module names (above), and so does
//! [`save_kohya`]. SDXL files use the LDM/SGM names of the original Stability code
//! (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`); loading reads both, by
//! matching the file's names against every layer of the model under either spelling
//! ([`KohyaNames`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::save::{export, no_adapters};
use crate::st::{F32View, write_file};
use crate::{Error, LoraContainer, lora_capable_paths};

/// The key prefix of UNet adapters in a kohya file.
pub const KOHYA_UNET_PREFIX: &str = "lora_unet_";
/// The key prefixes of text-encoder adapters in a kohya file (SD 1.x; SDXL's two encoders).
pub const KOHYA_TEXT_ENCODER_PREFIXES: [&str; 3] = ["lora_te_", "lora_te1_", "lora_te2_"];
/// The file name [`save_kohya`] gives a LoRA saved into a directory.
pub const KOHYA_WEIGHTS: &str = "lora_kohya.safetensors";

/// The kohya name of the UNet layer at diffusers module path `path`:
/// `lora_unet_` + the path with every `.` replaced by `_`.
///
/// ```
/// assert_eq!(
///     rocm_lora::kohya_name("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"),
///     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
/// );
/// ```
pub fn kohya_name(path: &str) -> String {
    format!("{KOHYA_UNET_PREFIX}{}", path.replace('.', "_"))
}

/// The α that makes a kohya loader (scale `alpha / r`) apply the adapter's own scale: α itself,
/// or `α·√r` for rank-stabilised adapters (scale `α / √r`).
fn kohya_alpha(alpha: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha * (rank as f64).sqrt()
    } else {
        alpha
    }
}

/// Save the adapters of `model` (a UNet) in the kohya layout: keys `lora_unet_<path with _>`
/// `.lora_down.weight` / `.lora_up.weight` (f32, the shapes PEFT uses: `[r, in]` / `[out, r]`,
/// `[r, in, kh, kw]` / `[out, r, 1, 1]` for convolutions) and `.alpha` (a 0-d f32 tensor with
/// the real α, `α·√r` for rsLoRA so that `alpha / r` is the adapter's scale), with kohya's
/// `ss_network_module`, `ss_network_dim` and `ss_network_alpha` header entries.
/// ComfyUI, A1111, kohya's scripts, [`load_adapters`](crate::load_adapters) and diffusers'
/// `load_lora_weights` read it. `path` is a file, or a directory that gets
/// [`KOHYA_WEIGHTS`]. Returns the file's path.
pub fn save_kohya<M: LoraContainer>(model: &M, path: impl AsRef<Path>) -> Result<PathBuf, Error> {
    let path = path.as_ref();
    let file = if path.extension().is_some_and(|e| e == "safetensors") {
        path.to_path_buf()
    } else {
        path.join(KOHYA_WEIGHTS)
    };
    let adapters = export(model);
    let Some(first) = adapters.first() else {
        return Err(no_adapters());
    };
    let first_alpha = kohya_alpha(first.alpha, first.rank, first.use_rslora);
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("ss_network_module".to_string(), "networks.lora".to_string()),
        ("ss_network_dim".to_string(), first.rank.to_string()),
        ("ss_network_alpha".to_string(), first_alpha.to_string()),
    ]);
    let mut tensors = BTreeMap::new();
    for a in adapters {
        let name = kohya_name(&a.path);
        let alpha = kohya_alpha(a.alpha, a.rank, a.use_rslora);
        tensors.insert(format!("{name}.lora_down.weight"), F32View::new(a.a));
        tensors.insert(format!("{name}.lora_up.weight"), F32View::new(a.b));
        tensors.insert(
            format!("{name}.alpha"),
            F32View::from_values(Vec::new(), &[alpha as f32]),
        );
    }
    write_file(&file, &tensors, meta)?;
    Ok(file)
}

/// The LDM/SGM path of a diffusers UNet module path (`down_blocks.1.attentions.0.proj_in` →
/// `input_blocks.4.1.proj_in` with 2 layers per block), given the UNet's block structure.
fn ldm_path(path: &str, s: &UNetStructure) -> Option<String> {
    let top = [
        ("conv_in", "input_blocks.0.0"),
        ("conv_out", "out.2"),
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
    ];
    if let Some((_, ldm)) = top.iter().find(|(d, _)| *d == path) {
        return Some((*ldm).to_string());
    }
    let parts: Vec<&str> = path.split('.').collect();
    let index = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
    let rest = |from: usize| parts.get(from..).map(|p| p.join("."));
    match *parts.first()? {
        "down_blocks" => {
            let b = index(1)?;
            let offset = s.down_offset(b)?;
            match *parts.get(2)? {
                "resnets" => Some(format!(
                    "input_blocks.{}.0.{}",
                    offset + index(3)?,
                    resnet_inner(&rest(4)?)?
                )),
                "attentions" => Some(format!(
                    "input_blocks.{}.1.{}",
                    offset + index(3)?,
                    rest(4)?
                )),
                "downsamplers" if rest(3)? == "0.conv" => Some(format!(
                    "input_blocks.{}.0.op",
                    offset + s.down_layers.get(b)?
                )),
                _ => None,
            }
        }
        "mid_block" => {
            let slot = match (*parts.get(1)?, index(2)?) {
                ("resnets", 0) => 0,
                ("attentions", 0) => 1,
                ("resnets", 1) => 2,
                _ => return None,
            };
            let inner = rest(3)?;
            let inner = if slot == 1 {
                inner
            } else {
                resnet_inner(&inner)?
            };
            Some(format!("middle_block.{slot}.{inner}"))
        }
        "up_blocks" => {
            let b = index(1)?;
            let offset = s.up_offset(b)?;
            match *parts.get(2)? {
                "resnets" => Some(format!(
                    "output_blocks.{}.0.{}",
                    offset + index(3)?,
                    resnet_inner(&rest(4)?)?
                )),
                "attentions" => Some(format!(
                    "output_blocks.{}.1.{}",
                    offset + index(3)?,
                    rest(4)?
                )),
                "upsamplers" if rest(3)? == "0.conv" => {
                    let last = offset + s.up_layers.get(b)?.checked_sub(1)?;
                    let slot = if s.up_attentions.get(b).copied()? {
                        2
                    } else {
                        1
                    };
                    Some(format!("output_blocks.{last}.{slot}.conv"))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A resnet's inner module names in the LDM code.
fn resnet_inner(inner: &str) -> Option<String> {
    let ldm = match inner {
        "conv1" => "in_layers.2",
        "conv2" => "out_layers.3",
        "time_emb_proj" => "emb_layers.1",
        "conv_shortcut" => "skip_connection",
        _ => return None,
    };
    Some(ldm.to_string())
}

/// The block structure of a diffusers UNet, read off its module paths.
#[derive(Debug, Default)]
struct UNetStructure {
    /// Resnets per down block.
    down_layers: Vec<usize>,
    /// Whether each down block ends in a downsampler.
    downsamplers: Vec<bool>,
    /// Resnets per up block.
    up_layers: Vec<usize>,
    /// Whether each up block has attentions.
    up_attentions: Vec<bool>,
}

impl UNetStructure {
    fn from_paths(paths: &[String]) -> Self {
        let mut s = Self::default();
        fn grow<T: Default + Clone>(v: &mut Vec<T>, i: usize) {
            if v.len() <= i {
                v.resize(i + 1, T::default());
            }
        }
        for path in paths {
            let parts: Vec<&str> = path.split('.').collect();
            let (Some(&kind), Some(b), Some(&inner)) = (
                parts.first(),
                parts.get(1).and_then(|p| p.parse::<usize>().ok()),
                parts.get(2),
            ) else {
                continue;
            };
            let layer = parts.get(3).and_then(|p| p.parse::<usize>().ok());
            match (kind, inner, layer) {
                ("down_blocks", "resnets", Some(l)) => {
                    grow(&mut s.down_layers, b);
                    s.down_layers[b] = s.down_layers[b].max(l + 1);
                }
                ("down_blocks", "downsamplers", _) => {
                    grow(&mut s.downsamplers, b);
                    s.downsamplers[b] = true;
                }
                ("up_blocks", "resnets", Some(l)) => {
                    grow(&mut s.up_layers, b);
                    s.up_layers[b] = s.up_layers[b].max(l + 1);
                }
                ("up_blocks", "attentions", _) => {
                    grow(&mut s.up_attentions, b);
                    s.up_attentions[b] = true;
                }
                _ => {}
            }
        }
        let n_down = s.down_layers.len();
        grow(&mut s.downsamplers, n_down.saturating_sub(1));
        let n_up = s.up_layers.len();
        grow(&mut s.up_attentions, n_up.saturating_sub(1));
        s
    }

    /// The `input_blocks` index of down block `b`'s first resnet.
    fn down_offset(&self, b: usize) -> Option<usize> {
        let before = self.down_layers.get(..b)?.iter().zip(&self.downsamplers);
        Some(1 + before.map(|(l, d)| l + usize::from(*d)).sum::<usize>())
    }

    /// The `output_blocks` index of up block `b`'s first resnet.
    fn up_offset(&self, b: usize) -> Option<usize> {
        Some(self.up_layers.get(..b)?.iter().sum())
    }
}

/// The kohya names of a model's layers: `lora_unet_` + the module path with `_` for `.`, in
/// diffusers' naming and, for a diffusers UNet, in the LDM/SGM naming of the same layer.
#[derive(Debug)]
pub(crate) struct KohyaNames {
    /// Flattened name (without the prefix) → module path; `None` where two paths collide.
    names: HashMap<String, Option<String>>,
}

impl KohyaNames {
    /// The names of every LoRA-capable layer of `model`.
    pub(crate) fn of<M: LoraContainer>(model: &M) -> Self {
        Self::from_paths(&lora_capable_paths(model))
    }

    fn from_paths(paths: &[String]) -> Self {
        let structure = UNetStructure::from_paths(paths);
        let mut names: HashMap<String, Option<String>> = HashMap::new();
        let mut insert = |flat: String, path: &String| {
            names
                .entry(flat)
                .and_modify(|p| {
                    if p.as_ref() != Some(path) {
                        *p = None;
                    }
                })
                .or_insert_with(|| Some(path.clone()));
        };
        for path in paths {
            insert(path.replace('.', "_"), path);
            if let Some(ldm) = ldm_path(path, &structure) {
                insert(ldm.replace('.', "_"), path);
            }
        }
        Self { names }
    }

    /// The module path of kohya module name `name` (`lora_unet_…`, before the first `.`).
    pub(crate) fn resolve(&self, name: &str) -> Result<&str, String> {
        let flat = name.strip_prefix(KOHYA_UNET_PREFIX).unwrap_or(name);
        match self.names.get(flat) {
            Some(Some(path)) => Ok(path),
            Some(None) => Err(format!(
                "`{name}` names two layers of the model (its `_` could be either's `.`)"
            )),
            None => Err(format!(
                "no LoRA-capable layer of the model is called `{name}` \
                 (in diffusers' or in the LDM/SGM naming)"
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The LoRA-capable paths of an SD 1.x-shaped UNet with `l` resnets per down block
    /// (two levels, attention in down block 0 and up block 1, as the tiny fixtures).
    fn unet_paths(l: usize) -> Vec<String> {
        let mut p = vec!["conv_in".to_string(), "time_embedding.linear_1".into()];
        for i in 0..l {
            p.push(format!("down_blocks.0.resnets.{i}.conv1"));
            p.push(format!("down_blocks.0.attentions.{i}.proj_in"));
            p.push(format!(
                "down_blocks.0.attentions.{i}.transformer_blocks.0.attn1.to_q"
            ));
        }
        p.push("down_blocks.0.downsamplers.0.conv".into());
        for i in 0..l {
            p.push(format!("down_blocks.1.resnets.{i}.conv1"));
        }
        p.push("down_blocks.1.resnets.0.conv_shortcut".into());
        p.push("mid_block.resnets.0.time_emb_proj".into());
        p.push("mid_block.attentions.0.proj_out".into());
        p.push("mid_block.resnets.1.conv2".into());
        for i in 0..=l {
            p.push(format!("up_blocks.0.resnets.{i}.conv1"));
        }
        p.push("up_blocks.0.upsamplers.0.conv".into());
        for i in 0..=l {
            p.push(format!("up_blocks.1.resnets.{i}.conv1"));
            p.push(format!(
                "up_blocks.1.attentions.{i}.transformer_blocks.0.ff.net.0.proj"
            ));
        }
        p.push("conv_out".into());
        p
    }

    #[test]
    fn ldm_names_follow_the_block_structure() {
        for (l, cases) in [
            (
                1,
                vec![
                    ("input_blocks_0_0", "conv_in"),
                    ("time_embed_0", "time_embedding.linear_1"),
                    (
                        "input_blocks_1_0_in_layers_2",
                        "down_blocks.0.resnets.0.conv1",
                    ),
                    (
                        "input_blocks_1_1_proj_in",
                        "down_blocks.0.attentions.0.proj_in",
                    ),
                    ("input_blocks_2_0_op", "down_blocks.0.downsamplers.0.conv"),
                    (
                        "input_blocks_3_0_in_layers_2",
                        "down_blocks.1.resnets.0.conv1",
                    ),
                    (
                        "input_blocks_3_0_skip_connection",
                        "down_blocks.1.resnets.0.conv_shortcut",
                    ),
                    (
                        "middle_block_0_emb_layers_1",
                        "mid_block.resnets.0.time_emb_proj",
                    ),
                    ("middle_block_1_proj_out", "mid_block.attentions.0.proj_out"),
                    ("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"),
                    (
                        "output_blocks_1_0_in_layers_2",
                        "up_blocks.0.resnets.1.conv1",
                    ),
                    ("output_blocks_1_1_conv", "up_blocks.0.upsamplers.0.conv"),
                    (
                        "output_blocks_2_0_in_layers_2",
                        "up_blocks.1.resnets.0.conv1",
                    ),
                    (
                        "output_blocks_3_1_transformer_blocks_0_ff_net_0_proj",
                        "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj",
                    ),
                    ("out_2", "conv_out"),
                ],
            ),
            (
                2,
                vec![
                    (
                        "input_blocks_2_1_transformer_blocks_0_attn1_to_q",
                        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q",
                    ),
                    ("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
                    (
                        "input_blocks_5_0_in_layers_2",
                        "down_blocks.1.resnets.1.conv1",
                    ),
                    ("output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv"),
                    (
                        "output_blocks_5_0_in_layers_2",
                        "up_blocks.1.resnets.2.conv1",
                    ),
                ],
            ),
        ] {
            let names = KohyaNames::from_paths(&unet_paths(l));
            for (ldm, want) in cases {
                assert_eq!(
                    names.resolve(&format!("lora_unet_{ldm}")),
                    Ok(want),
                    "{ldm}"
                );
                let diffusers = kohya_name(want);
                assert_eq!(names.resolve(&diffusers), Ok(want), "{diffusers}");
            }
        }
    }

    #[test]
    fn unknown_and_colliding_names_are_errors() {
        let names = KohyaNames::from_paths(&["a.b_c".to_string(), "a_b.c".to_string()]);
        assert!(
            names
                .resolve("lora_unet_a_b_c")
                .unwrap_err()
                .contains("two layers")
        );
        let err = names.resolve("lora_unet_x").unwrap_err();
        assert!(err.contains("lora_unet_x"), "{err}");
    }

    #[test]
    fn rslora_alpha_keeps_the_scale() {
        assert_eq!(kohya_alpha(32.0, 16, false), 32.0);
        let a = kohya_alpha(8.0, 16, true);
        assert!((a / 16.0 - 8.0 / 4.0).abs() < 1e-12);
    }
}
