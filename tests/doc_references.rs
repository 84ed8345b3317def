//! No dangling references in the documentation: every relative markdown link of the repository's
//! documents and comments points at a file that exists, every `*.md` file a document or a comment
//! names exists in the repository, and nothing points into the folder next to the repository (the
//! repository must stand on its own).
//!
//! Scanned: every `*.md` file (README.md, docs/, the crates' notices, data/), the comments (`//`,
//! `///`, `//!`, `/* */`) of every `*.rs` file under src/, crates/, examples/, benches/ and tests/,
//! and the comments of configs/*.toml. target/ and hidden folders are skipped.
//!
//! - A link `[text](target)` (or a reference definition `[label]: target`) must resolve relative to
//!   the file that contains it (a leading `/` means the repository root). URLs (`https:`,
//!   `mailto:`, …), pure `#anchors` and, in Rust comments, intra-doc links (`crate::Item`, `Self`)
//!   are not files; a `#fragment` is ignored.
//! - A mention of a `*.md` file resolves if it exists relative to the repository root, to the
//!   citing file's folder, or to the citing file's crate root (the nearest folder with a
//!   Cargo.toml); a leading `/` means the root. Outputs the programs write are exempt: paths
//!   under target/ and the names in [`GENERATED`].
//! - A link or a mention that goes through a `shared` folder beside or above the repository is
//!   always an error, whether or not it exists on this machine.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Markdown files that programs of the repository write (named in their docs, never committed).
const GENERATED: &[&str] = &["results.md", "summary.md"];

/// The source folders whose Rust comments are scanned.
const RUST_FOLDERS: &[&str] = &["src", "crates", "examples", "benches", "tests"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Markdown,
    Rust,
    Toml,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every regular file under `dir`, skipping target/, hidden folders and symbolic links.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if file_type.is_dir() {
            if !name.starts_with('.') && name != "target" {
                walk(&entry.path(), out);
            }
        } else if file_type.is_file() {
            out.push(entry.path());
        }
    }
}

/// Which scan a file (relative to the root) gets, if any.
fn kind_of(rel: &Path) -> Option<Kind> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    match rel.extension()?.to_str()? {
        "md" => Some(Kind::Markdown),
        "rs" if RUST_FOLDERS.contains(&first) => Some(Kind::Rust),
        "toml" if rel.parent() == Some(Path::new("configs")) => Some(Kind::Toml),
        _ => None,
    }
}

/// The text to scan, as `(line, text)` pieces: every line of a markdown file, the comments of a
/// Rust or TOML file.
fn pieces(kind: Kind, src: &str) -> Vec<(usize, String)> {
    match kind {
        Kind::Markdown => src
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect(),
        Kind::Rust => rust_comments(src),
        Kind::Toml => src
            .lines()
            .enumerate()
            .filter_map(|(i, l)| toml_comment(l).map(|c| (i + 1, c.to_string())))
            .collect(),
    }
}

/// The comments of Rust source, line by line, skipping string and character literals.
fn rust_comments(src: &str) -> Vec<(usize, String)> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        match b[i] {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if b.get(i + 1) == Some(&'/') => {
                let start = i + 2;
                let mut j = start;
                while j < b.len() && b[j] != '\n' {
                    j += 1;
                }
                out.push((line, b[start..j].iter().collect()));
                i = j;
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                let (mut depth, mut j, mut text) = (1, i + 2, String::new());
                while j < b.len() && depth > 0 {
                    if b[j] == '/' && b.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == '*' && b.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        if b[j] == '\n' {
                            out.push((line, std::mem::take(&mut text)));
                            line += 1;
                        } else {
                            text.push(b[j]);
                        }
                        j += 1;
                    }
                }
                out.push((line, text));
                i = j;
            }
            '"' => i = skip_string(&b, i + 1, 0, &mut line),
            'r' if i == 0 || !ident(b[i - 1]) || b[i - 1] == 'b' => {
                let mut j = i + 1;
                while b.get(j) == Some(&'#') {
                    j += 1;
                }
                if b.get(j) == Some(&'"') {
                    i = skip_string(&b, j + 1, j - i - 1, &mut line);
                } else {
                    i += 1;
                }
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{…}') or a lifetime ('a).
                if b.get(i + 1) == Some(&'\\') {
                    let mut j = i + 3;
                    while j < b.len() && b[j] != '\'' && b[j] != '\n' {
                        j += 1;
                    }
                    i = j + 1;
                } else if b.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The index after the end of a string literal whose text starts at `j` (`hashes` for raw ones).
