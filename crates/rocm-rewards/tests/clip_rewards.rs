//! The CLIP vision tower (`rocm_models::clip::CLIPModel`) and the CLIP rewards against transformers on
//! a tiny seeded `CLIPModel` (fixture written by `tests/fixtures/scripts/rewards_clip.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use rocm_models::clip::CLIPModel;
use rocm_rewards::{
    Aesthetic, ClipBackbone, ClipScore, ClipScoreMode, HpsV2, PickScore, RewardModel,
};
use rocm_testing::{max_abs_diff, read_safetensors, read_safetensors_f32};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip")
}

fn expected() -> HashMap<String, TensorData> {
    read_safetensors(&dir().join("expected.safetensors"))
}

fn prompts() -> Vec<String> {
    vec!["a photo of a cat".into(), "a dog sitting on a mat".into()]
}

fn path_str() -> String {
    dir().to_str().expect("utf-8").to_string()
}

#[test]
fn vision_and_text_towers_match_transformers() {
    let device = Device::flex();
    let e = expected();
    let model = CLIPModel::from_pretrained(dir(), &device).expect("load CLIPModel");
    assert!((model.logit_scale - 2.3).abs() < 1e-6);
    let pixels = Tensor::<4>::from_data(e["pixel_values"].clone().convert::<f32>(), &device);
    let out = model.vision_model.forward(pixels.clone());
    let hidden = max_abs_diff(out.last_hidden_state, &e["vision_last_hidden_state"]);
    let pooled = max_abs_diff(out.pooler_output, &e["vision_pooler_output"]);
    let image = max_abs_diff(model.get_image_features(pixels), &e["image_embeds"]);
    let ids = Tensor::<2, Int>::from_data(e["input_ids"].clone().convert::<i64>(), &device);
    let text = max_abs_diff(model.get_text_features(ids), &e["text_embeds"]);
    assert!(
        hidden < 1e-4 && pooled < 1e-4 && image < 1e-4 && text < 1e-4,
        "{hidden} {pooled} {image} {text}"
    );
}

#[test]
fn rewards_match_transformers() {
    let device = Device::flex();
    let e = expected();
    let images = || Tensor::<4>::from_data(e["images"].clone().convert::<f32>(), &device);
    let pixels = rocm_rewards::preprocess::ClipPreprocess::new(32).forward(images());
    let dpix = max_abs_diff(pixels, &e["pixel_values"]);
    // Normalised units (÷ std ≈ 0.27): measured 1.1e-5, i.e. 3e-6 in [0, 1] pixel units.
    assert!(dpix < 2e-5, "pixel_values {dpix}");
    let mut clip = ClipScore::from_pretrained(&path_str(), &device).expect("clipscore");
    let d100 = max_abs_diff(clip.reward(images(), &prompts()), &e["clip_score"]);
    clip.mode = ClipScoreMode::Paper { w: 2.5 };
    let paper = max_abs_diff(clip.reward(images(), &prompts()), &e["clip_score_paper"]);
    let pick = PickScore::from_pretrained(&path_str(), &device).expect("pickscore");
    let dpick = max_abs_diff(pick.reward(images(), &prompts()), &e["pick_score"]);
    let aesthetic = Aesthetic::from_pretrained(
        &path_str(),
        dir().join("aesthetic_head.safetensors"),
        &device,
    )
    .expect("aesthetic");
    let daes = max_abs_diff(aesthetic.reward(images(), &prompts()), &e["aesthetic"]);
    assert!(
        d100 < 1e-4 && paper < 1e-4 && dpick < 1e-4 && daes < 1e-4,
        "{d100} {paper} {dpick} {daes}"
    );
}

