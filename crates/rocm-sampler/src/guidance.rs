//! Guidance: LCM's distilled guidance-scale embedding, and classic classifier-free guidance.

use burn::prelude::*;

use crate::{Branch, ConsistencyModel, ModelInput, Prediction};

/// How a guidance scale `g` becomes the value `w` a distilled-guidance model is conditioned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GuidanceMapping {
    /// `w = g − 1` (diffusers' LCM pipeline; 7.5 → 6.5).
    #[default]
    ScaleMinusOne,
    /// `w = g` (the original LCM code).
    Scale,
}

impl GuidanceMapping {
    /// The value `w` for guidance scale `g`.
    pub fn w(self, scale: f32) -> f32 {
        match self {
            Self::ScaleMinusOne => scale - 1.0,
            Self::Scale => scale,
        }
    }
}

/// The guidance a sampler applies at every model call.
#[derive(Clone, Debug, Default)]
pub enum Guidance<C> {
    /// No guidance: one conditional call, `ModelInput::guidance = None`.
    #[default]
    None,
    /// Distilled guidance (LCM's `time_cond_proj_dim`): one call, with `ModelInput::guidance`
    /// set to `w = mapping(scale)` for every sample; the model embeds it with
    /// [`guidance_scale_embedding`].
    Embedded {
        /// The guidance scale `g` (7.5 in the paper).
        scale: f32,
        /// `g → w`.
        mapping: GuidanceMapping,
    },
    /// Classifier-free guidance with two calls:
    /// `out = out_uncond + g (out_cond − out_uncond)`, applied to the raw output.
    ClassifierFree {
        /// The guidance scale `g`.
        scale: f32,
        /// The unconditional conditioning (e.g. empty-prompt embeddings), batched like the
        /// conditional one.
        unconditional: C,
    },
}

impl<C> Guidance<C> {
    /// Distilled guidance with diffusers' mapping `w = g − 1`.
    pub fn embedded(scale: f32) -> Self {
        Self::Embedded {
            scale,
            mapping: GuidanceMapping::ScaleMinusOne,
        }
    }

    /// The guidance scale `g`, if any.
    pub fn scale(&self) -> Option<f32> {
        match self {
            Self::None => None,
            Self::Embedded { scale, .. } | Self::ClassifierFree { scale, .. } => Some(*scale),
        }
    }

    /// Evaluates one [`Branch`] of the model (the fine-tuned policy or its frozen base) at
    /// `(latent, t)` under this guidance.
    ///
    /// # Shapes
    /// `latent` and the output: `[B, …]`.
    pub fn predict<const D: usize, M>(
        &self,
        model: &M,
        latent: Tensor<D>,
        t: usize,
        conditioning: &C,
        branch: Branch,
    ) -> Prediction<D>
    where
        M: ConsistencyModel<D, Conditioning = C> + ?Sized,
    {
        let batch = latent.dims()[0];
        let device = latent.device();
        let guidance = match self {
            Self::Embedded { scale, mapping } => {
                Some(Tensor::<1>::full([batch], mapping.w(*scale), &device))
            }
            _ => None,
        };
        let input = ModelInput {
            latent,
            timestep: Tensor::<1>::full([batch], t as f32, &device),
            guidance,
        };
        let call = |c: &C| match branch {
            Branch::Policy => model.predict(&input, c),
            Branch::Base => model.predict_base(&input, c),
        };
        match self {
            Self::ClassifierFree {
                scale,
                unconditional,
            } => {
                let cond = call(conditioning);
                let uncond = call(unconditional);
                Prediction {
                    output: classifier_free_guidance(uncond.output, cond.output, *scale),
                    parameterization: cond.parameterization,
                }
            }
            _ => call(conditioning),
        }
    }
}

/// Classifier-free guidance: `uncond + g (cond − uncond)`.
///
/// # Shapes
/// `uncond`, `cond` and the result: `[B, …]`.
pub fn classifier_free_guidance<const D: usize>(
    uncond: Tensor<D>,
    cond: Tensor<D>,
    scale: f32,
) -> Tensor<D> {
    uncond.clone() + (cond - uncond) * scale
}

/// The guidance-scale embedding of LCM (diffusers' `get_guidance_scale_embedding`, from VDM):
///
/// ```text
/// w' = 1000 w,   half = ⌊d/2⌋,   freq_i = exp(−i ln(10000) / (half − 1)),  i = 0..half
/// emb = [sin(w' freq), cos(w' freq)]  (sin first), zero-padded to d when d is odd
/// ```
///
/// The UNet adds `cond_proj(emb)` to its timestep embedding (docs/method.md §1).
///
/// # Shapes
/// - `w`: `[B]`
/// - output: `[B, embedding_dim]`
///
/// # Panics
/// If `embedding_dim < 4` (the frequency formula needs `half ≥ 2`).
pub fn guidance_scale_embedding(w: Tensor<1>, embedding_dim: usize) -> Tensor<2> {
    assert!(
        embedding_dim >= 4,
        "guidance_scale_embedding: embedding_dim = {embedding_dim} < 4"
    );
    let half = embedding_dim / 2;
    let device = w.device();
    let [batch] = w.dims();
    // Computed like torch does in f32 (log, divide, multiply), with a correctly rounded exp.
    let step = 10000f32.ln() / (half - 1) as f32;
    let freq: Vec<f32> = (0..half)
        .map(|i| f64::from(i as f32 * -step).exp() as f32)
        .collect();
    let freq = Tensor::<1>::from_data(TensorData::new(freq, [half]), &device).unsqueeze_dim::<2>(0);
    let args = (w * 1000.0).unsqueeze_dim::<2>(1) * freq; // [B, half]
    let mut parts = vec![args.clone().sin(), args.cos()];
    if embedding_dim % 2 == 1 {
        parts.push(Tensor::zeros([batch, 1], &device));
    }
    Tensor::cat(parts, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_is_sin_then_cos_and_padded() {
        let device = Device::flex();
        let w = Tensor::<1>::from_floats([0.0, 6.5], &device);
        let e = guidance_scale_embedding(w.clone(), 7);
        assert_eq!(e.dims(), [2, 7]);
        let v = e.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(&v[..7], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
        // i = 0: frequency 1, argument 6500.
        assert!((v[7] - 6500f32.sin()).abs() < 1e-4 && (v[10] - 6500f32.cos()).abs() < 1e-4);
        assert_eq!(v[13], 0.0);
        assert_eq!(guidance_scale_embedding(w, 256).dims(), [2, 256]);
    }

    #[test]
    fn mapping_and_cfg() {
        assert_eq!(GuidanceMapping::default().w(7.5), 6.5);
        assert_eq!(GuidanceMapping::Scale.w(7.5), 7.5);
        let device = Device::flex();
        let u = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let c = Tensor::<1>::from_floats([2.0, 0.0], &device);
        let out = classifier_free_guidance(u, c, 3.0)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(out, [4.0, -4.0]);
    }
}
