//! The Rust mirror of the module tree in tests/fixtures/scripts/lora_fixtures.py, and helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{silu, softmax};
use rocm_lora::{Conv2d, Conv2dConfig, Linear, LinearConfig, impl_lora_container};

/// PEFT targets used by the fixtures.
pub const TARGETS: [&str; 6] = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv_shortcut"];

#[derive(Module, Debug)]
pub struct Attn {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Vec<Linear>,
}
impl_lora_container!(Attn {
    to_q,
    to_k,
    to_v,
    to_out
});

impl Attn {
    /// One-head attention, `[b, n, d] -> [b, n, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (q, k, v) = (
            self.to_q.forward(x.clone()),
            self.to_k.forward(x.clone()),
            self.to_v.forward(x),
        );
        let d = q.dims()[2] as f64;
        let w = softmax(q.matmul(k.swap_dims(1, 2)).div_scalar(d.sqrt()), 2);
        self.to_out[0].forward(w.matmul(v))
    }
}

#[derive(Module, Debug)]
pub struct Resnet {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}
impl_lora_container!(Resnet {
    conv1,
    conv2,
    conv_shortcut
});

impl Resnet {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.conv2.forward(silu(self.conv1.forward(x.clone())));
        match &self.conv_shortcut {
            Some(c) => c.forward(x) + h,
            None => x + h,
        }
    }
}

#[derive(Module, Debug)]
pub struct Block {
    pub resnets: Vec<Resnet>,
    pub attn1: Attn,
    pub proj_out: Linear,
}
impl_lora_container!(Block {
    resnets,
    attn1,
    proj_out
});

impl Block {
    /// `[b, 4, h, w] -> [b, h*w, 8]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let h = self.resnets[0].forward(x);
        let [b, c, hh, ww] = h.dims();
        let t = h.reshape([b, c, hh * ww]).swap_dims(1, 2);
        let t = t.clone() + self.attn1.forward(t);
        self.proj_out.forward(t)
    }
}

#[derive(Module, Debug)]
pub struct Model {
    pub down_blocks: Vec<Block>,
}
impl_lora_container!(Model { down_blocks });

impl Model {
    pub fn new(device: &Device) -> Self {
        let lin = |bias| LinearConfig::new(8, 8).with_bias(bias).init(device);
        let conv3 = |cin| {
            Conv2dConfig::new([cin, 8], [3, 3])
                .with_padding([1, 1])
                .init(device)
        };
        Model {
            down_blocks: vec![Block {
                resnets: vec![Resnet {
                    conv1: conv3(4),
                    conv2: conv3(8),
                    conv_shortcut: Some(Conv2dConfig::new([4, 8], [1, 1]).init(device)),
                }],
                attn1: Attn {
                    to_q: lin(false),
                    to_k: lin(false),
                    to_v: lin(false),
                    to_out: vec![lin(true)],
                },
                proj_out: lin(true),
            }],
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        self.down_blocks[0].forward(x)
    }

    /// The fixture model with the base weights of `base.safetensors`, loaded by their upstream
    /// names; asserts that nothing is missing or unused.
    pub fn with_base_weights(device: &Device) -> Self {
        let mut model = Model::new(device);
        let mut store = SafetensorsStore::from_file(fixture("base.safetensors"))
            .with_from_adapter(PyTorchToBurnAdapter);
        let result = model.load_from(&mut store).unwrap();
        assert!(result.missing.is_empty(), "missing: {:?}", result.missing);
        assert!(result.unused.is_empty(), "unused: {:?}", result.unused);
        assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
        assert_eq!(result.applied.len(), 13);
        model
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A tensor of a fixture safetensors file (f32).
pub fn read_tensor<const D: usize>(file: &str, key: &str, device: &Device) -> Tensor<D> {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(key).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    let v: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_data(TensorData::new(v, view.shape().to_vec()), device)
}

pub fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}
