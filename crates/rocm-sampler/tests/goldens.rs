//! Parity with diffusers' LCMScheduler (fixtures by tests/fixtures/scripts/sampler_goldens.py).
#![allow(clippy::unwrap_used)]

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use rocm_sampler::toy::ToyEpsMlp;
use rocm_sampler::{
    BetaSchedule, LcmScheduler, LcmSpacing, NoiseSchedule, Parameterization, Prediction, Sampler,
    SamplerNoise, SamplerOptions, guidance_scale_embedding,
};
use serde_json::Value;

const GOLDENS: &str = include_str!("fixtures/lcm_goldens.json");

fn goldens() -> Value {
    serde_json::from_str(GOLDENS).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
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

fn tensor2(v: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

#[test]
fn alphas_cumprod_match_diffusers() {
    let g = goldens();
    for (name, kind, start, end) in [
        ("scaled_linear", BetaSchedule::ScaledLinear, 0.00085, 0.012),
        ("linear", BetaSchedule::Linear, 0.0001, 0.02),
        ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2, 0.0, 0.0),
    ] {
        let want = floats(&g["alphas_cumprod"][name]);
        let got = NoiseSchedule::new(kind, start, end, 1000).unwrap();
        let err = max_rel_err(got.alphas_cumprod(), &want);
        // diffusers accumulates the product in f32; ours is f64 rounded once.
        eprintln!("alphas_cumprod {name}: max relative error {err:e}");
        assert!(err < 2e-6, "{name}: max relative error {err}");
    }
}

#[test]
fn timesteps_match_diffusers_and_the_lcm_code() {
    let g = goldens();
    let s = LcmScheduler::sd15();
    for k in 1..=50 {
        let evenly = usizes(&g["timesteps_evenly"][k.to_string()]);
        let original = usizes(&g["timesteps_original"][k.to_string()]);
        assert_eq!(
            s.timesteps(k, LcmSpacing::Evenly).unwrap(),
            evenly,
            "evenly K={k}"
        );
        assert_eq!(
            s.timesteps(k, LcmSpacing::Original).unwrap(),
            original,
            "original K={k}"
        );
    }
}

#[test]
fn boundary_condition_matches_diffusers() {
    let g = goldens();
    let s = LcmScheduler::sd15();
    let scalings = g["scalings"].as_object().unwrap();
    assert!(scalings.len() > 20);
    for (t, v) in scalings {
        let (c_skip, c_out) = s.boundary_condition(t.parse().unwrap());
        let want = floats(v);
        assert!(
            (c_skip as f32 - want[0]).abs() <= 1e-6 * want[0].abs().max(1e-12),
            "c_skip({t})"
        );
        assert!((c_out as f32 - want[1]).abs() <= 1e-6, "c_out({t})");
    }
}

#[test]
fn single_steps_match_for_every_prediction_type() {
    let g = goldens();
    let device = Device::flex();
    let s = LcmScheduler::sd15();
    for case in g["steps"].as_array().unwrap() {
        let parameterization: Parameterization =
            serde_json::from_value(case["prediction_type"].clone()).unwrap();
        let t = case["t"].as_u64().unwrap() as usize;
        let t_next = case["t_next"].as_u64().unwrap() as usize;
        let x = tensor2(floats(&case["sample"]), [2, 4], &device);
        let output = tensor2(floats(&case["model_output"]), [2, 4], &device);
        let z = tensor2(floats(&case["noise"]), [2, 4], &device);
        let out = s.step(
            Prediction {
                output,
                parameterization,
            },
            t,
            Some((t_next, z)),
            x,
        );
        let e1 = max_rel_err(&host(out.denoised), &floats(&case["denoised"]));
        let e2 = max_rel_err(&host(out.prev_sample), &floats(&case["prev_sample"]));
        eprintln!("step {parameterization:?}: denoised {e1:e}, prev_sample {e2:e}");
        assert!(e1 < 1e-6 && e2 < 1e-6, "{parameterization:?}: {e1} {e2}");
    }
}

#[test]
fn guidance_embedding_matches_the_pipeline() {
    let g = goldens();
    let device = Device::flex();
    for case in g["guidance_embeddings"].as_array().unwrap() {
        let dim = case["dim"].as_u64().unwrap() as usize;
        let w = Tensor::<1>::from_data(TensorData::new(floats(&case["w"]), [3]), &device);
        let got = host(guidance_scale_embedding(w, dim));
        let err = max_rel_err(&got, &floats(&case["embedding"]));
        // The arguments reach 1000 w = 7500 rad, where one f32 ulp is 4.9e-4 rad: sin/cos
        // implementations (torch's, flex's, a GPU's) legitimately differ in the 5th decimal.
        eprintln!("guidance embedding dim {dim}: max error {err:e}");
        assert!(err < 1e-4, "dim {dim}: {err}");
    }
}

fn linear(weights: &Value, name: &str, device: &Device) -> Linear {
    let w = &weights[format!("{name}.weight")];
    let shape = usizes(&w["shape"]);
    let (out, inp) = (shape[0], shape[1]);
    // PyTorch [out, in] → Burn [in, out].
    let weight = tensor2(floats(&w["data"]), [out, inp], device).transpose();
    let bias = Tensor::<1>::from_data(
        TensorData::new(floats(&weights[format!("{name}.bias")]["data"]), [out]),
        device,
    );
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

#[test]
fn multistep_runs_match_diffusers_with_injected_noise() {
    let g = goldens();
    let device = Device::flex();
    let weights = &g["mlp"]["weights"];
    let model = ToyEpsMlp {
        linear_in: linear(weights, "linear_in", &device),
        time_in: linear(weights, "time_in", &device),
        linear_out: linear(weights, "linear_out", &device),
        adapter: None,
    };
    let sampler = Sampler::default();
    for run in g["mlp"]["runs"].as_array().unwrap() {
        let (b, d) = (
            run["batch"].as_u64().unwrap() as usize,
            run["dim"].as_u64().unwrap() as usize,
        );
        let timesteps = usizes(&run["timesteps"]);
        let k = timesteps.len();
        let options = match run["spacing"].as_str().unwrap() {
            "evenly" => SamplerOptions::new(k),
            "original" => SamplerOptions::new(k).with_spacing(LcmSpacing::Original),
            _ => SamplerOptions::new(k).with_timesteps(timesteps.clone()),
        };
        let noise = SamplerNoise::new(
            tensor2(floats(&run["initial"]), [b, d], &device),
            run["noise"]
                .as_array()
                .unwrap()
                .iter()
                .map(|z| tensor2(floats(z), [b, d], &device))
                .collect(),
        );
        let traj = sampler.sample(&model, &(), noise, &options).unwrap();
        assert_eq!(traj.timesteps(), timesteps);
        let mut worst = 0.0f32;
        for (step, (x, f)) in traj.steps.iter().zip(
            run["latents"]
                .as_array()
                .unwrap()
                .iter()
                .zip(run["denoised"].as_array().unwrap()),
        ) {
            worst = worst.max(max_rel_err(&host(step.latent.clone()), &floats(x)));
            worst = worst.max(max_rel_err(&host(step.denoised.clone()), &floats(f)));
        }
        worst = worst.max(max_rel_err(
            &host(traj.final_latent.clone()),
            &floats(&run["final"]),
        ));
        eprintln!("multistep {timesteps:?}: max relative error {worst:e}");
        assert!(worst < 1e-5, "{timesteps:?}: max relative error {worst}");
    }
}