fn skip_string(b: &[char], mut j: usize, hashes: usize, line: &mut usize) -> usize {
    while j < b.len() {
        match b[j] {
            '\\' if hashes == 0 => {
                if b.get(j + 1) == Some(&'\n') {
                    *line += 1;
                }
                j += 2;
            }
            '"' if (1..=hashes).all(|h| b.get(j + h) == Some(&'#')) => return j + 1 + hashes,
            c => {
                if c == '\n' {
                    *line += 1;
                }
                j += 1;
            }
        }
    }
    j
}

/// The comment of one TOML line (after a `#` outside strings), if any.
fn toml_comment(line: &str) -> Option<&str> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return Some(&line[i + 1..]),
            _ => {}
        }
    }
    None
}

/// Whether a path goes through a `shared` folder beside or above the repository.
fn is_shared(path: &str) -> bool {
    path.starts_with("../shared") || path.starts_with("shared/") || path.contains("/shared/")
}

/// `path` joined to `base` with `.` and `..` removed; `None` if it climbs out of the root.
fn normalise(root: &Path, base: &Path, path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(root.join(out))
}

/// The nearest folder (relative to the root) at or above `dir` that holds a Cargo.toml.
fn crate_root(root: &Path, dir: &Path) -> PathBuf {
    let mut d = dir.to_path_buf();
    loop {
        if root.join(&d).join("Cargo.toml").is_file() || d.as_os_str().is_empty() {
            return d;
        }
        d.pop();
    }
}

/// `%XX` escapes of a link target decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.map(|h| u8::from_str_radix(h, 16)) {
            Some(Ok(v)) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The link targets of one piece of text: `[text](target)` and `[label]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find("](") {
        let after = &rest[p + 2..];
        let mut depth = 0usize;
        let end = after.char_indices().find_map(|(i, c)| match c {
            '(' => {
                depth += 1;
                None
            }
            ')' if depth == 0 => Some(i),
            ')' => {
                depth -= 1;
                None
            }
            _ => None,
        });
        let Some(end) = end else { break };
        let raw = after[..end].trim();
        let target = match raw.strip_prefix('<').and_then(|r| r.split_once('>')) {
            Some((inside, _)) => inside,
            None => raw.split_whitespace().next().unwrap_or(""),
        };
        targets.push(target.to_string());
        rest = &after[end..];
    }
    if let Some(def) = text.trim_start().strip_prefix('[')
        && let Some((label, target)) = def.split_once("]:")
        && !label.is_empty()
        && !label.contains('[')
        && let Some(t) = target.split_whitespace().next()
    {
        targets.push(t.to_string());
    }
    targets
}

/// A link target that names a file, without its `#fragment` or `?query`; `None` for URLs,
/// anchors and (in Rust comments) intra-doc links.
fn file_target(target: &str, kind: Kind) -> Option<String> {
    let t = target.trim();
    let scheme = t.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    if t.is_empty() || t.starts_with('#') || t.contains("://") || (scheme && !t.contains("::")) {
        return None;
    }
    if kind == Kind::Rust && (t.contains("::") || t.contains('@') || !t.contains(['/', '.'])) {
        return None;
    }
    let path = t.split(['#', '?']).next().unwrap_or("");
    (!path.is_empty()).then(|| percent_decode(path))
}

/// `text` with every URL (`scheme://…`) blanked out.
fn without_urls(text: &str) -> String {
    let mut s: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i + 2 < s.len() {
        if s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/' {
            let mut start = i;
            while start > 0
                && (s[start - 1].is_ascii_alphanumeric() || "+.-".contains(s[start - 1]))
            {
                start -= 1;
            }
            let mut end = i + 3;
            while end < s.len() && !s[end].is_whitespace() && !")>]\"'`".contains(s[end]) {
                end += 1;
            }
            s[start..end].iter_mut().for_each(|c| *c = ' ');
            i = end;
        } else {
            i += 1;
        }
    }
    s.into_iter().collect()
}

