//! transformers' `CLIPPreTrainedModel._init_weights` for a fresh [`CLIPModel`] (factor 1,
//! `initializer_range` 0.02), drawn from a seeded host stream.
//!
//! Burn's layer defaults (embeddings from N(0, 1), Linear weights and biases Kaiming-uniform)
//! leave a small CLIP at the chance loss for its first few hundred steps: with unit-variance
//! token and position embeddings the attention logits saturate. transformers' scheme, which this
//! module reproduces by parameter path, learns at once:
//!
//! | parameter | distribution |
//! |---|---|
//! | text token and position embeddings, vision position embedding, patch embedding | N(0, 0.02²) |
//! | vision `class_embedding` | N(0, 1/width) |
//! | attention `q_proj`, `k_proj`, `v_proj` weights | N(0, 1/(width · 2 · layers)) |
//! | attention `out_proj` weight | N(0, 1/width) |
//! | MLP `fc1` weight | N(0, 1/(2 · width)) |
//! | MLP `fc2` weight | N(0, 1/(width · 2 · layers)) |
//! | `text_projection`, `visual_projection` | N(0, 1/width of their tower) |
//! | Linear biases | 0 |
//! | LayerNorm | weight 1, bias 0 (Burn's default, kept) |

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rocm_models::clip::{CLIPConfig, CLIPModel};

/// transformers' `initializer_range`.
const INITIALIZER_RANGE: f64 = 0.02;

/// Re-draws every weight of `clip` as transformers initialises a `CLIPModel` (module docs), from
/// a stream seeded by `seed`; whether each parameter is tracked is kept.
pub fn transformers_init(clip: CLIPModel, config: &CLIPConfig, seed: u64) -> CLIPModel {
    let mut mapper = TransformersInit {
        path: Vec::new(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        text: Tower {
            width: config.text_config.hidden_size as f64,
            layers: config.text_config.num_hidden_layers as f64,
        },
        vision: Tower {
            width: config.vision_config.hidden_size as f64,
            layers: config.vision_config.num_hidden_layers as f64,
        },
    };
    clip.map(&mut mapper)
}

/// Width and depth of one tower.
#[derive(Debug, Clone, Copy)]
struct Tower {
    width: f64,
    layers: f64,
}

/// What a parameter is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Normal(f64),
    Constant(f32),
    Keep,
}

struct TransformersInit {
    path: Vec<String>,
    rng: ChaCha8Rng,
    text: Tower,
    vision: Tower,
}

impl TransformersInit {
    /// The rule of the parameter at `path` (Burn's field names, which are diffusers'/
    /// transformers' except LayerNorm's `gamma`/`beta`).
    fn rule(&self, path: &[String]) -> Init {
        let Some((leaf, parents)) = path.split_last() else {
            return Init::Keep;
        };
        let tower = if matches!(
            path.first().map(String::as_str),
            Some("vision_model" | "visual_projection")
        ) {
            self.vision
        } else {
            self.text
        };
        let has = |name: &str| parents.iter().any(|p| p == name);
        let parent = parents.last().map(String::as_str).unwrap_or("");
        let in_proj = tower.width.powf(-0.5) * (2.0 * tower.layers).powf(-0.5);
        match (parent, leaf.as_str()) {
            (_, "gamma") | (_, "beta") => Init::Keep,
            ("embeddings", "class_embedding") => Init::Normal(tower.width.powf(-0.5)),
            (_, "bias") => Init::Constant(0.0),
            ("token_embedding" | "position_embedding" | "patch_embedding", "weight") => {
                Init::Normal(INITIALIZER_RANGE)
            }
            ("q_proj" | "k_proj" | "v_proj", "weight") if has("self_attn") => Init::Normal(in_proj),
            ("out_proj", "weight") if has("self_attn") => Init::Normal(tower.width.powf(-0.5)),
            ("fc1", "weight") if has("mlp") => Init::Normal((2.0 * tower.width).powf(-0.5)),
            ("fc2", "weight") if has("mlp") => Init::Normal(in_proj),
            ("text_projection" | "visual_projection", "weight") => {
                Init::Normal(tower.width.powf(-0.5))
            }
            _ => Init::Keep,
        }
    }
}

