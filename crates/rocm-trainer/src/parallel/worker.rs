//! The replica threads: each owns a trainer built on its device by the factory, and answers the
//! main replica's commands (set the adapters, compute a shard, evaluate) over channels.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use burn::optim::GradientsParams;
use burn::prelude::*;
use rocm_sampler::Branch;

use super::transfer::{self, HostGrads, HostValues};
use crate::trainer::{PolicyGradientShard, RocmShard, Rollout};
use crate::{Error, RocmTrainer, TrainableModel};

/// The error a replica factory returns (any error, sent between threads).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stack of a replica thread: the main thread's on Linux (8 MiB), where rank 0 runs the same
/// rollouts and backward passes (a spawned thread would get 2 MiB).
const MAIN_THREAD_STACK: usize = 8 << 20;

/// What a replica thread is asked to do.
pub(crate) enum Command {
    /// ROCM: set the adapters, then the gradients of these micro-batches, scaled.
    Rocm {
        /// The 1-based iteration.
        step: usize,
        /// The main replica's adapter values.
        values: Arc<HostValues>,
        /// The rank's micro-batches of (prompt, seed).
        micro_batches: Vec<Vec<(String, u64)>>,
        /// The factor of the rank's summed gradients.
        scale: f64,
        /// Keep the gradients for [`Command::AllReduce`] instead of sending them.
        keep: bool,
    },
    /// Policy gradient, first half: set the adapters, roll out these micro-batches and keep
    /// the rollouts for [`Command::PolicyGradient`].
    Rollouts {
        /// The 1-based iteration.
        step: usize,
        /// The main replica's adapter values.
        values: Arc<HostValues>,
        /// The rank's micro-batches of (prompt, (initial seed, step seed)).
        micro_batches: Vec<Vec<(String, (u64, u64))>>,
    },
    /// Policy gradient, second half: the gradient of the kept rollouts.
    PolicyGradient {
        /// The advantages of the rank's samples, in order.
        advantages: Vec<f32>,
        /// One over the iteration's trained transitions.
        weight: f64,
        /// Keep the gradients for [`Command::AllReduce`] instead of sending them.
        keep: bool,
    },
    /// Sum the kept gradients over every rank with Burn's all-reduce (NCCL on CUDA).
    AllReduce {
        /// Every rank's device, rank order.
        devices: Arc<Vec<Device>>,
    },
    /// Set the adapters, then evaluate these pairs with the policy.
    Evaluate {
        /// The main replica's adapter values.
        values: Arc<HostValues>,
        /// One prompt per sample.
        prompts: Vec<String>,
        /// One noise seed per sample.
        seeds: Vec<u64>,
    },
}

/// A replica thread's answer.
pub(crate) enum Reply {
    /// The replica is built.
    Ready,
    /// [`Command::Rocm`]'s shard on the host.
    Rocm {
        /// The gradients.
        grads: HostGrads,
        /// The sum of its micro-batch losses.
        loss_sum: f64,
        /// Its samples' rewards.
        rewards: Vec<f64>,
        /// Its per-step divergence sums.
        div_sums: Vec<f64>,
    },
    /// [`Command::Rollouts`]: each micro-batch's prompts and rewards, and the transitions kept.
    Rollouts {
        /// (prompts, rewards) of each micro-batch.
        micro_batches: Vec<(Vec<String>, Vec<f32>)>,
        /// The trained transitions of all its micro-batches.
        transitions: usize,
    },
    /// [`Command::PolicyGradient`]'s shard on the host.
    PolicyGradient {
        /// The gradients.
        grads: HostGrads,
        /// Its sums.
        loss_sum: f64,
        /// `Σ approx_kl`.
        kl_sum: f64,
        /// `Σ clipfrac`.
        clip_sum: f64,
        /// Its per-step divergence sums.
        div_sums: Vec<f64>,
    },
    /// [`Command::AllReduce`] is done.
    Reduced,
    /// [`Command::Evaluate`]'s rewards and images on the host.
    Evaluate {
        /// One reward per pair.
        rewards: Vec<f32>,
        /// The scored images, when the reward has them.
        images: Option<TensorData>,
    },
}