#[test]
fn text_embeddings_are_computed_once_per_prompt() {
    let device = Device::flex();
    let e = expected();
    let images = || Tensor::<4>::from_data(e["images"].clone().convert::<f32>(), &device);
    let rows = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let [_, d] = t.dims();
        let v = t.into_data().try_into_vec::<f32>().expect("f32");
        v.chunks(d).map(<[f32]>::to_vec).collect()
    };
    let clip = ClipScore::from_pretrained(&path_str(), &device).expect("clipscore");
    let text = &clip.backbone;
    assert_eq!(text.cached_prompts(), 0);
    let first = clip.reward(images(), &prompts());
    assert_eq!(text.cached_prompts(), 2);
    // The swapped order comes from the cache; its rows are the fresh rows, swapped.
    let swapped: Vec<String> = prompts().into_iter().rev().collect();
    let cached = rows(text.text_embeds(&swapped, &device));
    assert_eq!(text.cached_prompts(), 2);
    text.clear_text_cache();
    let mut fresh = rows(text.text_embeds(&prompts(), &device));
    fresh.reverse();
    assert_eq!(cached, fresh);
    assert_ne!(cached[0], cached[1], "two prompts, one embedding");
    // A repeated prompt and a new one: one more entry, and the repeat scores as before.
    let mixed = vec![prompts()[0].clone(), "a red bicycle".to_string()];
    let again = clip
        .reward(images(), &mixed)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    assert_eq!(text.cached_prompts(), 3);
    let first = first.into_data().try_to_vec::<f32>().expect("f32");
    assert!((again[0] - first[0]).abs() < 1e-5, "{again:?} vs {first:?}");
    assert!(
        (again[1] - first[1]).abs() > 1e-4,
        "another prompt scores the same"
    );
    // Cached rows serve an autodiff device too, and the scores still match transformers.
    assert!(max_abs_diff(clip.reward(images(), &prompts()), &e["clip_score"]) < 1e-4);
    let ad = device.clone().autodiff();
    let pixels = Tensor::<4>::from_data(e["images"].clone().convert::<f32>(), &ad).require_grad();
    let score = clip.reward(pixels.clone(), &prompts());
    assert!(max_abs_diff(score.clone(), &e["clip_score"]) < 1e-4);
    let grads = score.sum().backward();
    assert!(
        pixels.grad(&grads).is_some(),
        "no gradient through cached text rows"
    );
}

#[test]
fn pickscore_gradient_reaches_pixels_and_matches_finite_differences() {
    let device = Device::flex().autodiff();
    let e = expected();
    let data = e["images"].clone().convert::<f32>();
    let shape = [2, 3, 40, 36];
    let values = data.try_into_vec::<f32>().expect("f32");
    let pick = PickScore::from_pretrained(&path_str(), &device).expect("pickscore");
    let score = |v: Vec<f32>| {
        pick.reward(
            Tensor::from_data(TensorData::new(v, shape), &device),
            &prompts(),
        )
        .sum()
    };
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), shape), &device).require_grad();
    let grads = pick.reward(x.clone(), &prompts()).sum().backward();
    let g = x
        .grad(&grads)
        .expect("pixel grad")
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32");
    assert!(g.iter().all(|v| v.is_finite()));
    let eps = 1e-2;
    for k in [5, 700, 1500, 4000, 8000] {
        let (mut plus, mut minus) = (values.clone(), values.clone());
        plus[k] += eps;
        minus[k] -= eps;
        let fd =
            (score(plus).into_scalar::<f32>() - score(minus).into_scalar::<f32>()) / (2.0 * eps);
        assert!(
            (fd - g[k]).abs() < 2e-3 + 2e-2 * fd.abs(),
            "pixel {k}: fd {fd} vs autodiff {}",
            g[k]
        );
    }
}

