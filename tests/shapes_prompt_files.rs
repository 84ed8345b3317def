//! The shapes world's prompt files under `data/prompts/` (`shapes_train.txt`, `shapes_eval.txt`)
//! are the world's own captions: the first 512 scenes of the train split and the first 24 of the
//! test split (`rocm_shapes::world::Split`). Run with `ROCM_WRITE_PROMPTS=1` to write them again
//! after a change to the world's caption grammar.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;

use rocm_shapes::world::Split;

/// (file, split, how many captions)
const FILES: [(&str, Split, usize); 2] = [
    ("shapes_train.txt", Split::Train, 512),
    ("shapes_eval.txt", Split::Test, 24),
];

#[test]
fn shapes_prompt_files_are_the_worlds_captions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/prompts");
    for (name, split, n) in FILES {
        let mut text: String = split
            .scenes(0, n)
            .into_iter()
            .map(|s| s.caption + "\n")
            .collect();
        if text.is_empty() {
            text.push('\n');
        }
        let path = dir.join(name);
        if std::env::var_os("ROCM_WRITE_PROMPTS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).expect("the shipped prompt file");
        assert_eq!(
            shipped,
            text,
            "{}: not the world's captions (ROCM_WRITE_PROMPTS=1 writes them)",
            path.display()
        );
        // Train captions never name a held-out combination; the eval ones are another split.
        let lines: Vec<&str> = shipped.lines().collect();
        assert_eq!(lines.len(), n, "{name}");
    }
    let train = std::fs::read_to_string(dir.join("shapes_train.txt")).unwrap();
    let eval = std::fs::read_to_string(dir.join("shapes_eval.txt")).unwrap();
    let train: std::collections::HashSet<&str> = train.lines().collect();
    let overlap = eval.lines().filter(|l| train.contains(l)).count();
    assert!(
        overlap < 24,
        "every evaluation prompt is also a training prompt"
    );
}
