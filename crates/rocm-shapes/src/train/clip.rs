//! The CLIP stage: a transformers `CLIPModel` (text + vision towers, projections, learned
//! `logit_scale`) initialised as transformers does ([`super::clip_init`]), trained contrastively
//! on (render, caption) pairs with the world's tokenizer plus a training-only shape head read off
//! both towers' embeddings ([`stage_loss`]), and its zero-shot colour and shape accuracy on
//! held-out renders. Shared with [`super::pref`]: [`ClipTrain`], the CLIPModel with a trainable
//! temperature, and the folder export.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, log_softmax};
use rocm_models::clip::{CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, EosTokenId};
use rocm_models::tokenizer::CLIPTokenizer;
use rocm_rewards::ClipBackbone;
use rocm_rewards::clip_rewards::l2_normalize;
use rocm_rewards::preprocess::ClipPreprocess;

use super::{OnStep, Shard, StageOptions, StepReport, Trainer, clip_init, random_scene, shards};
use crate::Error;
use crate::export::{ExtraTensor, Storage, save_module};
use crate::render::{Image, render, render_perturbed};
use crate::tokenizer::{WORLD_MAX_LENGTH, WorldBpe};
use crate::world::{COLOURS, IMAGE_SIZE, SHAPES, Split};

/// The world CLIP's architecture: width 64, 2 layers, 4 heads per tower, 4 × 4 patches of the
/// 32 × 32 image, projection 64, the world tokenizer's vocabulary and length.
pub fn world_clip_config(bpe: &WorldBpe, width: usize, layers: usize) -> CLIPConfig {
    let text = CLIPTextConfig {
        vocab_size: bpe.vocab.len(),
        hidden_size: width,
        intermediate_size: 2 * width,
        projection_dim: Some(width),
        num_hidden_layers: layers,
        num_attention_heads: 4,
        max_position_embeddings: WORLD_MAX_LENGTH,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
        eos_token_id: EosTokenId::One(bpe.eos_token_id() as i64),
    };
    let vision = CLIPVisionConfig {
        hidden_size: width,
        intermediate_size: 2 * width,
        projection_dim: Some(width),
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_channels: 3,
        image_size: IMAGE_SIZE,
        patch_size: 4,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
    };
    CLIPConfig {
        text_config: text,
        vision_config: vision,
        projection_dim: width,
        logit_scale_init_value: 2.6592,
    }
}

/// A `CLIPModel` with its temperature as a trainable parameter, and, in the CLIP stage, a
/// training-only shape head.
#[derive(Module, Debug)]
pub struct ClipTrain {
    /// The dual encoder.
    pub clip: CLIPModel,
    /// `ln(1 / temperature)`, `[1]`.
    pub logit_scale: Param<Tensor<1>>,
    /// `projection_dim → shapes`: logits of which shapes a caption names, read off the
    /// L2-normalised image and text embeddings ([`stage_loss`]); not part of the exported model.
    pub shape_head: Option<Linear>,
}

impl ClipTrain {
    /// Wraps `clip`, starting the temperature at its `logit_scale`; no shape head.
    pub fn new(clip: CLIPModel, device: &Device) -> Self {
        let scale = Tensor::from_floats([clip.logit_scale], device);
        Self {
            clip,
            logit_scale: Param::from_tensor(scale),
            shape_head: None,
        }
    }

    /// [`ClipTrain::new`] with a fresh shape head on `projection_dim`-wide embeddings.
    pub fn with_shape_head(clip: CLIPModel, projection_dim: usize, device: &Device) -> Self {
        Self {
            shape_head: Some(LinearConfig::new(projection_dim, SHAPES.len()).init(device)),
            ..Self::new(clip, device)
        }
    }

    /// L2-normalised image embeddings of images in `[0, 1]` (CLIP preprocessing included).
    pub fn image_embeds(&self, images: Tensor<4>) -> Tensor<2> {
        let x = ClipPreprocess::new(IMAGE_SIZE).forward(images);
        l2_normalize(self.clip.get_image_features(x))
    }

    /// L2-normalised text embeddings.
    pub fn text_embeds(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        l2_normalize(self.clip.get_text_features(ids))
    }

