//! The adapters on/off switch: a scoped, thread-local flag read by every LoRA layer's forward.
//!
//! PEFT writes `with model.disable_adapter(): base_out = model(x)`. Here the same is
//! [`with_adapters_disabled`]`(|| model.forward(x))`: it needs only `&self`, copies no weights,
//! and nests and unwinds correctly (the previous state is restored by a drop guard, also on panic).
//!
//! Why thread-local: a forward pass records its graph on the calling thread (Burn's kernels may
//! run on a thread pool, but layer code — where the flag is read — runs on the caller's
//! thread), so a thread-local flag scopes exactly one call tree and no other thread's model.
//! Work that the closure hands to another thread (e.g. `rocm_sampler`'s `concurrent` option)
//! runs with that thread's own flag: disable the adapters inside the code that runs there.

use std::cell::Cell;

thread_local! {
    static DISABLED_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether LoRA adapters are active on this thread (true outside any [`with_adapters_disabled`]).
pub fn adapters_enabled() -> bool {
    DISABLED_DEPTH.with(|d| d.get() == 0)
}

/// Restores the previous depth when dropped, including during unwinding.
struct DisableGuard;

impl Drop for DisableGuard {
    fn drop(&mut self) {
        DISABLED_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Run `f` with every LoRA adapter switched off on this thread: the frozen base model.
///
/// Unmerged layers then compute exactly (bitwise) their base output. Merged layers compute with
/// `W - scale·ΔW` (the base up to float rounding; see [`Linear::forward`](crate::Linear::forward)).
///
/// ```
/// assert!(rocm_lora::adapters_enabled());
/// let inside = rocm_lora::with_adapters_disabled(rocm_lora::adapters_enabled);
/// assert!(!inside && rocm_lora::adapters_enabled());
/// ```
pub fn with_adapters_disabled<R>(f: impl FnOnce() -> R) -> R {
    DISABLED_DEPTH.with(|d| d.set(d.get() + 1));
    let _guard = DisableGuard;
    f()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_restores() {
        assert!(adapters_enabled());
        with_adapters_disabled(|| {
            assert!(!adapters_enabled());
            with_adapters_disabled(|| assert!(!adapters_enabled()));
            assert!(!adapters_enabled());
        });
        assert!(adapters_enabled());
    }

    #[test]
    fn restores_after_panic() {
        let r = std::panic::catch_unwind(|| with_adapters_disabled(|| panic!("boom")));
        assert!(r.is_err());
        assert!(adapters_enabled());
    }

    #[test]
    fn is_per_thread() {
        with_adapters_disabled(|| {
            let other = std::thread::spawn(adapters_enabled).join().unwrap_or(false);
            assert!(other, "another thread must still see adapters on");
        });
    }
}
