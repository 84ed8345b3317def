//! The kernels themselves, on plain `f32` slices (no Burn types): what the Flex implementations
//! in `ops` call, testable and benchmarkable on their own.
//!
//! Every loop is written branch-free so that LLVM vectorises it, and each kernel body is a
//! `simd_fn!` function: compiled twice more through [`pulp::Arch::dispatch`], with AVX2 + FMA and
//! with AVX-512, and the best copy the CPU runs picked at run time (the baseline x86-64 build
//! only has SSE2).

/// Elements per rayon task of the element-wise kernels: below this a split costs more than it
/// saves (a wake-up is a few microseconds; a pass over 16 K floats about as long).
pub(crate) const CHUNK: usize = 16 * 1024;

/// Defines `fn $name<'a>(args) -> ret` whose body is compiled again with AVX2 + FMA and with
/// AVX-512 through [`pulp::Arch::dispatch`], the best copy picked at run time.
///
/// A closure handed to `dispatch` is not enough: LLVM keeps a large closure as a function of its
/// own, compiled for the baseline (SSE2), and calls it. Here the body is the `#[inline(always)]`
/// `with_simd` of a struct holding the arguments, so it is inlined into pulp's `#[target_feature]`
/// wrapper, and with it every `#[inline(always)]` helper it calls. All reference arguments share
/// the one lifetime `'a`.
macro_rules! simd_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<'a>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name<'a>($($arg: $ty),*) $(-> $ret)? {
            struct Op<'a> {
                $($arg: $ty,)*
                _lifetime: std::marker::PhantomData<&'a ()>,
            }
            impl<'a> pulp::WithSimd for Op<'a> {
                type Output = simd_fn!(@ret $($ret)?);
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
                    let Op { $($arg,)* _lifetime } = self;
                    let _ = _lifetime;
                    $body
                }
            }
            pulp::Arch::new().dispatch(Op { $($arg,)* _lifetime: std::marker::PhantomData })
        }
    };
    (@ret) => { () };
    (@ret $ret:ty) => { $ret };
}

/// `sin(i · step)` for `i < n`: smooth, sign-changing test inputs.
#[cfg(test)]
pub(crate) fn test_values(n: usize, step: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * step).sin()).collect()
}

pub mod attention;
pub mod conv3x3;
pub mod exp;
pub mod geglu;
pub mod group_norm;
pub mod im2col;
pub mod silu;
