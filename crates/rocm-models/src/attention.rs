//! diffusers `models/attention.py` and `attention_processor.py`: `Attention` (scaled dot-product,
//! `AttnProcessor2_0`), `FeedForward` with `GEGLU`, `BasicTransformerBlock`.

use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;
// Burn's `attention` op, with the fused Flex kernel (forward and backward) in `f32` on the CPU.
use rocm_kernels::attention;
use rocm_lora::{Linear, LinearConfig, impl_lora_container};

/// Configuration of an [`Attention`] layer.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the queries (and of the output).
    pub query_dim: usize,
    /// Width of the keys/values source; `None` for self-attention.
    #[config(default = "None")]
    pub cross_attention_dim: Option<usize>,
    /// Number of heads.
    #[config(default = 8)]
    pub heads: usize,
    /// Width of one head.
    #[config(default = 64)]
    pub dim_head: usize,
    /// Whether `to_q`/`to_k`/`to_v` have biases (`False` in the UNet, `True` in the VAE).
    #[config(default = false)]
    pub bias: bool,
    /// GroupNorm groups applied to the input first (the VAE's mid-block attention); `None`: none.
    #[config(default = "None")]
    pub norm_num_groups: Option<usize>,
    /// Epsilon of that GroupNorm.
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl AttentionConfig {
    /// Builds the layer with random weights.
    pub fn init(&self, device: &Device) -> Attention {
        let inner = self.heads * self.dim_head;
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        let proj = |a, b| LinearConfig::new(a, b).with_bias(self.bias).init(device);
        Attention {
            group_norm: self.norm_num_groups.map(|g| {
                GroupNormConfig::new(g, self.query_dim)
                    .with_epsilon(self.eps)
                    .init(device)
            }),
            to_q: proj(self.query_dim, inner),
            to_k: proj(kv_dim, inner),
            to_v: proj(kv_dim, inner),
            to_out: vec![LinearConfig::new(inner, self.query_dim).init(device)],
            heads: self.heads,
        }
    }
}

/// Multi-head scaled dot-product attention (Vaswani et al. 2017) with diffusers' layer names:
///
/// ```text
/// out = to_out.0(concat_h softmax(Q_h K_hᵀ / √d_head) V_h),  Q = to_q(x), K = to_k(c), V = to_v(c)
/// ```
/// with `c = x` for self-attention. Computed by `rocm_kernels::attention` (Burn's `attention` op,
/// or on Flex a fused kernel with its own backward).
///
/// # Shapes
/// - `x`: `[B, N, query_dim]`, `context`: `[B, M, cross_attention_dim]`
/// - output: `[B, N, query_dim]`
#[derive(Module, Debug)]
pub struct Attention {
    /// Optional GroupNorm over the channels of the input (VAE only).
    pub group_norm: Option<GroupNorm>,
    /// Query projection.
    pub to_q: Linear,
    /// Key projection.
    pub to_k: Linear,
    /// Value projection.
    pub to_v: Linear,
    /// Output projection (diffusers' `ModuleList [Linear, Dropout]`: key `to_out.0`).
    pub to_out: Vec<Linear>,
    /// Number of heads.
    pub heads: usize,
}
impl_lora_container!(Attention {
    to_q,
    to_k,
    to_v,
    to_out
});

impl Attention {
    fn split_heads(&self, t: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = t.dims();
        t.reshape([b, n, self.heads, c / self.heads])
            .swap_dims(1, 2)
    }

    /// Attends from `x` to `context` (to `x` itself when `None`).
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(self.to_q.forward(x));
        let k = self.split_heads(self.to_k.forward(context.clone()));
        let v = self.split_heads(self.to_v.forward(context));
        let o = attention(q, k, v);
        let [b, h, n, d] = o.dims();
        let o = o.swap_dims(1, 2).reshape([b, n, h * d]);
        self.to_out[0].forward(o)
    }

    /// The VAE's spatial self-attention: `x + attn(group_norm(x))` over the `H·W` positions.
    ///
    /// # Shapes
    /// - `x`, output: `[B, C, H, W]`
    pub fn forward_spatial(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => rocm_kernels::group_norm(norm, x.clone()),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self
            .forward(tokens, None)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}

/// diffusers `GEGLU` (Shazeer 2020): `h ⊙ gelu(g)` with `[h, g] = proj(x)` split in halves.
///
/// # Shapes
/// - `x`: `[B, N, dim_in]`, output: `[B, N, dim_out]`
#[derive(Module, Debug)]
pub struct GEGLU {
    /// Projection to `2 · dim_out`.
    pub proj: Linear,
}
impl_lora_container!(GEGLU { proj });

impl GEGLU {
    /// Applies the gated unit.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // One fused kernel with its own backward on Flex, Burn's ops elsewhere.
        rocm_kernels::geglu(self.proj.forward(x))
    }
}

