//! The world's CLIP tokenizer: byte-level BPE in OpenAI CLIP's layout (the 256 byte symbols, the
//! same with `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`), with merges
//! learned on the caption grammar's words, so every word of the grammar is one token. Written as
//! `vocab.json` + `merges.txt` + `tokenizer_config.json` + `special_tokens_map.json`, which
//! [`rocm_models::tokenizer::CLIPTokenizer::from_dir`] and transformers' `CLIPTokenizer` load.

use std::collections::HashMap;
use std::path::Path;

use rocm_models::tokenizer::{BOS_TOKEN, EOS_TOKEN};

use crate::Error;
use crate::world::vocabulary;

/// The encoded length of the world's captions (`model_max_length`; the longest caption has 14
/// words, 16 tokens with the specials).
pub const WORLD_MAX_LENGTH: usize = 20;

/// GPT-2's byte → printable-character table (OpenAI's `bytes_to_unicode`, in its order).
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut direct: Vec<u32> = (0..256).filter(|&b| printable(b)).collect();
    let mut chars: Vec<u32> = direct.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable(b) {
            direct.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    chars.into_iter().filter_map(char::from_u32).collect()
}

/// The BPE of the world: its vocabulary in id order and its merges in rank order.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldBpe {
    /// Tokens by id.
    pub vocab: Vec<String>,
    /// Merges by rank.
    pub merges: Vec<(String, String)>,
}

impl WorldBpe {
    /// Learns the merges on the grammar's words: repeatedly the most frequent adjacent pair over
    /// the distinct words (ties: the lexicographically smallest), until every word is one symbol.
    pub fn learn() -> Self {
        let mut words: Vec<Vec<String>> = vocabulary()
            .iter()
            .map(|w| {
                let chars: Vec<char> = w.chars().collect();
                let last = chars.len() - 1;
                chars
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        if k == last {
                            format!("{c}</w>")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            })
            .collect();
        let mut merges = Vec::new();
        loop {
            let mut counts: HashMap<(String, String), usize> = HashMap::new();
            for w in &words {
                for pair in w.windows(2) {
                    *counts
                        .entry((pair[0].clone(), pair[1].clone()))
                        .or_default() += 1;
                }
            }
            let Some(best) = counts
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(pair, _)| pair)
            else {
                break;
            };
            for w in &mut words {
                let mut merged = Vec::with_capacity(w.len());
                let mut k = 0;
                while k < w.len() {
                    if k + 1 < w.len() && w[k] == best.0 && w[k + 1] == best.1 {
                        merged.push(format!("{}{}", w[k], w[k + 1]));
                        k += 2;
                    } else {
                        merged.push(w[k].clone());
                        k += 1;
                    }
                }
                *w = merged;
            }
            merges.push(best);
        }
        let bytes = bytes_to_unicode();
        let vocab = bytes
            .iter()
            .map(char::to_string)
            .chain(bytes.iter().map(|c| format!("{c}</w>")))
            .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
            .chain([BOS_TOKEN.to_string(), EOS_TOKEN.to_string()])
            .collect();
        Self { vocab, merges }
    }

    /// The id of `<|startoftext|>`.
    pub fn bos_token_id(&self) -> usize {
        self.vocab.len() - 2
    }

    /// The id of `<|endoftext|>` (also padding and unknown).
    pub fn eos_token_id(&self) -> usize {
        self.vocab.len() - 1
    }

    /// Writes `vocab.json`, `merges.txt`, `tokenizer_config.json` and `special_tokens_map.json`
    /// into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        crate::io::create_dir(dir)?;
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .vocab
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), serde_json::Value::from(id)))
            .collect();
        crate::io::write_json(&dir.join("vocab.json"), &serde_json::Value::Object(vocab))?;
        let mut merges = String::from("#version: 0.2\n");
        for (a, b) in &self.merges {
            merges.push_str(&format!("{a} {b}\n"));
        }
        crate::io::write(&dir.join("merges.txt"), merges.as_bytes())?;
        let specials = serde_json::json!({
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "pad_token": EOS_TOKEN,
        });
        crate::io::write_json(&dir.join("special_tokens_map.json"), &specials)?;
        let mut config = specials;
        config["tokenizer_class"] = "CLIPTokenizer".into();
        config["model_max_length"] = WORLD_MAX_LENGTH.into();
        config["do_lower_case"] = true.into();
        config["errors"] = "replace".into();
        config["clean_up_tokenization_spaces"] = false.into();
        crate::io::write_json(&dir.join("tokenizer_config.json"), &config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Split;
    use rocm_models::tokenizer::CLIPTokenizer;

    #[test]
    fn every_grammar_word_is_one_token_through_the_models_tokenizer() {
        let bpe = WorldBpe::learn();
        let dir = std::env::temp_dir().join(format!("rocm-shapes-tok-{}", std::process::id()));
        bpe.write(&dir).unwrap();
        let tokenizer = CLIPTokenizer::from_dir(&dir).unwrap();
        assert_eq!(tokenizer.vocab_size(), bpe.vocab.len());
        assert_eq!(tokenizer.max_length(), WORLD_MAX_LENGTH);
        assert_eq!(tokenizer.eos_token_id() as usize, bpe.eos_token_id());
        assert_eq!(tokenizer.bos_token_id() as usize, bpe.bos_token_id());
        for word in vocabulary() {
            let ids = tokenizer.tokenize(word).unwrap();
            assert_eq!(ids.len(), 1, "{word}: {ids:?}");
            assert_eq!(bpe.vocab[ids[0] as usize], format!("{word}</w>"));
        }
        for i in 0..200 {
            let caption = Split::Train.scene(i).caption;
            let words = caption.split(' ').count();
            let enc = tokenizer.encode(&caption).unwrap();
            assert_eq!(
                enc.attention_mask.iter().sum::<u32>() as usize,
                words + 2,
                "{caption}"
            );
        }
        // Any text still encodes (byte symbols), upper case folds to the grammar's words.
        assert_eq!(tokenizer.tokenize("A RED Circle").unwrap().len(), 3);
        assert!(tokenizer.tokenize("zebra!").unwrap().len() > 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
