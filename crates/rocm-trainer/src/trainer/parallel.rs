//! The data-parallel iteration of a [`RocmTrainer`] with replicas ([`crate::parallel`]): the
//! batch of `batch_size × devices` prompts per micro-batch drawn by rank 0, sharded by rank,
//! the ranks' gradients summed on the main device.

use burn::prelude::*;

use super::policy_gradient::PolicyGradientShard;
use super::{IterationGradients, RocmTrainer, TrainableModel, rocm_summary};
use crate::Error;
use crate::parallel::{
    Command, Replicas, Reply, add_host_gradients, all_reduce_gradients, effective_batch,
    rank_slice, set_trainable_values, shared_values,
};

impl<const D: usize, M: TrainableModel<D>> RocmTrainer<D, M> {
    /// This trainer as rank 0 of a data-parallel run over `replicas` (ranks 1 to N − 1, built
    /// with [`Replicas::spawn`]): each iteration samples `batch_size × N` prompts per
    /// micro-batch, `batch_size` on each rank, and applies one update from all their gradients
    /// (docs/scaling.md). With N replicas, 1 device's `batch_size × N` and N devices'
    /// `batch_size` give the same update within floating-point tolerance.
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// The devices (replicas) training: 1 without [`RocmTrainer::with_replicas`].
    pub fn devices(&self) -> usize {
        self.replicas.as_ref().map_or(1, Replicas::devices)
    }

    /// Prompts per optimizer update: `batch_size × gradient_accumulation_steps × devices`.
    pub fn effective_batch(&self) -> usize {
        effective_batch(
            self.config.batch_size,
            self.config.gradient_accumulation_steps,
            self.devices(),
        )
    }

    /// The noise seeds each rank sampled in the last data-parallel iteration, in rank order
    /// (empty without replicas): no seed appears on two ranks.
    pub fn replica_seeds(&self) -> &[Vec<u64>] {
        self.replicas.as_ref().map_or(&[], |r| r.seeds.as_slice())
    }

    /// Sets the adapter values (traversal order) of this replica to the main replica's.
    pub(crate) fn set_adapter_values(&mut self, values: &[TensorData]) -> Result<(), String> {
        self.model = set_trainable_values(self.model.clone(), values)?;
        Ok(())
    }

