//! LoRA files in every layout we write or read, against diffusers, on rocm-models' tiny random
//! `pipeline-a` UNet (fixtures: `tests/fixtures/scripts/lora_formats.py`, tolerance 1e-5 on one
//! UNet call):
//!
//! - a LoRA trained by `rocm train` (r = 4, α = 8, every kind of layer), loaded by us, equals
//!   diffusers' `load_lora_weights` of the same file;
//! - `rocm export --format kohya` writes the committed kohya file (the real α = 8, not r), which
//!   diffusers' kohya path and our loader both read as the trained LoRA;
//! - kohya files written on the Python side load as diffusers loads them: diffusers' own
//!   PEFT → kohya converter (int64 `alpha = rank`) and an LDM/SGM-named writer (float16, per-module α);
//! - `rocm export --format merged` writes a `unet/` folder whose plain load equals the unmerged
//!   LoRA (diffusers' `from_pretrained` of it is in the fixture too);
//! - `rocm sample --noise --lora` and the `sample` example with `--lora` reproduce diffusers'
//!   `LatentConsistencyModelPipeline` + `load_lora_weights` on the same noise (1e-4 on the image).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use rocm::lora::{KOHYA_UNET_PREFIX, load_adapters};
use rocm::models::UNet2DConditionModel;
use safetensors::SafeTensors;

const TOL: f32 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pipeline_a() -> PathBuf {
    root().join("crates/rocm-models/tests/fixtures/pipeline-a")
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures/lora").join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-lora-formats-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// Every tensor of an f32 safetensors file as (key, shape, values), sorted by key.
fn read_all(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, v.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn tensor<const D: usize>(file: &Path, key: &str, device: &Device) -> Tensor<D> {
    let (_, shape, values) = read_all(file)
        .into_iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("{}: no `{key}`", file.display()));
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn io() -> PathBuf {
    fixture("python/unet_io.safetensors")
}

/// Our UNet's output on the fixture's call.
fn call(unet: &UNet2DConditionModel, device: &Device) -> Tensor<4> {
    unet.forward(
        tensor(&io(), "x", device),
        tensor(&io(), "t", device),
        tensor(&io(), "encoder_hidden_states", device),
        Some(tensor(&io(), "timestep_cond", device)),
    )
}

fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn base_unet(device: &Device) -> UNet2DConditionModel {
    UNet2DConditionModel::from_pretrained(pipeline_a().join("unet"), device).unwrap()
}

/// Our output with `lora` loaded, checked against diffusers' output `key`.
fn check_file(lora: &Path, key: &str, device: &Device) -> Tensor<4> {
    let mut unet = base_unet(device);
    let report = load_adapters(&mut unet, lora).unwrap();
    assert!(report.loaded.len() > 50, "{}: {report:?}", lora.display());
    let ours = call(&unet, device);
    let d = max_diff(ours.clone(), tensor(&io(), key, device));
    eprintln!("{}: max |ours - diffusers {key}| = {d:e}", lora.display());
    assert!(d < TOL, "{}: ours vs diffusers {key}: {d}", lora.display());
    ours
}

fn rocm_export(lora: &Path, format: &str, out: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_rocm"))
        .arg("export")
        .arg("--model")
        .arg(pipeline_a())
        .arg("--lora")
        .arg(lora)
        .args(["--format", format, "--out"])
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&*out.to_string_lossy()),
        "prints the path"
    );
}

#[test]
fn trained_lora_loads_as_diffusers_loads_it() {
    let device = Device::flex();
    let base = call(&base_unet(&device), &device);
    assert!(max_diff(base.clone(), tensor(&io(), "base", &device)) < TOL);
    let on = check_file(&fixture("trained"), "trained", &device);
    assert!(max_diff(on, base) > 0.1, "the LoRA must matter");
}

