//! Two independent pieces of work at once, for [`crate::SamplerOptions::concurrent`].

/// Runs `a` on this thread and `b` on a scoped second thread when `concurrent`, else one after
/// the other (`a` first). A panic on the second thread is re-raised on this one.
pub(crate) fn run_pair<A, B: Send>(
    concurrent: bool,
    a: impl FnOnce() -> A,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !concurrent {
        let first = a();
        return (first, b());
    }
    std::thread::scope(|s| {
        let handle = s.spawn(b);
        let first = a();
        let second = handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (first, second)
    })
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
