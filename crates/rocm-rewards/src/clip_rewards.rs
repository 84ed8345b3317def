//! The CLIP-family rewards on a transformers `CLIPModel`: [`ClipScore`], [`PickScore`] and
//! [`Aesthetic`], sharing one [`ClipBackbone`] (model + tokenizer + differentiable preprocessing).
//!
//! Load the reward on the device the images live on (an autodiff device for training): the
//! backbone's parameters are frozen ([`Module::no_grad`]) so only the pixels receive gradients.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use burn::prelude::*;
use rocm_models::clip::CLIPModel;
use rocm_models::tokenizer::CLIPTokenizer;

use crate::preprocess::ClipPreprocess;
use crate::{AestheticHead, Error, RewardModel};

/// Files a `CLIPModel` folder must have (the tokenizer may also be `vocab.json` + `merges.txt`).
pub const CLIP_MODEL_FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// How many prompts' text embeddings a [`ClipBackbone`] keeps (48 MiB at ViT-L/14's 768
/// dimensions); past this the cache starts over.
pub const TEXT_CACHE_CAPACITY: usize = 16_384;

/// A frozen CLIP model with its tokenizer and preprocessing.
///
/// The text tower is frozen, so a prompt's embedding never changes: [`ClipBackbone::text_embeds`]
/// computes each distinct prompt once and keeps it (up to [`TEXT_CACHE_CAPACITY`] prompts), so a
/// training run over a fixed prompt set runs the text tower once per prompt, not once per reward
/// call. Replacing `model` or `tokenizer` by hand needs [`ClipBackbone::clear_text_cache`].
#[derive(Debug)]
pub struct ClipBackbone {
    /// The dual encoder.
    pub model: CLIPModel,
    /// Tokenizer for the prompts.
    pub tokenizer: CLIPTokenizer,
    /// Resize, crop and normalisation to the model's `image_size`.
    pub preprocess: ClipPreprocess,
    /// L2-normalised text embeddings by prompt, `projection_dim` values each, on the host so
    /// that they serve any device (plain or autodiff, any checkpointing strategy).
    text_cache: Mutex<HashMap<String, Vec<f32>>>,
}

impl ClipBackbone {
    /// A backbone from its parts; freezes `model` ([`Module::no_grad`]).
    pub fn new(model: CLIPModel, tokenizer: CLIPTokenizer, preprocess: ClipPreprocess) -> Self {
        Self {
            model: model.no_grad(),
            tokenizer,
            preprocess,
            text_cache: Mutex::default(),
        }
    }

    /// Loads a transformers `CLIPModel` folder (`config.json`, `model.safetensors`, and a tokenizer:
    /// `tokenizer.json` or `vocab.json` + `merges.txt`, in the folder or its `tokenizer/`, else the
    /// embedded OpenAI CLIP vocabulary), or a hub repository id from the local Hugging Face cache;
    /// any other string is an error naming it ([`rocm_models::hub::model_dir`], the rule every
    /// `from_pretrained` of the workspace shares).
    pub fn from_pretrained(name_or_path: &str, device: &Device) -> Result<Self, Error> {
        let dir = rocm_models::hub::model_dir(name_or_path, &CLIP_MODEL_FILES)?;
        let model = CLIPModel::from_pretrained(&dir, device)?.no_grad();
        let tokenizer = load_tokenizer(&dir)?;
        let size = model
            .vision_model
            .embeddings
            .position_embedding
            .weight
            .dims()[0];
        let patch = model.vision_model.embeddings.patch_embedding.weight.dims()[2];
        let side = ((size - 1) as f64).sqrt().round() as usize * patch;
        Ok(Self::new(model, tokenizer, ClipPreprocess::new(side)))
    }

    /// The L2-normalised image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[B, 3, H, W]` in `[0, 1]` → `[B, projection_dim]`
    pub fn image_embeds(&self, images: Tensor<4>) -> Tensor<2> {
        l2_normalize(
            self.model
                .get_image_features(self.preprocess.forward(images)),
        )
    }