#[test]
fn hpsv2_matches_open_clip_from_safetensors_and_pt() {
    let device = Device::flex();
    let hps_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-open-clip");
    let all = read_safetensors_f32(&hps_dir.join("expected.safetensors"));
    let images = Tensor::<4>::from_data(all["images"].clone(), &device);
    let want = all["hps"].clone();
    let hps = HpsV2::from_dir(&hps_dir, &device).expect("load HPS (safetensors)");
    let d = max_abs_diff(hps.reward(images.clone(), &prompts()), &want);
    assert!(d < 1e-4, "safetensors: {d}");
    let config =
        rocm_models::clip::CLIPConfig::from_file(hps_dir.join("config.json")).expect("config");
    let tokenizer = rocm_models::tokenizer::CLIPTokenizer::from_dir(&hps_dir).expect("tokenizer");
    let pt = HpsV2::from_file(
        &hps_dir.join("open_clip_model.pt"),
        &config,
        tokenizer,
        &device,
    )
    .expect("load HPS (.pt)");
    let d = max_abs_diff(pt.reward(images, &prompts()), &want);
    assert!(d < 1e-4, ".pt: {d}");
}

#[test]
fn hpsv2_folder_without_tokenizer_uses_the_embedded_openai_vocabulary() {
    let device = Device::flex();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-open-clip");
    let dir = std::env::temp_dir().join(format!("rocm-hps-no-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in ["config.json", "open_clip_model.safetensors"] {
        std::fs::copy(src.join(file), dir.join(file)).expect("copy");
    }
    let loaded = HpsV2::from_dir(&dir, &device);
    let with_own = HpsV2::from_dir(&src, &device).expect("load");
    std::fs::remove_dir_all(&dir).expect("clean up");
    let hps = loaded.expect("load without tokenizer files");
    assert_eq!(hps.backbone.tokenizer.vocab_size(), 49408);
    assert_eq!(with_own.backbone.tokenizer.vocab_size(), 914);
}

#[test]
fn name_or_path_is_a_folder_else_a_repo_id_else_an_error_naming_it() {
    let device = Device::flex();
    let bad = "./no/such/clip-folder";
    let messages = [
        ClipBackbone::from_pretrained(bad, &device).map(|_| ()),
        ClipScore::from_pretrained(bad, &device).map(|_| ()),
        PickScore::from_pretrained(bad, &device).map(|_| ()),
        Aesthetic::laion(bad, &device).map(|_| ()),
        Aesthetic::from_pretrained(bad, dir().join("no-head.pth"), &device).map(|_| ()),
        HpsV2::from_pretrained(bad, &device).map(|_| ()),
    ]
    .map(|result| result.expect_err("not a folder, not an id").to_string());
    for message in messages {
        assert!(
            message.contains(bad) && message.contains("neither an existing folder"),
            "{message}"
        );
    }
    // Tests run in the package root, where `tests/fixtures` is a folder that also reads as an
    // `org/name` id: the folder wins (it holds no CLIP model, so the error is about its files).
    let err = PickScore::from_pretrained("tests/fixtures", &device).expect_err("not a CLIP folder");
    let message = err.to_string();
    assert!(
        message.contains("tests/fixtures") && !message.contains("Hugging Face cache"),
        "{message}"
    );
}

#[test]
#[ignore = "needs openai/clip-vit-large-patch14 in the Hugging Face cache"]
fn real_aesthetic_scores_a_grey_image_in_range() {
    let device = Device::flex();
    let aesthetic = Aesthetic::laion(Aesthetic::CLIP_REPO, &device).expect("load");
    let score = aesthetic
        .reward(Tensor::full([1, 3, 256, 256], 0.5, &device), &["".into()])
        .into_scalar::<f32>();
    assert!((0.0..10.0).contains(&score), "{score}");
}

#[test]
#[ignore = "needs yuvalkirstain/PickScore_v1 in the Hugging Face cache"]
fn real_pickscore_is_in_its_usual_range() {
    let device = Device::flex();
    let pick = PickScore::from_pretrained(PickScore::REPO, &device).expect("load");
    let score = pick
        .reward(
            Tensor::full([1, 3, 224, 224], 0.5, &device),
            &["a grey square".into()],
        )
        .into_scalar::<f32>();
    assert!((5.0..30.0).contains(&score), "{score}");
}
