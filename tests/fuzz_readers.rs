//! Seeded mutation fuzzing of every file reader (docs/reliability.md): damaged copies of the real
//! fixture files (`rocm_testing::fuzz`) must be refused with an error naming the file, or
//! accepted; never a panic, never an allocation beyond `64 MiB + 16 ×` the file's size (the
//! global allocator below enforces it per case: an allocation past it aborts the binary).
//!
//! The CI counts are sized to run in about a minute on 2 cores; the `#[ignore]` soak
//! (`cargo test --release --test fuzz_readers -- --ignored`) runs 20 times as many.
//! `ROCM_FUZZ_CASES` and `ROCM_FUZZ_SEED` override the count and the seed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::prelude::*;
use rocm::lora::{load_adapters, save_peft};
use rocm::models::clip::{CLIPTextModel, CLIPVisionModelWithProjection};
use rocm::models::pipeline::{LcmPipeline, NoiseSource};
use rocm::models::tokenizer::CLIPTokenizer;
use rocm::models::{AutoencoderKL, UNet2DConditionModel, UNet2DConditionModelConfig};
use rocm::rewards::{AestheticHead, HpsV2};
use rocm::run::{Adapters, Run, RunConfig, read_prompts};
use rocm::sampler::{LcmScheduler, LcmSchedulerConfig, LcmSpacing};
use rocm_testing::fuzz::{AllocationLimit, Format, Fuzz, FuzzReport};

#[global_allocator]
static ALLOC: AllocationLimit = cap::Cap::new(std::alloc::System, usize::MAX);

/// The allocation cap is global: one fuzz test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn models_fixture(rel: &str) -> PathBuf {
    root().join("crates/rocm-models/tests/fixtures").join(rel)
}