/// One replica thread, seen from the main replica.
pub(crate) struct Worker {
    /// Its rank (1 or more; the main replica is rank 0).
    pub rank: usize,
    commands: Option<Sender<Command>>,
    replies: Receiver<Result<Reply, String>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts rank `rank`'s thread, which builds its trainer with `factory(rank)` and reports
    /// [`Reply::Ready`] or the error.
    pub fn spawn<const D: usize, M, F>(rank: usize, factory: Arc<F>) -> Result<Self, Error>
    where
        M: TrainableModel<D> + 'static,
        F: Fn(usize) -> Result<RocmTrainer<D, M>, BoxError> + Send + Sync + 'static,
    {
        let (commands, inbox) = channel();
        let (outbox, replies) = channel();
        let handle = std::thread::Builder::new()
            .name(format!("rocm-replica-{rank}"))
            .stack_size(MAIN_THREAD_STACK)
            .spawn(move || serve(rank, factory.as_ref(), inbox, outbox))
            .map_err(|e| Error::Replica {
                rank,
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(Self {
            rank,
            commands: Some(commands),
            replies,
            handle: Some(handle),
        })
    }

    /// Sends `command`; a thread that has ended is an error with its panic message.
    pub fn send(&mut self, command: Command) -> Result<(), Error> {
        let sent = self.commands.as_ref().map(|c| c.send(command).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        Err(self.died())
    }

    /// Waits for the answer to the last command.
    pub fn receive(&mut self) -> Result<Reply, Error> {
        match self.replies.recv() {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(message)) => Err(Error::Replica {
                rank: self.rank,
                message,
            }),
            Err(_) => Err(self.died()),
        }
    }

    /// The error of a thread that ended without answering (its panic message if it panicked).
    fn died(&mut self) -> Error {
        let message = match self.handle.take().map(JoinHandle::join) {
            Some(Err(payload)) => format!("panicked: {}", panic_message(payload.as_ref())),
            _ => "its thread ended".to_string(),
        };
        Error::Replica {
            rank: self.rank,
            message,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop after its current command.
        self.commands.take();
        if let Some(handle) = self.handle.take() {
            handle.join().ok();
        }
    }
}

/// A panic payload as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// The replica thread's loop: build, report, then answer commands until the channel closes.
/// A panic while answering is caught and reported as that command's error.
fn serve<const D: usize, M, F>(
    rank: usize,
    factory: &F,
    inbox: Receiver<Command>,
    outbox: Sender<Result<Reply, String>>,
) where
    M: TrainableModel<D>,
    F: Fn(usize) -> Result<RocmTrainer<D, M>, BoxError>,
{
    let built = catch_unwind(AssertUnwindSafe(|| factory(rank)));
    let mut trainer = match built {
        Ok(Ok(trainer)) => trainer,
        Ok(Err(e)) => {
            outbox.send(Err(format!("building its trainer: {e}"))).ok();
            return;
        }
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            outbox
                .send(Err(format!("building its trainer panicked: {message}")))
                .ok();
            return;
        }
    };
    if outbox.send(Ok(Reply::Ready)).is_err() {
        return;
    }
    let mut kept = Kept {
        rollouts: Vec::new(),
        grads: None,
    };
    while let Ok(command) = inbox.recv() {
        let answer = catch_unwind(AssertUnwindSafe(|| {
            answer(&mut trainer, &mut kept, command)
        }));
        let reply = match answer {
            Ok(reply) => reply,
            Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
        };
        if outbox.send(reply).is_err() {
            return;
        }
    }
}

/// What a replica keeps between commands.
struct Kept<const D: usize> {
    /// The rollouts of [`Command::Rollouts`], for [`Command::PolicyGradient`].
    rollouts: Vec<Rollout<D>>,
    /// Gradients kept for [`Command::AllReduce`].
    grads: Option<GradientsParams>,
}

/// The host copy of `grads`, or none when they are kept for the all-reduce.
fn send_or_keep<const D: usize, M: TrainableModel<D>>(
    trainer: &RocmTrainer<D, M>,
    kept: &mut Kept<D>,
    grads: GradientsParams,
    keep: bool,
) -> HostGrads {
    if keep {
        kept.grads = Some(grads);
        return Vec::new();
    }
    transfer::host_gradients(trainer.model(), &grads)
}

/// One command's answer.
fn answer<const D: usize, M: TrainableModel<D>>(
    trainer: &mut RocmTrainer<D, M>,
    kept: &mut Kept<D>,
    command: Command,
) -> Result<Reply, String> {
    let text = |e: Error| e.to_string();
    match command {
        Command::Rocm {
            step,
            values,
            micro_batches,
            scale,
            keep,
        } => {
            trainer.set_adapter_values(&values)?;
            let RocmShard {
                grads,
                loss_sum,
                rewards,
                div_sums,
            } = trainer
                .rocm_shard(step, &micro_batches, Some(scale))
                .map_err(text)?;
            Ok(Reply::Rocm {
                grads: send_or_keep(trainer, kept, grads, keep),
                loss_sum,
                rewards,
                div_sums,
            })
        }
        Command::Rollouts {
            step,
            values,
            micro_batches,
        } => {
            trainer.set_adapter_values(&values)?;
            kept.rollouts = trainer.rollouts(step, &micro_batches).map_err(text)?;
            Ok(Reply::Rollouts {
                micro_batches: kept
                    .rollouts
                    .iter()
                    .map(|r| (r.prompts.clone(), r.rewards.clone()))
                    .collect(),
                transitions: kept.rollouts.iter().map(|r| r.transitions.len()).sum(),
            })
        }
        Command::PolicyGradient {
            advantages,
            weight,
            keep,
        } => {
            let rollouts = std::mem::take(&mut kept.rollouts);
            let PolicyGradientShard {
                grads,
                loss_sum,
                kl_sum,
                clip_sum,
                div_sums,
            } = trainer
                .policy_gradient_shard(&rollouts, &advantages, weight)
                .map_err(text)?;
            Ok(Reply::PolicyGradient {
                grads: send_or_keep(trainer, kept, grads, keep),
                loss_sum,
                kl_sum,
                clip_sum,
                div_sums,
            })
        }
        Command::AllReduce { devices } => {
            let mut grads = kept
                .grads
                .take()
                .ok_or("an all-reduce without gradients".to_string())?;
            transfer::all_reduce_gradients(trainer.model(), &mut grads, &devices);
            Ok(Reply::Reduced)
        }
        Command::Evaluate {
            values,
            prompts,
            seeds,
        } => {
            trainer.set_adapter_values(&values)?;
            let (rewards, images) = trainer
                .evaluate_with_images(Branch::Policy, &prompts, &seeds)
                .map_err(text)?;
            Ok(Reply::Evaluate {
                rewards,
                images: images.map(Tensor::into_data),
            })
        }
    }
}