#[test]
fn kohya_export_carries_the_real_alpha_and_loads_in_diffusers_and_here() {
    let device = Device::flex();
    let committed = fixture("ours/lora_kohya.safetensors");
    let out = scratch("kohya").join("lora.safetensors");
    rocm_export(&fixture("trained"), "kohya", &out);
    let (now, before) = (read_all(&out), read_all(&committed));
    assert_eq!(now.len(), before.len());
    for (a, b) in now.iter().zip(&before) {
        assert_eq!(a, b, "the export still writes the committed file ({})", a.0);
    }
    let alphas: Vec<f32> = now
        .iter()
        .filter(|(k, _, _)| k.ends_with(".alpha"))
        .map(|(k, shape, v)| {
            assert!(k.starts_with(KOHYA_UNET_PREFIX) && shape.is_empty(), "{k}");
            v[0]
        })
        .collect();
    assert_eq!(alphas.len(), 83);
    assert!(alphas.iter().all(|a| *a == 8.0), "α = 8, not r = 4");
    // diffusers' kohya path on our file gave the trained output: so do we.
    check_file(&committed, "ours_kohya", &device);
    let d = max_diff(
        tensor(&io(), "ours_kohya", &device),
        tensor(&io(), "trained", &device),
    );
    assert!(
        d < TOL,
        "diffusers: our kohya file vs the trained LoRA: {d}"
    );
    std::fs::remove_dir_all(out.parent().unwrap()).ok();
}

#[test]
fn python_written_kohya_files_load_as_diffusers_loads_them() {
    let device = Device::flex();
    // diffusers' PEFT → kohya converter writes alpha = rank: diffusers and we both load it at
    // scale 1, not the trained α / r = 2.
    let converted = check_file(
        &fixture("python/diffusers_kohya.safetensors"),
        "diffusers_kohya",
        &device,
    );
    assert!(max_diff(converted, tensor(&io(), "trained", &device)) > 0.1);
    // LDM/SGM names (`lora_unet_input_blocks_1_1_proj_in`), float16, per-module α.
    check_file(
        &fixture("python/ldm_kohya.safetensors"),
        "ldm_kohya",
        &device,
    );
}

#[test]
fn merged_export_equals_the_unmerged_lora() {
    let device = Device::flex();
    let out = scratch("merged");
    rocm_export(&fixture("trained"), "merged", &out);
    assert!(out.join("config.json").is_file());
    let merged = UNet2DConditionModel::from_pretrained(&out, &device).unwrap();
    assert!(rocm::lora::adapter_paths(&merged).is_empty());
    let ours = call(&merged, &device);
    for key in ["trained", "merged"] {
        let d = max_diff(ours.clone(), tensor(&io(), key, &device));
        eprintln!("merged export: max |ours - diffusers {key}| = {d:e}");
        assert!(d < TOL, "merged vs diffusers {key}: {d}");
    }
    std::fs::remove_dir_all(out).ok();
}

/// Runs `command` (`rocm sample` or the `sample` example) on pipeline-a's two prompts with our
/// kohya export and diffusers' noise, and checks its `--out-tensor` images against
/// `LatentConsistencyModelPipeline` + `load_lora_weights` on the same noise.
fn check_sample(mut command: Command, name: &str) {
    let out = scratch(name);
    let tensor = out.join("image.safetensors");
    let output = command
        .arg("--model")
        .arg(pipeline_a())
        .args(["--prompt", "a photo of a cat"])
        .args(["--prompt", "an astronaut riding a horse on the moon"])
        .arg("--lora")
        .arg(fixture("ours/lora_kohya.safetensors"))
        .arg("--noise")
        .arg(fixture("python/sample_expected.safetensors"))
        .arg("--out-tensor")
        .arg(&tensor)
        .args([
            "--steps",
            "4",
            "--guidance",
            "8.0",
            "--device",
            "flex",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("loaded 83 LoRA adapters"), "{stderr}");
    let (_, shape, got) = read_all(&tensor).remove(0);
    assert_eq!(shape, [2, 3, 16, 16]);
    let want = read_all(&fixture("python/sample_expected.safetensors"))
        .into_iter()
        .find(|(k, _, _)| k == "image")
        .unwrap()
        .2;
    let d = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{name}: max |ours - diffusers LCM pipeline + load_lora_weights| = {d:e}");
    assert!(d < 1e-4, "{name}: image vs diffusers: {d}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn rocm_sample_with_noise_and_lora_reproduces_diffusers() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rocm"));
    command.arg("sample");
    check_sample(command, "cli");
}

#[test]
fn sample_example_with_lora_reproduces_diffusers() {
    check_sample(Command::new(common::example_binary("sample")), "example");
}