    /// `exp(logit_scale)`, `[1]`.
    pub fn scale(&self) -> Tensor<1> {
        self.logit_scale.val().clamp_max(4.6052).exp()
    }

    /// The `CLIPModel` with the learned `logit_scale` folded in, without autodiff.
    pub fn to_clip(&self) -> CLIPModel {
        let mut clip = self.clip.valid();
        clip.logit_scale = super::scalar(self.logit_scale.val().clamp_max(4.6052));
        clip
    }
}

/// The weight of [`shape_loss`] next to the contrastive loss in the CLIP stage.
pub const SHAPE_LOSS_WEIGHT: f64 = 1.0;

/// The CLIP stage's loss on a batch: [`contrastive_loss`], plus, when `model` has a shape head,
/// [`SHAPE_LOSS_WEIGHT`] × the [`shape_loss`] of that one head on the image embeddings and on the
/// text embeddings (one head for both puts a shape's direction at the same place in both towers'
/// space, which is what zero-shot classification by shape reads).
pub fn stage_loss(model: &ClipTrain, batch: &ClipBatch, ids: Tensor<2, Int>) -> Tensor<1> {
    let device = ids.device();
    let img = model.image_embeds(Image::batch(&batch.images, &device));
    let txt = model.text_embeds(ids);
    embedding_loss(model, img, txt, batch)
}

/// [`stage_loss`] from the batch's embeddings (`[b, d]` each, L2-normalised).
pub fn embedding_loss(
    model: &ClipTrain,
    img: Tensor<2>,
    txt: Tensor<2>,
    batch: &ClipBatch,
) -> Tensor<1> {
    let contrastive = contrastive_loss(model, img.clone(), txt.clone(), &batch.captions);
    match &model.shape_head {
        Some(head) => {
            let aux = shape_loss(head, img, &batch.shapes) + shape_loss(head, txt, &batch.shapes);
            contrastive + aux * SHAPE_LOSS_WEIGHT
        }
        None => contrastive,
    }
}

/// One data-parallel step of [`stage_loss`] ([`super::shards`]). The contrastive loss couples
/// every image with every caption of the batch, so it is not a sum over shards; instead each
/// shard embeds its own rows, the shards exchange the embeddings' values, and each computes the
/// whole batch's loss with its own rows tracked and the others' as constants. By the chain rule
/// the towers' gradients then sum over the shards to the batch's; the parameters applied after
/// the exchange (`logit_scale`, the shape head) see every row in every shard, so only shard 0
/// keeps their gradients. Returns the batch's loss and the summed gradients.
pub fn sharded_gradients(
    model: &ClipTrain,
    batch: &ClipBatch,
    ids: &Tensor<2, Int>,
) -> (f32, GradientsParams) {
    let b = batch.captions.len();
    let embedded = shards::run(shards::forks(model), |s, model| {
        let shard = Shard::of(s, shards::SHARDS, b);
        let device = ids.device();
        let img = model.image_embeds(Image::batch(shard.slice(&batch.images), &device));
        let txt = model.text_embeds(shard.narrow_int(ids.clone()));
        let values = (
            img.clone().detach().into_data(),
            txt.clone().detach().into_data(),
        );
        ((model, img, txt), values)
    });
    let (items, values): (Vec<_>, Vec<_>) = embedded.into_iter().unzip();
    let results = shards::run(items, |s, (model, img, txt)| {
        let device = ids.device();
        let gather = |own: Tensor<2>, pick: fn(&(TensorData, TensorData)) -> &TensorData| {
            let parts = values
                .iter()
                .enumerate()
                .map(|(r, v)| {
                    if r == s {
                        own.clone()
                    } else {
                        Tensor::from_data(pick(v).clone(), &device)
                    }
                })
                .collect();
            Tensor::cat(parts, 0)
        };
        let (img, txt) = (gather(img, |v| &v.0), gather(txt, |v| &v.1));
        let (value, mut grads) = shards::backward(&model, embedding_loss(&model, img, txt, batch));
        if s > 0 {
            let _ = grads.remove::<1>(model.logit_scale.id);
            if let Some(head) = &model.shape_head {
                let _ = grads.remove::<2>(head.weight.id);
                if let Some(bias) = &head.bias {
                    let _ = grads.remove::<1>(bias.id);
                }
            }
        }
        (value, grads)
    });
    let (values, grads): (Vec<f32>, Vec<_>) = results.into_iter().unzip();
    (
        values.first().copied().unwrap_or(f32::NAN),
        shards::sum_gradients(model, grads),
    )
}