/// A scratch copy of the fixture folder `from` (files only, recursively).
fn scratch_copy(name: &str, from: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-fuzz-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    copy_dir(from, &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The soak multiplies every count by this.
const SOAK: usize = 20;

/// A fuzzing run of `cases` cases (20× in the soak) whose errors must name `must_name`.
fn fuzz(reader: &str, format: Format, cases: usize, soak: bool, must_name: &str) -> Fuzz {
    let fuzz = Fuzz::new(reader, format, cases, must_name);
    if soak { fuzz.times(SOAK) } else { fuzz }
}

/// Runs `fuzz` on the file `dir/rel` in place (restored after each case) with `read(dir)`.
fn fuzz_in_place(
    fuzz: Fuzz,
    dir: &Path,
    rel: &str,
    mut read: impl FnMut(&Path) -> Result<(), String>,
) -> FuzzReport {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = dir.join(rel);
    let original = std::fs::read(&file).unwrap();
    fuzz.run(&original, Some(&ALLOC), |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let result = read(dir);
        std::fs::write(&file, &original).unwrap();
        result
    })
}

fn device() -> Device {
    Device::flex()
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---- rocm-models: UNet, VAE, CLIP, tokenizer, scheduler, the pipeline folder -------------

fn unet_config(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let dir = scratch_copy("unet-config", &models_fixture("pipeline-a/unet"));
    let parse = fuzz_in_place(
        fuzz("unet config.json", Format::Json, cases, soak, "config.json"),
        &dir,
        "config.json",
        |d| {
            UNet2DConditionModelConfig::from_file(d.join("config.json"))
                .map(drop)
                .map_err(err)
        },
    );
    // The whole pipeline with a damaged UNet config, one sampling step when it loads: a
    // size the config declares must be refused before anything is allocated from it.
    let pipeline = scratch_copy("unet-config-pipeline", &models_fixture("pipeline-a"));
    let device = device();
    let name = pipeline.display().to_string();
    let load = fuzz_in_place(
        fuzz(
            "unet config.json → pipeline + 1 step",
            Format::Json,
            cases / 4,
            soak,
            &name,
        ),
        &pipeline,
        "unet/config.json",
        |d| {
            let p = LcmPipeline::from_folder(d, &device).map_err(err)?;
            p.generate(&["a cat"], 1, 8.0, NoiseSource::Seed(0))
                .map(drop)
                .map_err(err)
        },
    );
    vec![parse, load]
}

fn component_weights(
    reader: &str,
    fixture: &str,
    weights: &str,
    cases: usize,
    soak: bool,
    load: impl Fn(&Path, &Device) -> Result<(), String>,
) -> Vec<FuzzReport> {
    let dir = scratch_copy(&reader.replace(' ', "-"), &models_fixture(fixture));
    let device = device();
    let name = dir.display().to_string();
    let config = fuzz_in_place(
        fuzz(
            &format!("{reader} config.json"),
            Format::Json,
            cases,
            soak,
            &name,
        ),
        &dir,
        "config.json",
        |d| load(d, &device),
    );
    let weights = fuzz_in_place(
        fuzz(
            &format!("{reader} {weights}"),
            Format::Safetensors,
            cases,
            soak,
            &name,
        ),
        &dir,
        weights,
        |d| load(d, &device),
    );
    vec![config, weights]
}

fn models(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let mut reports = unet_config(cases, soak);
    reports.extend(component_weights(
        "unet",
        "pipeline-a/unet",
        "diffusion_pytorch_model.fp16.safetensors",
        cases / 4,
        soak,
        |d, dev| {
            UNet2DConditionModel::from_pretrained(d, dev)
                .map(drop)
                .map_err(err)
        },
    ));
    reports.extend(component_weights(
        "vae",
        "pipeline-a/vae",
        "diffusion_pytorch_model.fp16.safetensors",
        cases / 4,
        soak,
        |d, dev| {
            AutoencoderKL::from_pretrained(d, dev)
                .map(drop)
                .map_err(err)
        },
    ));
    reports.extend(component_weights(
        "clip text",
        "pipeline-a/text_encoder",
        "model.fp16.safetensors",
        cases / 4,
        soak,
        |d, dev| {
            CLIPTextModel::from_pretrained(d, dev)
                .map(drop)
                .map_err(err)
        },
    ));
    reports.extend(component_weights(
        "clip vision",
        "clip/tiny-vision-proj",
        "model.safetensors",
        cases / 4,
        soak,
        |d, dev| {
            CLIPVisionModelWithProjection::from_pretrained(d, dev)
                .map(drop)
                .map_err(err)
        },
    ));
    let tokenizer = scratch_copy("tokenizer", &models_fixture("pipeline-a/tokenizer"));
    let name = tokenizer.display().to_string();
    for (rel, format) in [
        ("tokenizer.json", Format::Json),
        ("tokenizer_config.json", Format::Json),
    ] {
        reports.push(fuzz_in_place(
            fuzz(&format!("tokenizer {rel}"), format, cases / 2, soak, &name),
            &tokenizer,
            rel,
            |d| {
                let t = CLIPTokenizer::from_dir(d).map_err(err)?;
                t.encode_batch(&["a photo of a cat", ""])
                    .map(drop)
                    .map_err(err)
            },
        ));
    }
    let scheduler = scratch_copy("scheduler", &models_fixture("pipeline-a/scheduler"));
    reports.push(fuzz_in_place(
        fuzz(
            "scheduler_config.json",
            Format::Json,
            cases,
            soak,
            "scheduler_config.json",
        ),
        &scheduler,
        "scheduler_config.json",
        |d| {
            let path = d.join("scheduler_config.json");
            let config = LcmSchedulerConfig::from_file(&path).map_err(err)?;
            let s = LcmScheduler::new(config).map_err(|e| format!("{}: {e}", path.display()))?;
            s.timesteps(4, LcmSpacing::Evenly)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display()))
        },
    ));
    reports
}

// ---- rocm-lora: diffusers, kohya and PEFT adapter files -----------------------------------