    /// Runs `f` with the replicas taken out of `self` (so `f` may borrow `self`), putting them
    /// back whatever it returns.
    fn with_taken_replicas<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut Replicas) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Some(mut replicas) = self.replicas.take() else {
            return Err(Error::Replica {
                rank: 0,
                message: "no replicas".into(),
            });
        };
        let out = f(self, &mut replicas);
        self.replicas = Some(replicas);
        out
    }

    /// [`RocmTrainer::iteration_gradients`] with replicas.
    pub(crate) fn parallel_iteration_gradients(&mut self) -> Result<IterationGradients, Error> {
        self.with_taken_replicas(|t, replicas| {
            if t.config.algorithm.is_policy_gradient() {
                t.parallel_policy_gradient(replicas)
            } else {
                t.parallel_rocm(replicas)
            }
        })
    }

    /// ROCM over the ranks: each its slice of every micro-batch, its gradients scaled by
    /// `1 / (micro-batches × ranks)`, their sum the batch's average.
    fn parallel_rocm(&mut self, replicas: &mut Replicas) -> Result<IterationGradients, Error> {
        let step = self.step + 1;
        let n = replicas.devices();
        let (b, micro) = (
            self.config.batch_size,
            self.config.gradient_accumulation_steps,
        );
        let draws = self.draw_rocm(b * micro * n);
        let mut shards: Shards<u64> = (0..n)
            .map(|r| draws.chunks(b * n).map(|c| rank_slice(c, n, r)).collect())
            .collect();
        replicas.seeds = shards
            .iter()
            .map(|s| s.iter().flatten().map(|(_, seed)| *seed).collect())
            .collect();
        let scale = 1.0 / (micro * n) as f64;
        let values = shared_values(&self.model);
        let own = shards.remove(0);
        let commands = shards
            .into_iter()
            .map(|micro_batches| {
                Some(Command::Rocm {
                    step,
                    values: values.clone(),
                    micro_batches,
                    scale,
                    keep: replicas.all_reduce.is_some(),
                })
            })
            .collect();
        let (mut total, replies) =
            replicas.round(commands, || self.rocm_shard(step, &own, Some(scale)))?;
        let mut rewards_by_rank = vec![std::mem::take(&mut total.rewards)];
        for (rank, reply) in (1..).zip(replies) {
            let Some(Reply::Rocm {
                grads,
                loss_sum,
                rewards,
                div_sums,
            }) = reply
            else {
                return Err(unexpected(rank));
            };
            self.add_gradients(replicas, &mut total.grads, rank, &grads)?;
            total.loss_sum += loss_sum;
            for (a, d) in total.div_sums.iter_mut().zip(div_sums) {
                *a += d;
            }
            rewards_by_rank.push(rewards);
        }
        self.all_reduce(replicas, &mut total.grads)?;
        // The rewards in the order of one device's batch: micro-batch, then rank.
        total.rewards = (0..micro)
            .flat_map(|j| {
                rewards_by_rank
                    .iter()
                    .flat_map(move |r| r.get(j * b..(j + 1) * b).unwrap_or_default().to_vec())
            })
            .collect();
        rocm_summary(step, total, micro * n, b * micro * n)
    }

    /// A policy-gradient iteration over the ranks: rollouts on every rank, the advantages of
    /// the whole batch on rank 0 (its per-prompt statistics), then each rank's gradient of its
    /// transitions weighted by one over the batch's trained transitions.
    fn parallel_policy_gradient(
        &mut self,
        replicas: &mut Replicas,
    ) -> Result<IterationGradients, Error> {
        let step = self.step + 1;
        let n = replicas.devices();
        let (b, micro) = (
            self.config.batch_size,
            self.config.gradient_accumulation_steps,
        );
        let draws = self.draw_policy_gradient(micro, b * n);
        let mut shards: Shards<(u64, u64)> = (0..n)
            .map(|r| draws.iter().map(|c| rank_slice(c, n, r)).collect())
            .collect();
        replicas.seeds = shards
            .iter()
            .map(|s| {
                s.iter()
                    .flatten()
                    .flat_map(|(_, (a, b))| if a == b { vec![*a] } else { vec![*a, *b] })
                    .collect()
            })
            .collect();
        let values = shared_values(&self.model);
        let own = shards.remove(0);
        let commands = shards
            .into_iter()
            .map(|micro_batches| {
                Some(Command::Rollouts {
                    step,
                    values: values.clone(),
                    micro_batches,
                })
            })
            .collect();
        let (own_rollouts, replies) = replicas.round(commands, || self.rollouts(step, &own))?;
        // (prompts, rewards) of rank r's micro-batch j, and the transitions of all.
        let mut by_rank: Vec<Vec<(Vec<String>, Vec<f32>)>> = vec![
            own_rollouts
                .iter()
                .map(|r| (r.prompts.clone(), r.rewards.clone()))
                .collect(),
        ];
        let mut trained: usize = own_rollouts.iter().map(|r| r.transitions.len()).sum();
        for (rank, reply) in (1..).zip(replies) {
            let Some(Reply::Rollouts {
                micro_batches,
                transitions,
            }) = reply
            else {
                return Err(unexpected(rank));
            };
            trained += transitions;
            by_rank.push(micro_batches);
        }
        // One device's order: micro-batch, then rank.
        let (mut all_prompts, mut all_rewards) = (Vec::new(), Vec::new());
        for j in 0..micro {
            for rank in &by_rank {
                if let Some((p, r)) = rank.get(j) {
                    all_prompts.extend(p.iter().cloned());
                    all_rewards.extend(r.iter().copied());
                }
            }
        }
        let advantages = self.advantages(&all_prompts, &all_rewards);
        let mut rank_advantages = vec![Vec::new(); n];
        let mut offset = 0;
        for j in 0..micro {
            for (rank, parts) in by_rank.iter().enumerate() {
                let len = parts.get(j).map_or(0, |(_, r)| r.len());
                rank_advantages[rank].extend_from_slice(&advantages[offset..offset + len]);
                offset += len;
            }
        }
        let weight = 1.0 / trained.max(1) as f64;
        let keep = replicas.all_reduce.is_some();
        let own_advantages = rank_advantages.remove(0);
        let commands = rank_advantages
            .into_iter()
            .map(|advantages| {
                Some(Command::PolicyGradient {
                    advantages,
                    weight,
                    keep,
                })
            })
            .collect();
        let (mut total, replies) = replicas.round(commands, || {
            self.policy_gradient_shard(&own_rollouts, &own_advantages, weight)
        })?;
        for (rank, reply) in (1..).zip(replies) {
            let Some(Reply::PolicyGradient {
                grads,
                loss_sum,
                kl_sum,
                clip_sum,
                div_sums,
            }) = reply
            else {
                return Err(unexpected(rank));
            };
            self.add_gradients(replicas, &mut total.grads, rank, &grads)?;
            let PolicyGradientShard {
                loss_sum: l,
                kl_sum: k,
                clip_sum: c,
                div_sums: d,
                ..
            } = &mut total;
            *l += loss_sum;
            *k += kl_sum;
            *c += clip_sum;
            for (a, x) in d.iter_mut().zip(div_sums) {
                *a += x;
            }
        }
        self.all_reduce(replicas, &mut total.grads)?;
        self.policy_gradient_summary(step, total, &all_rewards, trained, micro * n)
    }

    /// Adds rank `rank`'s host gradients into `grads` (nothing with the all-reduce, which sums
    /// them in [`RocmTrainer::all_reduce`]).
    fn add_gradients(
        &self,
        replicas: &Replicas,
        grads: &mut burn::optim::GradientsParams,
        rank: usize,
        host: &[Option<TensorData>],
    ) -> Result<(), Error> {
        if replicas.all_reduce.is_some() {
            return Ok(());
        }
        add_host_gradients(&self.model, grads, host)
            .map_err(|message| Error::Replica { rank, message })
    }

    /// With the collective all-reduce, one more round once every rank has its gradient: each
    /// sums them in place (rank 0's `grads` here, the others' kept ones).
    fn all_reduce(
        &self,
        replicas: &mut Replicas,
        grads: &mut burn::optim::GradientsParams,
    ) -> Result<(), Error> {
        let Some(devices) = replicas.all_reduce.clone() else {
            return Ok(());
        };
        let commands = (1..replicas.devices())
            .map(|_| {
                Some(Command::AllReduce {
                    devices: devices.clone(),
                })
            })
            .collect();
        replicas.round(commands, || {
            all_reduce_gradients(&self.model, grads, &devices);
            Ok(())
        })?;
        Ok(())
    }

    /// [`RocmTrainer::evaluate_with_images`] of the policy, sharded over the replicas in
    /// contiguous slices of the pairs and gathered in order.
    pub(crate) fn evaluate_sharded(
        &mut self,
        prompts: &[String],
        seeds: &[u64],
    ) -> Result<(Vec<f32>, Option<Tensor<4>>), Error> {
        if self.replicas.is_none() {
            return self.evaluate_with_images(rocm_sampler::Branch::Policy, prompts, seeds);
        }
        self.with_taken_replicas(|t, replicas| {
            let n = replicas.devices();
            let size = prompts.len().div_ceil(n).max(1);
            let slice = |r: usize| {
                let start = (r * size).min(prompts.len());
                start..((r + 1) * size).min(prompts.len())
            };
            let values = shared_values(&t.model);
            let commands = (1..n)
                .map(|r| {
                    let range = slice(r);
                    (!range.is_empty()).then(|| Command::Evaluate {
                        values: values.clone(),
                        prompts: prompts[range.clone()].to_vec(),
                        seeds: seeds[range].to_vec(),
                    })
                })
                .collect();
            let range = slice(0);
            let ((mut rewards, own_images), replies) = replicas.round(commands, || {
                t.evaluate_with_images(
                    rocm_sampler::Branch::Policy,
                    &prompts[range.clone()],
                    &seeds[range.clone()],
                )
            })?;
            let mut images = own_images.map(|i| vec![i]);
            for (rank, reply) in (1..).zip(replies) {
                match reply {
                    None => {}
                    Some(Reply::Evaluate {
                        rewards: r,
                        images: i,
                    }) => {
                        rewards.extend(r);
                        images = match (images, i) {
                            (Some(mut all), Some(data)) => {
                                all.push(Tensor::from_data(data, &t.device));
                                Some(all)
                            }
                            _ => None,
                        };
                    }
                    Some(_) => return Err(unexpected(rank)),
                }
            }
            Ok((rewards, images.map(|all| Tensor::cat(all, 0))))
        })
    }
}

/// Each rank's micro-batches of (prompt, seeds).
type Shards<S> = Vec<Vec<Vec<(String, S)>>>;

/// A reply of the wrong kind: a bug, named with the rank.
fn unexpected(rank: usize) -> Error {
    Error::Replica {
        rank,
        message: "answered a different command".into(),
    }
}
