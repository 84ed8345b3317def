//! Only adapter parameters are trainable.
#![allow(clippy::unwrap_used)]

mod common;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{Model, TARGETS};
use rocm_lora::{
    InitLoraWeights, LoraConfig, LoraContainer, LoraLayerRef, TargetModules, apply_lora,
};

#[test]
fn only_adapters_get_gradients_and_reach_the_optimizer() {
    let device = Device::flex().autodiff();
    let mut model = Model::new(&device);
    let config = LoraConfig::new(4, 8.0, TargetModules::names(&TARGETS))
        .with_init_lora_weights(InitLoraWeights::Gaussian)
        .with_lora_dropout(0.1);
    let report = apply_lora(&mut model, &config).unwrap();
    assert_eq!(report.wrapped.len(), 6);
    assert_eq!(
        report.skipped,
        ["down_blocks.0.resnets.0.conv2", "down_blocks.0.proj_out"]
    );

    let x = Tensor::<4>::ones([1, 4, 3, 3], &device);
    let grads = model.forward(x).square().mean().backward();

    let (mut with_grad, mut base_without) = (0, 0);
    model.visit_lora_layers("", &mut |path, layer| match layer {
        LoraLayerRef::Linear(l) => {
            assert!(l.weight.val().grad(&grads).is_none(), "{path}.weight");
            assert!(
                l.bias
                    .as_ref()
                    .is_none_or(|b| b.val().grad(&grads).is_none())
            );
            base_without += 1;
            if let Some(a) = &l.lora {
                assert!(a.lora_a.val().grad(&grads).is_some(), "{path} lora_A");
                assert!(a.lora_b.val().grad(&grads).is_some(), "{path} lora_B");
                with_grad += 2;
            }
        }
        LoraLayerRef::Conv2d(c) => {
            assert!(c.weight.val().grad(&grads).is_none(), "{path}.weight");
            assert!(
                c.bias
                    .as_ref()
                    .is_none_or(|b| b.val().grad(&grads).is_none())
            );
            base_without += 1;
            if let Some(a) = &c.lora {
                assert!(a.lora_a.val().grad(&grads).is_some(), "{path} lora_A");
                assert!(a.lora_b.val().grad(&grads).is_some(), "{path} lora_B");
                with_grad += 2;
            }
        }
    });
    assert_eq!((with_grad, base_without), (12, 8));

    let gp = GradientsParams::from_grads(grads, &model);
    assert_eq!(gp.len(), 2 * report.wrapped.len());
    let before = model.down_blocks[0]
        .attn1
        .to_q
        .lora
        .as_ref()
        .unwrap()
        .lora_b
        .val()
        .inner();
    let model = AdamWConfig::new().init().step(1e-2, model, gp);
    let after = model.down_blocks[0]
        .attn1
        .to_q
        .lora
        .as_ref()
        .unwrap()
        .lora_b
        .val()
        .inner();
    assert!(
        (after - before).abs().max().into_scalar::<f32>() > 0.0,
        "B moved"
    );
}