    /// The L2-normalised text embeddings of `prompts`, without gradient, on `device`. Prompts
    /// not seen before go through the text tower in one batch; the others come from the cache.
    ///
    /// # Shapes
    /// - output: `[prompts.len(), projection_dim]`
    ///
    /// # Panics
    /// If a prompt cannot be tokenized (the tokenizer encodes any UTF-8 text).
    pub fn text_embeds(&self, prompts: &[String], device: &Device) -> Tensor<2> {
        let dim = self.model.text_projection.weight.dims()[1];
        let mut cache = self
            .text_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut missing: Vec<&str> = prompts
            .iter()
            .map(String::as_str)
            .filter(|p| !cache.contains_key(*p))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if cache.len() + missing.len() > TEXT_CACHE_CAPACITY {
            cache.clear();
            missing = prompts.iter().map(String::as_str).collect();
            missing.sort_unstable();
            missing.dedup();
        }
        if !missing.is_empty() {
            let ids = self
                .tokenizer
                .encode_to_tensor(&missing, device)
                .unwrap_or_else(|e| panic!("tokenizing prompts: {e}"));
            let embeds = l2_normalize(self.model.get_text_features(ids))
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_else(|e| panic!("text embeddings as f32: {e:?}"));
            for (prompt, row) in missing.iter().zip(embeds.chunks_exact(dim)) {
                cache.insert((*prompt).to_string(), row.to_vec());
            }
        }
        let values: Vec<f32> = prompts.iter().flat_map(|p| cache[p].clone()).collect();
        Tensor::from_data(TensorData::new(values, [prompts.len(), dim]), device)
    }

    /// How many prompts' text embeddings are cached.
    pub fn cached_prompts(&self) -> usize {
        self.text_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Forget the cached text embeddings (after changing `model` or `tokenizer`).
    pub fn clear_text_cache(&self) {
        self.text_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// `cos(image, prompt)` per pair.
    ///
    /// # Shapes
    /// - `images`: `[B, 3, H, W]`, `prompts`: `B` → `[B]`
    pub fn cosine(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        let [b, ..] = images.dims();
        assert_eq!(
            prompts.len(),
            b,
            "CLIP reward: {} prompts for {b} images",
            prompts.len()
        );
        let text = self.text_embeds(prompts, &images.device());
        (self.image_embeds(images) * text).sum_dim(1).squeeze_dim(1)
    }
}

/// The tokenizer of a model folder: its files (`tokenizer.json` or `vocab.json` + `merges.txt`,
/// in the folder or its `tokenizer/`), else the embedded OpenAI CLIP vocabulary
/// ([`CLIPTokenizer::openai_clip`], which every CLIP-family reward here was trained with).
pub(crate) fn load_tokenizer(dir: &Path) -> Result<CLIPTokenizer, Error> {
    let has_tokenizer =
        |d: &Path| d.join("tokenizer.json").is_file() || d.join("vocab.json").is_file();
    let tokenizer = if has_tokenizer(dir) {
        CLIPTokenizer::from_dir(dir)?
    } else if has_tokenizer(&dir.join("tokenizer")) {
        CLIPTokenizer::from_dir(dir.join("tokenizer"))?
    } else {
        CLIPTokenizer::openai_clip()?
    };
    Ok(tokenizer)
}

/// `x / ‖x‖₂` along the last dimension.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// The CLIPScore variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClipScoreMode {
    /// `100 · cos` (torchmetrics' `CLIPScore` before its `max(·, 0)`; differentiable everywhere).
    Hundred,
    /// Hessel et al. (2021): `w · max(cos, 0)`, `w = 2.5` in the paper.
    Paper {
        /// The weight `w`.
        w: f32,
    },
}

/// CLIPScore: image–prompt agreement under CLIP (ViT-L/14 in torchmetrics, ViT-B/32 in the paper).
#[derive(Debug)]
pub struct ClipScore {
    /// The frozen CLIP model.
    pub backbone: ClipBackbone,
    /// `100 · cos` or `w · max(cos, 0)`.
    pub mode: ClipScoreMode,
    /// Text prepended to every prompt (the paper uses `"A photo depicts "`).
    pub prefix: String,
}

impl ClipScore {
    /// `100 · cos` on the `CLIPModel` at `name_or_path`, no prefix.
    pub fn from_pretrained(name_or_path: &str, device: &Device) -> Result<Self, Error> {
        Ok(Self {
            backbone: ClipBackbone::from_pretrained(name_or_path, device)?,
            mode: ClipScoreMode::Hundred,
            prefix: String::new(),
        })
    }

