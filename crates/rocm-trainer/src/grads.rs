//! Gradient utilities over all of a module's trainable parameters: the global L2 norm, scaling,
//! and global-norm clipping (Burn's own clipping works per parameter).

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// The gradient of one parameter, whatever its rank, as a flat `[N]` tensor.
fn flat<const D: usize>(grads: &GradientsParams, id: burn::module::ParamId) -> Option<Tensor<1>> {
    grads.get::<D>(id).map(|g| g.flatten::<1>(0, D - 1))
}

struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<Tensor<1>>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = flat::<D>(self.grads, param.id) {
            self.out.push(g);
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The gradients of `module`'s parameters, flattened, in traversal order.
pub fn flat_gradients<M: Module>(module: &M, grads: &GradientsParams) -> Vec<Tensor<1>> {
    let mut v = Collect {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// The global L2 norm `√(Σ_p ‖g_p‖²)` over every gradient of `module`'s parameters.
///
/// The gradients are concatenated on their device and read to the host once (one
/// synchronisation, however many parameters), where the squares are summed in f64 in traversal
/// order. The norm is therefore bitwise reproducible, cannot overflow for finite f32 gradients,
/// and does not depend on a device's reduction kernels: the clipping and the logged norm are the
/// same numbers on every backend that computed the same gradients. Reading is cheap for what the
/// trainer trains (LoRA adapters: about 13 MB of f32 for rank 16 on Stable Diffusion's UNet).
/// NaN or infinite if any gradient is; 0 when there are none.
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let flat = flat_gradients(module, grads);
    if flat.is_empty() {
        return 0.0;
    }
    Tensor::cat(flat, 0)
        .into_data()
        .iter::<f64>()
        .map(|g| g * g)
        .sum::<f64>()
        .sqrt()
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_gradients<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    module.visit(&mut Scale { grads, factor });
}

/// Global-norm clipping (PyTorch's `clip_grad_norm_`): when the norm exceeds `max_norm > 0`,
/// every gradient is scaled by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
/// `max_norm = 0` only measures.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_norm(module, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        scale_gradients(module, grads, max_norm / (norm + 1e-6));
    }
    norm
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    #[test]
    fn clipping_scales_to_the_max_norm_and_keeps_directions() {
        let device = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 3.0]], &device);
        let mut grads = GradientsParams::from_grads((lin.forward(x).sum() * 10.0).backward(), &lin);
        let before: Vec<f32> = flat_gradients(&lin, &grads)
            .into_iter()
            .flat_map(|g| g.into_data().try_into_vec::<f32>().unwrap())
            .collect();
        let norm = before
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm > 1.0);
        let reported = clip_global_norm(&lin, &mut grads, 1.0);
        assert!((reported - norm).abs() < 1e-4 * norm);
        assert!((global_norm(&lin, &grads) - 1.0).abs() < 1e-5);
        let after: Vec<f32> = flat_gradients(&lin, &grads)
            .into_iter()
            .flat_map(|g| g.into_data().try_into_vec::<f32>().unwrap())
            .collect();
        for (a, b) in before.iter().zip(&after) {
            assert!((f64::from(*a) / norm - f64::from(*b)).abs() < 1e-5);
        }
        // Below the threshold nothing changes.
        let reported = clip_global_norm(&lin, &mut grads, 10.0);
        assert!((reported - 1.0).abs() < 1e-5 && (global_norm(&lin, &grads) - 1.0).abs() < 1e-5);
    }

    /// Gradients `scale · [[1, −2, 3], [1, −2, 3]]` (weight) and `scale · [1, 1]` (bias).
    fn scaled_grads(scale: f32) -> (Linear, GradientsParams) {
        let device = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 3.0]], &device);
        let grads = GradientsParams::from_grads((lin.forward(x).sum() * scale).backward(), &lin);
        (lin, grads)
    }

    #[test]
    fn the_norm_neither_overflows_nor_hides_a_nan() {
        // Squares of 3e30 overflow f32; the sum of squares is 30 · scale².
        let (lin, grads) = scaled_grads(1e30);
        let norm = global_norm(&lin, &grads);
        let expected = 30f64.sqrt() * f64::from(1e30f32);
        assert!((norm / expected - 1.0).abs() < 1e-6, "{norm} vs {expected}");
        let (lin, grads) = scaled_grads(f32::NAN);
        assert!(global_norm(&lin, &grads).is_nan());
        let (lin, grads) = scaled_grads(f32::INFINITY);
        assert_eq!(global_norm(&lin, &grads), f64::INFINITY);
        assert_eq!(global_norm(&lin, &GradientsParams::new()), 0.0);
    }
}
