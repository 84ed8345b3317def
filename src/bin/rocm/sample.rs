//! `rocm sample`: text-to-image with a diffusers LCM pipeline, optionally with LoRA adapters.

use std::path::PathBuf;
use std::time::Instant;

use rocm::lora::load_adapters_with;
use rocm::models::LcmPipeline;
use rocm::models::pipeline::NoiseSource;
use rocm::tensor_files::{read_noise, write_image_tensor};
use rocm::trainer::images::{numbered_caption, write_images};

use crate::Failure;
use crate::export::load_options;
use crate::train::check_lora;

/// What `rocm sample` was asked to do.
pub struct SampleArgs {
    /// A diffusers pipeline folder or hub id.
    pub model: String,
    /// One image per prompt.
    pub prompts: Vec<String>,
    /// Adapters: a `.safetensors` file (diffusers/PEFT layout) or a folder holding one (a
    /// checkpoint, a PEFT folder).
    pub lora: Option<PathBuf>,
    /// `K`, sampler steps.
    pub steps: usize,
    /// Guidance scale `g`.
    pub guidance: f32,
    /// Noise seed of the batch.
    pub seed: u64,
    /// Injected noise (`latents`, `noise`) instead of the seed's.
    pub noise: Option<PathBuf>,
    /// Also write the images as an f32 tensor file.
    pub out_tensor: Option<PathBuf>,
    /// Load only the UNet part of a LoRA that also adapts the text encoder.
    pub skip_text_encoder: bool,
    /// Output folder.
    pub out: PathBuf,
    /// `flex`, `wgpu`, `cuda[:N]`, `auto`.
    pub device: String,
}

/// Runs `rocm sample`: writes `OUT/image-<i>.png`, a captioned `OUT/grid.png` (and the
/// `--out-tensor` file) and prints their paths.
pub fn sample(args: &SampleArgs) -> Result<(), Failure> {
    if args.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    // Cheap checks first: a missing adapter file fails before the pipeline loads.
    if let Some(lora) = &args.lora {
        check_lora(lora)?;
    }
    let (device, backend) = rocm::select_device(&args.device)?;
    let mut pipeline = LcmPipeline::from_pretrained(&args.model, &device)
        .map_err(|e| format!("--model `{}`: {e}", args.model))?;
    eprintln!("loaded {} on {backend}", args.model);
    if let Some(lora) = &args.lora {
        let options = load_options(args.skip_text_encoder);
        let report = load_adapters_with(&mut pipeline.unet, lora, &options)
            .map_err(|e| format!("--lora {}: {e}", lora.display()))?;
        eprintln!(
            "loaded {} LoRA adapters from {}",
            report.loaded.len(),
            report.file.display()
        );
    }
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let noise = match &args.noise {
        Some(path) => NoiseSource::Injected(
            read_noise(path, prompts.len(), args.steps, &device)
                .map_err(|e| format!("--noise: {e}"))?,
        ),
        None => NoiseSource::Seed(args.seed),
    };
    let start = Instant::now();
    let progress = |k: usize, total: usize| {
        let secs = start.elapsed().as_secs_f32();
        eprintln!("step {k}/{total} ({secs:.1} s)");
    };
    let images =
        pipeline.generate_with_progress(&prompts, args.steps, args.guidance, noise, progress)?;
    if let Some(path) = &args.out_tensor {
        write_image_tensor(path, images.clone()).map_err(|e| format!("--out-tensor: {e}"))?;
        println!("{}", path.display());
    }
    let noise = match &args.noise {
        Some(path) => format!("noise {}", path.display()),
        None => format!("seed {}", args.seed),
    };
    let lora = args
        .lora
        .as_ref()
        .map(|l| format!(", LoRA {}", l.display()));
    let header = format!(
        "{}: {noise}, {} steps, guidance {}{}",
        args.model,
        args.steps,
        args.guidance,
        lora.unwrap_or_default()
    );
    let caption = numbered_caption(header, "image", &args.prompts);
    for path in write_images(&args.out, images, &caption)? {
        println!("{}", path.display());
    }
    Ok(())
}
