//! Property tests: adapters off is the base, merge is exact up to rounding, unmerge undoes merge.
#![allow(clippy::unwrap_used)]

use burn::prelude::*;
use proptest::prelude::*;
use rocm_lora::{
    Conv2d, Conv2dConfig, InitLoraWeights, Linear, LinearConfig, LoraConfig, TargetModules,
    impl_lora_container, merge_adapters, unmerge_adapters, with_adapters_disabled,
};

#[derive(Module, Debug)]
struct Pair {
    lin: Linear,
    conv: Conv2d,
}
impl_lora_container!(Pair { lin, conv });

fn input<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i as f64 + 1.0) * 0.7 + seed as f64).sin() as f32)
        .collect::<Vec<_>>();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn max_abs<const D: usize>(t: Tensor<D>) -> f32 {
    t.abs().max().into_scalar::<f32>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn off_is_base_and_merge_round_trips(
        d_in in 1usize..6, d_out in 1usize..6, r in 1usize..4, alpha in 0.5f64..8.0,
        kernel in prop::sample::select(vec![1usize, 3]), stride in 1usize..3, seed in 0u64..1000,
        rslora in any::<bool>(),
    ) {
        let device = Device::flex();
        let padding = kernel / 2;
        let mut pair = Pair {
            lin: LinearConfig::new(d_in, d_out).init(&device),
            conv: Conv2dConfig::new([d_in, d_out], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding([padding, padding])
                .init(&device),
        };
        let x = input([2, 3, d_in], seed, &device);
        let img = input([2, d_in, 5, 5], seed + 1, &device);
        let forward = |p: &Pair| (p.lin.forward(x.clone()), p.conv.forward(img.clone()));
        let (base_l, base_c) = forward(&pair);
        let weight_l = pair.lin.weight.val();
        let config = LoraConfig::new(r, alpha, TargetModules::names(&["lin", "conv"]))
            .with_init_lora_weights(InitLoraWeights::Random)
            .with_use_rslora(rslora)
            .with_seed(seed);
        rocm_lora::apply_lora(&mut pair, &config).unwrap();

        let (on_l, on_c) = forward(&pair);
        let (off_l, off_c) = with_adapters_disabled(|| forward(&pair));
        prop_assert_eq!(off_l.to_data(), base_l.to_data());
        prop_assert_eq!(off_c.to_data(), base_c.to_data());

        let tol = 1e-5 * (1.0 + max_abs(on_l.clone()).max(max_abs(on_c.clone())));
        prop_assert_eq!(merge_adapters(&mut pair), 2);
        let (m_l, m_c) = forward(&pair);
        prop_assert!(max_abs(m_l - on_l.clone()) < tol);
        prop_assert!(max_abs(m_c - on_c.clone()) < tol);
        let (mo_l, mo_c) = with_adapters_disabled(|| forward(&pair));
        prop_assert!(max_abs(mo_l - base_l) < tol);
        prop_assert!(max_abs(mo_c - base_c) < tol);

        prop_assert_eq!(unmerge_adapters(&mut pair), 2);
        prop_assert!(max_abs(pair.lin.weight.val() - weight_l) < 1e-5);
        let (u_l, u_c) = forward(&pair);
        prop_assert!(max_abs(u_l - on_l) < tol);
        prop_assert!(max_abs(u_c - on_c) < tol);
    }
}
