//! Hugging Face hub repositories resolved to local folders through the hub cache layout
//! (`<cache>/models--Org--Name/{refs/<revision>, snapshots/<commit>/<files>}`), without network.
//!
//! The cache root is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, as in
//! `huggingface_hub`. When files are missing, the error says which ones and gives the
//! `huggingface-cli download` command that puts them there. With the `download` Cargo feature and
//! `HF_HUB_OFFLINE` unset, [`resolve`] downloads them instead (hf-hub's sync API).
//!
//! A "name or path" (every `from_pretrained` of the workspace) means what it means in diffusers:
//! an existing folder is loaded as is, else an `org/name` string ([`is_repo_id`]) is looked up in
//! the cache, else it is an error naming the string ([`model_dir`]).
//!
//! ```no_run
//! # fn main() -> Result<(), rocm_models::Error> {
//! let files = ["text_encoder/config.json", "text_encoder/model.safetensors"];
//! let snapshot = rocm_models::hub::resolve("SimianLuo/LCM_Dreamshaper_v7", &files)?;
//! let text_encoder_dir = snapshot.join("text_encoder");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::Error;

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A hub cache root (the folder that holds `models--Org--Name/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// A cache at an explicit root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache root from the environment: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$HOME/.cache/huggingface/hub` (`%USERPROFILE%` on Windows); `None` when none is set.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// [`HubCache::from_env`] with the variable lookup passed in (testable without touching the
    /// process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<PathBuf>) -> Option<Self> {
        if let Some(cache) = var("HF_HUB_CACHE") {
            return Some(Self::new(cache));
        }
        if let Some(home) = var("HF_HOME") {
            return Some(Self::new(home.join("hub")));
        }
        let home = var("HOME").or_else(|| var("USERPROFILE"))?;
        Some(Self::new(
            home.join(".cache").join("huggingface").join("hub"),
        ))
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/models--Org--Name`.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// The snapshot folder of `revision` (a branch or tag through `refs/<revision>`, or a commit hash
    /// with a `snapshots/<hash>` folder), if the cache has one.
    pub fn snapshot_dir(&self, repo_id: &str, revision: &str) -> Option<PathBuf> {
        let repo = self.repo_dir(repo_id);
        let direct = repo.join("snapshots").join(revision);
        if is_commit_hash(revision) && direct.is_dir() {
            return Some(direct);
        }
        let commit = std::fs::read_to_string(repo.join("refs").join(revision)).ok()?;
        let snapshot = repo.join("snapshots").join(commit.trim());
        snapshot.is_dir().then_some(snapshot)
    }

    /// The snapshot folder of `repo_id` at `revision` holding every one of `files` (repository-relative
    /// paths such as `unet/config.json`); otherwise [`Error::HubFilesMissing`] listing the missing files
    /// with the command that downloads them into this cache.
    pub fn resolve(&self, repo_id: &str, revision: &str, files: &[&str]) -> Result<PathBuf, Error> {
        let snapshot = self.snapshot_dir(repo_id, revision);
        let missing: Vec<String> = match &snapshot {
            Some(dir) => files
                .iter()
                .filter(|f| !dir.join(f).is_file())
                .map(|f| f.to_string())
                .collect(),
            None => files.iter().map(|f| f.to_string()).collect(),
        };
        match snapshot {
            Some(dir) if missing.is_empty() => Ok(dir),
            _ => Err(Error::HubFilesMissing {
                repo_id: repo_id.into(),
                revision: revision.into(),
                cache: self.root.clone(),
                command: download_command(repo_id, revision, &missing, &self.root),
                files: missing,
            }),
        }
    }
}

/// A 40-hex-digit git commit id.
fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `huggingface-cli download` command that fetches `files` of `repo_id` into the hub cache `cache`.
pub fn download_command(repo_id: &str, revision: &str, files: &[String], cache: &Path) -> String {
    let mut command = format!("huggingface-cli download {repo_id}");
    for file in files {
        command.push_str(&format!(" \"{file}\""));
    }
    if revision != DEFAULT_REVISION {
        command.push_str(&format!(" --revision {revision}"));
    }
    command.push_str(&format!(" --cache-dir \"{}\"", cache.display()));
    command
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it: `1`, `ON`, `YES` or `TRUE` (any case).
pub fn offline_from(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// Whether `HF_HUB_OFFLINE` asks for no network.
pub fn is_offline() -> bool {
    offline_from(std::env::var("HF_HUB_OFFLINE").ok().as_deref())
}

/// Whether `name` reads as a Hugging Face hub repository id, `org/name`: exactly one `/` with text
/// on both sides, not starting with `.`, `/` or `~`, and no `\`. Paths such as `./model`,
/// `/data/model`, `~/model`, `C:\model` or `runs/a/b` are not ids.
///
/// This is the one rule of the workspace for a "name or path" ([`model_dir`]), as in diffusers'
/// `from_pretrained`: an existing folder wins over this test.
///
/// ```
/// use rocm_models::hub::is_repo_id;
///
/// assert!(is_repo_id("SimianLuo/LCM_Dreamshaper_v7"));
/// assert!(!is_repo_id("./LCM_Dreamshaper_v7") && !is_repo_id("runs/a/b") && !is_repo_id("model"));
/// ```
pub fn is_repo_id(name: &str) -> bool {
    match name.split_once('/') {
        Some((org, repo)) => {
            !org.is_empty()
                && !repo.is_empty()
                && !repo.contains('/')
                && !name.starts_with(['.', '/', '~'])
                && !name.contains('\\')
        }
        None => false,
    }
}

/// A local model folder for `name_or_path`, with diffusers' `from_pretrained` rule: an existing
/// directory is used as is (no check of its files); otherwise a hub repository id
/// ([`is_repo_id`]) is resolved at [`DEFAULT_REVISION`] with [`resolve`], which checks that
/// `files` are there; anything else is an [`Error::NotFolderOrRepoId`] naming the string.
pub fn model_dir(name_or_path: &str, files: &[&str]) -> Result<PathBuf, Error> {
    let path = Path::new(name_or_path);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_repo_id(name_or_path) {
        return Err(Error::NotFolderOrRepoId {
            name: name_or_path.into(),
        });
    }
    resolve(name_or_path, files)
}

/// Resolves `files` of `repo_id` (revision `main`) in the cache named by the environment. Without the
/// `download` feature, or with `HF_HUB_OFFLINE=1`, missing files are an [`Error::HubFilesMissing`];
/// with it they are downloaded into that cache first. A `repo_id` that is not `org/name`
/// ([`is_repo_id`]) is an [`Error::InvalidRepoId`].
pub fn resolve(repo_id: &str, files: &[&str]) -> Result<PathBuf, Error> {
    if !is_repo_id(repo_id) {
        return Err(Error::InvalidRepoId {
            repo_id: repo_id.into(),
        });
    }
    let cache = HubCache::from_env().ok_or_else(|| Error::HubFilesMissing {
        repo_id: repo_id.into(),
        revision: DEFAULT_REVISION.into(),
        cache: PathBuf::from("$HF_HUB_CACHE"),
        files: files.iter().map(|f| f.to_string()).collect(),
        command: "set HF_HUB_CACHE or HF_HOME (no home directory found)".into(),
    })?;
    let result = cache.resolve(repo_id, DEFAULT_REVISION, files);
    #[cfg(feature = "download")]
    if let Err(Error::HubFilesMissing { files: missing, .. }) = &result
        && !is_offline()
    {
        download(&cache, repo_id, missing)?;
        return cache.resolve(repo_id, DEFAULT_REVISION, files);
    }
    result
}

/// Downloads `files` of `repo_id` at `main` into `cache` with hf-hub's sync API.
#[cfg(feature = "download")]
pub fn download(cache: &HubCache, repo_id: &str, files: &[String]) -> Result<(), Error> {
    let failed = |file: &str, e: &dyn std::fmt::Display| Error::HubDownload {
        repo_id: repo_id.into(),
        file: file.into(),
        message: e.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache.root().to_path_buf())
        .build()
        .map_err(|e| failed("", &e))?;
    let repo = api.model(repo_id.to_string());
    for file in files {
        log::info!(
            "downloading {repo_id}: {file} into {}",
            cache.root().display()
        );
        repo.get(file).map_err(|e| failed(file, &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_precedence() {
        let vars = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        const ALL: [(&str, &str); 3] = [("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")];
        let all: &'static [(&str, &str)] = &ALL;
        assert_eq!(HubCache::from_vars(vars(all)), Some(HubCache::new("/c")));
        assert_eq!(
            HubCache::from_vars(vars(&all[1..])),
            Some(HubCache::new("/h/hub"))
        );
        assert_eq!(
            HubCache::from_vars(vars(&all[2..])),
            Some(HubCache::new("/u/.cache/huggingface/hub"))
        );
        assert_eq!(HubCache::from_vars(vars(&[])), None);
    }

    #[test]
    fn repo_ids_and_paths() {
        for id in [
            "SimianLuo/LCM_Dreamshaper_v7",
            "openai/clip-vit-large-patch14",
            "a/b",
        ] {
            assert!(is_repo_id(id), "{id}");
        }
        for path in [
            "",
            "model",
            "./model",
            "../org/name",
            ".org/name",
            "/org/name",
            "/model",
            "~/model",
            "~org/name",
            "org\\name",
            "org/name\\x",
            "C:\\models\\lcm",
            "runs/a/b",
            "org/",
            "/name",
            "org//name",
        ] {
            assert!(!is_repo_id(path), "{path:?}");
        }
    }

    #[test]
    fn a_folder_wins_over_a_repo_id_and_other_strings_are_errors() {
        // Tests run in the package root, where `tests/fixtures` is a folder that reads as `org/name`.
        assert!(is_repo_id("tests/fixtures"));
        let dir = model_dir("tests/fixtures", &["not/checked.json"]).expect("a folder");
        assert_eq!(dir, Path::new("tests/fixtures"));
        for bad in [
            "./no/such/folder",
            "no-such-folder",
            "/no/such/folder",
            "runs/a/b",
        ] {
            let err = model_dir(bad, &["config.json"]).expect_err(bad);
            assert!(
                matches!(&err, Error::NotFolderOrRepoId { name } if name == bad),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(bad) && message.contains("org/name"),
                "{message}"
            );
        }
        let err = resolve("./no/such/folder", &["config.json"]).expect_err("not an id");
        assert!(
            matches!(&err, Error::InvalidRepoId { repo_id } if repo_id == "./no/such/folder"),
            "{err}"
        );
    }

    #[test]
    fn offline_values() {
        assert!(offline_from(Some("1")) && offline_from(Some("true")) && offline_from(Some("ON")));
        assert!(!offline_from(None) && !offline_from(Some("0")) && !offline_from(Some("")));
    }

    #[test]
    fn command_lists_files_revision_and_cache() {
        let files = ["unet/config.json".to_string()];
        let command = download_command("Org/Name", "v2", &files, Path::new("/cache"));
        assert_eq!(
            command,
            r#"huggingface-cli download Org/Name "unet/config.json" --revision v2 --cache-dir "/cache""#
        );
        assert!(is_commit_hash(&"a".repeat(40)) && !is_commit_hash("main"));
    }
}
