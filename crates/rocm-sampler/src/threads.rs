//! Two independent pieces of work at once, for [`crate::SamplerOptions::concurrent`].

/// Runs `a` and `b` as a `rayon::join` when `concurrent` (both may run on the rayon pool's
/// threads, the one Burn's CPU kernels share: an idle worker takes `b` while `a` runs), else one
/// after the other (`a` first). A panic in either is re-raised on the calling thread.
///
/// `rayon::join` costs microseconds where spawning a thread costs tens of them, which matters
/// for small models whose whole step takes a fraction of a millisecond.
pub(crate) fn run_pair<A: Send, B: Send>(
    concurrent: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !concurrent {
        let first = a();
        return (first, b());
    }
    rayon::join(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_orders_give_both_results_and_panics_cross_threads() {
        for concurrent in [false, true] {
            assert_eq!(run_pair(concurrent, || 1, || "two"), (1, "two"));
        }
        let caught = std::panic::catch_unwind(|| run_pair(true, || (), || panic!("second")));
        let payload = caught.expect_err("the second thread's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"second"));
    }
}
