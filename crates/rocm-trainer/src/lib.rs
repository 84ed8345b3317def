//! The ROCM training loop: reward optimisation of a consistency model by backpropagating a
//! differentiable reward through the whole multistep sampler, regularised by an f-divergence
//! between the fine-tuned policy and its frozen base (METHOD.md §3 and §5).
//!
//! The trainer is generic over the model ([`rocm_sampler::ConsistencyModel`]), the reward
//! ([`rocm_rewards::RewardModel`]), the divergence ([`rocm_divergence::FDivergence`]) and the
//! backend (a runtime `burn` [`Device`](burn::prelude::Device)).
