//! What went non-finite in a training step. A step stops as soon as a latent, a reward or the
//! loss is NaN or infinite; the error then names the earliest culprit in the chain
//! weight → latent → reward → loss: the first non-finite weight of the model (by parameter
//! path), else the first non-finite state of the sampler's trajectory, else the reward, else
//! the loss. The scan of the weights runs on that failure path only.

use std::fmt;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use rocm_sampler::Trajectory;

/// What went NaN or infinite, as [`crate::Error::NonFinite`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonFiniteValue {
    /// A weight of the model (trainable or frozen), by its parameter path, e.g.
    /// `linear_in.lora.lora_a`.
    Weight(String),
    /// The state `x_k` of the sampler's trajectory: `x_0` is the input noise latent, `x_K` the
    /// sample the reward scores.
    Latent {
        /// `k`, from 0.
        k: usize,
        /// `K`, the sampler's step count.
        steps: usize,
    },
    /// The reward of one sample: its 0-based index in the micro-batch it was sampled in.
    Reward {
        /// The sample's index in its micro-batch.
        sample: usize,
    },
    /// The loss.
    Loss,
    /// The global gradient norm (before clipping).
    GradNorm,
}

impl fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Weight(path) => write!(f, "weight `{path}`"),
            Self::Latent { k: 0, .. } => f.write_str("input latent x_0"),
            Self::Latent { k, steps } if k == steps => {
                write!(f, "latent x_{k} (the sampled output the reward scores)")
            }
            Self::Latent { k, steps } => write!(f, "latent x_{k} (sampler step {k} of {steps})"),
            Self::Reward { sample } => write!(f, "reward of sample {sample}"),
            Self::Loss => f.write_str("loss"),
            Self::GradNorm => f.write_str("grad norm"),
        }
    }
}

/// The first NaN or infinite element of `t`, if any.
pub(crate) fn first_non_finite<const D: usize>(t: &Tensor<D>) -> Option<f64> {
    t.clone()
        .into_data()
        .iter::<f32>()
        .find(|v| !v.is_finite())
        .map(f64::from)
}

/// Walks a module's parameters keeping the dotted path of the one being visited.
struct FirstBadWeight {
    path: Vec<String>,
    found: Option<(String, f64)>,
}

impl ModuleVisitor for FirstBadWeight {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.found.is_none()
            && let Some(v) = first_non_finite(&param.val())
        {
            self.found = Some((self.path.join("."), v));
        }
    }
}

/// The first non-finite weight of `module` in traversal order: its path and a bad value.
pub(crate) fn first_non_finite_weight<M: Module>(module: &M) -> Option<(String, f64)> {
    let mut v = FirstBadWeight {
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut v);
    v.found
}

/// The earliest culprit of a micro-batch whose `rewards` or `loss` are not all finite, or
/// whose trajectory reached a non-finite state: see the module notes. `loss` is `None` when
/// it was not computed yet.
pub(crate) fn culprit<const D: usize, M: Module>(
    model: &M,
    trajectory: &Trajectory<D>,
    rewards: &[f64],
    loss: Option<f64>,
) -> (NonFiniteValue, f64) {
    if let Some((path, v)) = first_non_finite_weight(model) {
        return (NonFiniteValue::Weight(path), v);
    }
    let steps = trajectory.steps.len();
    let states = trajectory
        .steps
        .iter()
        .map(|s| &s.latent)
        .chain([&trajectory.final_latent]);
    for (k, latent) in states.enumerate() {
        if let Some(v) = first_non_finite(latent) {
            return (NonFiniteValue::Latent { k, steps }, v);
        }
    }
    if let Some((i, r)) = rewards.iter().enumerate().find(|(_, r)| !r.is_finite()) {
        return (NonFiniteValue::Reward { sample: i }, *r);
    }
    (NonFiniteValue::Loss, loss.unwrap_or(f64::NAN))
}