impl ModuleMapper for TransformersInit {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let rule = self.rule(&self.path);
        let values = |n: usize, rng: &mut ChaCha8Rng| -> Option<Vec<f32>> {
            match rule {
                Init::Keep => None,
                Init::Constant(c) => Some(vec![c; n]),
                Init::Normal(std) => {
                    let normal = Normal::new(0.0, std).ok()?;
                    Some((0..n).map(|_| normal.sample(rng) as f32).collect())
                }
            }
        };
        let rng = &mut self.rng;
        param.map(|t| {
            let dims = t.dims();
            let Some(v) = values(dims.iter().product(), rng) else {
                return t;
            };
            let fresh = Tensor::from_data(TensorData::new(v, dims), &t.device());
            if t.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ModuleVisitor;

    /// `(path, std, mean)` of every float parameter.
    struct Stats(Vec<String>, Vec<(String, f64, f64)>);

    impl ModuleVisitor for Stats {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = crate::train::host_values(param.val());
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / n;
            self.1.push((self.0.join("."), var.sqrt(), mean));
        }
    }

    #[test]
    fn every_weight_gets_transformers_scale() {
        let bpe = crate::tokenizer::WorldBpe::learn();
        let config = super::super::clip::world_clip_config(&bpe, 64, 2);
        let device = Device::flex();
        let clip = transformers_init(config.init(&device), &config, 3);
        let mut stats = Stats(Vec::new(), Vec::new());
        clip.visit(&mut stats);
        let find = |suffix: &str| {
            stats
                .1
                .iter()
                .find(|(p, _, _)| p.ends_with(suffix))
                .unwrap_or_else(|| panic!("no parameter ending in {suffix}"))
                .clone()
        };
        let close = |suffix: &str, want: f64| {
            let (p, std, mean) = find(suffix);
            assert!(
                (std - want).abs() < 0.1 * want && mean.abs() < 0.2 * want,
                "{p}: std {std}, mean {mean}, want std {want}"
            );
        };
        close("text_model.embeddings.token_embedding.weight", 0.02);
        close("vision_model.embeddings.position_embedding.weight", 0.02);
        close("vision_model.embeddings.patch_embedding.weight", 0.02);
        close("vision_model.embeddings.class_embedding", 0.125);
        close("layers.0.self_attn.q_proj.weight", 0.0625);
        close("layers.1.self_attn.out_proj.weight", 0.125);
        close("layers.0.mlp.fc1.weight", 128f64.powf(-0.5));
        close("layers.0.mlp.fc2.weight", 0.0625);
        close("text_projection.weight", 0.125);
        close("visual_projection.weight", 0.125);
        let (p, std, mean) = find("layers.0.self_attn.k_proj.bias");
        assert!(std == 0.0 && mean == 0.0, "{p}: {std} {mean}");
        let (p, std, mean) = find("final_layer_norm.gamma");
        assert!(std == 0.0 && mean == 1.0, "{p}: {std} {mean}");
        // Seeded: the same seed gives the same weights, another seed others.
        let again = transformers_init(config.init(&device), &config, 3);
        let other = transformers_init(config.init(&device), &config, 4);
        let w = |m: &CLIPModel| {
            crate::train::host_values(m.text_model.embeddings.token_embedding.weight.val())
        };
        assert_eq!(w(&clip), w(&again));
        assert_ne!(w(&clip), w(&other));
    }

    #[test]
    fn tracked_weights_stay_tracked() {
        let bpe = crate::tokenizer::WorldBpe::learn();
        let config = super::super::clip::world_clip_config(&bpe, 16, 1);
        let device = Device::flex().autodiff();
        let clip = transformers_init(config.init(&device), &config, 0);
        assert!(clip.visual_projection.weight.val().is_require_grad());
        assert!(
            clip.text_model
                .embeddings
                .token_embedding
                .weight
                .val()
                .is_require_grad()
        );
    }
}
