//! The process-wide switch (its own test binary: it changes global state).

use burn::prelude::*;
use rocm_kernels::{KernelMode, mode, set_mode, takes_kernel};

#[test]
fn composed_mode_and_non_f32_inputs_skip_the_kernels() {
    let device = Device::flex();
    let x = Tensor::<2>::zeros([2, 3], &device);
    assert_eq!(mode(), KernelMode::Fused, "fused by default");
    assert!(takes_kernel(&x));
    assert!(takes_kernel(&Tensor::<2>::zeros(
        [2, 3],
        &device.autodiff()
    )));
    assert!(!takes_kernel(&x.clone().cast(burn::tensor::DType::F16)));
    set_mode(KernelMode::Composed);
    assert_eq!(mode(), KernelMode::Composed);
    assert!(!takes_kernel(&x));
    set_mode(KernelMode::Fused);
    assert!(takes_kernel(&x));
}
