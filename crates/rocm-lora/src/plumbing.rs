//! The adapter bookkeeping that [`crate::Linear`] and [`crate::Conv2d`] share: installing an
//! adapter, freezing the base, and folding the delta in and out. The two layers differ in the rank
//! of their weight, so the methods are written once here and stamped into each.

/// Implements `set_adapter`, `freeze_base`, `merge` and `unmerge` for a layer with fields
/// `weight: Param<Tensor<_>>`, `bias: Option<Param<_>>`, `lora: Option<$lora>` and `merged: bool`,
/// where `$lora::delta_weight()` has the weight's shape.
macro_rules! adapter_plumbing {
    ($layer:ty, $lora:ty) => {
        impl $layer {
            /// Install an adapter and freeze the base.
            pub(crate) fn set_adapter(&mut self, lora: $lora) {
                self.freeze_base();
                self.lora = Some(lora);
                self.merged = false;
            }

            /// Freeze the base weight and bias.
            pub(crate) fn freeze_base(&mut self) {
                self.weight = self.weight.clone().set_require_grad(false);
                self.bias = self.bias.take().map(|b| b.set_require_grad(false));
            }

            /// Fold `scale · ΔW` into the base weight (no-op without adapter or when already
            /// merged).
            pub fn merge(&mut self) {
                if let (Some(lora), false) = (&self.lora, self.merged) {
                    let delta = lora.delta_weight().detach();
                    self.weight = self.weight.clone().map(|w| w + delta);
                    self.merged = true;
                }
            }

            /// Subtract the folded delta again (no-op unless merged).
            pub fn unmerge(&mut self) {
                if let (Some(lora), true) = (&self.lora, self.merged) {
                    let delta = lora.delta_weight().detach();
                    self.weight = self.weight.clone().map(|w| w - delta);
                    self.merged = false;
                }
            }
        }
    };
}

pub(crate) use adapter_plumbing;
