//! A seeded mutation fuzzer for the file readers (docs/reliability.md): it damages the bytes of a
//! real fixture file in the ways downloads and hand edits do (bit flips, truncation, spliced or
//! deleted ranges, non-UTF-8 bytes; for JSON and TOML text, extreme numbers, wrong types, missing
//! keys, deep nesting; for safetensors, huge or overflowing shapes, overlapping or out-of-file
//! offsets, wrong dtypes, a lying header length, NaN/Inf weights) and runs a reader on each
//! damaged copy. The property: the reader returns `Ok`, or an `Err` whose message names the file;
//! it never panics (caught with `catch_unwind` and reported with the case's seed) and never
//! allocates beyond a bound derived from the input's size ([`AllocationLimit`]).
//!
//! Every case is reproducible from `(seed, index)`. `ROCM_FUZZ_CASES` overrides the case count
//! (the `#[ignore]` soaks multiply it), `ROCM_FUZZ_SEED` the seed, and `ROCM_FUZZ_VERBOSE=1`
//! prints each case before it runs (to name the one an allocation abort happened in).

use std::alloc::System;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

/// The tracking allocator a fuzz test binary installs as its `#[global_allocator]`, so that the
/// runner can cap what one case may allocate.
pub type AllocationLimit = cap::Cap<System>;

/// What kind of file the original is: which structured mutations apply on top of the byte ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Opaque bytes (a PyTorch zip, a burnpack): byte mutations only.
    Bytes,
    /// Text without a structure we parse (prompt lists, `merges.txt`): bytes and number tokens.
    Text,
    /// JSON text: plus value-level mutations of the parsed tree.
    Json,
    /// TOML text: plus number, key and table mutations on the text.
    Toml,
    /// A safetensors file: plus header mutations (shapes, dtypes, offsets, length) and NaN/Inf data.
    Safetensors,
}

/// Tallies of one fuzzing run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuzzReport {
    /// The reader's name.
    pub reader: String,
    /// Cases run.
    pub cases: usize,
    /// Cases the reader accepted.
    pub ok: usize,
    /// Cases the reader refused with an error naming the file.
    pub err: usize,
    /// Property violations: panics and errors that do not name the file, with their case.
    pub failures: Vec<String>,
}

impl FuzzReport {
    /// Panics listing the failures, if any.
    ///
    /// # Panics
    /// If any case panicked or returned an error that does not name the file.
    pub fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases broke the property:\n{}",
            self.reader,
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

/// A fuzzing run over one reader.
#[derive(Clone, Debug)]
pub struct Fuzz {
    reader: String,
    cases: usize,
    seed: u64,
    format: Format,
    must_name: String,
}

impl Fuzz {
    /// `cases` cases (unless `ROCM_FUZZ_CASES` says otherwise) of mutations of a `format` file;
    /// every error must contain `must_name` (the file name).
    pub fn new(reader: &str, format: Format, cases: usize, must_name: &str) -> Self {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Self {
            reader: reader.into(),
            cases: env("ROCM_FUZZ_CASES").map_or(cases, |n| n as usize),
            seed: env("ROCM_FUZZ_SEED").unwrap_or(0x5EED),
            format,
            must_name: must_name.into(),
        }
    }

    /// Multiplies the case count (the `#[ignore]` soaks).
    pub fn times(mut self, factor: usize) -> Self {
        self.cases *= factor;
        self
    }

