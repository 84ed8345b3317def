//! Parity with PEFT/diffusers on the fixtures of tests/fixtures/scripts/lora_fixtures.py.
#![allow(clippy::unwrap_used)]

mod common;

use burn::prelude::*;
use common::{Model, TARGETS, fixture, max_diff, read_tensor};
use rocm_lora::{
    Error, InitLoraWeights, LoraConfig, TargetModules, apply_lora, load_adapters, merge_adapters,
    save_diffusers, save_peft, unmerge_adapters, with_adapters_disabled,
};

const TOL: f32 = 1e-5;

fn io(key: &str, device: &Device) -> Tensor<3> {
    read_tensor::<3>("io.safetensors", key, device)
}

fn x(device: &Device) -> Tensor<4> {
    read_tensor::<4>("io.safetensors", "x", device)
}

#[test]
fn base_weights_load_by_upstream_names_and_match_torch() {
    let device = Device::flex();
    let model = Model::with_base_weights(&device);
    let d = max_diff(model.forward(x(&device)), io("out_off", &device));
    assert!(d < TOL, "base output vs torch: {d}");
}

/// Load a peft-written adapter, check adapters on/off/merged against PEFT's outputs.
fn check_against_peft(dir: &str, expected_on: &str) {
    let device = Device::flex();
    let mut model = Model::with_base_weights(&device);
    let base = model.forward(x(&device));
    let report = load_adapters(&mut model, fixture(dir)).unwrap();
    assert_eq!(report.loaded.len(), 6, "{report:?}");

    let on = model.forward(x(&device));
    let d_on = max_diff(on.clone(), io(expected_on, &device));
    eprintln!("{dir}: max |ours - peft| adapters on = {d_on:e}");
    assert!(d_on < TOL, "{dir}: adapters on vs peft: {d_on}");
    assert!(
        max_diff(on.clone(), base.clone()) > 0.1,
        "the adapter must matter"
    );

    let off = with_adapters_disabled(|| model.forward(x(&device)));
    assert_eq!(
        off.to_data(),
        base.to_data(),
        "adapters off must be bitwise the base"
    );
    assert!(max_diff(off, io("out_off", &device)) < TOL);

    assert_eq!(merge_adapters(&mut model), 6);
    let merged = model.forward(x(&device));
    let d_m = max_diff(merged.clone(), on.clone());
    eprintln!("{dir}: max |merged - unmerged| = {d_m:e}");
    assert!(d_m < TOL, "merged vs unmerged: {d_m}");
    if expected_on == "out_on" {
        assert!(max_diff(merged, io("out_merged", &device)) < TOL);
    }
    let off_merged = with_adapters_disabled(|| model.forward(x(&device)));
    assert!(max_diff(off_merged, base.clone()) < TOL);
    assert_eq!(unmerge_adapters(&mut model), 6);
    assert!(max_diff(model.forward(x(&device)), on) < TOL);
}

#[test]
fn peft_layout_reproduces_peft() {
    check_against_peft("peft", "out_on");
}

#[test]
fn diffusers_layout_reproduces_peft() {
    check_against_peft("diffusers", "out_on");
}

#[test]
fn old_spelling_f16_and_alpha_keys_load() {
    check_against_peft("old", "out_old");
}

fn ours_config() -> LoraConfig {
    LoraConfig::new(4, 6.0, TargetModules::names(&TARGETS))
        .with_init_lora_weights(InitLoraWeights::Random)
        .with_seed(7)
}

/// Writes tests/fixtures/ours/ (run once, then phase 2 of the Python script).
#[test]
#[ignore = "writes the committed fixture tests/fixtures/ours/"]
fn write_ours_fixture() {
    let device = Device::flex();
    let mut model = Model::with_base_weights(&device);
    let report = apply_lora(&mut model, &ours_config()).unwrap();
    assert_eq!(report.wrapped.len(), 6);
    save_diffusers(&model, fixture("ours/diffusers"), "unet").unwrap();
    save_peft(&model, fixture("ours/peft")).unwrap();
}

#[test]
fn our_files_loaded_by_peft_and_diffusers_match_ours() {
    let device = Device::flex();
    // The same seeded adapter as the one written to ours/, rebuilt here.
    let mut fresh = Model::with_base_weights(&device);
    apply_lora(&mut fresh, &ours_config()).unwrap();
    let want = |k| read_tensor::<3>("ours/python_outputs.safetensors", k, &device);
    for (dir, key) in [
        ("ours/diffusers", "diffusers_on"),
        ("ours/diffusers", "load_lora_adapter_on"),
        ("ours/peft", "peft_on"),
    ] {
        let mut model = Model::with_base_weights(&device);
        load_adapters(&mut model, fixture(dir)).unwrap();
        let ours = model.forward(x(&device));
        let d = max_diff(ours.clone(), want(key));
        eprintln!("{dir}: max |ours - python {key}| = {d:e}");
        assert!(d < TOL, "{dir}: ours vs python {key}: {d}");
        assert!(max_diff(ours, fresh.forward(x(&device))) < TOL);
    }
    let off = with_adapters_disabled(|| fresh.forward(x(&device)));
    assert!(max_diff(off, want("peft_off")) < TOL);
}

#[test]
fn wrong_shape_and_unknown_layer_are_errors_naming_file_and_key() {
    let device = Device::flex();
    // A model whose to_q has other dimensions.
    let mut model = Model::with_base_weights(&device);
    model.down_blocks[0].attn1.to_q = rocm_lora::LinearConfig::new(8, 6).init(&device);
    let err = load_adapters(&mut model, fixture("peft")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("adapter_model.safetensors"), "{msg}");
    assert!(
        msg.contains("down_blocks.0.attn1.to_q.lora_B.weight"),
        "{msg}"
    );
    assert!(msg.contains("[8, 4]") && msg.contains("[6, 4]"), "{msg}");
    assert!(
        model.down_blocks[0].attn1.to_q.lora.is_none(),
        "model untouched on error"
    );

    // A model without conv_shortcut.
    let mut model = Model::with_base_weights(&device);
    model.down_blocks[0].resnets[0].conv_shortcut = None;
    let err = load_adapters(&mut model, fixture("diffusers")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownKey { .. }), "{msg}");
    assert!(
        msg.contains("unet.down_blocks.0.resnets.0.conv_shortcut.lora_A.weight"),
        "{msg}"
    );
    assert!(
        rocm_lora::adapter_paths(&model).is_empty(),
        "model untouched on error"
    );
}

#[test]
fn save_load_round_trip_keeps_alpha() {
    let device = Device::flex();
    let mut model = Model::with_base_weights(&device);
    apply_lora(&mut model, &ours_config().with_seed(11)).unwrap();
    let want = model.forward(x(&device));
    let dir = std::env::temp_dir().join(format!("rocm-lora-rt-{}", std::process::id()));
    for layout in ["peft", "diffusers"] {
        let path = match layout {
            "peft" => save_peft(&model, dir.join(layout)).unwrap(),
            _ => rocm_lora::save_adapters(&model, dir.join(layout)).unwrap(),
        };
        let mut other = Model::with_base_weights(&device);
        load_adapters(&mut other, &path).unwrap();
        let a = other.down_blocks[0].attn1.to_q.lora.as_ref().unwrap();
        assert_eq!((a.rank(), a.alpha, a.scale()), (4, 6.0, 1.5), "{layout}");
        assert!(
            max_diff(other.forward(x(&device)), want.clone()) < 1e-6,
            "{layout}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