    /// The paper's `2.5 · max(cos, 0)` with the prefix `"A photo depicts "`.
    pub fn paper(mut self) -> Self {
        self.mode = ClipScoreMode::Paper { w: 2.5 };
        self.prefix = "A photo depicts ".into();
        self
    }
}

impl RewardModel for ClipScore {
    fn name(&self) -> &str {
        "clipscore"
    }

    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        let prompts: Vec<String> = prompts
            .iter()
            .map(|p| format!("{}{p}", self.prefix))
            .collect();
        let cos = self.backbone.cosine(images, &prompts);
        match self.mode {
            ClipScoreMode::Hundred => cos * 100.0,
            ClipScoreMode::Paper { w } => cos.clamp_min(0.0) * w,
        }
    }
}

/// PickScore v1 (Kirstain et al. 2023): `exp(logit_scale) · cos(image, prompt)` with the
/// fine-tuned CLIP-H/14 `yuvalkirstain/PickScore_v1` (about 18–23 on real images).
#[derive(Debug)]
pub struct PickScore {
    /// The frozen CLIP model.
    pub backbone: ClipBackbone,
}

impl PickScore {
    /// The hub repository of the PickScore v1 weights.
    pub const REPO: &'static str = "yuvalkirstain/PickScore_v1";

    /// Loads a `CLIPModel` folder or hub id (tokenizer as for [`ClipBackbone::from_pretrained`]).
    pub fn from_pretrained(name_or_path: &str, device: &Device) -> Result<Self, Error> {
        Ok(Self {
            backbone: ClipBackbone::from_pretrained(name_or_path, device)?,
        })
    }
}

impl RewardModel for PickScore {
    fn name(&self) -> &str {
        "pickscore"
    }

    fn reward(&self, images: Tensor<4>, prompts: &[String]) -> Tensor<1> {
        let scale = self.backbone.model.logit_scale.exp();
        self.backbone.cosine(images, prompts) * scale
    }
}

/// The LAION aesthetic predictor v2: [`AestheticHead`] on the L2-normalised CLIP ViT-L/14 image
/// embedding (`openai/clip-vit-large-patch14`). Prompts are ignored.
#[derive(Debug)]
pub struct Aesthetic {
    /// The frozen CLIP model (only its vision tower is used).
    pub backbone: ClipBackbone,
    /// The frozen head.
    pub head: AestheticHead,
}

impl Aesthetic {
    /// The CLIP model the head was trained on.
    pub const CLIP_REPO: &'static str = "openai/clip-vit-large-patch14";

    /// Loads the `CLIPModel` at `clip` (folder or hub id) and the head file (`.pth` or
    /// `.safetensors`).
    pub fn from_pretrained(
        clip: &str,
        head: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, Error> {
        Ok(Self {
            backbone: ClipBackbone::from_pretrained(clip, device)?,
            head: AestheticHead::from_file(head, device)?.no_grad(),
        })
    }

    /// Loads the `CLIPModel` at `clip` (folder or hub id; usually [`Aesthetic::CLIP_REPO`]) with
    /// the LAION head embedded in this crate ([`AestheticHead::laion`]).
    pub fn laion(clip: &str, device: &Device) -> Result<Self, Error> {
        Ok(Self {
            backbone: ClipBackbone::from_pretrained(clip, device)?,
            head: AestheticHead::laion(device)?.no_grad(),
        })
    }
}

impl RewardModel for Aesthetic {
    fn name(&self) -> &str {
        "aesthetic"
    }

    fn reward(&self, images: Tensor<4>, _prompts: &[String]) -> Tensor<1> {
        self.head.forward(self.backbone.image_embeds(images))
    }
}
