//! The CLIP tokenizer against transformers' `CLIPTokenizer` on the real CLIP vocabulary
//! (fixtures written by `tests/fixtures/scripts/models_clip.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use rocm_models::tokenizer::CLIPTokenizer;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

/// The OpenAI CLIP merges, shipped with the crate for `CLIPTokenizer::openai_clip`.
fn merges_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/clip_merges.txt")
}

#[derive(Deserialize)]
struct Case {
    text: String,
    input_ids: Vec<u32>,
    #[serde(default)]
    attention_mask: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

/// GPT-2's byte ↔ unicode table, as used by CLIP's BPE.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().filter_map(char::from_u32).collect()
}

/// A temporary `vocab.json` + `merges.txt` folder: the CLIP vocabulary is a function of its merges
/// (bytes, bytes + `</w>`, merge results, the two special tokens), so only the merges are committed
/// (`assets/clip_merges.txt`). Built here independently of the crate's own `openai_clip`.
fn clip_vocab_dir(extra: &[(&str, &str)]) -> TempDir {
    // Tests run in parallel: one folder per call.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rocm-models-clip-tok-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let merges_text = std::fs::read_to_string(merges_file()).expect("merges.txt");
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(char::to_string).collect();
    tokens.extend(bytes_to_unicode().iter().map(|c| format!("{c}</w>")));
    for line in merges_text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        tokens.push(line.split_whitespace().collect::<String>());
    }
    tokens.push("<|startoftext|>".into());
    tokens.push("<|endoftext|>".into());
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_string(&vocab).expect("json"),
    )
    .expect("write vocab");
    std::fs::copy(merges_file(), dir.join("merges.txt")).expect("copy merges");
    for (name, text) in extra {
        std::fs::write(dir.join(name), text).expect("write extra");
    }
    TempDir(dir)
}

/// A folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_reference(path: &Path) -> Reference {
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file"))
        .expect("reference json")
}

/// The 28 transformers cases (padded to 77, with attention masks) and the special ids.
fn reproduces_every_transformers_case(tok: &CLIPTokenizer) {
    assert_eq!(
        (
            tok.vocab_size(),
            tok.bos_token_id(),
            tok.eos_token_id(),
            tok.pad_token_id()
        ),
        (49408, 49406, 49407, 49407)
    );
    let reference = read_reference(&fixtures().join("reference_ids_77.json"));
    assert_eq!(reference.cases.len(), 28);
    for case in &reference.cases {
        let enc = tok.encode(&case.text).expect("encode");
        assert_eq!(enc.input_ids, case.input_ids, "text {:?}", case.text);
        let len = enc.input_ids.iter().position(|&i| i == 49407).expect("eos") + 1;
        assert!(
            enc.attention_mask[..len].iter().all(|&m| m == 1)
                && enc.attention_mask[len..].iter().all(|&m| m == 0)
        );
    }
}

/// The ids of OpenAI's reference tokenizer (no special tokens) on 4 strings.
fn reproduces_openai_reference_ids(tok: &CLIPTokenizer) {
    let text = std::fs::read_to_string(fixtures().join("python_reference_ids.json")).expect("file");
    let reference: HashMap<String, Vec<u32>> = serde_json::from_str(&text).expect("json");
    assert_eq!(reference.len(), 4);
    for (text, ids) in reference {
        assert_eq!(tok.tokenize(&text).expect("tokenize"), ids, "text {text:?}");
    }
}

#[test]
fn vocab_merges_folder_reproduces_every_transformers_case() {
    let dir = clip_vocab_dir(&[]);
    let tok = CLIPTokenizer::from_dir(&dir.0).expect("tokenizer");
    reproduces_every_transformers_case(&tok);
    reproduces_openai_reference_ids(&tok);
}

#[test]
fn embedded_openai_vocabulary_reproduces_every_reference_case() {
    let tok = CLIPTokenizer::openai_clip().expect("embedded tokenizer");
    reproduces_every_transformers_case(&tok);
    reproduces_openai_reference_ids(&tok);
}

#[test]
fn pad_token_and_length_come_from_the_folder_config() {
    // SD 2.x tokenizers pad with "!" (id 0); model_max_length sets the length.
    let config = r#"{"pad_token": {"content": "!", "lstrip": false}, "model_max_length": 10}"#;
    let tok = CLIPTokenizer::from_dir(&clip_vocab_dir(&[("tokenizer_config.json", config)]).0)
        .expect("tokenizer");
    assert_eq!((tok.pad_token_id(), tok.max_length()), (0, 10));
    assert_eq!(
        tok.encode("cat").expect("encode").input_ids,
        [49406, 2368, 49407, 0, 0, 0, 0, 0, 0, 0]
    );
    let long = tok.encode(&"cat ".repeat(20)).expect("encode").input_ids;
    assert_eq!(
        long,
        [49406, 2368, 2368, 2368, 2368, 2368, 2368, 2368, 2368, 49407]
    );
}

#[test]
fn tokenizer_json_folder_matches_transformers() {
    let dir = fixtures().join("small-json");
    let tok = CLIPTokenizer::from_dir(&dir).expect("tokenizer.json folder");
    let reference = read_reference(&dir.join("reference_ids.json"));
    assert!(!reference.cases.is_empty());
    for case in &reference.cases {
        let enc = tok.encode(&case.text).expect("encode");
        assert_eq!(enc.input_ids, case.input_ids, "text {:?}", case.text);
        assert_eq!(
            Some(&enc.attention_mask),
            case.attention_mask.as_ref(),
            "text {:?}",
            case.text
        );
    }
}

#[test]
fn batch_encodes_to_an_int_tensor() {
    let tok = CLIPTokenizer::from_dir(fixtures().join("small-json")).expect("tokenizer");
    let ids = tok
        .encode_to_tensor(&["a photo of a cat", ""], &Device::flex())
        .expect("tensor");
    assert_eq!(ids.dims(), [2, 77]);
    let host = ids
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("ids");
    assert_eq!(host[0], i64::from(tok.bos_token_id()));
    assert_eq!(
        &host[77..80],
        &[
            i64::from(tok.bos_token_id()),
            i64::from(tok.eos_token_id()),
            i64::from(tok.pad_token_id())
        ]
    );
}
