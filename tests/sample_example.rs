//! The `sample` example end to end on a tiny random diffusers LCM pipeline folder that no Rust unit
//! test was tuned on (`crates/rocm-models/tests/fixtures/pipeline-b`: 3 UNet levels, per-block head
//! dims, a 3-layer text encoder of width 24, 32-token prompts, 32×32 images). With diffusers' noise
//! injected through `--noise`, `--out-tensor` reproduces `LatentConsistencyModelPipeline`'s images
//! (`tests/fixtures/scripts/models_pipeline.py`) to 1e-3 max abs (measured about 8e-7 on flex), and
//! the PNGs are their 8-bit quantisation. Bad input: one line on stderr, exit code 2.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rocm::trainer::images::caption_height;
use safetensors::{Dtype, SafeTensors};

const TOLERANCE: f32 = 1e-3;
const PROMPTS: [&str; 2] = [
    "a photo of a cat",
    "an astronaut riding a horse on the moon",
];

fn pipeline_b() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/rocm-models/tests/fixtures/pipeline-b")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-sample-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn run(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(common::example_binary("sample"));
    command.arg("--model").arg(model);
    for prompt in PROMPTS {
        command.args(["--prompt", prompt]);
    }
    command
        .args([
            "--steps",
            "4",
            "--guidance",
            "8.0",
            "--device",
            "flex",
            "--out",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// An f32 tensor of a safetensors file: (shape, values).
fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

/// A PNG's (width, height, RGB bytes).
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn reproduces_diffusers_on_an_unseen_pipeline() {
    let fixture = pipeline_b().join("expected.safetensors");
    let out = temp_dir("parity");
    let tensor = out.join("image.safetensors");
    let noise = fixture.to_str().unwrap();
    let output = run(
        &pipeline_b(),
        &out,
        &["--noise", noise, "--out-tensor", tensor.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("step 4/4"), "progress on stderr: {stderr}");

    let (shape, got) = read_f32(&tensor, "image");
    let (want_shape, want) = read_f32(&fixture, "image");
    assert_eq!(
        (shape.as_slice(), want_shape.as_slice()),
        ([2, 3, 32, 32].as_slice(), [2, 3, 32, 32].as_slice())
    );
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < TOLERANCE, "max abs diff {diff}");

    // Each PNG is the 8-bit quantisation (x·255).round() of its image, HWC.
    let plane = 32 * 32;
    for b in 0..2 {
        let (w, h, rgb) = read_png(&out.join(format!("image-{b}.png")));
        assert_eq!((w, h, rgb.len()), (32, 32, 3 * plane));
        let image = &got[b * 3 * plane..(b + 1) * 3 * plane];
        for (i, &byte) in rgb.iter().enumerate() {
            let x = image[(i % 3) * plane + i / 3];
            assert_eq!(byte, (x * 255.0).round() as u8, "image {b}, byte {i}");
        }
    }
    let (w, h, grid) = read_png(&out.join("grid.png"));
    assert_eq!(
        (w, h),
        (64, 32 + caption_height(3) as u32),
        "two images and a 3-line caption"
    );
    let (_, _, first) = read_png(&out.join("image-0.png"));
    assert_eq!(
        &grid[..32 * 3],
        &first[..32 * 3],
        "the grid starts with image 0"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn seeded_run_writes_images() {
    let out = temp_dir("seeded");
    let output = run(&pipeline_b(), &out, &["--seed", "5"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(read_png(&out.join("image-1.png")).0, 32);
    assert!(out.join("grid.png").is_file());
    std::fs::remove_dir_all(&out).ok();
}

fn assert_usage_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_input_exits_with_code_2() {
    let out = temp_dir("bad");
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no/such/pipeline");
    assert_usage_error(&run(&missing, &out, &[]), "no such directory");

    let no_file = out.join("missing.safetensors");
    let output = run(&pipeline_b(), &out, &["--noise", no_file.to_str().unwrap()]);
    assert_usage_error(&output, "cannot read");

    // The fixture's noise is for K = 4; asking for 3 steps is a shape error, not a panic.
    let noise = pipeline_b().join("expected.safetensors");
    let output = Command::new(common::example_binary("sample"))
        .arg("--model")
        .arg(pipeline_b())
        .args(["--prompt", "a", "--prompt", "b", "--steps", "3", "--out"])
        .arg(&out)
        .arg("--noise")
        .arg(&noise)
        .output()
        .unwrap();
    assert_usage_error(&output, "do not fit");
    assert_usage_error(&run(&pipeline_b(), &out, &["--steps", "x"]), "--steps");
    std::fs::remove_dir_all(&out).ok();
}
