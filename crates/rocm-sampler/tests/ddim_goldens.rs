//! Parity with diffusers' DDIMScheduler and DDPO's per-step log-probability (fixtures by
//! tests/fixtures/scripts/ddim_goldens.py, on Stable Diffusion 1.5's scheduler config).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use burn::prelude::*;
use rocm_sampler::{
    DdimSampler, DdimSamplerOptions, DdimScheduler, DdimSchedulerConfig, ModelInput,
    Parameterization, Prediction, SamplerNoise,
};
use serde_json::Value;

const GOLDENS: &str = include_str!("fixtures/ddim_goldens.json");
/// Asserted bound on `|rust − diffusers| / max(1, |diffusers|)` of every golden tensor.
const TOLERANCE: f32 = 1e-5;

fn goldens() -> Value {
    serde_json::from_str(GOLDENS).expect("valid JSON")
}

fn sd15() -> DdimScheduler {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15_scheduler_config.json");
    DdimScheduler::from_file(path).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32")
}

/// Max of |a − b| / max(1, |b|).
fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

fn shape(g: &Value) -> [usize; 4] {
    let s: Vec<usize> = g["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    s.try_into().unwrap()
}

fn tensor(v: &Value, shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(floats(v), shape), device)
}

#[test]
fn sd15_config_and_schedule_match_diffusers() {
    let g = goldens();
    let s = sd15();
    assert_eq!(s.config(), &DdimSchedulerConfig::sd15());
    let err = max_rel_err(s.schedule().alphas_cumprod(), &floats(&g["alphas_cumprod"]));
    eprintln!("alphas_cumprod: max relative error {err:e}");
    assert!(err < 2e-6, "{err}");
    let want = g["final_alpha_cumprod"].as_f64().unwrap() as f32;
    assert!((s.final_alpha_cumprod() - want).abs() < 1e-7);
}

#[test]
fn timesteps_of_every_spacing_match_diffusers() {
    let g = goldens();
    for (name, spacing) in g["timesteps"].as_object().unwrap() {
        let s = DdimScheduler::new(DdimSchedulerConfig {
            timestep_spacing: serde_json::from_value(Value::String(name.clone())).unwrap(),
            ..DdimSchedulerConfig::sd15()
        })
        .unwrap();
        for (k, want) in spacing.as_object().unwrap() {
            let k: usize = k.parse().unwrap();
            let want: Vec<i64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            match s.timesteps(k) {
                Ok(got) => {
                    let got: Vec<i64> = got.iter().map(|&t| t as i64).collect();
                    assert_eq!(got, want, "{name} K={k}");
                }
                // diffusers' numpy arange gives K + 1 trailing timesteps ending at −1: refused.
                Err(e) => assert!(
                    want.len() != k && want.last() == Some(&-1),
                    "{name} K={k}: {e}"
                ),
            }
        }
    }
}

/// Replays diffusers' given model outputs through `DdimScheduler::step`.
#[test]
fn runs_match_diffusers_step_by_step() {
    let g = goldens();
    let device = Device::flex();
    let s = sd15();
    let shape = shape(&g);
    for run in g["runs"].as_array().unwrap() {
        let k = run["num_steps"].as_u64().unwrap() as usize;
        let eta = run["eta"].as_f64().unwrap() as f32;
        let timesteps = s.timesteps(k).unwrap();
        let mut x = tensor(&run["initial"], shape, &device);
        let (mut e_prev, mut e_x0, mut e_std, mut e_lp) = (0f32, 0f32, 0f32, 0f32);
        for (i, step) in run["steps"].as_array().unwrap().iter().enumerate() {
            let t = timesteps[i];
            assert_eq!(t as u64, step["t"].as_u64().unwrap());
            let output = tensor(&run["model_outputs"][i], shape, &device);
            let z = tensor(&run["noise"][i], shape, &device);
            let prediction = Prediction {
                output,
                parameterization: Parameterization::Epsilon,
            };
            let out = s.step(prediction, t, s.prev_timestep(t, k), x, eta, Some(z));
            let want_std = step["std"].as_f64().unwrap() as f32;
            e_std = e_std.max((out.std - want_std).abs() / want_std.max(1e-3));
            e_prev = e_prev.max(max_rel_err(
                &host(out.prev_sample.clone()),
                &floats(&step["prev_sample"]),
            ));
            e_x0 = e_x0.max(max_rel_err(
                &host(out.pred_original),
                &floats(&step["pred_original"]),
            ));
            if eta > 0.0 {
                let lp = s.step_log_prob(out.prev_sample.clone(), out.mean, out.std);
                e_lp = e_lp.max(max_rel_err(&host(lp), &floats(&step["log_prob"])));
            }
            // Continue from diffusers' own state so errors do not compound.
            x = tensor(&step["prev_sample"], shape, &device);
        }
        eprintln!(
            "K={k} η={eta}: max rel err prev_sample {e_prev:e}, pred_original {e_x0:e}, \
             std {e_std:e}, log_prob {e_lp:e}"
        );
        assert!(e_prev < TOLERANCE && e_x0 < TOLERANCE, "K={k} η={eta}");
        assert!(e_std < TOLERANCE && e_lp < TOLERANCE, "K={k} η={eta}");
    }
}

