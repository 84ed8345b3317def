//! Walking a model's LoRA-capable layers by diffusers module path, and the model-wide
//! operations built on it: [`apply_lora`], [`merge_adapters`], [`unmerge_adapters`].
//!
//! Burn's `ModuleMapper` only sees parameters, so it cannot add an adapter to a layer; the
//! [`LoraContainer`] trait is the small per-container glue that can. Implement it with
//! [`impl_lora_container!`](crate::impl_lora_container) on every struct that (transitively) holds
//! a [`Linear`] or [`Conv2d`]; `Vec<T>` (paths `blocks.0`), `Option<T>` and `Box<T>` are covered.

use burn::module::Module;

use crate::config::{FactorInit, LoraConfig};
use crate::{Conv2d, Error, Linear};

/// Shared access to one LoRA-capable layer.
#[derive(Debug, Clone, Copy)]
pub enum LoraLayerRef<'a> {
    /// A [`Linear`].
    Linear(&'a Linear),
    /// A [`Conv2d`].
    Conv2d(&'a Conv2d),
}

/// Mutable access to one LoRA-capable layer.
#[derive(Debug)]
pub enum LoraLayerMut<'a> {
    /// A [`Linear`].
    Linear(&'a mut Linear),
    /// A [`Conv2d`].
    Conv2d(&'a mut Conv2d),
}

impl LoraLayerRef<'_> {
    /// Whether the layer carries an adapter.
    pub fn has_adapter(&self) -> bool {
        match self {
            Self::Linear(l) => l.lora.is_some(),
            Self::Conv2d(c) => c.lora.is_some(),
        }
    }

    /// Whether the layer's adapter is merged into its weight.
    pub fn is_merged(&self) -> bool {
        match self {
            Self::Linear(l) => l.merged,
            Self::Conv2d(c) => c.merged,
        }
    }
}

impl LoraLayerMut<'_> {
    fn merge(&mut self) {
        match self {
            Self::Linear(l) => l.merge(),
            Self::Conv2d(c) => c.merge(),
        }
    }

    fn unmerge(&mut self) {
        match self {
            Self::Linear(l) => l.unmerge(),
            Self::Conv2d(c) => c.unmerge(),
        }
    }

    fn unfreeze_adapter(&mut self) {
        match self {
            Self::Linear(l) => {
                if let Some(a) = l.lora.take() {
                    l.lora = Some(a.set_require_grad(true));
                }
            }
            Self::Conv2d(c) => {
                if let Some(a) = c.lora.take() {
                    c.lora = Some(a.set_require_grad(true));
                }
            }
        }
    }
}

/// A module tree whose LoRA-capable layers can be reached by dotted path.
///
/// Paths are built from field names (or the names given to
/// [`impl_lora_container!`](crate::impl_lora_container)) and `Vec` indices, exactly like
/// PyTorch's `named_modules()`, so they print as diffusers' do:
/// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`.
pub trait LoraContainer {
    /// Call `f` with the path and layer of every LoRA-capable layer below `self`, whose own
    /// path is `path` (`""` at the root), in a fixed (declaration) order.
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>));
    /// Mutable twin of [`visit_lora_layers`](Self::visit_lora_layers), same order.
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>));
}

/// `prefix.name`, or `name` at the root.
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl LoraContainer for Linear {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        f(path, LoraLayerRef::Linear(self));
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        f(path, LoraLayerMut::Linear(self));
    }
}

impl LoraContainer for Conv2d {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        f(path, LoraLayerRef::Conv2d(self));
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        f(path, LoraLayerMut::Conv2d(self));
    }
}

impl<T: LoraContainer> LoraContainer for Vec<T> {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_lora_layers(&join_path(path, &i.to_string()), f);
        }
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_lora_layers_mut(&join_path(path, &i.to_string()), f);
        }
    }
}

impl<T: LoraContainer> LoraContainer for Option<T> {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        if let Some(m) = self {
            m.visit_lora_layers(path, f);
        }
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        if let Some(m) = self {
            m.visit_lora_layers_mut(path, f);
        }
    }
}

