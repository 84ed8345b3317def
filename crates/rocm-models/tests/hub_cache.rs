//! Hub-cache resolution on a fake cache in a temporary folder (no network, no environment changes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rocm_models::Error;
use rocm_models::hub::{HubCache, model_dir};

const REPO: &str = "SimianLuo/LCM_Dreamshaper_v7";
const COMMIT: &str = "4721097975058205c4edcdece2cc574b7dd7bc04";

/// A fresh cache root holding `models--SimianLuo--LCM_Dreamshaper_v7` at `COMMIT`, `refs/main`
/// pointing to it, and `files` in the snapshot. Removed on drop.
struct FakeCache(PathBuf);

impl FakeCache {
    fn new(files: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("rocm-models-hub-{}-{n}", std::process::id()));
        let repo = root.join("models--SimianLuo--LCM_Dreamshaper_v7");
        let snapshot = repo.join("snapshots").join(COMMIT);
        for file in files {
            let path = snapshot.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, b"{}").expect("write");
        }
        std::fs::create_dir_all(&snapshot).expect("snapshot");
        std::fs::create_dir_all(repo.join("refs")).expect("refs");
        std::fs::write(repo.join("refs").join("main"), format!("{COMMIT}\n")).expect("ref");
        Self(root)
    }
}

impl Drop for FakeCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn resolves_main_to_the_snapshot_folder() {
    let fake = FakeCache::new(&["unet/config.json", "tokenizer/vocab.json"]);
    let cache = HubCache::new(&fake.0);
    let dir = cache
        .resolve(REPO, "main", &["unet/config.json", "tokenizer/vocab.json"])
        .expect("resolved");
    assert_eq!(
        dir,
        fake.0
            .join("models--SimianLuo--LCM_Dreamshaper_v7/snapshots")
            .join(COMMIT)
    );
    assert_eq!(
        cache.snapshot_dir(REPO, COMMIT),
        Some(dir.clone()),
        "a commit hash resolves directly"
    );
    assert_eq!(
        model_dir(dir.to_str().expect("utf-8"), &["anything"]).expect("local dir"),
        dir
    );
}

#[test]
fn missing_files_error_names_them_and_the_download_command() {
    let fake = FakeCache::new(&["unet/config.json"]);
    let cache = HubCache::new(&fake.0);
    let files = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ];
    let err = cache
        .resolve(REPO, "main", &files)
        .expect_err("two files are missing");
    let Error::HubFilesMissing {
        files: missing,
        cache: root,
        command,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        missing,
        &[
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors"
        ]
    );
    assert_eq!(root, &fake.0);
    let expected = format!(
        "huggingface-cli download {REPO} \"unet/diffusion_pytorch_model.safetensors\" \"text_encoder/model.safetensors\" --cache-dir \"{}\"",
        fake.0.display()
    );
    assert_eq!(command, &expected);
    assert!(err.to_string().contains(&expected), "{err}");
}

#[test]
fn unknown_repository_or_revision_lists_every_file() {
    let fake = FakeCache::new(&["unet/config.json"]);
    let cache = HubCache::new(&fake.0);
    let err = cache
        .resolve("Org/Absent", "main", &["a.json"])
        .expect_err("no such repo");
    assert!(
        matches!(&err, Error::HubFilesMissing { files, .. } if files == &["a.json"]),
        "{err}"
    );
    let err = cache
        .resolve(REPO, "v1.0", &["unet/config.json"])
        .expect_err("no refs/v1.0");
    assert!(err.to_string().contains("--revision v1.0"), "{err}");
}