/// Whether a step's numbers are all finite: the sampled output, its rewards and the loss.
pub(crate) fn step_is_finite<const D: usize>(
    trajectory: &Trajectory<D>,
    rewards: &[f64],
    loss: f64,
) -> bool {
    loss.is_finite()
        && rewards.iter().all(|r| r.is_finite())
        && first_non_finite(&trajectory.final_latent).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::ToyPointModelConfig;

    #[test]
    fn the_first_bad_weight_is_named_by_its_path() {
        let device = Device::flex();
        let mut model = ToyPointModelConfig::new()
            .with_hidden(4)
            .with_depth(2)
            .init_seeded(0, &device);
        assert_eq!(first_non_finite_weight(&model), None);
        let bad = model.hidden[1].weight.val().add_scalar(f32::INFINITY);
        model.hidden[1].weight = Param::from_tensor(bad);
        let (path, v) = first_non_finite_weight(&model).unwrap();
        assert_eq!(path, "hidden.1.weight");
        assert_eq!(v, f64::INFINITY);
    }

    /// A trajectory of `values.len() - 1` steps whose states `x_k` are `[1, 2]` filled with
    /// `values[k]` (the last: the output).
    fn trajectory(values: &[f32]) -> Trajectory<2> {
        let device = Device::flex();
        let state = |v: f32| Tensor::<2>::full([1, 2], v, &device);
        let (last, states) = values.split_last().unwrap();
        Trajectory {
            steps: states
                .iter()
                .enumerate()
                .map(|(index, &v)| rocm_sampler::TrajectoryStep {
                    index,
                    timestep: 999 - index,
                    latent: state(v),
                    denoised: state(0.0),
                    base_denoised: None,
                    policy: None,
                })
                .collect(),
            final_latent: state(*last),
        }
    }

    #[test]
    fn the_culprit_is_the_earliest_in_the_chain() {
        let model = ToyPointModelConfig::new()
            .with_hidden(4)
            .with_depth(1)
            .init_seeded(0, &Device::flex());
        let nan = f32::NAN;
        let steps = 2;
        let (what, v) = culprit(&model, &trajectory(&[nan, nan, nan]), &[f64::NAN], None);
        assert_eq!(what, NonFiniteValue::Latent { k: 0, steps });
        assert!(v.is_nan());
        let (what, v) = culprit(
            &model,
            &trajectory(&[0.0, f32::INFINITY, nan]),
            &[1.0],
            None,
        );
        assert_eq!(what, NonFiniteValue::Latent { k: 1, steps });
        assert_eq!(v, f64::INFINITY);
        let (what, _) = culprit(
            &model,
            &trajectory(&[0.0, 0.0, 0.0]),
            &[1.0, nan.into()],
            None,
        );
        assert_eq!(what, NonFiniteValue::Reward { sample: 1 });
        let (what, v) = culprit(
            &model,
            &trajectory(&[0.0, 0.0, 0.0]),
            &[1.0],
            Some(f64::NEG_INFINITY),
        );
        assert_eq!((what, v), (NonFiniteValue::Loss, f64::NEG_INFINITY));
        assert!(step_is_finite(&trajectory(&[0.0, 0.0, 0.0]), &[1.0], 0.5));
        assert!(!step_is_finite(&trajectory(&[0.0, 0.0, nan]), &[1.0], 0.5));
    }

    #[test]
    fn names_read_as_the_quantity() {
        let latent = |k| NonFiniteValue::Latent { k, steps: 4 }.to_string();
        assert_eq!(latent(0), "input latent x_0");
        assert_eq!(latent(2), "latent x_2 (sampler step 2 of 4)");
        assert!(latent(4).contains("reward scores"));
        assert_eq!(
            NonFiniteValue::Weight("a.b".into()).to_string(),
            "weight `a.b`"
        );
        assert_eq!(
            NonFiniteValue::Reward { sample: 3 }.to_string(),
            "reward of sample 3"
        );
    }
}
