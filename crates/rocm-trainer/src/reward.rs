//! How a final latent becomes a reward: [`LatentReward`], [`LatentDecoder`] and
//! [`DecodedReward`], and how prompts become conditioning: [`PromptEncoder`].

use burn::prelude::*;
use rocm_rewards::RewardModel;

/// A differentiable reward of the sampler's final latent `x_K` given the prompts.
///
/// For image models this is a [`DecodedReward`]: a [`LatentDecoder`] (the VAE) followed by an
/// image [`RewardModel`]. Toy models of points implement it directly. Higher is better.
///
/// # Shapes
/// - `latent`: `[B, …]` (rank `D`)
/// - output: `[B]`
pub trait LatentReward<const D: usize> {
    /// A short, stable name for logs and metrics.
    fn name(&self) -> &str;

    /// The reward of each sample, differentiable with respect to `latent` on an autodiff device.
    fn reward(&self, latent: Tensor<D>, prompts: &[String]) -> Tensor<1>;

    /// The reward and, for image models, the images it scored (`[B, 3, H, W]` in `[0, 1]`),
    /// decoded once: what evaluation writes as sample grids. The default has no images.
    fn reward_with_images(
        &self,
        latent: Tensor<D>,
        prompts: &[String],
    ) -> (Tensor<1>, Option<Tensor<4>>) {
        (self.reward(latent, prompts), None)
    }
}

impl<const D: usize, R: LatentReward<D> + ?Sized> LatentReward<D> for &R {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn reward(&self, latent: Tensor<D>, prompts: &[String]) -> Tensor<1> {
        (**self).reward(latent, prompts)
    }
    fn reward_with_images(
        &self,
        latent: Tensor<D>,
        prompts: &[String],
    ) -> (Tensor<1>, Option<Tensor<4>>) {
        (**self).reward_with_images(latent, prompts)
    }
}

/// Turns a final latent into images for a [`RewardModel`]: for Stable Diffusion, the VAE decoder
/// applied to `x / 0.18215`, then `(img / 2 + 0.5).clamp(0, 1)` (docs/method.md §1).
///
/// Must be differentiable (the reward's gradient flows back through it into the sampler) and
/// should hold frozen weights only.
///
/// # Shapes
/// - `latent`: `[B, …]` (rank `D`, e.g. `[B, 4, H/8, W/8]`)
/// - output: `[B, 3, H, W]`, values in `[0, 1]`
pub trait LatentDecoder<const D: usize> {
    /// Decodes a batch of latents into images in `[0, 1]`.
    fn decode(&self, latent: Tensor<D>) -> Tensor<4>;
}

/// An image [`RewardModel`] reached through a [`LatentDecoder`]: `R(decode(x_K), prompts)`.
#[derive(Clone, Debug)]
pub struct DecodedReward<Dec, R> {
    /// Latent → images in `[0, 1]`.
    pub decoder: Dec,
    /// Images → reward.
    pub reward: R,
}

impl<Dec, R> DecodedReward<Dec, R> {
    /// Chains `decoder` and `reward`.
    pub fn new(decoder: Dec, reward: R) -> Self {
        Self { decoder, reward }
    }
}

impl<const D: usize, Dec: LatentDecoder<D>, R: RewardModel> LatentReward<D>
    for DecodedReward<Dec, R>
{
    fn name(&self) -> &str {
        self.reward.name()
    }
    fn reward(&self, latent: Tensor<D>, prompts: &[String]) -> Tensor<1> {
        self.reward.reward(self.decoder.decode(latent), prompts)
    }
    /// The decoded images with their reward.
    fn reward_with_images(
        &self,
        latent: Tensor<D>,
        prompts: &[String],
    ) -> (Tensor<1>, Option<Tensor<4>>) {
        let images = self.decoder.decode(latent);
        (self.reward.reward(images.clone(), prompts), Some(images))
    }
}

/// Turns a batch of prompts into the model's conditioning (a frozen text encoder, no
/// gradient), e.g. CLIP text embeddings `[B, 77, 768]`.
///
/// Any `Fn(&[String]) -> C` is one; [`Unconditional`] is the one for models conditioned on `()`.
pub trait PromptEncoder<C> {
    /// The conditioning of `prompts`, batched in order.
    fn encode(&self, prompts: &[String]) -> C;
}

impl<C, F: Fn(&[String]) -> C> PromptEncoder<C> for F {
    fn encode(&self, prompts: &[String]) -> C {
        self(prompts)
    }
}

/// The [`PromptEncoder`] of unconditional models: every batch is conditioned on `()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unconditional;

impl PromptEncoder<()> for Unconditional {
    fn encode(&self, _prompts: &[String]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Squash;
    impl LatentDecoder<2> for Squash {
        fn decode(&self, latent: Tensor<2>) -> Tensor<4> {
            let [b, _] = latent.dims();
            let x = burn::tensor::activation::sigmoid(latent.slice(burn::prelude::s![.., 0..1]));
            x.reshape([b, 1, 1, 1]).repeat_dim(1, 3)
        }
    }
    struct Brightness;
    impl RewardModel for Brightness {
        fn name(&self) -> &str {
            "brightness"
        }
        fn reward(&self, images: Tensor<4>, _: &[String]) -> Tensor<1> {
            let [b, ..] = images.dims();
            images.reshape([b as i32, -1]).mean_dim(1).squeeze_dim(1)
        }
    }

    #[test]
    fn decoded_reward_chains_decoder_and_reward() {
        let device = Device::flex();
        let r = DecodedReward::new(Squash, Brightness);
        let x = Tensor::<2>::from_floats([[0.0, 5.0], [100.0, -3.0]], &device);
        let v = LatentReward::reward(&r, x, &[])
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(
            (v[0] - 0.5).abs() < 1e-6 && (v[1] - 1.0).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(LatentReward::<2>::name(&r), "brightness");
    }

    #[test]
    fn decoded_reward_returns_the_images_it_scored() {
        let device = Device::flex();
        let r = DecodedReward::new(Squash, Brightness);
        let x = Tensor::<2>::from_floats([[0.0, 5.0], [100.0, -3.0]], &device);
        let (reward, images) = LatentReward::reward_with_images(&r, x.clone(), &[]);
        let images = images.expect("a decoded reward has images");
        assert_eq!(images.dims(), [2, 3, 1, 1]);
        assert_eq!(
            reward.into_data(),
            LatentReward::reward(&r, x, &[]).into_data()
        );
        struct Plain;
        impl LatentReward<2> for Plain {
            fn name(&self) -> &str {
                "plain"
            }
            fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
                latent.sum_dim(1).squeeze_dim(1)
            }
        }
        let y = Tensor::<2>::ones([1, 2], &device);
        assert!(Plain.reward_with_images(y, &[]).1.is_none());
    }
}