/// The path-like words of a piece of text (runs of `A-Za-z0-9_./-`, trailing dots dropped).
fn path_words(text: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    text.split(|c: char| !word(c))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a path-like word names a markdown file: a name, then the `.md` extension.
fn is_md_mention(word: &str) -> bool {
    word.strip_suffix(".md")
        .and_then(|stem| stem.chars().last())
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every dangling reference of one file's text, as `file:line: message`.
fn check_text(root: &Path, rel: &Path, kind: Kind, src: &str) -> Vec<String> {
    let dir = rel.parent().unwrap_or(Path::new(""));
    let krate = crate_root(root, dir);
    let mut offenders = Vec::new();
    for (line, text) in pieces(kind, src) {
        let mut report = |what: &str, reference: &str, why: &str| {
            offenders.push(format!(
                "{}:{line}: {what} `{reference}` {why}",
                rel.display()
            ));
        };
        for target in link_targets(&text) {
            let Some(path) = file_target(&target, kind) else {
                continue;
            };
            if is_shared(&path) {
                report("link", &target, "points outside the repository");
                continue;
            }
            let resolved = match path.strip_prefix('/') {
                Some(from_root) => normalise(root, Path::new(""), from_root),
                None => normalise(root, dir, &path),
            };
            match resolved {
                None => report("link", &target, "points outside the repository"),
                Some(p) if !p.exists() => {
                    report("link", &target, "does not exist (relative to this file)");
                }
                Some(_) => {}
            }
        }
        let clean = without_urls(&text);
        for word in path_words(&clean) {
            if word.starts_with("../shared") || word.contains("../shared/") {
                report("path", &word, "points outside the repository");
                continue;
            }
            if !is_md_mention(&word) || GENERATED.contains(&word.as_str()) {
                continue;
            }
            if word.starts_with("target/") {
                continue;
            }
            if is_shared(&word) {
                report("mention of", &word, "points outside the repository");
                continue;
            }
            // A leading `/` means the repository root, as in links.
            let (bases, name) = match word.strip_prefix('/') {
                Some(from_root) => (vec![Path::new("")], from_root),
                None => (vec![Path::new(""), dir, krate.as_path()], word.as_str()),
            };
            let found = bases
                .iter()
                .filter_map(|base| normalise(root, base, name))
                .any(|p| p.is_file());
            if !found {
                report(
                    "mention of",
                    &word,
                    "names no file of the repository (tried the repository root, this file's \
                     folder and its crate root)",
                );
            }
        }
    }
    offenders
}

#[test]
fn every_document_reference_resolves() {
    let root = repo_root();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut offenders = Vec::new();
    let mut scanned = 0;
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .expect("under the root")
            .to_path_buf();
        let Some(kind) = kind_of(&rel) else {
            continue;
        };
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        offenders.extend(check_text(
            &root,
            &rel,
            kind,
            &String::from_utf8_lossy(&bytes),
        ));
        scanned += 1;
    }
    assert!(
        scanned > 50,
        "only {scanned} files scanned: is the walk broken?"
    );
    assert!(
        offenders.is_empty(),
        "{} dangling document reference(s) (the repository must not cite files it does not \
         contain, nor anything outside it; see tests/doc_references.rs):\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

#[test]
fn planted_references_are_reported() {
    let root = repo_root();
    let md = "[ok](method.md) and [up](../README.md), [top](/docs/burn.md#8-pitfalls)\n\
              [gone](missing.md) [away](../shared/docs/X.md) [url](https://x.org/y.md) [a](#top)\n\
              See NOWHERE.md §2 and docs/method.md, README.md, ../data/prompts/README.md.\n\
              [label]: nothere.md\n\
              Output: target/quickstart/results.md and results.md; https://example.org/Z.md\n";
    let found = check_text(&root, Path::new("docs/planted.md"), Kind::Markdown, md);
    let expected = [
        "docs/planted.md:2: link `missing.md`",
        "docs/planted.md:2: link `../shared/docs/X.md` points outside",
        "docs/planted.md:2: path `../shared/docs/X.md` points outside",
        "docs/planted.md:3: mention of `NOWHERE.md`",
        "docs/planted.md:4: link `nothere.md`",
        "docs/planted.md:4: mention of `nothere.md`",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "{e} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len() + 1, "{found:#?}"); // + the first link's target as a mention

    let rs = "/// [`Foo`](crate::Foo), [it](Self::it), see docs/method.md §1.\n\
              //! The notice: assets/NOTICE.md. Planted: GONE.md\n\
              let s = \"QUOTED.md // not a comment\"; // trailing: ALSO_GONE.md\n\
              let r = r#\"raw // GONE_RAW.md \"# ; let c = '\"'; // after a char: LAST.md\n\
              /* block: BLOCK.md */\n";
    let found = check_text(
        &root,
        Path::new("crates/rocm-rewards/src/planted.rs"),
        Kind::Rust,
        rs,
    );
    let names: Vec<&str> = found.iter().filter_map(|f| f.split('`').nth(1)).collect();
    assert_eq!(
        names,
        ["GONE.md", "ALSO_GONE.md", "LAST.md", "BLOCK.md"],
        "{found:#?}"
    );
    assert!(found[0].starts_with("crates/rocm-rewards/src/planted.rs:2:"));

    let toml = "# see GONE.md\nkey = \"a # NOT_A_COMMENT.md\" # trailing REALLY_GONE.md\n";
    let found = check_text(&root, Path::new("configs/planted.toml"), Kind::Toml, toml);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[1].starts_with("configs/planted.toml:2: mention of `REALLY_GONE.md`"));
}
