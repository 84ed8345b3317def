//! Data-parallel training on one machine (docs/scaling.md): one replica of the trainer per
//! device, each in its own thread, the batch sharded by rank.
//!
//! Every iteration the main replica (rank 0, the [`crate::RocmTrainer`] itself) draws the
//! whole effective batch from the run's RNG — exactly the draws of one device with
//! `batch_size × devices` prompts per micro-batch — and gives rank `r` the `r`-th slice of
//! every micro-batch, so no two ranks ever sample the same (prompt, noise seed). Each rank
//! sends its adapter gradients to the main replica on the host; their sum is the gradient of
//! the whole batch, which is clipped and applied by one optimiser step on the main device; the
//! new adapter values go to every replica with the next command. Checkpoints and metrics are
//! written by rank 0 only, and evaluation pairs are sharded across the ranks and gathered.
//!
//! This path needs no collectives, so it runs on every backend (Flex, wgpu, CUDA) and is what
//! the CPU tests check: 2 replicas × batch 1 give the update of 1 device × batch 2.

mod shard;
mod transfer;
mod worker;

use std::fmt;
use std::sync::Arc;

use burn::prelude::Device;

pub use shard::{MAX_DEVICES, accumulation_for, effective_batch, rank_slice};
pub(crate) use transfer::{
    HostValues, add_host_gradients, all_reduce_gradients, set_trainable_values, trainable_values,
};
pub use worker::BoxError;
pub(crate) use worker::{Command, Reply, Worker};

use crate::{Error, RocmTrainer, TrainableModel};

/// The replica threads of a data-parallel run (ranks 1 to N − 1; rank 0 is the trainer that
/// holds them, [`crate::RocmTrainer::with_replicas`]). Dropping it ends the threads.
pub struct Replicas {
    pub(crate) workers: Vec<Worker>,
    /// The noise seeds each rank sampled in the last iteration (rank order).
    pub(crate) seeds: Vec<Vec<u64>>,
    /// Every rank's device when the gradients are summed by Burn's all-reduce (NCCL).
    pub(crate) all_reduce: Option<Arc<Vec<Device>>>,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("devices", &self.devices())
            .finish()
    }
}

impl Replicas {
    /// Starts the threads of ranks `1..devices`; rank `r`'s thread builds its own trainer with
    /// `factory(r)` on its device (the model, reward and encoder of the main trainer, with the
    /// same configuration: its adapter values are replaced by the main replica's before every
    /// shard). Returns once every replica is built.
    ///
    /// Errors with [`Error::Replica`] naming the rank whose factory failed or panicked, and
    /// with [`Error::InvalidField`] for fewer than 2 or more than [`MAX_DEVICES`] devices.
    pub fn spawn<const D: usize, M, F>(devices: usize, factory: F) -> Result<Self, Error>
    where
        M: TrainableModel<D> + 'static,
        F: Fn(usize) -> Result<RocmTrainer<D, M>, BoxError> + Send + Sync + 'static,
    {
        if !(2..=MAX_DEVICES).contains(&devices) {
            return Err(Error::InvalidField {
                field: "devices",
                message: format!("{devices} replicas: data parallelism takes 2 to {MAX_DEVICES}"),
            });
        }
        let factory = Arc::new(factory);
        let mut workers = (1..devices)
            .map(|rank| Worker::spawn(rank, Arc::clone(&factory)))
            .collect::<Result<Vec<_>, _>>()?;
        for w in &mut workers {
            match w.receive()? {
                Reply::Ready => {}
                _ => {
                    return Err(Error::Replica {
                        rank: w.rank,
                        message: "answered before it was asked".into(),
                    });
                }
            }
        }
        Ok(Self {
            workers,
            seeds: Vec::new(),
            all_reduce: None,
        })
    }

    /// Sums the ranks' gradients with Burn's collective all-reduce on `devices` (every rank's
    /// device, rank order; NCCL on CUDA) instead of host copies: after every rank has its
    /// gradient (a rank that failed stops the round before any collective starts), each sums
    /// them in place, and rank 0 steps. CUDA only: Burn 0.22.1 has no collectives on Flex or
    /// wgpu, where the all-reduce panics (docs/scaling.md).
    ///
    /// Errors with [`Error::InvalidField`] when `devices` does not have one device per rank.
    pub fn with_all_reduce(mut self, devices: Vec<Device>) -> Result<Self, Error> {
        if devices.len() != self.devices() {
            return Err(Error::InvalidField {
                field: "devices",
                message: format!(
                    "{} devices for the all-reduce of {} replicas",
                    devices.len(),
                    self.devices()
                ),
            });
        }
        self.all_reduce = Some(Arc::new(devices));
        Ok(self)
    }

    /// Whether the gradients are summed by the collective all-reduce.
    pub fn uses_all_reduce(&self) -> bool {
        self.all_reduce.is_some()
    }

    /// The number of replicas, the main one included.
    pub fn devices(&self) -> usize {
        self.workers.len() + 1
    }

    /// Sends each worker its command (`None`: nothing this time), then runs `main` (rank 0's
    /// share) on this thread, then waits for every worker that was sent one. Returns rank 0's
    /// result and each worker's reply (rank order); a failure of any rank is the first error,
    /// after every rank has answered, so no reply is ever left in a channel.
    pub(crate) fn round<T>(
        &mut self,
        commands: Vec<Option<Command>>,
        main: impl FnOnce() -> Result<T, Error>,
    ) -> Result<(T, Vec<Option<Reply>>), Error> {
        let mut sent = Vec::with_capacity(self.workers.len());
        let mut first_error = None;
        for (w, command) in self.workers.iter_mut().zip(commands) {
            let ok = match command {
                Some(c) => match w.send(c) {
                    Ok(()) => true,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        false
                    }
                },
                None => false,
            };
            sent.push(ok);
        }
        let own = main();
        let mut replies = Vec::with_capacity(self.workers.len());
        for (w, was_sent) in self.workers.iter_mut().zip(sent) {
            if !was_sent {
                replies.push(None);
                continue;
            }
            match w.receive() {
                Ok(reply) => replies.push(Some(reply)),
                Err(e) => {
                    first_error.get_or_insert(e);
                    replies.push(None);
                }
            }
        }
        let own = own?;
        match first_error {
            Some(e) => Err(e),
            None => Ok((own, replies)),
        }
    }
}

/// The adapter values of `model` shared by every replica's command.
pub(crate) fn shared_values<M: burn::module::Module>(model: &M) -> Arc<HostValues> {
    Arc::new(trainable_values(model))
}
