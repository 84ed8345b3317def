//! The CLIP tokenizer (transformers' `CLIPTokenizer`), on the `tokenizers` crate.
//!
//! Byte-level BPE over the OpenAI CLIP vocabulary (49,408 tokens): the text is NFC-normalised,
//! runs of whitespace collapse to one space, everything is lower-cased; the CLIP regex splits words,
//! numbers (one digit at a time) and punctuation runs; every word ends in `</w>`. Encodings are
//! `<|startoftext|>` (49406) + at most 75 ids + `<|endoftext|>` (49407), padded to 77 with the pad
//! token (`<|endoftext|>` in diffusers' tokenizer folders, read from the folder's config files).
//!
//! A model folder's `tokenizer/` ships either `vocab.json` + `merges.txt` (older hub repositories such
//! as LCM_Dreamshaper_v7) or `tokenizer.json` (what transformers 5 saves); both load with
//! [`CLIPTokenizer::from_dir`]. [`CLIPTokenizer::openai_clip`] needs no files: the OpenAI CLIP
//! vocabulary is embedded in this crate (for checkpoints that ship none, such as open_clip's).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;
use tokenizers::models::bpe::{BPE, BpeBuilder, Merges, Vocab};
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::Error;

/// transformers' CLIP pre-tokenizer regex (`Split` with `invert = true`, matches are the pieces).
pub const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The start-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// The end-of-text token (also the unknown token, and the pad token of diffusers' tokenizers).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// CLIP's context length: 77 positions.
pub const MAX_LENGTH: usize = 77;

/// One encoded text: `input_ids` and `attention_mask`, both `max_length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CLIPEncoding {
    /// `[bos, ids…, eos, pad…]`, truncated so that `eos` always fits.
    pub input_ids: Vec<u32>,
    /// 1 for bos, the text's ids and eos; 0 for padding.
    pub attention_mask: Vec<u32>,
}

/// transformers' `CLIPTokenizer`: byte-level BPE, lower-cased, padded/truncated to 77 ids.
#[derive(Debug, Clone)]
pub struct CLIPTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    bos_token_id: u32,
    eos_token_id: u32,
    pad_token_id: u32,
    max_length: usize,
}