fn lora(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let device = device();
    let mut unet =
        UNet2DConditionModel::from_pretrained(models_fixture("pipeline-a/unet"), &device).unwrap();
    let lora = root().join("tests/fixtures/lora");
    let mut reports = Vec::new();
    for (reader, fixture, file) in [
        (
            "lora diffusers",
            "trained",
            "pytorch_lora_weights.safetensors",
        ),
        ("lora kohya", "ours", "lora_kohya.safetensors"),
    ] {
        let dir = scratch_copy(&reader.replace(' ', "-"), &lora.join(fixture));
        reports.push(fuzz_in_place(
            fuzz(reader, Format::Safetensors, cases / 2, soak, file),
            &dir,
            file,
            |d| {
                load_adapters(&mut unet, d.join(file))
                    .map(drop)
                    .map_err(err)
            },
        ));
    }
    // A PEFT folder written from the trained LoRA: its adapter_config.json and weights.
    load_adapters(
        &mut unet,
        lora.join("trained/pytorch_lora_weights.safetensors"),
    )
    .unwrap();
    let peft = std::env::temp_dir().join(format!("rocm-fuzz-peft-{}", std::process::id()));
    std::fs::remove_dir_all(&peft).ok();
    save_peft(&unet, &peft).unwrap();
    assert!(!rocm::lora::adapter_paths(&unet).is_empty());
    let name = peft.display().to_string();
    for (rel, format) in [
        ("adapter_config.json", Format::Json),
        ("adapter_model.safetensors", Format::Safetensors),
    ] {
        reports.push(fuzz_in_place(
            fuzz(&format!("lora peft {rel}"), format, cases / 2, soak, &name),
            &peft,
            rel,
            |d| load_adapters(&mut unet, d).map(drop).map_err(err),
        ));
    }
    reports
}

// ---- rocm-rewards: the aesthetic head (.pth, .safetensors), open_clip checkpoints ----------

fn rewards(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let device = device();
    let fixtures = root().join("crates/rocm-rewards/tests/fixtures");
    let mut reports = Vec::new();
    let aesthetic = scratch_copy("aesthetic", &fixtures.join("aesthetic"));
    let pth = "sac+logos+ava1-l14-linearMSE.pth";
    reports.push(fuzz_in_place(
        fuzz("aesthetic head .pth", Format::Bytes, cases / 8, soak, pth),
        &aesthetic,
        pth,
        |d| {
            AestheticHead::from_file(d.join(pth), &device)
                .map(drop)
                .map_err(err)
        },
    ));
    let clip = scratch_copy("tiny-clip", &fixtures.join("tiny-clip"));
    reports.push(fuzz_in_place(
        fuzz(
            "aesthetic head .safetensors",
            Format::Safetensors,
            cases,
            soak,
            "aesthetic_head.safetensors",
        ),
        &clip,
        "aesthetic_head.safetensors",
        |d| {
            AestheticHead::from_file(d.join("aesthetic_head.safetensors"), &device)
                .map(drop)
                .map_err(err)
        },
    ));
    let open_clip = scratch_copy("open-clip", &fixtures.join("tiny-open-clip"));
    // The PyTorch checkpoint under a name the loader looks for, and not the safetensors copy.
    std::fs::remove_file(open_clip.join("open_clip_model.safetensors")).ok();
    std::fs::rename(
        open_clip.join("open_clip_model.pt"),
        open_clip.join("open_clip_pytorch_model.bin"),
    )
    .unwrap();
    let name = open_clip.display().to_string();
    for (rel, format) in [
        ("open_clip_pytorch_model.bin", Format::Bytes),
        ("config.json", Format::Json),
    ] {
        reports.push(fuzz_in_place(
            fuzz(&format!("hpsv2 {rel}"), format, cases / 8, soak, &name),
            &open_clip,
            rel,
            |d| HpsV2::from_dir(d, &device).map(drop).map_err(err),
        ));
    }
    reports
}

// ---- the run configuration, prompt files, checkpoints ---------------------------------------

