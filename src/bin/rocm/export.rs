//! `rocm export`: a LoRA (a training checkpoint or an adapter file in any layout we read) written
//! in the format another tool takes, or fused into the UNet.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rocm::lora::{
    LoadOptions, TextEncoderKeys, load_adapters_with, save_diffusers, save_kohya,
    save_merged_weights, save_peft,
};
use rocm::models::{DIFFUSERS_WEIGHT_FILES, UNet2DConditionModel};

use crate::Failure;
use crate::train::check_lora;

/// What `rocm export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `adapter_model.safetensors` + `adapter_config.json`: `PeftModel.from_pretrained`.
    Peft,
    /// `pytorch_lora_weights.safetensors` with the `LoraConfig` in its header: diffusers'
    /// `load_lora_weights`.
    Diffusers,
    /// `lora_unet_*` keys with the real `.alpha`: ComfyUI, A1111, kohya's scripts, and
    /// `load_lora_weights`.
    Kohya,
    /// A diffusers `unet/` folder with the adapters fused in: `UNet2DConditionModel.from_pretrained`.
    Merged,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 4] = [Self::Peft, Self::Diffusers, Self::Kohya, Self::Merged];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Peft => "peft",
            Self::Diffusers => "diffusers",
            Self::Kohya => "kohya",
            Self::Merged => "merged",
        }
    }

    /// `peft|diffusers|kohya|merged`.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join("|")
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown format `{s}` (expected {})", Self::names()))
    }
}

/// What `rocm export` was asked to do.
pub struct ExportArgs {
    /// The pipeline folder or hub id the LoRA belongs to (or its `unet/` folder).
    pub model: String,
    /// A checkpoint folder or adapter file.
    pub lora: PathBuf,
    /// The output format.
    pub format: Format,
    /// Output: a folder (`peft`, `merged`), a file or folder (`diffusers`, `kohya`).
    pub out: PathBuf,
    /// Load the UNet part of a file that also adapts the text encoder.
    pub skip_text_encoder: bool,
    /// `flex`, `wgpu`, `cuda[:N]`, `auto`.
    pub device: String,
}

/// How `--lora` files load: text-encoder adapters refused unless `--skip-text-encoder`.
pub fn load_options(skip_text_encoder: bool) -> LoadOptions {
    LoadOptions {
        text_encoder: if skip_text_encoder {
            TextEncoderKeys::Skip
        } else {
            TextEncoderKeys::Refuse
        },
        ..LoadOptions::default()
    }
}

/// The UNet folder of `model`: `<pipeline>/unet`, or `model` itself when it is a UNet folder.
fn unet_dir(model: &str) -> Result<PathBuf, Failure> {
    let files = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ];
    let dir = rocm::models::hub::model_dir(model, &files)
        .map_err(|e| format!("--model `{model}`: {e}"))?;
    if dir.join("unet").join("config.json").is_file() {
        return Ok(dir.join("unet"));
    }
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    Err(format!(
        "--model `{model}`: neither {} nor {} exists",
        dir.join("unet/config.json").display(),
        dir.join("config.json").display()
    )
    .into())
}

fn weights_file(unet: &Path) -> Result<PathBuf, Failure> {
    DIFFUSERS_WEIGHT_FILES
        .iter()
        .map(|name| unet.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{}: no UNet weights ({})",
                unet.display(),
                DIFFUSERS_WEIGHT_FILES.join(", ")
            )
            .into()
        })
}

/// Runs `rocm export`: loads the UNet and the adapters (checking every key and shape), writes
/// the requested format (each file atomically: an interrupted export leaves the previous file
/// or none) and prints the path of what it wrote on stdout.
pub fn export(args: &ExportArgs) -> Result<(), Failure> {
    check_lora(&args.lora)?;
    let unet_dir = unet_dir(&args.model)?;
    let (device, _) = rocm::select_device(&args.device)?;
    let mut unet = UNet2DConditionModel::from_pretrained(&unet_dir, &device)
        .map_err(|e| format!("--model `{}`: {e}", args.model))?;
    let report = load_adapters_with(&mut unet, &args.lora, &load_options(args.skip_text_encoder))
        .map_err(|e| format!("--lora {}: {e}", args.lora.display()))?;
    eprintln!(
        "loaded {} LoRA adapters from {}",
        report.loaded.len(),
        report.file.display()
    );
    let out = &args.out;
    let written = match args.format {
        Format::Peft => save_peft(&unet, out)?,
        Format::Diffusers => save_diffusers(&unet, out, "unet")?,
        Format::Kohya => save_kohya(&unet, out)?,
        Format::Merged => {
            std::fs::create_dir_all(out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let config = unet_dir.join("config.json");
            let text = std::fs::read(&config)
                .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
            rocm::lora::write_atomically(out.join("config.json"), &text)?;
            save_merged_weights(
                &unet,
                weights_file(&unet_dir)?,
                out.join(DIFFUSERS_WEIGHT_FILES[0]),
            )?;
            out.clone()
        }
    };
    println!("{}", written.display());
    Ok(())
}
