//! Sampling the shipped pipelines on held-out prompts and scoring the samples with the hidden
//! preference's detector: a sample is right when every object the prompt names is found with
//! its colour and its shape (size, position and background are not asked).
//!
//! The LCM is sampled through [`LcmPipeline::generate`]; the teacher through the same loader and
//! its `DDIMScheduler` ([`LcmPipeline::ddim_scheduler`]) with classifier-free guidance against the
//! empty prompt, as diffusers' `StableDiffusionPipeline` does.

use rocm_models::{LcmPipeline, NoiseSource, PipelineError};
use rocm_sampler::{DdimSampler, DdimSamplerOptions, Guidance};

use crate::hidden::detect;
use crate::render::Image;
use crate::world::{IMAGE_SIZE, PromptSpec, Split};

/// Prompts sampled per call.
const CHUNK: usize = 50;

/// Whether every object of `prompt` is detected in `image` with its colour and shape (each
/// detection used once).
pub fn colour_and_shape_right(image: &Image, prompt: &str) -> bool {
    let analysis = detect(image);
    let spec = PromptSpec::parse(prompt);
    let mut used = vec![false; analysis.objects.len()];
    spec.objects.iter().all(|object| {
        let found = analysis.objects.iter().enumerate().position(|(k, det)| {
            !used[k]
                && object.colour.is_none_or(|c| c == det.colour)
                && object.shape.is_none_or(|s| s == det.shape)
        });
        match found {
            Some(k) => {
                used[k] = true;
                true
            }
            None => false,
        }
    })
}

/// The fraction of `images` right for their prompts ([`colour_and_shape_right`]).
pub fn accuracy(images: &[Image], prompts: &[String]) -> f64 {
    let right = images
        .iter()
        .zip(prompts)
        .filter(|(i, p)| colour_and_shape_right(i, p))
        .count();
    right as f64 / images.len().max(1) as f64
}

/// `decode(mean(encode(x)))` of each image through `vae`, in chunks: what of an image survives the
/// latent space every diffusion model of the world works in.
pub fn reconstructions(
    vae: &rocm_models::AutoencoderKL,
    images: &[Image],
    device: &burn::prelude::Device,
) -> Vec<Image> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(CHUNK) {
        let x = Image::batch(chunk, device);
        let (mean, _) = vae.encode(x * 2.0 - 1.0);
        out.extend(Image::unbatch(rocm_models::to_unit_range(vae.decode(mean))));
    }
    out
}

/// The held-out evaluation prompts: the captions of the first `test` scenes of the test split and
/// of the first `compositional` scenes of the compositional split (held-out colour–shape pairs).
pub fn held_out_prompts(test: usize, compositional: usize) -> Vec<String> {
    Split::Test
        .scenes(0, test)
        .into_iter()
        .chain(Split::Compositional.scenes(0, compositional))
        .map(|s| s.caption)
        .collect()
}

/// LCM samples of `prompts` in `steps` steps at guidance scale `guidance` (`w = g − 1`), the
/// noise of chunk `i` seeded `seed + i`.
pub fn lcm_samples(
    pipeline: &LcmPipeline,
    prompts: &[String],
    steps: usize,
    guidance: f32,
    seed: u64,
) -> Result<Vec<Image>, PipelineError> {
    let mut images = Vec::with_capacity(prompts.len());
    for (i, chunk) in prompts.chunks(CHUNK).enumerate() {
        let p: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let x = pipeline.generate(&p, steps, guidance, NoiseSource::Seed(seed + i as u64))?;
        images.extend(Image::unbatch(x));
    }
    Ok(images)
}

/// Diffusion samples of `prompts` from a pipeline folder's UNet with its DDIM scheduler: `steps`
/// deterministic steps (η = 0), classifier-free guidance `guidance` against the empty prompt,
/// the noise of chunk `i` seeded `seed + i`.
pub fn ddim_samples(
    pipeline: &LcmPipeline,
    prompts: &[String],
    steps: usize,
    guidance: f32,
    seed: u64,
) -> Result<Vec<Image>, PipelineError> {
    let sampler = DdimSampler::new(pipeline.ddim_scheduler()?);
    let mut images = Vec::with_capacity(prompts.len());
    for (i, chunk) in prompts.chunks(CHUNK).enumerate() {
        let p: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let text = pipeline.encode_prompts(&p)?;
        let empty = pipeline.encode_prompts(&vec![""; p.len()])?;
        let options = DdimSamplerOptions::new(steps).with_guidance(Guidance::ClassifierFree {
            scale: guidance,
            unconditional: empty,
        });
        let noise = DdimSampler::noise(
            pipeline.latent_shape(p.len()),
            steps,
            seed + i as u64,
            pipeline.device(),
        );
        let trajectory = sampler.sample_no_grad(&pipeline.unet, &text, noise, &options)?;
        images.extend(Image::unbatch(
            pipeline.vae.decode_to_image(trajectory.final_latent),
        ));
    }
    Ok(images)
}

/// A grid for a README: images (row-major, `cols` per row) and the caption under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// The file name (in the stage's folder).
    pub file: String,
    /// The images.
    pub images: Vec<Image>,
    /// Images per row.
    pub cols: usize,
    /// Caption lines.
    pub caption: Vec<String>,
}

/// Writes `grid` as an 8-bit RGB PNG, each pixel drawn as a `zoom × zoom` block, images
/// separated by 2 white lines (the caption goes into the README).
pub fn write_grid(grid: &Grid, zoom: usize, path: &std::path::Path) -> Result<(), crate::Error> {
    let (cols, gap) = (grid.cols.max(1), 2);
    let rows = grid.images.len().div_ceil(cols);
    let tile = IMAGE_SIZE * zoom;
    let (width, height) = (cols * (tile + gap) - gap, rows * (tile + gap) - gap);
    let mut rgb = vec![255u8; width * height * 3];
    for (n, image) in grid.images.iter().enumerate() {
        let (x0, y0) = ((n % cols) * (tile + gap), (n / cols) * (tile + gap));
        let bytes = image.to_rgb8();
        for y in 0..tile {
            for x in 0..tile {
                let src = ((y / zoom) * IMAGE_SIZE + x / zoom) * 3;
                let dst = ((y0 + y) * width + x0 + x) * 3;
                rgb[dst..dst + 3].copy_from_slice(&bytes[src..src + 3]);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let err = |e: png::EncodingError| crate::Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&rgb).map_err(err)?;
    }
    crate::io::write(path, &out)
}
