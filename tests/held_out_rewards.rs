//! `[[held_out]]` rewards and `eval_at_start` on the shipped shapes world: every evaluation of a
//! `rocm train` run scores its images with each held-out reward too (`held_out` in
//! `eval.jsonl`), step 0 included, without changing training; the hidden preference `shapes-h`
//! is one of them and is refused as a training reward; bad entries are refused naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;

use rocm::reward::RewardKind;
use rocm::run::{Adapters, Run, RunConfig};

const WORLD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/rocm-shapes/assets/world"
);

fn config(out: &std::path::Path, held_out: &str) -> String {
    format!(
        "model = \"{WORLD}/shapes-lcm\"\n\
         [reward]\nkind = \"pickscore\"\nmodel = \"{WORLD}/pref\"\n\
         [prompts]\nlist = [\"a red circle\", \"a large blue square\"]\n\
         {held_out}\n\
         [train]\nnum_steps = 2\nguidance_scale = 5.0\nbatch_size = 2\nlearning_rate = 1e-3\n\
         iterations = 2\ncheckpoint_every = 0\neval_every = 2\neval_at_start = true\n\
         eval_prompts = [\"a red circle\", \"a small green triangle on a white background\"]\n\
         eval_seeds = [7]\noutput_dir = \"{}\"\n\
         [train.lora]\nr = 2\nalpha = 4.0\ninit = \"gaussian\"\n",
        out.display()
    )
}

const HELD_OUT: &str = "[[held_out]]\nkind = \"pickscore\"\nname = \"pref\"\n\
                        model = \"WORLD/pref\"\n\
                        [[held_out]]\nkind = \"clipscore\"\nmodel = \"WORLD/clip\"\n\
                        [[held_out]]\nkind = \"shapes-h\"\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-held-out-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn train(text: &str) -> Vec<serde_json::Value> {
    let c = RunConfig::from_toml_str(text, "run.toml").unwrap();
    let out = c.train.output_dir.clone();
    let Run::Pipeline(mut trainer) = c.build("flex", Adapters::New).unwrap().run else {
        panic!("not a pipeline")
    };
    trainer.run(|_| {}).unwrap();
    let lines = std::fs::read_to_string(out.join("eval.jsonl")).unwrap();
    lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_evaluation_scores_the_held_out_rewards_on_the_same_images_from_step_0() {
    let with = scratch("with");
    let evals = train(&config(&with, &HELD_OUT.replace("WORLD", WORLD)));
    let steps: Vec<u64> = evals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        [0, 2],
        "eval_at_start adds the base model's evaluation"
    );
    for e in &evals {
        let held = e["held_out"].as_object().unwrap();
        let names: Vec<&str> = held.keys().map(String::as_str).collect();
        assert_eq!(names, ["clipscore", "h", "pref"]);
        // The trained reward scored again as a held-out one: the same images, the same values.
        assert_eq!(held["pref"]["values"], e["rewards"]);
        for v in held["h"]["values"].as_array().unwrap() {
            let h = v.as_f64().unwrap();
            assert!((0.0..=2.0).contains(&h), "h = {h}");
        }
        assert_eq!(held["clipscore"]["values"].as_array().unwrap().len(), 2);
        for kind in [
            RewardKind::PickScore,
            RewardKind::ClipScore,
            RewardKind::ShapesH,
        ] {
            assert!(kind == RewardKind::PickScore || held.contains_key(kind.reward_name()));
        }
    }
    // Held-out rewards do not change training: the same run without them trains the same
    // adapters (its losses and batch rewards) and evaluates the same trained reward (to the
    // last bits of parallel sums).
    let without = scratch("without");
    let plain = train(&config(&without, ""));
    let close = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
        let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
            "{what}: {x} vs {y}"
        );
    };
    assert_eq!(evals.len(), plain.len());
    for (a, b) in evals.iter().zip(&plain) {
        for (x, y) in a["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["rewards"].as_array().unwrap())
        {
            close(x, y, "evaluation reward");
        }
        assert!(b["held_out"].as_object().unwrap().is_empty());
    }
    let metrics = |dir: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (m_with, m_without) = (metrics(&with), metrics(&without));
    assert_eq!(m_with.len(), 2);
    for (a, b) in m_with.iter().zip(&m_without) {
        close(&a["loss"], &b["loss"], "loss");
        close(&a["reward_mean"], &b["reward_mean"], "batch reward");
    }
    std::fs::remove_dir_all(&with).ok();
    std::fs::remove_dir_all(&without).ok();
}

#[test]
fn bad_held_out_entries_and_training_on_h_are_refused() {
    let out = scratch("bad");
    let cases = [
        (
            config(&out, "").replace("kind = \"pickscore\"", "kind = \"shapes-h\""),
            "`reward.kind`: `shapes-h` is for evaluation only",
        ),
        (
            config(
                &out,
                "[[held_out]]\nkind = \"shapes-h\"\n[[held_out]]\nkind = \"shapes-h\"\n",
            ),
            "`held_out`: two entries are named `h`",
        ),
        (
            config(&out, "[[held_out]]\nkind = \"x\"\n"),
            "`held_out`: `x` is not an image reward",
        ),
        (
            config(&out, "[[held_out]]\nkind = \"shapes-h\"\nmodle = \"m\"\n"),
            "unknown field `modle`",
        ),
        (
            "model = \"toy\"\n[[held_out]]\nkind = \"shapes-h\"\n".to_string(),
            "held-out rewards score images: the toy has none",
        ),
    ];
    for (text, needle) in cases {
        let e = RunConfig::from_toml_str(&text, "run.toml")
            .expect_err("refused")
            .to_string();
        assert!(e.contains(needle), "{e}");
        assert!(e.contains("run.toml"), "{e}");
    }
}
