//! Parity with PEFT/diffusers on the fixtures of tests/fixtures/scripts/lora_fixtures.py.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::{Model, TARGETS, fixture, max_diff, read_tensor};
use rocm_lora::{
    Error, InitLoraWeights, LoraConfig, TargetModules, apply_lora, load_adapters, merge_adapters,
    save_diffusers, save_kohya, save_peft, unmerge_adapters, with_adapters_disabled,
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

/// The `.alpha` scalars of a kohya file, by key.
fn kohya_alphas(path: &std::path::Path) -> Vec<(String, f32)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, f32)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".alpha"))
        .map(|(k, v)| {
            assert!(v.shape().is_empty(), "{k}: a 0-d tensor");
            let d = v.data();
            (k, f32::from_le_bytes([d[0], d[1], d[2], d[3]]))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn kohya_files_carry_the_real_alpha_and_round_trip() {
    let device = Device::flex();
    let mut model = Model::with_base_weights(&device);
    // r = 4, α = 6: a loader that took α = r would scale by 1 instead of 1.5.
    apply_lora(&mut model, &ours_config().with_seed(5)).unwrap();
    let want = model.forward(x(&device));
    let dir = std::env::temp_dir().join(format!("rocm-lora-kohya-{}", std::process::id()));
    let file = save_kohya(&model, &dir).unwrap();
    assert!(file.ends_with(rocm_lora::KOHYA_WEIGHTS));
    let alphas = kohya_alphas(&file);
    assert_eq!(alphas.len(), 6);
    assert_eq!(
        alphas[0].0, "lora_unet_down_blocks_0_attn1_to_k.alpha",
        "{alphas:?}"
    );
    assert!(alphas.iter().all(|(_, a)| *a == 6.0), "{alphas:?}");

    let mut other = Model::with_base_weights(&device);
    let report = load_adapters(&mut other, &dir).unwrap();
    assert_eq!(report.loaded.len(), 6);
    let a = other.down_blocks[0].attn1.to_out[0].lora.as_ref().unwrap();
    assert_eq!((a.rank(), a.alpha), (4, 6.0));
    let d = max_diff(other.forward(x(&device)), want.clone());
    assert!(d < 1e-6, "kohya round trip: {d}");

    // rsLoRA (scale α/√r) is written as α·√r, which kohya loaders divide by r.
    let mut rs = Model::with_base_weights(&device);
    apply_lora(&mut rs, &ours_config().with_seed(5).with_use_rslora(true)).unwrap();
    let want_rs = rs.forward(x(&device));
    let file = save_kohya(&rs, dir.join("rs.safetensors")).unwrap();
    assert!(kohya_alphas(&file).iter().all(|(_, a)| *a == 12.0));
    let mut other = Model::with_base_weights(&device);
    load_adapters(&mut other, &file).unwrap();
    assert!(max_diff(other.forward(x(&device)), want_rs) < 1e-6);
    std::fs::remove_dir_all(dir).ok();
}

/// Rewrites the PEFT fixture's keys with `rename(module, Some(is_a))` (f32), adding
/// `rename(module, None)` = 8.0 (the fixture's α) per module when `alpha`.
fn renamed_fixture(
    name: &str,
    rename: impl Fn(&str, Option<bool>) -> String,
    alpha: bool,
) -> PathBuf {
    let bytes = std::fs::read(fixture("peft/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, view) in st.tensors() {
        let module = key
            .strip_prefix("base_model.model.")
            .unwrap()
            .rsplit_once(".lora_")
            .unwrap()
            .0
            .to_string();
        let is_a = key.contains(".lora_A.");
        owned.push((
            rename(&module, Some(is_a)),
            view.shape().to_vec(),
            view.data().to_vec(),
        ));
        if alpha && is_a {
            owned.push((
                rename(&module, None),
                Vec::new(),
                8.0f32.to_le_bytes().to_vec(),
            ));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(k, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .unwrap();
            (k.clone(), v)
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("rocm-lora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lora.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn processor_layout_and_kohya_keys_reproduce_peft() {
    let device = Device::flex();
    // diffusers' old attention-processor layout: `<attn>.processor.to_q_lora.down.weight`.
    // It covers attention projections only, so the convolutions' keys keep the `.lora.` form.
    let processor = renamed_fixture(
        "processor",
        |m, a| {
            let Some(a) = a else {
                return format!("unet.{m}.alpha");
            };
            let factor = if a { "down" } else { "up" };
            match m.rsplit_once(".attn1.") {
                Some((owner, proj)) => {
                    let proj = proj.trim_end_matches(".0");
                    format!("unet.{owner}.attn1.processor.{proj}_lora.{factor}.weight")
                }
                None => format!("unet.{m}.lora.{factor}.weight"),
            }
        },
        true,
    );
    // kohya: names flattened with `_`, `.alpha` = 8 per module (r = 4).
    let kohya = renamed_fixture(
        "kohya",
        |m, a| match a {
            Some(a) => {
                let factor = if a { "lora_down" } else { "lora_up" };
                format!("{}.{factor}.weight", rocm_lora::kohya_name(m))
            }
            None => format!("{}.alpha", rocm_lora::kohya_name(m)),
        },
        true,
    );
    for file in [&processor, &kohya] {
        let mut model = Model::with_base_weights(&device);
        let report = load_adapters(&mut model, file).unwrap();
        assert_eq!(report.loaded.len(), 6, "{}", file.display());
        let d = max_diff(model.forward(x(&device)), io("out_on", &device));
        assert!(d < TOL, "{}: vs peft {d}", file.display());
        std::fs::remove_dir_all(file.parent().unwrap()).ok();
    }
}

#[test]
fn text_encoder_keys_are_refused_unless_skipped() {
    let device = Device::flex();
    let te = renamed_fixture(
        "te",
        |m, a| {
            let factor = if a == Some(true) {
                "lora_down"
            } else {
                "lora_up"
            };
            if m.ends_with("to_q") {
                format!("lora_te_text_model_encoder_layers_0_self_attn_q_proj.{factor}.weight")
            } else {
                format!("{}.{factor}.weight", rocm_lora::kohya_name(m))
            }
        },
        false,
    );
    let mut model = Model::with_base_weights(&device);
    let err = load_adapters(&mut model, &te).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::TextEncoderAdapters { count: 2, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("lora.safetensors") && msg.contains("lora_te_"),
        "{msg}"
    );
    assert!(
        rocm_lora::adapter_paths(&model).is_empty(),
        "model untouched"
    );

    let options = rocm_lora::LoadOptions {
        text_encoder: rocm_lora::TextEncoderKeys::Skip,
        ..Default::default()
    };
    let report = rocm_lora::load_adapters_with(&mut model, &te, &options).unwrap();
    assert_eq!((report.loaded.len(), report.skipped_keys.len()), (5, 2));

    // A kohya name that is no layer of the model is an error naming the key.
    let bad = renamed_fixture(
        "bad-kohya",
        |m, a| {
            let factor = if a == Some(true) {
                "lora_down"
            } else {
                "lora_up"
            };
            format!("{}x.{factor}.weight", rocm_lora::kohya_name(m))
        },
        false,
    );
    let err = load_adapters(&mut Model::with_base_weights(&device), &bad).unwrap_err();
    assert!(matches!(err, Error::UnknownKey { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("lora_unet_down_blocks_0_attn1_to_kx"),
        "{err}"
    );
    for f in [te, bad] {
        std::fs::remove_dir_all(f.parent().unwrap()).ok();
    }
}