impl<T: LoraContainer> LoraContainer for Box<T> {
    fn visit_lora_layers(&self, path: &str, f: &mut dyn FnMut(&str, LoraLayerRef<'_>)) {
        (**self).visit_lora_layers(path, f);
    }
    fn visit_lora_layers_mut(&mut self, path: &str, f: &mut dyn FnMut(&str, LoraLayerMut<'_>)) {
        (**self).visit_lora_layers_mut(path, f);
    }
}

/// Implement [`LoraContainer`] for a struct by listing the fields that hold LoRA-capable
/// layers (directly or below). A field can be given another path name with `field => "name"`
/// (e.g. a Burn field `to_out_0` that diffusers calls `to_out.0`); prefer naming fields like
/// diffusers (`to_out: Vec<Linear>` already prints `to_out.0`).
///
/// ```
/// use burn::prelude::*;
/// use rocm_lora::{Linear, impl_lora_container};
///
/// #[derive(Module, Debug)]
/// struct Attention { to_q: Linear, to_k: Linear, to_v: Linear, to_out: Vec<Linear>, heads: usize }
/// impl_lora_container!(Attention { to_q, to_k, to_v, to_out });
/// ```
#[macro_export]
macro_rules! impl_lora_container {
    ($ty:ty { $($field:ident $(=> $name:literal)?),* $(,)? }) => {
        impl $crate::LoraContainer for $ty {
            fn visit_lora_layers(
                &self,
                path: &str,
                f: &mut dyn FnMut(&str, $crate::LoraLayerRef<'_>),
            ) {
                $(
                    $crate::LoraContainer::visit_lora_layers(
                        &self.$field,
                        &$crate::join_path(path, $crate::__lora_field_name!($field $(, $name)?)),
                        f,
                    );
                )*
            }
            fn visit_lora_layers_mut(
                &mut self,
                path: &str,
                f: &mut dyn FnMut(&str, $crate::LoraLayerMut<'_>),
            ) {
                $(
                    $crate::LoraContainer::visit_lora_layers_mut(
                        &mut self.$field,
                        &$crate::join_path(path, $crate::__lora_field_name!($field $(, $name)?)),
                        f,
                    );
                )*
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lora_field_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $name:literal) => {
        $name
    };
}

/// What [`apply_lora`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraReport {
    /// Paths of the layers that got an adapter, in traversal order.
    pub wrapped: Vec<String>,
    /// Paths of LoRA-capable layers that were not targeted.
    pub skipped: Vec<String>,
}

/// Paths of every LoRA-capable layer, in traversal order.
pub fn lora_capable_paths<M: LoraContainer>(model: &M) -> Vec<String> {
    let mut out = Vec::new();
    model.visit_lora_layers("", &mut |p, _| out.push(p.to_string()));
    out
}

/// Paths of the layers that carry an adapter, in traversal order.
pub fn adapter_paths<M: LoraContainer>(model: &M) -> Vec<String> {
    let mut out = Vec::new();
    model.visit_lora_layers("", &mut |p, l| {
        if l.has_adapter() {
            out.push(p.to_string());
        }
    });
    out
}

/// Attach fresh adapters to the layers chosen by `config.target_modules`, PEFT's
/// `get_peft_model`: every parameter of `model` is frozen, then the adapters are added
/// (trainable). Factors are drawn on the host from `config.seed`, in traversal order, and
/// created on each layer's own device (an autodiff device makes them tracked).
///
/// A layer that already has an unmerged adapter gets a new one. Fails, leaving `model`
/// unchanged, when no layer matches, the regex is invalid, a target is a grouped
/// convolution or a merged layer.
pub fn apply_lora<M: Module + LoraContainer>(
    model: &mut M,
    config: &LoraConfig,
) -> Result<LoraReport, Error> {
    config.validate()?;
    let matcher = config.target_modules.matcher()?;
    let mut report = LoraReport {
        wrapped: Vec::new(),
        skipped: Vec::new(),
    };
    let mut problem = None;
    model.visit_lora_layers("", &mut |path, layer| {
        if !matcher.matches(path) {
            report.skipped.push(path.to_string());
            return;
        }
        if layer.is_merged() {
            problem.get_or_insert(Error::Unsupported {
                path: path.to_string(),
                reason: "the adapter is merged; unmerge before attaching a new one".into(),
            });
        }
        if let LoraLayerRef::Conv2d(c) = layer
            && let Err(reason) = c.check_adaptable()
        {
            problem.get_or_insert(Error::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        report.wrapped.push(path.to_string());
    });
    if let Some(e) = problem {
        return Err(e);
    }
    if report.wrapped.is_empty() {
        return Err(no_match(
            &config.target_modules.to_string(),
            &report.skipped,
        ));
    }

    freeze_all_but_adapters(model);
    let mut init = FactorInit::new(config.seed, config.init_lora_weights);
    let (r, alpha, rs, p) = (
        config.r,
        config.lora_alpha,
        config.use_rslora,
        config.lora_dropout,
    );
    model.visit_lora_layers_mut("", &mut |path, layer| {
        if !matcher.matches(path) {
            return;
        }
        match layer {
            LoraLayerMut::Linear(l) => l.attach(r, alpha, rs, p, &mut init),
            LoraLayerMut::Conv2d(c) => c.attach(r, alpha, rs, p, &mut init),
        }
    });
    log::info!(
        "LoRA r={r} alpha={alpha}: wrapped {} layers",
        report.wrapped.len()
    );
    Ok(report)
}

pub(crate) fn no_match(targets: &str, available: &[String]) -> Error {
    let mut list = available
        .iter()
        .take(12)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if available.len() > 12 {
        list.push_str(&format!(", ... ({} in all)", available.len()));
    }
    if available.is_empty() {
        list = "(none: does the model implement LoraContainer for its fields?)".into();
    }
    Error::NoTargetMatched {
        targets: targets.to_string(),
        available: list,
    }
}

/// Freeze every parameter (`no_grad`) and make the existing adapters trainable again.
pub(crate) fn freeze_all_but_adapters<M: Module + LoraContainer>(model: &mut M) {
    *model = model.clone().no_grad();
    model.visit_lora_layers_mut("", &mut |_, mut layer| layer.unfreeze_adapter());
}

/// Fold every adapter into its base weight (PEFT's `merge_adapter`); forward passes then cost
/// what the base costs. Adapters stay attached, so [`unmerge_adapters`] undoes it up to float
/// rounding. Returns the number of layers merged.
pub fn merge_adapters<M: LoraContainer>(model: &mut M) -> usize {
    let mut n = 0;
    model.visit_lora_layers_mut("", &mut |_, mut layer| {
        let before = layer_is_merged(&layer);
        layer.merge();
        n += usize::from(!before && layer_is_merged(&layer));
    });
    n
}

/// Subtract every merged adapter from its base weight again. Returns the number unmerged.
pub fn unmerge_adapters<M: LoraContainer>(model: &mut M) -> usize {
    let mut n = 0;
    model.visit_lora_layers_mut("", &mut |_, mut layer| {
        let before = layer_is_merged(&layer);
        layer.unmerge();
        n += usize::from(before && !layer_is_merged(&layer));
    });
    n
}

fn layer_is_merged(layer: &LoraLayerMut<'_>) -> bool {
    match layer {
        LoraLayerMut::Linear(l) => l.merged,
        LoraLayerMut::Conv2d(c) => c.merged,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Conv2dConfig, LinearConfig, TargetModules};
    use burn::prelude::*;

    #[derive(Module, Debug)]
    struct Attn {
        to_q: Linear,
        to_out: Vec<Linear>,
    }
    impl_lora_container!(Attn { to_q, to_out });

    #[derive(Module, Debug)]
    struct Net {
        attn1: Attn,
        blocks: Vec<Attn>,
        conv_shortcut: Option<Conv2d>,
        renamed: Linear,
    }
    impl_lora_container!(Net { attn1, blocks, conv_shortcut, renamed => "proj.0" });

    fn net(device: &Device) -> Net {
        let lin = || LinearConfig::new(4, 4).init(device);
        let attn = || Attn {
            to_q: lin(),
            to_out: vec![lin()],
        };
        Net {
            attn1: attn(),
            blocks: vec![attn(), attn()],
            conv_shortcut: Some(Conv2dConfig::new([4, 4], [1, 1]).init(device)),
            renamed: lin(),
        }
    }

    #[test]
    fn paths_print_like_diffusers() {
        let paths = lora_capable_paths(&net(&Device::flex()));
        assert_eq!(
            paths,
            [
                "attn1.to_q",
                "attn1.to_out.0",
                "blocks.0.to_q",
                "blocks.0.to_out.0",
                "blocks.1.to_q",
                "blocks.1.to_out.0",
                "conv_shortcut",
                "proj.0"
            ]
        );
    }

    #[test]
    fn targets_choose_layers_and_no_match_is_an_error() {
        let mut n = net(&Device::flex());
        let cfg = LoraConfig::new(2, 4.0, TargetModules::names(&["to_out.0", "conv_shortcut"]));
        let report = apply_lora(&mut n, &cfg).unwrap();
        assert_eq!(
            report.wrapped,
            [
                "attn1.to_out.0",
                "blocks.0.to_out.0",
                "blocks.1.to_out.0",
                "conv_shortcut"
            ]
        );
        assert_eq!(adapter_paths(&n), report.wrapped);

        let cfg = LoraConfig::new(2, 4.0, TargetModules::names(&["to_k"]));
        let err = apply_lora(&mut n, &cfg).unwrap_err();
        assert!(matches!(err, Error::NoTargetMatched { .. }));
        assert!(err.to_string().contains("attn1.to_q"), "{err}");

        let cfg = LoraConfig::new(2, 4.0, TargetModules::Regex(r"blocks\.1\..*".into()));
        let report = apply_lora(&mut n, &cfg).unwrap();
        assert_eq!(report.wrapped, ["blocks.1.to_q", "blocks.1.to_out.0"]);
        assert_eq!(adapter_paths(&n).len(), 5);
    }

    #[test]
    fn merge_counts_and_is_idempotent() {
        let mut n = net(&Device::flex());
        let cfg = LoraConfig::new(2, 4.0, TargetModules::names(&["to_q"]));
        apply_lora(&mut n, &cfg).unwrap();
        assert_eq!(merge_adapters(&mut n), 3);
        assert_eq!(merge_adapters(&mut n), 0);
        assert!(
            apply_lora(&mut n, &cfg).is_err(),
            "attaching to merged layers is refused"
        );
        assert_eq!(unmerge_adapters(&mut n), 3);
    }
}