impl CLIPTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json` when present, else `vocab.json` + `merges.txt`.
    /// Special tokens are read from `special_tokens_map.json` / `tokenizer_config.json` when present
    /// (defaults: `<|startoftext|>`, `<|endoftext|>`, pad `<|endoftext|>`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let mut tokenizer = if json.is_file() {
            Self::from_tokenizer_json(&json)?
        } else if vocab.is_file() && merges.is_file() {
            Self::from_vocab_merges(&vocab, &merges)?
        } else {
            return Err(Error::Tokenizer {
                path: dir.to_path_buf(),
                message: "neither tokenizer.json nor vocab.json + merges.txt found".into(),
            });
        };
        tokenizer.source = dir.to_path_buf();
        let special = SpecialTokens::read(dir)?;
        let id = |token: &str| {
            tokenizer
                .inner
                .token_to_id(token)
                .ok_or_else(|| Error::Tokenizer {
                    path: dir.to_path_buf(),
                    message: format!("special token `{token}` is not in the vocabulary"),
                })
        };
        let (bos, eos, pad) = (id(&special.bos)?, id(&special.eos)?, id(&special.pad)?);
        tokenizer.bos_token_id = bos;
        tokenizer.eos_token_id = eos;
        tokenizer.pad_token_id = pad;
        if let Some(max) = special.model_max_length.filter(|&m| m >= 2) {
            tokenizer.max_length = max;
        }
        Ok(tokenizer)
    }

    /// Builds the tokenizer from `vocab.json` + `merges.txt`, mirroring the `tokenizer.json` that
    /// transformers writes for CLIP (NFC, whitespace collapse, lowercase; CLIP split + ByteLevel; BPE
    /// with `</w>`, unknown token `<|endoftext|>`).
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self, Error> {
        let (vocab_s, merges_s) = (path_str(vocab)?, path_str(merges)?);
        Self::from_bpe(BPE::from_file(vocab_s, merges_s), vocab, merges)
    }

    /// The OpenAI CLIP tokenizer with its vocabulary embedded in this crate (`assets/`, MIT): the
    /// same ids as a diffusers `tokenizer/` folder of Stable Diffusion 1.x, with `<|endoftext|>`
    /// padding, without reading any file. The vocabulary is rebuilt from the 48,894 merges as
    /// OpenAI's `simple_tokenizer.py` does: byte symbols, the same with `</w>`, one token per merge,
    /// then `<|startoftext|>` and `<|endoftext|>`.
    pub fn openai_clip() -> Result<Self, Error> {
        let (vocab, merges) = openai_clip_vocab();
        let source = Path::new(OPENAI_CLIP_MERGES_NAME);
        Self::from_bpe(
            BPE::builder().vocab_and_merges(vocab, merges),
            source,
            source,
        )
    }

    /// Completes a BPE model into transformers' CLIP pipeline; `vocab` and `merges` name the
    /// sources in errors.
    fn from_bpe(builder: BpeBuilder, vocab: &Path, merges: &Path) -> Result<Self, Error> {
        let err = |message: String| Error::Tokenizer {
            path: vocab.to_path_buf(),
            message,
        };
        let bpe = builder
            .unk_token(EOS_TOKEN.into())
            .end_of_word_suffix("</w>".into())
            .continuing_subword_prefix(String::new())
            .build()
            .map_err(|e| err(format!("with {}: {e}", merges.display())))?;
        let mut inner = Tokenizer::new(bpe);
        let replace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| err(e.to_string()))?;
        inner
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                replace.into(),
                Lowercase.into(),
            ])))
            .map_err(|e| err(e.to_string()))?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_REGEX.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| err(e.to_string()))?;
        let byte_level = ByteLevel::new(false, true, true);
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            byte_level.into(),
        ])));
        inner.with_decoder(Some(ByteLevel::default()));
        inner
            .add_special_tokens([
                AddedToken::from(BOS_TOKEN, true),
                AddedToken::from(EOS_TOKEN, true),
            ])
            .map_err(|e| err(e.to_string()))?;
        Self::with_default_specials(inner, vocab)
    }

    /// Loads a `tokenizer.json` (as written by transformers' `CLIPTokenizer.save_pretrained`).
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, Error> {
        let err = |message: String| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let text = crate::load::read_to_string(path)?;
        // tokenizers 0.23.2 panics (an `expect` in its decoder deserialisation) on some
        // malformed files: check the JSON first, and treat a panic as a malformed file.
        serde_json::from_str::<Value>(&text).map_err(|e| err(e.to_string()))?;
        let parsed = std::panic::catch_unwind(|| text.parse::<Tokenizer>());
        let inner = match parsed {
            Ok(result) => result.map_err(|e| err(e.to_string()))?,
            Err(_) => {
                return Err(err(
                    "malformed tokenizer (the tokenizers crate panicked)".into()
                ));
            }
        };
        Self::with_default_specials(inner, path)
    }

    fn with_default_specials(mut inner: Tokenizer, path: &Path) -> Result<Self, Error> {
        // Special tokens, padding and truncation are applied by `encode`, not by the inner tokenizer.
        inner.with_post_processor(None::<tokenizers::processors::PostProcessorWrapper>);
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| Error::Tokenizer {
                path: path.to_path_buf(),
                message: format!("special token `{token}` is not in the vocabulary"),
            })
        };
        let (bos_token_id, eos_token_id) = (id(BOS_TOKEN)?, id(EOS_TOKEN)?);
        Ok(Self {
            inner,
            source: path.to_path_buf(),
            bos_token_id,
            eos_token_id,
            pad_token_id: eos_token_id,
            max_length: MAX_LENGTH,
        })
    }

    /// Overrides the pad id (e.g. 0 for tokenizers that pad with `!`).
    pub fn with_pad_token_id(mut self, id: u32) -> Self {
        self.pad_token_id = id;
        self
    }

    /// Overrides the encoded length (77 by default; at least 2).
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length.max(2);
        self
    }

    /// The `<|startoftext|>` id (49406 for the CLIP vocabulary).
    pub fn bos_token_id(&self) -> u32 {
        self.bos_token_id
    }

    /// The `<|endoftext|>` id (49407 for the CLIP vocabulary).
    pub fn eos_token_id(&self) -> u32 {
        self.eos_token_id
    }

    /// The padding id.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// The encoded length (77).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The vocabulary size, special tokens included (49408).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BPE ids of `text` without special tokens, padding or truncation.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.source.clone(),
                message: format!("encoding {text:?}: {e}"),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes one text as `[bos, ids…, eos]`, truncated to `max_length` and padded with the pad id.
    pub fn encode(&self, text: &str) -> Result<CLIPEncoding, Error> {
        let mut ids = self.tokenize(text)?;
        ids.truncate(self.max_length - 2);
        let mut input_ids = Vec::with_capacity(self.max_length);
        input_ids.push(self.bos_token_id);
        input_ids.extend(ids);
        input_ids.push(self.eos_token_id);
        let mut attention_mask = vec![1; input_ids.len()];
        input_ids.resize(self.max_length, self.pad_token_id);
        attention_mask.resize(self.max_length, 0);
        Ok(CLIPEncoding {
            input_ids,
            attention_mask,
        })
    }

    /// Encodes a batch of texts.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<CLIPEncoding>, Error> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Encodes a batch of texts into an id tensor for the text model.
    ///
    /// # Shapes
    /// - output: `[texts.len(), max_length]`
    pub fn encode_to_tensor(
        &self,
        texts: &[&str],
        device: &Device,
    ) -> Result<Tensor<2, Int>, Error> {
        let encodings = self.encode_batch(texts)?;
        let ids: Vec<i64> = encodings
            .iter()
            .flat_map(|e| e.input_ids.iter().map(|&i| i64::from(i)))
            .collect();
        Ok(Tensor::from_data(
            TensorData::new(ids, [texts.len(), self.max_length]),
            device,
        ))
    }
}

/// The name errors give the embedded OpenAI CLIP merges.
const OPENAI_CLIP_MERGES_NAME: &str = "<embedded OpenAI CLIP merges>";

/// The OpenAI CLIP merges (`assets/clip_merges.txt`, Hugging Face `merges.txt` layout).
const OPENAI_CLIP_MERGES: &str = include_str!("../assets/clip_merges.txt");

/// The vocabulary and merges of [`CLIPTokenizer::openai_clip`].
fn openai_clip_vocab() -> (Vocab, Merges) {
    let merges: Merges = OPENAI_CLIP_MERGES
        .lines()
        .skip(1) // `#version: 0.2`
        .filter_map(|line| {
            let (a, b) = line.split_once(' ')?;
            Some((a.to_string(), b.to_string()))
        })
        .collect();
    let bytes = bytes_to_unicode();
    let tokens = bytes
        .iter()
        .map(char::to_string)
        .chain(bytes.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([BOS_TOKEN.to_string(), EOS_TOKEN.to_string()]);
    let vocab: Vocab = tokens.zip(0u32..).collect();
    (vocab, merges)
}

