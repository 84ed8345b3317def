//! Helpers for the parity tests of the rocm-rs crates: reading the reference tensors that the
//! fixture scripts (`tests/fixtures/scripts/`) write with PyTorch, and comparing against them.
//! A dev-dependency only; not published.

pub mod fuzz;

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use burn::store::bridge::to_data;
use burn::store::{ModuleStore, SafetensorsStore};

/// Every tensor of a safetensors file by name, in the file's own dtypes.
///
/// # Panics
/// If the file cannot be read or a tensor cannot be materialised (a test fixture is broken).
pub fn read_safetensors(path: &Path) -> HashMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(path);
    let all = store
        .get_all_tensors()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    all.iter()
        .map(|(k, t)| {
            let data = to_data(t).unwrap_or_else(|e| panic!("{}: {k}: {e:?}", path.display()));
            (k.clone(), data)
        })
        .collect()
}

/// [`read_safetensors`] with every tensor converted to `f32`.
///
/// # Panics
/// As [`read_safetensors`].
pub fn read_safetensors_f32(path: &Path) -> HashMap<String, TensorData> {
    read_safetensors(path)
        .into_iter()
        .map(|(k, v)| (k, v.convert::<f32>()))
        .collect()
}

/// The largest absolute difference between `got` and the reference `want` (any float dtype);
/// NaN when any difference is NaN, so that a NaN output fails every `< tol` check.
///
/// # Panics
/// If the shapes differ.
pub fn max_abs_diff<const D: usize>(got: Tensor<D>, want: &TensorData) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape().to_vec(), "shape");
    let got = f32s(got.into_data());
    let want = f32s(want.clone());
    assert_eq!(got.len(), want.len(), "element count");
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, |m, d| {
            if m.is_nan() || d.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

fn f32s(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_else(|e| panic!("f32 data: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_never_within_tolerance() {
        let device = Device::flex();
        let want = TensorData::new(vec![1.0f32, 2.0, 3.0], [3]);
        let close = Tensor::<1>::from_floats([1.0, 2.5, 3.0], &device);
        assert_eq!(max_abs_diff(close, &want), 0.5);
        let nan = Tensor::<1>::from_floats([1.0, f32::NAN, 3.0], &device);
        assert!(max_abs_diff(nan, &want).is_nan());
    }
}
