//! The shapes world (docs/world.md): a small, real image world that ships with ROCM.
//!
//! - [`world`]: the attributes (shape, colour, size, position, background), the seeded scene
//!   sampler with its train / validation / test / compositional splits, and the caption grammar.
//! - [`render`]: the anti-aliased analytic renderer and the perturbations that make worse images.
//! - [`hidden`]: the hidden preference `h(image, prompt) = fidelity + taste`, pixel-level and
//!   deterministic, used to label comparisons and to evaluate (never as a training reward).
//! - [`tokenizer`]: the world-sized CLIP tokenizer (byte-level BPE whose merges make every grammar
//!   word one token), written as the files `CLIPTokenizer` loads.
//! - [`train`]: the training stages (VAE, CLIP, preference model, aesthetic head, the diffusion
//!   teacher and its latent consistency distillation) on Burn, [`export`]: writing them in the
//!   diffusers / transformers layouts, and [`pipelines`]: the diffusers pipeline folders.
//! - [`evaluate`]: sampling the pipelines on held-out prompts, scored by h's detector.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod build;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod hidden;
mod io;
pub mod pipelines;
pub mod render;
pub mod tokenizer;
pub mod train;
pub mod world;

pub use error::Error;

pub use hidden::{HiddenPreference, Preference, h, preference};
pub use render::{Image, Perturbation, render, render_perturbed};
pub use world::{Scene, Split};
