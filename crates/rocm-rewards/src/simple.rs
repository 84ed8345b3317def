//! Cheap differentiable rewards for tests and demos: no network, no weights, exact gradients.

use burn::prelude::*;

use crate::RewardModel;

/// How close the image is to a target colour: `R = −mean((x − target)²)` over channels and pixels.
/// Maximised (`R = 0`) by a uniform image of the target colour; a contrast-free demo objective.
///
/// # Shapes
/// - images `[B, 3, H, W]` in `[0, 1]` → `[B]`
#[derive(Debug, Clone)]
pub struct ColorTarget {
    /// The target RGB colour in `[0, 1]`.
    pub target: [f32; 3],
}

impl ColorTarget {
    /// A reward for the colour `target` (RGB in `[0, 1]`).
    pub fn new(target: [f32; 3]) -> Self {
        Self { target }
    }
}

impl RewardModel for ColorTarget {
    fn name(&self) -> &str {
        "color"
    }

    fn reward(&self, images: Tensor<4>, _prompts: &[String]) -> Tensor<1> {
        let [b, c, h, w] = images.dims();
        assert_eq!(
            c,
            3,
            "ColorTarget: images must be [B, 3, H, W], got {:?}",
            images.dims()
        );
        let target = Tensor::<1>::from_floats(self.target, &images.device()).reshape([1, 3, 1, 1]);
        let err = (images - target).square().reshape([b, c * h * w]);
        err.mean_dim(1).squeeze_dim(1).neg()
    }
}

/// A compressibility surrogate: the negative mean total variation,
/// `R = −(mean|x[.., i+1, j] − x[.., i, j]| + mean|x[.., i, j+1] − x[.., i, j]|)`.
///
/// JPEG size (DDPO's "compressibility" reward) grows with high-frequency energy; total variation
/// is a differentiable proxy for it (a flat image scores 0, the maximum). Not a calibrated
/// file-size estimate.
///
/// # Shapes
/// - images `[B, C, H, W]` (H, W ≥ 2) → `[B]`
#[derive(Debug, Clone, Default)]
pub struct Compressibility;

impl RewardModel for Compressibility {
    fn name(&self) -> &str {
        "compressibility"
    }

    fn reward(&self, images: Tensor<4>, _prompts: &[String]) -> Tensor<1> {
        let [b, c, h, w] = images.dims();
        assert!(
            h >= 2 && w >= 2,
            "Compressibility: images must be at least 2×2, got {:?}",
            images.dims()
        );
        let dy = images.clone().slice(s![.., .., 1.., ..])
            - images.clone().slice(s![.., .., ..h - 1, ..]);
        let dx = images.clone().slice(s![.., .., .., 1..]) - images.slice(s![.., .., .., ..w - 1]);
        let tv_y = dy.abs().reshape([b, c * (h - 1) * w]).mean_dim(1);
        let tv_x = dx.abs().reshape([b, c * h * (w - 1)]).mean_dim(1);
        (tv_y + tv_x).squeeze_dim(1).neg()
    }
}

/// `R = Σ wᵢ Rᵢ`: a weighted sum of rewards (e.g. aesthetic + 0.1 · compressibility).
pub struct WeightedSum {
    terms: Vec<(f32, Box<dyn RewardModel>)>,
    name: String,
}

impl WeightedSum {
    /// An empty sum (reward 0); add terms with [`WeightedSum::with`].
    pub fn new() -> Self {
        Self {
            terms: Vec::new(),
            name: String::new(),
        }
    }

    /// Adds `weight · reward`; the name becomes `w1*name1+w2*name2…`.
    pub fn with(mut self, weight: f32, reward: Box<dyn RewardModel>) -> Self {
        if !self.name.is_empty() {
            self.name.push('+');
        }
        self.name.push_str(&format!("{weight}*{}", reward.name()));
        self.terms.push((weight, reward));
        self
    }

    /// The terms, in order.
    pub fn terms(&self) -> &[(f32, Box<dyn RewardModel>)] {
        &self.terms
    }
}

impl Default for WeightedSum {
    fn default() -> Self {
        Self::new()
    }
}

impl RewardModel for WeightedSum {
    fn name(&self) -> &str {
        &self.name
    }

    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        let [b, ..] = images.dims();
        let zero = Tensor::<1>::zeros([b], &images.device());
        self.terms.iter().fold(zero, |acc, (w, r)| {
            acc + r.reward(images.clone(), prompts) * *w
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().expect("f32")
    }

    #[test]
    fn color_target_is_zero_at_the_target_and_negative_elsewhere() {
        let device = Device::flex();
        let red = Tensor::<1>::from_floats([1.0, 0.0, 0.0], &device)
            .reshape([1, 3, 1, 1])
            .repeat_dim(2, 4)
            .repeat_dim(3, 4);
        let grey = Tensor::<4>::full([1, 3, 4, 4], 0.5, &device);
        let r = ColorTarget::new([1.0, 0.0, 0.0]).reward(Tensor::cat(vec![red, grey], 0), &[]);
        let v = values(r);
        assert!(v[0].abs() < 1e-7 && (v[1] + 0.25).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn compressibility_prefers_flat_images_and_has_gradients() {
        let device = Device::flex().autodiff();
        let flat = Tensor::<4>::full([1, 3, 4, 4], 0.3, &device);
        let checker = Tensor::<4>::from_data(
            TensorData::new(
                (0..48).map(|i| ((i + i / 4) % 2) as f32).collect(),
                [1, 3, 4, 4],
            ),
            &device,
        );
        let images = Tensor::cat(vec![flat, checker], 0).require_grad();
        let r = Compressibility.reward(images.clone(), &[]);
        let v = values(r.clone());
        assert!(v[0] == 0.0 && v[1] < -1.0, "{v:?}");
        let g = images.grad(&r.sum().backward()).expect("grad");
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
    }

    #[test]
    fn weighted_sum_adds_weighted_terms() {
        let device = Device::flex();
        let images = Tensor::<4>::full([2, 3, 4, 4], 0.5, &device);
        let sum = WeightedSum::new()
            .with(2.0, Box::new(ColorTarget::new([0.0, 0.0, 0.0])))
            .with(1.0, Box::new(Compressibility));
        assert_eq!(sum.name(), "2*color+1*compressibility");
        let v = values(sum.reward(images, &[]));
        assert!(v.iter().all(|x| (x + 0.5).abs() < 1e-6), "{v:?}");
    }
}
