//! Every shipped run configuration under `configs/`: it parses into its typed parts, keeps the
//! paper's settings, names a reward that fits its model, and its prompts resolve on a fresh
//! clone or fail with the documented export command. Bad files are refused naming the key and
//! the valid values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;

use rocm::divergence::DivergenceConfig;
use rocm::reward::RewardKind;
use rocm::run::{Adapters, ModelSource, PromptSource, Run, RunConfig};
use rocm::trainer::{SamplerKind, TrainConfig};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn shipped_configs_parse_with_the_papers_settings_and_round_trip() {
    let mut paper = 0;
    let mut toy_algorithms = Vec::new();
    for path in shipped() {
        let c = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = path.display();
        // Written back and read again, nothing changes (every key is typed and kept).
        let again = RunConfig::from_toml_str(&c.to_toml(), &path).unwrap();
        assert_eq!(
            RunConfig {
                base_dir: c.base_dir.clone(),
                ..again
            },
            c,
            "{name}"
        );
        let t = &c.train;
        match &c.model {
            ModelSource::Pretrained(id) => {
                // The paper: the consistency-model methods on LCM Dreamshaper v7, the diffusion
                // baselines on dreamshaper-7, every shared setting as `TrainConfig::paper`.
                let sampler = match id.as_str() {
                    "SimianLuo/LCM_Dreamshaper_v7" => SamplerKind::Lcm,
                    "Lykon/dreamshaper-7" => SamplerKind::Ddim,
                    other => panic!("{name}: unexpected model {other}"),
                };
                paper += 1;
                let p = TrainConfig::paper(t.algorithm);
                assert_eq!(t.sampler_kind(), sampler, "{name}");
                let shared = |c: &TrainConfig| {
                    (
                        c.sampler_kind(),
                        c.num_steps,
                        c.guidance,
                        c.guidance_scale,
                        c.learning_rate,
                        c.batch_size,
                        c.gradient_accumulation_steps,
                        c.ddim.eta,
                    )
                };
                assert_eq!(shared(t), shared(&p), "{name}");
                assert_eq!((t.lora.r, t.lora.alpha), (16, 32.0), "{name}");
                assert_eq!(
                    (t.divergence, t.beta),
                    (DivergenceConfig::Kl, 0.1),
                    "{name}"
                );
                let kind = c.reward.as_ref().expect("a pipeline names its reward").kind;
                assert!(kind.is_image_reward(), "{name}");
                assert!(matches!(c.prompts, Some(PromptSource::File(_))), "{name}");
            }
            ModelSource::Toy => {
                assert_eq!(c.reward.as_ref().map(|r| r.kind), Some(RewardKind::X));
                toy_algorithms.push(c.train.algorithm);
            }
        }
    }
    toy_algorithms.sort_by_key(|a| a.name());
    let mut every = rocm::trainer::AlgorithmKind::ALL.to_vec();
    every.sort_by_key(|a| a.name());
    assert_eq!(toy_algorithms, every, "one toy config per algorithm");
    assert_eq!(
        paper, 9,
        "the paper's four runs, the Fig. 6 animals run, the RLCM baseline and the DDPO, DPOK \
         and D3PO baselines on dreamshaper-7"
    );
}

#[test]
fn shipped_prompts_resolve_or_name_the_export_command() {
    for path in shipped() {
        let c = RunConfig::load(&path).unwrap();
        match c.training_prompts() {
            Ok(prompts) => {
                if c.model != ModelSource::Toy {
                    assert!(!prompts.is_empty(), "{}", path.display());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("pickapic_v1_train_prompts.txt")
                        && msg.contains("data/prompts/README.md"),
                    "{}: {msg}",
                    path.display()
                );
                let readme =
                    std::fs::read_to_string(root().join("data/prompts/README.md")).unwrap();
                assert!(readme.contains("pickapic_v1_train_prompts.txt"), "{readme}");
            }
        }
    }
    // The animals run needs no download: 45 shipped prompts.
    let animals = RunConfig::load(root().join("configs/lcm_dreamshaper_aesthetic_animals.toml"))
        .unwrap()
        .training_prompts()
        .unwrap();
    assert_eq!(animals.len(), 45);
}

#[test]
fn the_toy_config_builds_and_trains() {
    let mut c = RunConfig::load(root().join("configs/toy.toml")).unwrap();
    c.train.iterations = 1;
    c.train.output_dir = std::env::temp_dir().join(format!("rocm-configs-{}", std::process::id()));
    let built = c.build("flex", Adapters::New).unwrap();
    let Run::Toy(mut trainer) = built.run else {
        panic!("the toy config builds the toy");
    };
    assert_eq!(trainer.divergence_name(), "kl");
    assert_eq!(trainer.reward_name(), "x");
    let m = trainer.train_iteration().unwrap();
    assert!(m.loss.is_finite());
}

fn parse_err(text: &str) -> String {
    RunConfig::from_toml_str(text, "run.toml")
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
        .to_string()
}

#[test]
fn bad_configs_are_refused_naming_the_key_and_the_valid_values() {
    let pipe = "model = \"some/model\"\n";
    for (text, needles) in [
        ("model = \"toy\"\nlerning = 1\n", &["lerning", "train"][..]),
        (
            "model = \"toy\"\n[train]\nlerning_rate = 1\n",
            &["lerning_rate", "learning_rate"],
        ),
        (
            "model = \"toy\"\n[train]\ndivergence = \"kll\"\n",
            &["kll", "reverse_kl"],
        ),
        (
            &format!("{pipe}[reward]\nkind = \"pickscor\"\n"),
            &["pickscor", "hpsv2"],
        ),
        (
            &format!("{pipe}[reward]\nkind = \"pickscore\"\nmodl = \"x\"\n"),
            &["modl"],
        ),
        (
            &format!("{pipe}[reward]\nkind = \"pickscore\"\n[prompts]\nfil = \"a\"\n"),
            &["fil", "file"],
        ),
        (pipe, &["reward", "kind"]),
        (
            &format!("{pipe}[reward]\nkind = \"x\"\n"),
            &["reward.kind", "toy"],
        ),
        (
            "model = \"toy\"\n[reward]\nkind = \"pickscore\"\n",
            &["reward.kind", "`x`"],
        ),
        (
            "model = \"toy\"\n[prompts]\nlist = [\"a\"]\n",
            &["prompts", "unconditional"],
        ),
        (
            "model = \"toy\"\n[train]\nbatch_size = 0\n",
            &["batch_size"],
        ),
    ] {
        let msg = parse_err(text);
        assert!(msg.contains("run.toml"), "{text}: {msg}");
        for needle in needles {
            assert!(msg.contains(needle), "{text}: `{needle}` not in: {msg}");
        }
    }
}

#[test]
fn a_missing_prompts_file_names_itself() {
    let dir = std::env::temp_dir().join(format!("rocm-configs-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        "model = \"org/name\"\n[reward]\nkind = \"color\"\n[prompts]\nfile = \"nope.txt\"\n",
    )
    .unwrap();
    let msg = RunConfig::load(&path)
        .unwrap()
        .training_prompts()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.txt"), "{msg}");
    // Beside the config: found.
    std::fs::write(dir.join("nope.txt"), "a cat\n\n  a dog  \n").unwrap();
    let prompts = RunConfig::load(&path).unwrap().training_prompts().unwrap();
    assert_eq!(prompts, ["a cat", "a dog"]);
    std::fs::remove_dir_all(&dir).ok();
}
