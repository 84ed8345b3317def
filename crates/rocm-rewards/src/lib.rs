//! Differentiable image rewards for ROCM.
//!
//! ROCM maximises `E[R(x(θ, ε, c), c)]` by backpropagating the reward through the VAE decoder and
//! every step of the consistency sampler (docs/method.md §2–3), so a reward must be differentiable
//! with respect to the image pixels. Every reward here is a [`RewardModel`].
//!
//! - [`aesthetic_head::AestheticHead`]: the LAION improved aesthetic predictor head, embedded in the
//!   crate ([`AestheticHead::laion`], [`Aesthetic::laion`]) or loaded from a `.pth` or
//!   `.safetensors` file.
//! - [`preprocess::ClipPreprocess`]: differentiable antialiased-bicubic resize, centre crop and
//!   CLIP normalisation on device.
//! - [`ClipScore`], [`PickScore`], [`Aesthetic`] on a transformers `CLIPModel` ([`ClipBackbone`]).
//! - [`HpsV2`] on open_clip checkpoints (key conversion in [`hps`]).
//! - Cheap rewards for tests and demos: [`ColorTarget`], [`Compressibility`]; combine rewards with
//!   [`WeightedSum`].

pub mod aesthetic_head;
pub mod clip_rewards;
pub mod error;
pub mod hps;
pub mod preprocess;
pub mod simple;

pub use aesthetic_head::AestheticHead;
pub use clip_rewards::{
    Aesthetic, ClipBackbone, ClipScore, ClipScoreMode, PickScore, TEXT_CACHE_CAPACITY,
};
pub use error::Error;
pub use hps::HpsV2;
pub use simple::{ColorTarget, Compressibility, WeightedSum};

use burn::prelude::*;

/// A differentiable reward of images given their prompts.
///
/// `R(image, prompt) ∈ ℝ`, computed for a batch: images `[B, 3, H, W]` with RGB values in
/// `[0, 1]` (the decoded latents, `(x / 2 + 0.5).clamp(0, 1)`) and one prompt per image. The
/// result is a tensor on the images' device, so on an autodiff device the gradient
/// `∂R/∂image` reaches the pixels (and from there the sampler). Higher is better.
///
/// # Shapes
/// - `images`: `[B, 3, H, W]`, values in `[0, 1]`
/// - `prompts`: `B` strings (ignored by prompt-free rewards such as aesthetics)
/// - output: `[B]`
///
/// # Example
/// A trivial reward: the mean redness of an image.
/// ```
/// use burn::prelude::*;
/// use rocm_rewards::RewardModel;
///
/// struct Redness;
///
/// impl RewardModel for Redness {
///     fn name(&self) -> &str {
///         "redness"
///     }
///     fn reward(&self, images: Tensor<4>, _prompts: &[String]) -> Tensor<1> {
///         let [b, _, h, w] = images.dims();
///         let red = images.slice(s![.., 0..1, .., ..]).reshape([b, h * w]);
///         red.mean_dim(1).squeeze_dim(1)
///     }
/// }
///
/// let device = Device::flex().autodiff();
/// let images = Tensor::<4>::full([2, 3, 4, 4], 0.25, &device).require_grad();
/// let prompts = vec!["a red car".to_string(), "a red bus".to_string()];
/// let reward = Redness.reward(images.clone(), &prompts);
/// assert_eq!(reward.dims(), [2]);
/// assert_eq!(reward.clone().into_data().try_into_vec::<f32>().unwrap(), vec![0.25, 0.25]);
///
/// // The gradient reaches the pixels: 1/(H·W) on the red channel, 0 elsewhere.
/// let grads = reward.sum().backward();
/// let g = images.grad(&grads).unwrap();
/// assert_eq!(g.clone().slice(s![0, 0, 0, 0]).into_scalar::<f32>(), 1.0 / 16.0);
/// assert_eq!(g.slice(s![0, 1, 0, 0]).into_scalar::<f32>(), 0.0);
/// ```
pub trait RewardModel {
    /// A short, stable name (`"aesthetic"`, `"pickscore"`, …) for logs and metrics.
    fn name(&self) -> &str;

    /// The reward of each image given its prompt, `[B]`.
    ///
    /// # Panics
    /// If `prompts.len()` differs from the batch size of a prompt-conditioned reward.
    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1>;
}

impl<R: RewardModel + ?Sized> RewardModel for &R {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        (**self).reward(images, prompts)
    }
}

impl<R: RewardModel + ?Sized> RewardModel for Box<R> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        (**self).reward(images, prompts)
    }
}
