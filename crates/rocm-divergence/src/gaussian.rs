//! Batches of diagonal Gaussians.

use burn::prelude::*;

/// A batch of diagonal Gaussians `N(mean, diag(std²))`, one per sample.
///
/// The mean may have any rank with a leading batch dimension (a latent `[B, 4, h, w]`, a point
/// cloud `[B, 2]`); it is flattened to `[B, N]` on construction. The standard deviation is either
/// a full tensor of the mean's shape or one value per sample (`[B]`, or the mean's rank with every
/// non-batch dimension of size 1), which is the case of the sampler's per-step policies
/// `σ_{k+1} = √(1 − ā_{k+1})`.
///
/// # Shapes
/// - `mean`: `[B, N]`
/// - `std`: `[B, N]` or `[B, 1]` (broadcast over the elements)
#[derive(Clone, Debug)]
pub struct DiagGaussian {
    mean: Tensor<2>,
    std: Tensor<2>,
}

impl DiagGaussian {
    /// A Gaussian with a full standard-deviation tensor of the mean's shape, or of the mean's
    /// rank with size 1 in every non-batch dimension (one value per sample).
    ///
    /// # Panics
    /// If the shapes are neither; the message names both.
    pub fn new<const D: usize>(mean: Tensor<D>, std: Tensor<D>) -> Self {
        let (mean_dims, std_dims) = (mean.dims(), std.dims());
        let mean = flatten(mean);
        let [batch, elements] = mean.dims();
        let per_sample = std_dims[0] == batch && std_dims[1..].iter().all(|&d| d == 1);
        let std = if std_dims == mean_dims {
            std.reshape([batch, elements])
        } else if per_sample {
            std.reshape([batch, 1])
        } else {
            panic!(
                "DiagGaussian: std shape {std_dims:?} must equal the mean shape {mean_dims:?} \
                 or be [{batch}, 1, …] (one value per sample)"
            )
        };
        Self { mean, std }
    }

    /// A Gaussian with one standard deviation per sample, `std: [B]`.
    ///
    /// # Panics
    /// If `std` does not have one value per sample of `mean`.
    pub fn with_sample_std<const D: usize>(mean: Tensor<D>, std: Tensor<1>) -> Self {
        let mean = flatten(mean);
        let [batch, _] = mean.dims();
        let [n] = std.dims();
        assert_eq!(
            n, batch,
            "DiagGaussian: std has {n} values but the mean has a batch of {batch}"
        );
        Self {
            mean,
            std: std.reshape([batch, 1]),
        }
    }

    /// A Gaussian whose every element has the same standard deviation `std`.
    pub fn with_scalar_std<const D: usize>(mean: Tensor<D>, std: f64) -> Self {
        let mean = flatten(mean);
        let [batch, _] = mean.dims();
        let std = Tensor::full([batch, 1], std, &mean.device());
        Self { mean, std }
    }

    /// The means, `[B, N]`.
    pub fn mean(&self) -> &Tensor<2> {
        &self.mean
    }

    /// The standard deviations, `[B, N]` or `[B, 1]`.
    pub fn std(&self) -> &Tensor<2> {
        &self.std
    }

    /// The variances `std²`, `[B, N]` or `[B, 1]`.
    pub fn variance(&self) -> Tensor<2> {
        self.std.clone().square()
    }

    /// The number of samples `B`.
    pub fn batch_size(&self) -> usize {
        self.mean.dims()[0]
    }

    /// The number of elements `N` per sample.
    pub fn num_elements(&self) -> usize {
        self.mean.dims()[1]
    }

    /// The same Gaussians with the gradient graph cut (for a frozen reference policy).
    pub fn detach(self) -> Self {
        Self {
            mean: self.mean.detach(),
            std: self.std.detach(),
        }
    }
}

fn flatten<const D: usize>(t: Tensor<D>) -> Tensor<2> {
    let dims = t.dims();
    assert!(
        D >= 1,
        "DiagGaussian: the mean needs a leading batch dimension"
    );
    let batch = dims[0];
    let elements = dims[1..].iter().product::<usize>();
    t.reshape([batch, elements])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_latents_and_broadcasts_per_sample_std() {
        let device = Device::flex();
        let mean = Tensor::<4>::zeros([2, 4, 3, 3], &device);
        let g = DiagGaussian::new(mean.clone(), Tensor::ones([2, 1, 1, 1], &device));
        assert_eq!((g.mean().dims(), g.std().dims()), ([2, 36], [2, 1]));
        let g = DiagGaussian::new(mean.clone(), Tensor::ones([2, 4, 3, 3], &device));
        assert_eq!(g.std().dims(), [2, 36]);
        let g = DiagGaussian::with_sample_std(mean, Tensor::ones([2], &device));
        assert_eq!((g.batch_size(), g.num_elements()), (2, 36));
    }

    #[test]
    #[should_panic(expected = "std shape [2, 3] must equal the mean shape [2, 4]")]
    fn rejects_mismatched_std() {
        let device = Device::flex();
        DiagGaussian::new(
            Tensor::<2>::zeros([2, 4], &device),
            Tensor::ones([2, 3], &device),
        );
    }
}