fn run_files(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let mut reports = Vec::new();
    let configs = scratch_copy("configs", &root().join("configs"));
    for rel in [
        "toy.toml",
        "lcm_dreamshaper_pickscore.toml",
        "toy_dpok.toml",
    ] {
        reports.push(fuzz_in_place(
            fuzz(&format!("run config {rel}"), Format::Toml, cases, soak, rel),
            &configs,
            rel,
            |d| RunConfig::load(d.join(rel)).map(drop).map_err(err),
        ));
    }
    let prompts = scratch_copy("prompts", &root().join("data/prompts"));
    reports.push(fuzz_in_place(
        fuzz(
            "prompts file",
            Format::Text,
            cases,
            soak,
            "eval_simple_animals.txt",
        ),
        &prompts,
        "eval_simple_animals.txt",
        |d| {
            read_prompts(&d.join("eval_simple_animals.txt"))
                .map(drop)
                .map_err(err)
        },
    ));
    reports
}

/// The committed checkpoint `tests/fixtures/checkpoint/` was written by `rocm train` on
/// `configs/toy.toml` with `batch_size = 4`, `iterations = 1`, one thread: a fixture, so that
/// the cases are the same on every run (adapter `ParamId`s are random in each process).
fn checkpoints(cases: usize, soak: bool) -> Vec<FuzzReport> {
    let text = std::fs::read_to_string(root().join("configs/toy.toml"))
        .unwrap()
        .replace("batch_size = 128", "batch_size = 4");
    let config = RunConfig::from_toml_str(&text, "toy.toml").unwrap();
    let Run::Toy(mut trainer) = config.build("flex", Adapters::New).unwrap().run else {
        panic!("the toy config builds a toy trainer")
    };
    let root_dir = scratch_copy("checkpoint", &root().join("tests/fixtures/checkpoint"));
    let dir = root_dir.join("step-000001");
    let step = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut reports = Vec::new();
    for (rel, format) in [
        ("state.json", Format::Json),
        ("adapters.bpk", Format::Bytes),
        ("optimizer.bpk", Format::Bytes),
    ] {
        let rel_in_root = format!("{step}/{rel}");
        reports.push(fuzz_in_place(
            fuzz(&format!("checkpoint {rel}"), format, cases / 2, soak, &step),
            &root_dir,
            &rel_in_root,
            |r| trainer.resume(&r.join(&step)).map_err(err),
        ));
    }
    reports.push(fuzz_in_place(
        fuzz("checkpoint latest", Format::Text, cases, soak, "latest"),
        &root_dir,
        "latest",
        |r| {
            let Some(dir) = rocm::trainer::checkpoint::latest_checkpoint(r).map_err(err)? else {
                return Ok(());
            };
            trainer.resume(&dir).map_err(err)
        },
    ));
    reports
}

fn assert_all_clean(reports: &[FuzzReport]) {
    let total: usize = reports.iter().map(|r| r.cases).sum();
    let failures: usize = reports.iter().map(|r| r.failures.len()).sum();
    eprintln!(
        "{} readers, {total} cases, {failures} failures",
        reports.len()
    );
    for r in reports {
        r.assert_clean();
    }
}

/// Found by the fuzzer: a PEFT `adapter_config.json` with `lora_dropout = 1` panicked in Burn's
/// `Dropout`; now an error naming the file and the field.
#[test]
fn regression_peft_lora_dropout_of_one_is_an_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = device();
    let mut unet =
        UNet2DConditionModel::from_pretrained(models_fixture("pipeline-a/unet"), &device).unwrap();
    let lora = root().join("tests/fixtures/lora/trained/pytorch_lora_weights.safetensors");
    load_adapters(&mut unet, &lora).unwrap();
    let peft = std::env::temp_dir().join(format!("rocm-fuzz-dropout-{}", std::process::id()));
    std::fs::remove_dir_all(&peft).ok();
    save_peft(&unet, &peft).unwrap();
    let config = peft.join("adapter_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["lora_dropout"] = 1.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_adapters(&mut unet, &peft).unwrap_err().to_string();
    assert!(
        err.contains("adapter_config.json") && err.contains("lora_dropout"),
        "{err}"
    );
    std::fs::remove_dir_all(&peft).ok();
}

