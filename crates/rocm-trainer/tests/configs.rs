//! Every shipped configuration under `configs/` parses, and the paper's runs use its settings.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use rocm_trainer::TrainConfig;

#[test]
fn shipped_configs_parse_with_the_papers_settings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut paper = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let c = TrainConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        if c.pretrained_model == "SimianLuo/LCM_Dreamshaper_v7" {
            paper += 1;
            assert_eq!(
                (c.num_steps, c.guidance_scale, c.learning_rate),
                (8, 7.5, 6e-5)
            );
            assert_eq!((c.lora.r, c.lora.alpha), (16, 32.0), "{}", path.display());
        }
    }
    assert_eq!(paper, 4, "the paper's four runs");
}
