//! Helpers shared by the integration tests that run the examples.

use std::path::{Path, PathBuf};

/// The example binary `name`: `cargo test` builds the examples next to the test binaries, in
/// `target/<profile>/examples/`.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test`",
        bin.display()
    );
    bin
}