/// Binary cross-entropy of `head`'s logits on embeddings `embeds` (`[b, d]`, image or text)
/// against which shapes each scene holds, averaged over scenes and shapes.
///
/// The contrastive loss alone leaves a small vision tower nearly blind to shape: colour is close
/// to linear in the pixels and separates most captions of a batch, while shape has to be read off
/// colour-mixed boundary patches. This auxiliary target makes the embeddings carry shape
/// directly (measured in the crate README).
pub fn shape_loss(head: &Linear, embeds: Tensor<2>, shapes: &[[bool; SHAPES.len()]]) -> Tensor<1> {
    let device = embeds.device();
    let n = SHAPES.len();
    let targets: Vec<f32> = shapes
        .iter()
        .flat_map(|row| row.iter().map(|&on| f32::from(u8::from(on))))
        .collect();
    let y = Tensor::<2>::from_data(TensorData::new(targets, [shapes.len(), n]), &device);
    let z = head.forward(embeds);
    let per = y.clone() * log_sigmoid(z.clone()) + (y.neg() + 1.0) * log_sigmoid(z.neg());
    -per.mean().reshape([1])
}

/// The symmetric contrastive loss of L2-normalised image and text embeddings: logits
/// `exp(s) · cos` between every image and every caption; the targets spread each row over the
/// captions equal to the row's own (duplicates are positives, not negatives).
pub fn contrastive_loss(
    model: &ClipTrain,
    img: Tensor<2>,
    txt: Tensor<2>,
    captions: &[String],
) -> Tensor<1> {
    let device = img.device();
    let b = captions.len();
    let logits = img.matmul(txt.transpose()) * model.scale().reshape([1, 1]);
    let mut targets = vec![0.0f32; b * b];
    for i in 0..b {
        let same: Vec<usize> = (0..b).filter(|&j| captions[j] == captions[i]).collect();
        for &j in &same {
            targets[i * b + j] = 1.0 / same.len() as f32;
        }
    }
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [b, b]), &device);
    let rows = -(log_softmax(logits.clone(), 1) * targets.clone()).sum() / b as f64;
    let cols = -(log_softmax(logits, 0) * targets.transpose()).sum() / b as f64;
    (rows + cols) * 0.5
}

/// The fraction of a CLIP batch's scenes that come with a [`shape_twin`] (hard negatives).
pub const TWIN_FRACTION: f64 = 0.5;

/// `scene` with one object (chosen by `rng`) drawn as another shape, re-captioned; `None` when
/// every other shape would make a combination the training split holds out.
///
/// Within a random batch almost every caption already differs in colour, size, position or
/// background, so the contrastive loss alone barely needs the shape; a twin that differs only in
/// shape makes the shape the one thing that tells the pair apart.
pub fn shape_twin(
    rng: &mut rand::rngs::ChaCha8Rng,
    scene: &crate::world::Scene,
) -> Option<crate::world::Scene> {
    use rand::RngExt;
    let k = rng.random_range(0..scene.objects.len());
    let o = scene.objects[k];
    let others: Vec<_> = SHAPES
        .iter()
        .copied()
        .filter(|&s| s != o.shape && !crate::world::is_held_out(o.colour, s))
        .collect();
    if others.is_empty() {
        return None;
    }
    let mut twin = scene.clone();
    twin.objects[k].shape = others[rng.random_range(0..others.len())];
    twin.caption = crate::world::caption(&twin.objects, twin.background, twin.named);
    Some(twin)
}

/// One CLIP training batch.
#[derive(Debug, Clone)]
pub struct ClipBatch {
    /// Renders in `[0, 1]`.
    pub images: Vec<Image>,
    /// Their captions.
    pub captions: Vec<String>,
    /// Which of [`SHAPES`] each scene holds (what its caption names).
    pub shapes: Vec<[bool; SHAPES.len()]>,
}