/// GPT-2's byte → printable-character table that CLIP's BPE runs on, in the order of OpenAI's
/// `bytes_to_unicode` (printable bytes first, then the rest mapped from U+0100 on).
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: &u32| {
        (0x21..=0x7E).contains(b) || (0xA1..=0xAC).contains(b) || (0xAE..=0xFF).contains(b)
    };
    let shifted = (0..256u32)
        .filter(|b| !printable(b))
        .zip(256u32..)
        .map(|(_, c)| c);
    (0..256u32)
        .filter(printable)
        .chain(shifted)
        .filter_map(char::from_u32)
        .collect()
}

fn path_str(path: &Path) -> Result<&str, Error> {
    path.to_str().ok_or_else(|| Error::Tokenizer {
        path: path.to_path_buf(),
        message: "path is not UTF-8".into(),
    })
}

/// Special-token settings of a tokenizer folder.
struct SpecialTokens {
    bos: String,
    eos: String,
    pad: String,
    model_max_length: Option<usize>,
}

impl SpecialTokens {
    /// `special_tokens_map.json` wins over `tokenizer_config.json`; both are optional.
    fn read(dir: &Path) -> Result<Self, Error> {
        let mut tokens = Self {
            bos: BOS_TOKEN.into(),
            eos: EOS_TOKEN.into(),
            pad: EOS_TOKEN.into(),
            model_max_length: None,
        };
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let json: Value = crate::load::read_json(&path)?;
            for (key, slot) in [
                ("bos_token", &mut tokens.bos),
                ("eos_token", &mut tokens.eos),
                ("pad_token", &mut tokens.pad),
            ] {
                if let Some(token) = json.get(key).and_then(token_content) {
                    *slot = token;
                }
            }
            // transformers writes a huge sentinel when no length is known; only real lengths count.
            if let Some(max) = json
                .get("model_max_length")
                .and_then(Value::as_u64)
                .filter(|&m| m <= 1 << 20)
            {
                tokens.model_max_length = usize::try_from(max).ok();
            }
        }
        Ok(tokens)
    }
}

/// A token is written either as a string or as `{"content": "...", ...}` (an `AddedToken`).
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_content_reads_strings_and_added_tokens() {
        assert_eq!(
            token_content(&Value::String("!".into())).as_deref(),
            Some("!")
        );
        let added = serde_json::json!({"content": "<|endoftext|>", "lstrip": false});
        assert_eq!(token_content(&added).as_deref(), Some(EOS_TOKEN));
        assert_eq!(token_content(&Value::Null), None);
    }

    #[test]
    fn missing_folder_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join("rocm-models-no-such-tokenizer-dir");
        let err = CLIPTokenizer::from_dir(&dir).expect_err("no files");
        assert!(
            err.to_string()
                .contains("rocm-models-no-such-tokenizer-dir"),
            "{err}"
        );
    }
}
