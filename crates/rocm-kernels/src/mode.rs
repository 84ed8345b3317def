//! The process-wide switch between the fused kernels and Burn's composed ops.

use std::sync::atomic::{AtomicU8, Ordering};

/// Which implementation the functions of this crate use on Flex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMode {
    /// This crate's kernels where they apply (`f32` on Flex), composed ops elsewhere: the default.
    Fused,
    /// Burn's composed ops everywhere: the reference the kernels are compared and timed against.
    Composed,
}

const UNSET: u8 = 0;
const FUSED: u8 = 1;
const COMPOSED: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(UNSET);

/// The current mode: what [`set_mode`] last set, else `ROCM_KERNELS=composed` (or `fused`, the
/// default) from the environment, read once.
pub fn mode() -> KernelMode {
    match MODE.load(Ordering::Relaxed) {
        FUSED => KernelMode::Fused,
        COMPOSED => KernelMode::Composed,
        _ => {
            let from_env = match std::env::var("ROCM_KERNELS").as_deref() {
                Ok("composed") => KernelMode::Composed,
                _ => KernelMode::Fused,
            };
            // Another thread may have called `set_mode` meanwhile: keep its choice.
            let _ = MODE.compare_exchange(
                UNSET,
                encode(from_env),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            decode(MODE.load(Ordering::Relaxed))
        }
    }
}

/// Sets the mode for the whole process (every thread, from the next op on).
pub fn set_mode(mode: KernelMode) {
    MODE.store(encode(mode), Ordering::Relaxed);
}

fn encode(mode: KernelMode) -> u8 {
    match mode {
        KernelMode::Fused => FUSED,
        KernelMode::Composed => COMPOSED,
    }
}

fn decode(value: u8) -> KernelMode {
    if value == COMPOSED {
        KernelMode::Composed
    } else {
        KernelMode::Fused
    }
}