/// A batch of (render, caption) of random training scenes, [`TWIN_FRACTION`] of them followed
/// by their [`shape_twin`]; a fifth of the renders carry a mild taste perturbation (the caption
/// still holds).
pub fn batch(options: &StageOptions, k: usize) -> ClipBatch {
    use rand::RngExt;
    let mut rng = options.rng(k);
    let mut scenes = Vec::with_capacity(options.batch);
    while scenes.len() < options.batch {
        let scene = random_scene(&mut rng, Split::Train);
        let twin = if rng.random_bool(TWIN_FRACTION) && scenes.len() + 1 < options.batch {
            shape_twin(&mut rng, &scene)
        } else {
            None
        };
        scenes.push(scene);
        scenes.extend(twin);
    }
    let shapes = scenes
        .iter()
        .map(|scene| SHAPES.map(|s| scene.objects.iter().any(|o| o.shape == s)))
        .collect();
    let (images, captions) = scenes
        .into_iter()
        .map(|scene| {
            let image = if rng.random_bool(0.2) {
                let p =
                    super::random_perturbations(&mut rng, &crate::render::TASTE_PERTURBATIONS, 1);
                let mild: Vec<_> = p.into_iter().map(|(q, t)| (q, 0.5 * t)).collect();
                render_perturbed(&scene, &mild, rng.random())
            } else {
                render(&scene)
            };
            (image, scene.caption)
        })
        .unzip();
    ClipBatch {
        images,
        captions,
        shapes,
    }
}

/// Trains (or resumes) the CLIP model; checkpoints go to `work/checkpoint`.
pub fn train(
    config: &CLIPConfig,
    tokenizer: &CLIPTokenizer,
    options: &StageOptions,
    work: &Path,
    device: &Device,
    on_step: OnStep<'_>,
) -> Result<CLIPModel, Error> {
    let device = device.clone().autodiff();
    options.seed_device(&device);
    let mut clip = clip_init::transformers_init(config.init(&device), config, options.seed);
    let ckpt = work.join("checkpoint");
    let start = resume(&mut clip, &ckpt)?;
    let model = ClipTrain::with_shape_head(clip, config.projection_dim, &device);
    let mut trainer = if start > 0 {
        Trainer::resume(model, &ckpt)?
    } else {
        Trainer::new(model)
    };
    for k in start..options.steps {
        let batch = batch(options, k);
        let refs: Vec<&str> = batch.captions.iter().map(String::as_str).collect();
        let ids = tokenizer.encode_to_tensor(&refs, &device)?;
        let loss = trainer.step_data_parallel(
            options.lr_at(k),
            |model| stage_loss(model, &batch, ids.clone()),
            |model| sharded_gradients(model, &batch, &ids),
        );
        on_step(StepReport {
            step: k + 1,
            total: options.steps,
            loss,
        });
        checkpoint(&trainer, options, k + 1, &ckpt)?;
    }
    Ok(trainer.model.to_clip())
}

/// Loads a checkpoint into `clip` if `ckpt` has one; returns the step to start from.
pub(crate) fn resume(clip: &mut CLIPModel, ckpt: &Path) -> Result<usize, Error> {
    match super::checkpoint_step(ckpt)? {
        Some(step) => {
            clip.load_safetensors(&ckpt.join("model.safetensors"))?;
            Ok(step)
        }
        None => Ok(0),
    }
}

/// Writes the checkpoint when `done` is a multiple of `checkpoint_every` or the last step.
pub(crate) fn checkpoint(
    trainer: &Trainer<ClipTrain>,
    options: &StageOptions,
    done: usize,
    ckpt: &Path,
) -> Result<(), Error> {
    if options.checkpoint_due(done) {
        save_clip(
            &trainer.model.to_clip(),
            Storage::F32,
            &ckpt.join("model.safetensors"),
        )?;
        trainer.save_state(ckpt)?;
        super::write_checkpoint_step(ckpt, done)?;
    }
    Ok(())
}

/// Saves a `CLIPModel` with its `logit_scale` in transformers' key layout.
pub fn save_clip(clip: &CLIPModel, storage: Storage, path: &Path) -> Result<(), Error> {
    let scale = ExtraTensor {
        name: "logit_scale".into(),
        values: vec![clip.logit_scale],
        shape: vec![],
    };
    save_module(clip, &[scale], storage, path)
}

