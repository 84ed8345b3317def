//! Data parallelism on the host CPU: every step's batch is split into [`SHARDS`] slices whose
//! losses and gradients are computed concurrently, each on its own copy of the model
//! ([`Module::fork`]: the same parameters and ids, a separate autodiff graph) in its own rayon
//! pool, and the gradients are summed before one optimiser step.
//!
//! The world's models are small: one op on a batch of them is too short for burn-flex to split
//! well over two threads (a 2-thread step of the CLIP stage took 103 ms, a 1-thread one 116 ms,
//! two 1-thread half-batch steps side by side 56 ms each; the repository's docs/performance.md,
//! "Building the shapes world"). Two shards of half a batch, each on one thread, keep both
//! cores busy with whole ops instead.
//!
//! Every shard sees the step's *whole* batch, drawn from the step's seed exactly as one worker
//! would draw it (by the stage once, or by each shard), and computes the loss of its own rows
//! ([`Shard::rows`]) weighted by its share of the
//! batch ([`Shard::weight`]), so the summed loss and gradient are those of the whole batch and a
//! stage's batches do not depend on the shard count. The shard count is a constant, not the
//! machine's core count, so a build is reproducible everywhere; within a shard sums run on one
//! thread (with more than [`SHARDS`] cores, on `cores / SHARDS`).

use std::ops::Range;
use std::sync::OnceLock;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Slices every step's batch is split into.
pub const SHARDS: usize = 2;

/// One shard of a step's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Its position, `0..count`.
    pub index: usize,
    /// Its rows of the batch.
    pub rows: Range<usize>,
    /// The whole batch's size.
    pub batch: usize,
}

impl Shard {
    /// The whole batch as one shard (what a single worker computes).
    pub fn whole(batch: usize) -> Self {
        Self {
            index: 0,
            rows: 0..batch,
            batch,
        }
    }

    /// Shard `index` of `count` contiguous slices of a batch of `batch` (the first
    /// `batch % count` slices one row longer).
    pub fn of(index: usize, count: usize, batch: usize) -> Self {
        let count = count.max(1);
        let (base, extra) = (batch / count, batch % count);
        let start = index * base + index.min(extra);
        let len = base + usize::from(index < extra);
        Self {
            index,
            rows: start..start + len,
            batch,
        }
    }

    /// Rows in the shard.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the shard has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Its share of the batch: the weight of a loss averaged over its rows, so that the
    /// weighted shard losses sum to the batch's average.
    pub fn weight(&self) -> f64 {
        self.len() as f64 / self.batch.max(1) as f64
    }

    /// Its rows of `items` (one item per row of the batch).
    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        &items[self.rows.clone()]
    }

    /// Its rows of a tensor's first axis.
    pub fn narrow<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.rows == (0..x.dims()[0]) {
            return x;
        }
        x.narrow(0, self.rows.start, self.len())
    }

    /// Its rows of an integer tensor's first axis (token ids).
    pub fn narrow_int<const D: usize>(&self, x: Tensor<D, Int>) -> Tensor<D, Int> {
        if self.rows == (0..x.dims()[0]) {
            return x;
        }
        x.narrow(0, self.rows.start, self.len())
    }
}

fn pools() -> &'static [rayon::ThreadPool] {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = (cores / SHARDS).max(1);
        (0..SHARDS)
            .filter_map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |t| format!("rocm-shapes-shard-{i}-{t}"))
                    .build()
                    .ok()
            })
            .collect()
    })
}

/// Runs `f(s, items[s])` for every shard `s` at once, each in its own thread pool (so that
/// Burn's CPU kernels called inside run on that pool's threads), and returns the results in
/// shard order. A panic in a shard is re-raised here.
///
/// # Panics
/// When `items` does not hold one item per shard, or a shard panics.
pub fn run<I: Send, T: Send>(items: Vec<I>, f: impl Fn(usize, I) -> T + Sync) -> Vec<T> {
    assert_eq!(items.len(), SHARDS, "one item per shard");
    let pools = pools();
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(s, item)| {
                scope.spawn(move || match pools.get(s) {
                    Some(pool) => pool.install(|| f(s, item)),
                    None => f(s, item),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Whether every parameter of `model` holds its value (none still waits for lazy initialisation).
///
/// Burn draws a lazily initialised parameter from the device's generator when it is first read:
/// in a forward pass, in the order the pass reads them. Forking reads them in the module's
/// order instead, which hands each parameter other random numbers than a single worker's first
/// step would (same distributions, but the one world VAE trained from the module's order reached
/// 29.0 / 28.3 dB PSNR where the same code in forward order reached 33.7 / 32.5, one run each).
/// So a model with lazy parameters takes its first step whole
/// ([`crate::train::Trainer::step_data_parallel`]), exactly as one worker would.
pub fn is_materialized<M: Module>(model: &M) -> bool {
    struct Lazy(bool);
    impl ModuleVisitor for Lazy {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= !param.is_initialized();
        }
    }
    let mut lazy = Lazy(false);
    model.visit(&mut lazy);
    !lazy.0
}

/// `model` forked once per shard: the same parameters (values and ids) as fresh autodiff
/// leaves, so each shard's backward pass walks its own graph.
///
/// Every tracked parameter of `model` must take part in the shard's loss: a tracked leaf that no
/// loss reads is orphaned in Burn's graph registry, one per parameter per fork per step, and
/// the registry's cleaner walks them all on every backward pass (freeze such parameters with
/// `no_grad`, as the aesthetic stage does with the CLIP's text tower).
pub fn forks<M: Module>(model: &M) -> Vec<M> {
    let devices = model.devices();
    (0..SHARDS)
        .map(|_| match devices.first() {
            Some(device) => model.clone().fork(device),
            None => model.clone(),
        })
        .collect()
}

/// The loss value and the parameter gradients of one shard's backward pass through `model`.
pub fn backward<M: Module>(model: &M, loss: Tensor<1>) -> (f32, GradientsParams) {
    let value = super::scalar(loss.clone());
    (value, GradientsParams::from_grads(loss.backward(), model))
}

/// The batch's loss and gradients by data parallelism: `loss(fork, shard)` for every shard of a
/// batch of `batch` rows at once, each on its own fork of `model`, returning the shard's share
/// of the batch's loss (e.g. its mean times [`Shard::weight`]); the values and the gradients
/// are summed over the shards.
pub fn gradients<M: Module + Send>(
    model: &M,
    batch: usize,
    loss: impl Fn(&M, &Shard) -> Tensor<1> + Sync,
) -> (f32, GradientsParams) {
    let results = run(forks(model), |s, fork| {
        let shard = Shard::of(s, SHARDS, batch);
        backward(&fork, loss(&fork, &shard))
    });
    let (values, grads): (Vec<f32>, Vec<GradientsParams>) = results.into_iter().unzip();
    (values.iter().sum(), sum_gradients(model, grads))
}

/// The sum, parameter by parameter and in shard order, of the shards' gradients of `model`.
pub fn sum_gradients<M: Module>(model: &M, shards: Vec<GradientsParams>) -> GradientsParams {
    struct Sum {
        shards: Vec<GradientsParams>,
        out: GradientsParams,
    }
    impl ModuleVisitor for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let total = self
                .shards
                .iter_mut()
                .filter_map(|g| g.remove::<D>(param.id))
                .reduce(|a, b| a + b);
            if let Some(total) = total {
                self.out.register::<D>(param.id, total);
            }
        }
    }
    let mut sum = Sum {
        shards,
        out: GradientsParams::new(),
    };
    model.visit(&mut sum);
    sum.out
}