    /// Runs `read` on `cases` mutations of `original`. `read` writes the bytes where the reader
    /// looks and returns the reader's result as `Err(message)` / `Ok(())`. With `limit`, a case
    /// may allocate at most `64 MiB + 16 × original.len()` more than before it (an allocation
    /// beyond that aborts the process, naming its size).
    pub fn run(
        &self,
        original: &[u8],
        limit: Option<&AllocationLimit>,
        mut read: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> FuzzReport {
        let verbose = std::env::var("ROCM_FUZZ_VERBOSE").is_ok_and(|v| v == "1");
        let mut report = FuzzReport {
            reader: self.reader.clone(),
            ..FuzzReport::default()
        };
        // The control: the unmodified file must be accepted, or every refusal means nothing.
        match catch_unwind(AssertUnwindSafe(|| read(original))) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => report
                .failures
                .push(format!("the unmodified file is refused: {message}")),
            Err(_) => report
                .failures
                .push("the unmodified file panics".to_string()),
        }
        // Caught panics are reported below with their case; the default hook's message and
        // backtrace for each would bury the report.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let bound = (64 << 20) + 16 * original.len();
        for index in 0..self.cases {
            let case_seed = self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (bytes, mutation) = Mutator::new(case_seed).mutate(original, self.format);
            if verbose {
                eprintln!(
                    "{} case {index} (seed {case_seed:#x}): {mutation}",
                    self.reader
                );
            }
            if let Some(limit) = limit {
                limit.set_limit(limit.allocated() + bound).ok();
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| read(&bytes)));
            if let Some(limit) = limit {
                limit.set_limit(usize::MAX).ok();
            }
            report.cases += 1;
            let case = || format!("case {index} (seed {case_seed:#x}, {mutation})");
            match outcome {
                Ok(Ok(())) => report.ok += 1,
                Ok(Err(message)) if message.contains(&self.must_name) => report.err += 1,
                Ok(Err(message)) => report.failures.push(format!(
                    "{}: error does not name `{}`: {message}",
                    case(),
                    self.must_name
                )),
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    report
                        .failures
                        .push(format!("{}: panic: {message}", case()));
                }
            }
        }
        std::panic::set_hook(hook);
        eprintln!(
            "fuzz {}: {} cases, {} ok, {} refused, {} failures",
            report.reader,
            report.cases,
            report.ok,
            report.err,
            report.failures.len()
        );
        report
    }
}

/// Damages bytes; one seeded generator per case.
#[derive(Debug)]
pub struct Mutator {
    rng: ChaCha8Rng,
}

/// Numbers that break naive size arithmetic, as JSON/TOML literals.
const EXTREME_NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1",
    "3",
    "0.5",
    "-0.0",
    "1e308",
    "-1e308",
    "1e400",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "99999999999999999999999",
    "1000000000000",
    "65537",
    "nan",
];

/// The safetensors dtypes, real and not.
const DTYPES: [&str; 12] = [
    "F16", "BF16", "F32", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "U64", "Q4",
];

impl Mutator {
    /// A mutator for one case.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// One to three mutations of `original`, and their names.
    pub fn mutate(&mut self, original: &[u8], format: Format) -> (Vec<u8>, String) {
        let mut bytes = original.to_vec();
        let mut names = Vec::new();
        let rounds = self.rng.random_range(1..=3);
        for _ in 0..rounds {
            let structured = format != Format::Bytes && self.rng.random_bool(0.7);
            let name = if structured {
                match format {
                    Format::Json => self.json(&mut bytes),
                    Format::Toml | Format::Text => self.text(&mut bytes),
                    Format::Safetensors => self.safetensors(&mut bytes),
                    Format::Bytes => unreachable!("no structure"),
                }
            } else {
                self.bytes(&mut bytes)
            };
            names.push(name);
        }
        (bytes, names.join(" + "))
    }

    fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.rng.random_range(0..len)
        }
    }

    /// A byte-level mutation.
    fn bytes(&mut self, b: &mut Vec<u8>) -> String {
        let len = b.len();
        match self.rng.random_range(0..8) {
            0 if len > 0 => {
                let n = self.rng.random_range(1..=8);
                for _ in 0..n {
                    let i = self.index(len);
                    b[i] ^= 1 << self.rng.random_range(0..8);
                }
                format!("{n} bit flips")
            }
            1 => {
                let at = self.index(len);
                b.truncate(at);
                format!("truncated to {at}")
            }
            2 if len > 0 => {
                let at = self.index(len);
                let n = self.rng.random_range(1..=64).min(len - at);
                let fill = [0x00, 0xFF, self.rng.random()][self.rng.random_range(0..3)];
                b[at..at + n].fill(fill);
                format!("{n} bytes at {at} set to {fill:#04x}")
            }
            3 => {
                let at = self.index(len);
                let junk: Vec<u8> = (0..self.rng.random_range(1..=32))
                    .map(|_| self.rng.random())
                    .collect();
                let n = junk.len();
                b.splice(at..at, junk);
                format!("{n} random bytes inserted at {at}")
            }
            4 if len > 0 => {
                let at = self.index(len);
                let n = self.rng.random_range(1..=256).min(len - at);
                b.drain(at..at + n);
                format!("{n} bytes deleted at {at}")
            }
            5 if len > 0 => {
                let from = self.index(len);
                let n = self.rng.random_range(1..=256).min(len - from);
                let chunk = b[from..from + n].to_vec();
                let at = self.index(len);
                b.splice(at..at, chunk);
                format!("{n} bytes from {from} duplicated at {at}")
            }
            6 => {
                let at = self.index(len);
                let bad: &[u8] = [
                    &[0xFF, 0xFE][..],
                    &[0xC0, 0x80],
                    &[0xED, 0xA0, 0x80],
                    &[0x80],
                ][self.rng.random_range(0..4)];
                b.splice(at..at, bad.iter().copied());
                format!("non-UTF-8 {bad:02x?} at {at}")
            }
            _ => {
                b.clear();
                "emptied".into()
            }
        }
    }

    /// A text mutation: a number token replaced by an extreme one, a line dropped or duplicated,
    /// deep brackets, a very long line.
    fn text(&mut self, b: &mut Vec<u8>) -> String {
        let numbers = number_tokens(b);
        match self.rng.random_range(0..5) {
            0 | 1 if !numbers.is_empty() => {
                let (start, end) = numbers[self.index(numbers.len())];
                let with = EXTREME_NUMBERS[self.index(EXTREME_NUMBERS.len())];
                b.splice(start..end, with.bytes());
                format!("number at {start} set to {with}")
            }
            2 => {
                let lines: Vec<usize> = line_starts(b);
                let i = self.index(lines.len());
                let start = lines.get(i).copied().unwrap_or(0);
                let end = lines.get(i + 1).copied().unwrap_or(b.len());
                if self.rng.random_bool(0.5) {
                    b.drain(start..end);
                    format!("line {i} deleted")
                } else {
                    let line = b[start..end].to_vec();
                    b.splice(start..start, line);
                    format!("line {i} duplicated")
                }
            }
            3 => {
                let at = self.index(b.len());
                let depth = self.rng.random_range(100..=5000);
                let nest: Vec<u8> = std::iter::repeat_n(b'[', depth)
                    .chain(std::iter::repeat_n(b']', depth))
                    .collect();
                b.splice(at..at, nest);
                format!("{depth} nested brackets at {at}")
            }
            _ => {
                let at = self.index(b.len());
                let n = self.rng.random_range(1_000..=100_000);
                b.splice(at..at, std::iter::repeat_n(b'a', n));
                format!("{n} bytes of text at {at}")
            }
        }
    }

    /// A JSON mutation on the parsed tree (falls back to a text mutation for invalid JSON).
    fn json(&mut self, b: &mut Vec<u8>) -> String {
        let Ok(mut value) = serde_json::from_slice::<Value>(b) else {
            return self.text(b);
        };
        let paths = value_paths(&value);
        let path = paths[self.index(paths.len())].clone();
        let name = {
            let Some(node) = value.pointer_mut(&path) else {
                return self.text(b);
            };
            match self.rng.random_range(0..7) {
                0 | 1 => {
                    let with = EXTREME_NUMBERS[self.index(EXTREME_NUMBERS.len() - 1)];
                    *node = serde_json::from_str(with).unwrap_or(Value::Null);
                    format!("{path} = {with}")
                }
                2 => {
                    let with = [
                        Value::Null,
                        Value::Bool(true),
                        Value::String("x".into()),
                        Value::Array(vec![]),
                        Value::Array(vec![Value::from(1u64 << 40); 3]),
                        serde_json::json!({}),
                        Value::String("\u{0}\u{FFFF}".into()),
                    ];
                    let i = self.index(with.len());
                    *node = with[i].clone();
                    format!("{path} = {}", with[i])
                }
                3 => {
                    // Past serde_json's recursion limit (128), yet shallow enough that the
                    // mutator's own recursive serialisation fits a test thread's stack (text
                    // mutations nest deeper, as plain bytes).
                    let depth = self.rng.random_range(64..=300);
                    let mut deep = node.take();
                    for _ in 0..depth {
                        deep = Value::Array(vec![deep]);
                    }
                    *node = deep;
                    format!("{path} nested {depth} deep")
                }
                4 => match node {
                    Value::Array(items) if !items.is_empty() => {
                        let n = self.rng.random_range(0..items.len() * 3 + 2);
                        let first = items[0].clone();
                        items.resize(n, first);
                        format!("{path} resized to {n}")
                    }
                    _ => {
                        *node = Value::from(-1);
                        format!("{path} = -1")
                    }
                },
                _ => {
                    // Remove the key (or array element) at `path`.
                    let (parent, last) = path.rsplit_once('/').unwrap_or(("", ""));
                    let last = last.to_string();
                    match value.pointer_mut(parent) {
                        Some(Value::Object(map)) => {
                            map.remove(&last);
                        }
                        Some(Value::Array(items)) => {
                            if let Ok(i) = last.parse::<usize>()
                                && i < items.len()
                            {
                                items.remove(i);
                            }
                        }
                        _ => {}
                    }
                    format!("{path} removed")
                }
            }
        };
        *b = serde_json::to_vec_pretty(&value).unwrap_or_default();
        name
    }

    /// A safetensors mutation: one header entry's shape, dtype or offsets, the header length, or
    /// a tensor's data overwritten with NaN/Inf bit patterns.
    fn safetensors(&mut self, b: &mut Vec<u8>) -> String {
        let Some((header_len, mut header)) = safetensors_header(b) else {
            return self.bytes(b);
        };
        let body = b.split_off(8 + header_len);
        let keys: Vec<String> = header
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "__metadata__").cloned().collect())
            .unwrap_or_default();
        let rebuild = |header: &Value, body: &[u8]| {
            let text = serde_json::to_vec(header).unwrap_or_default();
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&text);
            out.extend_from_slice(body);
            out
        };
        if keys.is_empty() {
            *b = rebuild(&header, &body);
            return self.bytes(b);
        }
        let key = keys[self.index(keys.len())].clone();
        let big = 1u64 << self.rng.random_range(20..63);
        let entry = &mut header[&key];
        let name = match self.rng.random_range(0..7) {
            0 => {
                let shapes = [
                    serde_json::json!([big, big]),
                    serde_json::json!([u64::MAX, 2]),
                    serde_json::json!([0]),
                    serde_json::json!([]),
                    serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 1]),
                    serde_json::json!([-1]),
                    serde_json::json!([3, 5]),
                ];
                let s = shapes[self.index(shapes.len())].clone();
                let name = format!("{key}.shape = {s}");
                entry["shape"] = s;
                name
            }
            1 => {
                let d = DTYPES[self.index(DTYPES.len())];
                entry["dtype"] = Value::from(d);
                format!("{key}.dtype = {d}")
            }
            2 => {
                let end = body.len() as u64;
                let offsets = [
                    serde_json::json!([0, end]),
                    serde_json::json!([end, 0]),
                    serde_json::json!([0, end + 1]),
                    serde_json::json!([big, big + 4]),
                    serde_json::json!([0, u64::MAX]),
                    serde_json::json!([0, 0]),
                ];
                let o = offsets[self.index(offsets.len())].clone();
                let name = format!("{key}.data_offsets = {o}");
                entry["data_offsets"] = o;
                name
            }
            3 => {
                // Overlap: this entry takes another's offsets.
                let other = keys[self.index(keys.len())].clone();
                let o = header[&other]["data_offsets"].clone();
                header[&key]["data_offsets"] = o;
                format!("{key} overlaps {other}")
            }
            4 => {
                let mut out = rebuild(&header, &body);
                let lie = [big, 0, u64::MAX, (header_len as u64) + 1][self.index(4)];
                out[..8].copy_from_slice(&lie.to_le_bytes());
                *b = out;
                return format!("header length = {lie}");
            }
            5 => {
                if let Some(m) = header.as_object_mut() {
                    m.remove(&key);
                }
                format!("{key} removed")
            }
            _ => {
                let (start, end) = offsets_of(entry).unwrap_or((0, 0));
                let dtype = entry["dtype"].as_str().unwrap_or("F32").to_string();
                let mut body = body;
                let end = end.min(body.len());
                let start = start.min(end);
                let pattern: &[u8] = match (dtype.as_str(), self.rng.random_range(0..3)) {
                    ("F16" | "BF16", 0) => &[0x00, 0x7E],
                    ("F16", 1) => &[0x00, 0x7C],
                    ("BF16", 1) => &[0x80, 0x7F],
                    ("F16" | "BF16", _) => &[0x00, 0xFC],
                    (_, 0) => &[0x00, 0x00, 0xC0, 0x7F],
                    (_, 1) => &[0x00, 0x00, 0x80, 0x7F],
                    _ => &[0x00, 0x00, 0x80, 0xFF],
                };
                for chunk in body[start..end].chunks_mut(pattern.len()) {
                    let n = chunk.len();
                    chunk.copy_from_slice(&pattern[..n]);
                }
                *b = rebuild(&header, &body);
                return format!("{key} data = NaN/Inf {pattern:02x?}");
            }
        };
        *b = rebuild(&header, &body);
        name
    }
}