/// The "model" of a sampler run that returns diffusers' given output of each step in turn.
struct Replay {
    outputs: Vec<Tensor<4>>,
    timesteps: Vec<usize>,
}

impl rocm_sampler::ConsistencyModel<4> for Replay {
    type Conditioning = ();

    fn predict(&self, input: &ModelInput<4>, _: &()) -> Prediction<4> {
        let t = input
            .timestep
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()[0] as usize;
        let k = self.timesteps.iter().position(|&s| s == t).unwrap();
        Prediction {
            output: self.outputs[k].clone(),
            parameterization: Parameterization::Epsilon,
        }
    }

    fn predict_base(&self, input: &ModelInput<4>, c: &()) -> Prediction<4> {
        self.predict(input, c)
    }
}

/// The whole chain through `DdimSampler` (errors compound over the K steps).
#[test]
fn sampler_runs_match_diffusers_end_to_end() {
    let g = goldens();
    let device = Device::flex();
    let sampler = DdimSampler::new(sd15());
    let shape = shape(&g);
    for run in g["runs"].as_array().unwrap() {
        let k = run["num_steps"].as_u64().unwrap() as usize;
        let eta = run["eta"].as_f64().unwrap() as f32;
        let model = Replay {
            outputs: (0..k)
                .map(|i| tensor(&run["model_outputs"][i], shape, &device))
                .collect(),
            timesteps: sampler.scheduler.timesteps(k).unwrap(),
        };
        let noise = SamplerNoise::new(
            tensor(&run["initial"], shape, &device),
            (0..k)
                .map(|i| tensor(&run["noise"][i], shape, &device))
                .collect(),
        );
        let options = DdimSamplerOptions::new(k).with_eta(eta);
        let traj = sampler.sample(&model, &(), noise, &options).unwrap();
        let err = max_rel_err(&host(traj.final_latent.clone()), &floats(&run["final"]));
        let steps = run["steps"].as_array().unwrap();
        let lps = traj.log_probs();
        assert_eq!(lps.len(), if eta > 0.0 { k } else { 0 });
        let lp_err = lps
            .into_iter()
            .zip(steps)
            .map(|(lp, s)| max_rel_err(&host(lp), &floats(&s["log_prob"])))
            .fold(0.0, f32::max);
        eprintln!("sampler K={k} η={eta}: final latent {err:e}, log_probs {lp_err:e}");
        assert!(
            err < TOLERANCE && lp_err < 1e-4,
            "K={k} η={eta}: {err} {lp_err}"
        );
    }
}

#[test]
fn single_steps_match_for_every_option() {
    let g = goldens();
    let device = Device::flex();
    let shape = shape(&g);
    for case in g["single_steps"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut config = serde_json::to_value(DdimSchedulerConfig::sd15()).unwrap();
        for (key, value) in case["config"].as_object().unwrap() {
            config[key] = value.clone();
        }
        let s = DdimScheduler::new(serde_json::from_value(config).unwrap()).unwrap();
        let (k, t) = (
            case["num_steps"].as_u64().unwrap() as usize,
            case["t"].as_u64().unwrap() as usize,
        );
        let eta = case["eta"].as_f64().unwrap() as f32;
        assert!(s.timesteps(k).unwrap().contains(&t), "{name}");
        let prediction = Prediction {
            output: tensor(&case["model_output"], shape, &device),
            parameterization: s.config().prediction_type,
        };
        let out = s.step(
            prediction,
            t,
            s.prev_timestep(t, k),
            tensor(&case["sample"], shape, &device),
            eta,
            Some(tensor(&case["noise"], shape, &device)),
        );
        let e_prev = max_rel_err(&host(out.prev_sample), &floats(&case["prev_sample"]));
        let e_x0 = max_rel_err(&host(out.pred_original), &floats(&case["pred_original"]));
        let want_std = case["std"].as_f64().unwrap() as f32;
        eprintln!(
            "{name}: prev_sample {e_prev:e}, pred_original {e_x0:e}, std {} vs {want_std}",
            out.std
        );
        assert!(
            e_prev < TOLERANCE && e_x0 < TOLERANCE,
            "{name}: {e_prev} {e_x0}"
        );
        assert!(
            (out.std - want_std).abs() <= 1e-6 * want_std.max(1.0),
            "{name}"
        );
    }
}