/// The transformers `config.json` of a `CLIPModel`.
pub fn transformers_config(config: &CLIPConfig, bpe: &WorldBpe) -> serde_json::Value {
    let t = &config.text_config;
    let v = &config.vision_config;
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.projection_dim,
        "logit_scale_init_value": config.logit_scale_init_value,
        "initializer_factor": 1.0,
        "torch_dtype": "float16",
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "projection_dim": config.projection_dim,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": t.hidden_act,
            "layer_norm_eps": t.layer_norm_eps,
            "attention_dropout": 0.0,
            "bos_token_id": bpe.bos_token_id(),
            "eos_token_id": bpe.eos_token_id(),
            "pad_token_id": bpe.eos_token_id(),
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "projection_dim": config.projection_dim,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "num_channels": v.num_channels,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": v.hidden_act,
            "layer_norm_eps": v.layer_norm_eps,
            "attention_dropout": 0.0,
        },
    })
}

/// Writes a transformers `CLIPModel` folder: `config.json`, f16 `model.safetensors`, the
/// tokenizer files and `preprocessor_config.json` (`CLIPImageProcessor` at 32 × 32).
pub fn export(
    clip: &CLIPModel,
    config: &CLIPConfig,
    bpe: &WorldBpe,
    dir: &Path,
) -> Result<(), Error> {
    crate::io::write_json(&dir.join("config.json"), &transformers_config(config, bpe))?;
    save_clip(clip, Storage::F16, &dir.join("model.safetensors"))?;
    bpe.write(dir)?;
    let processor = serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": IMAGE_SIZE},
        "do_center_crop": true,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": rocm_rewards::preprocess::CLIP_MEAN,
        "image_std": rocm_rewards::preprocess::CLIP_STD,
        "resample": 3,
        "do_convert_rgb": true,
    });
    crate::io::write_json(&dir.join("preprocessor_config.json"), &processor)
}

/// Zero-shot accuracy on the single-object scenes among `scenes`: `(colour, shape)`. A colour's
/// text embedding is the normalised mean over shapes of `"a {colour} {shape}"` (and a shape's
/// the mean over colours); an image is assigned the class of highest cosine.
pub fn zero_shot(
    backbone: &ClipBackbone,
    scenes: &[crate::world::Scene],
    device: &Device,
) -> (f64, f64) {
    let singles: Vec<&crate::world::Scene> =
        scenes.iter().filter(|s| s.objects.len() == 1).collect();
    let prompts: Vec<String> = COLOURS
        .iter()
        .flat_map(|c| {
            SHAPES
                .iter()
                .map(move |s| format!("a {} {}", c.word(), s.word()))
        })
        .collect();
    let text = super::host_values(backbone.text_embeds(&prompts, device));
    let d = text.len() / prompts.len();
    let class_embed = |members: &dyn Fn(usize) -> bool| {
        let mut e = vec![0.0f32; d];
        for (p, row) in text.chunks_exact(d).enumerate() {
            if members(p) {
                e.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-8);
        e.iter().map(|v| v / norm).collect::<Vec<f32>>()
    };
    let ns = SHAPES.len();
    let colours: Vec<Vec<f32>> = (0..COLOURS.len())
        .map(|c| class_embed(&|p| p / ns == c))
        .collect();
    let shapes: Vec<Vec<f32>> = (0..ns).map(|s| class_embed(&|p| p % ns == s)).collect();
    let (mut colour_ok, mut shape_ok) = (0usize, 0usize);
    for chunk in singles.chunks(64) {
        let images: Vec<Image> = chunk.iter().map(|s| render(s)).collect();
        let embeds = super::host_values(backbone.image_embeds(Image::batch(&images, device)));
        for (scene, e) in chunk.iter().zip(embeds.chunks_exact(d)) {
            let best = |classes: &[Vec<f32>]| {
                (0..classes.len())
                    .max_by(|&a, &b| dot(e, &classes[a]).total_cmp(&dot(e, &classes[b])))
                    .unwrap_or(0)
            };
            let o = scene.objects[0];
            colour_ok += usize::from(COLOURS[best(&colours)] == o.colour);
            shape_ok += usize::from(SHAPES[best(&shapes)] == o.shape);
        }
    }
    let n = singles.len().max(1) as f64;
    (colour_ok as f64 / n, shape_ok as f64 / n)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