/// The JSON header of a safetensors file and its length.
fn safetensors_header(b: &[u8]) -> Option<(usize, Value)> {
    let len = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(b.get(8..8usize.checked_add(len)?)?).ok()?;
    Some((len, header))
}

fn offsets_of(entry: &Value) -> Option<(usize, usize)> {
    let o = entry.get("data_offsets")?.as_array()?;
    Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize))
}

/// Every JSON pointer of a tree (the root included).
fn value_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(
                        x,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate().take(64) {
                    walk(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// Byte ranges of decimal number tokens in text.
fn number_tokens(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if starts {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut end = i;
            while end < b.len() && (b[end].is_ascii_digit() || b"._eE+-".contains(&b[end])) {
                end += 1;
            }
            out.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn line_starts(b: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            b.iter()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| i < b.len())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_change_the_file() {
        let json = br#"{"sample_size": 64, "block_out_channels": [32, 64], "act_fn": "silu"}"#;
        let a = Mutator::new(7).mutate(json, Format::Json);
        let b = Mutator::new(7).mutate(json, Format::Json);
        assert_eq!(a, b);
        let changed = (0..200)
            .filter(|&s| Mutator::new(s).mutate(json, Format::Json).0 != json)
            .count();
        assert!(changed > 190, "{changed} of 200 mutations changed the file");
    }

    #[test]
    fn safetensors_mutations_keep_a_parsable_header_mostly() {
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&[0; 8]);
        let parsed = (0..200)
            .filter(|&s| {
                let (m, _) = Mutator::new(s).mutate(&file, Format::Safetensors);
                safetensors_header(&m).is_some()
            })
            .count();
        assert!(parsed > 50, "{parsed} of 200 mutated headers still parse");
    }

    #[test]
    fn the_runner_reports_panics_and_unnamed_errors() {
        let fuzz = Fuzz::new("demo", Format::Text, 50, "demo.txt");
        let report = fuzz.run(b"1 2 3\n4 5 6\n", None, |b| {
            if b == b"1 2 3\n4 5 6\n" {
                Ok(())
            } else if b.len() > 40 {
                panic!("too long")
            } else if b.is_empty() {
                Err("empty".into())
            } else {
                Err("demo.txt: bad".into())
            }
        });
        assert_eq!(report.cases, 50);
        assert!(!report.failures.is_empty());
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.contains("panic: too long"))
        );
    }
}