/// diffusers `FeedForward` with `activation_fn="geglu"`, `mult=4`:
/// `net.2(GEGLU_{net.0}(x))` (`net.1` is dropout). Burn fields `net_0`/`net_2` load from the keys
/// `ff.net.0.*`/`ff.net.2.*` through one remapping rule each; LoRA paths print `net.0`/`net.2`.
///
/// # Shapes
/// - `x`, output: `[B, N, dim]`
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `net.0`: the GEGLU projection `dim → 2 · 4dim`.
    pub net_0: GEGLU,
    /// `net.2`: the output projection `4dim → dim`.
    pub net_2: Linear,
}
impl_lora_container!(FeedForward { net_0 => "net.0", net_2 => "net.2" });

impl FeedForward {
    /// Builds the layers with random weights (`inner = 4 · dim`).
    pub fn new(dim: usize, device: &Device) -> Self {
        let inner = 4 * dim;
        Self {
            net_0: GEGLU {
                proj: LinearConfig::new(dim, 2 * inner).init(device),
            },
            net_2: LinearConfig::new(inner, dim).init(device),
        }
    }

    /// Applies the feed-forward network.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.net_2.forward(self.net_0.forward(x))
    }
}

/// Configuration of a [`BasicTransformerBlock`].
#[derive(Config, Debug)]
pub struct BasicTransformerBlockConfig {
    /// Width (`heads · dim_head`).
    pub dim: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub dim_head: usize,
    /// Width of the text embeddings.
    pub cross_attention_dim: usize,
}

impl BasicTransformerBlockConfig {
    /// Builds the block with random weights.
    pub fn init(&self, device: &Device) -> BasicTransformerBlock {
        let attn = |cross| {
            AttentionConfig::new(self.dim)
                .with_cross_attention_dim(cross)
                .with_heads(self.heads)
                .with_dim_head(self.dim_head)
                .init(device)
        };
        let norm = || LayerNormConfig::new(self.dim).init(device);
        BasicTransformerBlock {
            norm1: norm(),
            attn1: attn(None),
            norm2: norm(),
            attn2: attn(Some(self.cross_attention_dim)),
            norm3: norm(),
            ff: FeedForward::new(self.dim, device),
        }
    }
}

/// diffusers `BasicTransformerBlock` (`norm_type="layer_norm"`), pre-norm residuals:
///
/// ```text
/// x = x + attn1(norm1(x));  x = x + attn2(norm2(x), text);  x = x + ff(norm3(x))
/// ```
///
/// # Shapes
/// - `x`, output: `[B, N, dim]`; `encoder_hidden_states`: `[B, M, cross_attention_dim]`
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// LayerNorm before self-attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn1: Attention,
    /// LayerNorm before cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention to the text embeddings.
    pub attn2: Attention,
    /// LayerNorm before the feed-forward network.
    pub norm3: LayerNorm,
    /// GEGLU feed-forward network.
    pub ff: FeedForward,
}
impl_lora_container!(BasicTransformerBlock { attn1, attn2, ff });

impl BasicTransformerBlock {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<3>, encoder_hidden_states: Tensor<3>) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(encoder_hidden_states))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    #[test]
    fn attention_matches_manual_softmax_per_head() {
        let device = Device::flex();
        let attn = AttentionConfig::new(8)
            .with_cross_attention_dim(Some(6))
            .with_heads(2)
            .with_dim_head(4)
            .init(&device);
        let x = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let c = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        let out = attn.forward(x.clone(), Some(c.clone()));
        let (q, k, v) = (
            attn.to_q.forward(x),
            attn.to_k.forward(c.clone()),
            attn.to_v.forward(c),
        );
        let heads: Vec<Tensor<3>> = (0..2)
            .map(|h| {
                let part = |t: &Tensor<3>| t.clone().narrow(2, 4 * h, 4);
                let scores = part(&q).matmul(part(&k).swap_dims(1, 2)) / 2.0; // √4
                softmax(scores, 2).matmul(part(&v))
            })
            .collect();
        let manual = attn.to_out[0].forward(Tensor::cat(heads, 2));
        let diff = (out - manual).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn geglu_gates_the_first_half_with_gelu_of_the_second() {
        let device = Device::flex();
        let ff = FeedForward::new(2, &device);
        let x = Tensor::<3>::random([1, 3, 2], Distribution::Normal(0.0, 1.0), &device);
        let y = ff.net_0.proj.forward(x.clone());
        let manual = y.clone().narrow(2, 0, 8) * burn::tensor::activation::gelu(y.narrow(2, 8, 8));
        let diff = (ff.net_0.forward(x) - manual)
            .abs()
            .max()
            .into_scalar::<f32>();
        // The fused kernel's erf is within 1.5e-7 of libm's.
        assert!(diff < 1e-6, "{diff}");
    }
}