/// Found by the fuzzer: a damaged `latest` sent resume to a path outside `checkpoints/` or to a
/// directory that is no checkpoint, with an error that did not name `latest`.
#[test]
fn regression_a_damaged_latest_is_an_error_naming_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root_dir = std::env::temp_dir().join(format!("rocm-fuzz-latest-{}", std::process::id()));
    std::fs::remove_dir_all(&root_dir).ok();
    std::fs::create_dir_all(root_dir.join("step-000001")).unwrap();
    std::fs::write(root_dir.join("step-000001/state.json"), "{}").unwrap();
    for text in ["/etc", "../step-000001", "step-000002", ""] {
        std::fs::write(root_dir.join("latest"), text).unwrap();
        let err = rocm::trainer::checkpoint::latest_checkpoint(&root_dir)
            .expect_err(text)
            .to_string();
        assert!(err.contains("latest"), "{text}: {err}");
    }
    std::fs::write(root_dir.join("latest"), "step-000001\n").unwrap();
    let dir = rocm::trainer::checkpoint::latest_checkpoint(&root_dir).unwrap();
    assert_eq!(dir, Some(root_dir.join("step-000001")));
    std::fs::remove_dir_all(&root_dir).ok();
}

/// Found by the fuzzer: a `tokenizer.json` whose `decoder` is malformed panicked inside the
/// tokenizers crate (an `expect` in its decoder deserialisation); now an error naming the file.
#[test]
fn regression_a_malformed_tokenizer_decoder_is_an_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_copy("tokenizer-decoder", &models_fixture("pipeline-a/tokenizer"));
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for decoder in [
        serde_json::json!({"type": 5}),
        serde_json::json!([1, 2]),
        "x".into(),
    ] {
        json["decoder"] = decoder.clone();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = CLIPTokenizer::from_dir(&dir)
            .expect_err(&decoder.to_string())
            .to_string();
        assert!(err.contains("tokenizer.json"), "{decoder}: {err}");
    }
    // The fuzzer's case: a syntax error inside the decoder's object.
    let broken = text.replacen("\"decoder\": {", "\"decoder\": {1: ", 1);
    assert_ne!(broken, text);
    std::fs::write(&path, broken).unwrap();
    let err = CLIPTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Found by the fuzzer: `samples_per_prompt = 2^63` in a DPOK config overflowed the
/// `samples × batch × accumulation` check (a panic in debug builds); now bounded, naming the key.
#[test]
fn regression_a_huge_samples_per_prompt_is_an_error() {
    let text = std::fs::read_to_string(root().join("configs/toy_dpok.toml")).unwrap();
    assert!(text.contains("samples_per_prompt = "));
    let start = text.find("samples_per_prompt = ").unwrap() + "samples_per_prompt = ".len();
    let end = start + text[start..].find('\n').unwrap();
    for n in ["9223372036854775807", "1000000"] {
        let damaged = format!("{}{n}{}", &text[..start], &text[end..]);
        let err = RunConfig::from_toml_str(&damaged, "toy_dpok.toml")
            .map(drop)
            .expect_err(n)
            .to_string();
        assert!(
            err.contains("samples_per_prompt") && err.contains("toy_dpok.toml"),
            "{n}: {err}"
        );
    }
}

/// CI case count for the cheap readers (the model loaders run a fraction of it).
const CASES: usize = 1000;

#[test]
fn models_survive_damaged_files() {
    assert_all_clean(&models(CASES, false));
}

#[test]
fn lora_files_survive_damage() {
    assert_all_clean(&lora(CASES, false));
}

#[test]
fn reward_files_survive_damage() {
    assert_all_clean(&rewards(CASES, false));
}

#[test]
fn run_configs_and_prompts_survive_damage() {
    assert_all_clean(&run_files(CASES, false));
}

#[test]
fn checkpoints_survive_damage() {
    assert_all_clean(&checkpoints(CASES, false));
}

#[test]
#[ignore = "soak: 20× the CI cases of every reader (run with --release)"]
fn soak_every_reader() {
    let mut reports = models(CASES, true);
    reports.extend(lora(CASES, true));
    reports.extend(rewards(CASES, true));
    reports.extend(run_files(CASES, true));
    reports.extend(checkpoints(CASES, true));
    assert_all_clean(&reports);
}
