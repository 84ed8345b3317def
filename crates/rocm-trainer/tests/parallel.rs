//! Data parallelism on the CPU (Flex replicas in threads, docs/scaling.md): N replicas of batch
//! B give one device's update of batch N·B, ranks never share a noise seed, a resume on another
//! replica count keeps the effective batch, and a failing replica stops the run with its error.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use burn::prelude::*;
use rocm_lora::{InitLoraWeights, LoraConfig, TargetModules, apply_lora};
use rocm_trainer::parallel::{BoxError, Replicas};
use rocm_trainer::toy::{self, ToyPointModel, ToyPointModelConfig};
use rocm_trainer::{
    AlgorithmKind, Error, GuidanceKind, LatentReward, RocmTrainer, SamplerKind, TrainConfig,
    checkpoint, grads,
};

type Toy = RocmTrainer<2, ToyPointModel>;

/// The x-coordinate of the point, panicking when `panic` is set (an injected replica fault).
#[derive(Clone, Copy)]
struct X {
    panic: bool,
}

impl LatentReward<2> for X {
    fn name(&self) -> &str {
        "x"
    }
    fn reward(&self, latent: Tensor<2>, _: &[String]) -> Tensor<1> {
        assert!(!self.panic, "injected reward failure");
        let [b, _] = latent.dims();
        latent.slice(s![.., 0..1]).reshape([b])
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-parallel-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn config(algorithm: AlgorithmKind, batch_size: usize, out: &str) -> TrainConfig {
    let mut c = TrainConfig {
        algorithm,
        num_steps: 3,
        guidance: GuidanceKind::None,
        batch_size,
        learning_rate: 1e-2,
        gradient_checkpointing: false,
        concurrent: false,
        beta: 0.1,
        iterations: 3,
        checkpoint_every: 0,
        eval_every: 0,
        seed: 5,
        output_dir: temp_dir(out),
        ..TrainConfig::default()
    };
    c.rlcm.samples_per_prompt = 2;
    c
}

/// The toy with the same seeded base and adapters every time it is built.
fn toy_trainer(config: TrainConfig, reward: X) -> Result<Toy, BoxError> {
    let device = Device::flex().autodiff();
    let mut model = ToyPointModelConfig::new()
        .with_hidden(16)
        .with_depth(1)
        .init_seeded(7, &device);
    let lora = LoraConfig::new(2, 4.0, TargetModules::names(&model.all_layers()))
        .with_init_lora_weights(InitLoraWeights::Gaussian)
        .with_seed(1);
    apply_lora(&mut model, &lora)?;
    Ok(RocmTrainer::builder(config)
        .model(model)
        .reward(reward)
        .unconditional()
        .scheduler(toy::scheduler())
        .latent_shape([1, 2])
        .device(device)
        .build()?)
}

const OK: X = X { panic: false };

/// Rank 0 of `devices` replicas, every rank built like it (`faulty`: that rank's reward panics).
fn replicated(config: TrainConfig, devices: usize, faulty: Option<usize>) -> Result<Toy, Error> {
    let main = toy_trainer(config.clone(), OK).unwrap();
    let replicas = Replicas::spawn(devices, move |rank| {
        toy_trainer(
            config.clone(),
            X {
                panic: faulty == Some(rank),
            },
        )
    })?;
    Ok(main.with_replicas(replicas))
}

fn flat(t: &Toy, g: &burn::optim::GradientsParams) -> Vec<f32> {
    grads::flat_gradients(t.model(), g)
        .into_iter()
        .flat_map(|g| g.into_data().try_into_vec::<f32>().unwrap())
        .collect()
}

/// Each of three iterations' gradients of `a` and `b` agree to 1e-6 of the largest, their
/// rewards to 1e-6 and their losses to 1e-5.
fn same_updates(mut a: Toy, mut b: Toy) {
    for _ in 0..3 {
        let (ga, gb) = (
            a.iteration_gradients().unwrap(),
            b.iteration_gradients().unwrap(),
        );
        let (fa, fb) = (flat(&a, &ga.grads), flat(&b, &gb.grads));
        assert_eq!(fa.len(), fb.len());
        let largest = fa.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(largest > 0.0);
        let worst = fa
            .iter()
            .zip(&fb)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-6 * largest, "{worst} vs largest {largest}");
        // The policy-gradient losses are sums of f32 terms that cancel (the advantages of a
        // batch sum to about zero), so they agree to f32 rounding of their terms, not to 1e-6.
        assert!(
            (ga.loss - gb.loss).abs() <= 1e-5 * ga.loss.abs().max(1.0),
            "loss {} vs {}",
            ga.loss,
            gb.loss
        );
        assert!((ga.reward_mean - gb.reward_mean).abs() <= 1e-6);
        assert_eq!(ga.images_sampled, gb.images_sampled);
        // Then the same step on both (the full iteration, whose clipping and AdamW follow).
        a.train_iteration().unwrap();
        b.train_iteration().unwrap();
    }
}

#[test]
fn two_replicas_of_batch_one_give_the_update_of_one_device_of_batch_two_rocm() {
    let single = toy_trainer(config(AlgorithmKind::Rocm, 2, "rocm-1"), OK).unwrap();
    let parallel = replicated(config(AlgorithmKind::Rocm, 1, "rocm-2"), 2, None).unwrap();
    assert_eq!((parallel.devices(), parallel.effective_batch()), (2, 2));
    same_updates(single, parallel);
}

#[test]
fn two_replicas_of_batch_one_give_the_update_of_one_device_of_batch_two_rlcm() {
    let single = toy_trainer(config(AlgorithmKind::Rlcm, 2, "rlcm-1"), OK).unwrap();
    let parallel = replicated(config(AlgorithmKind::Rlcm, 1, "rlcm-2"), 2, None).unwrap();
    same_updates(single, parallel);
}

#[test]
fn dpok_and_d3po_on_two_replicas_match_one_device() {
    // D3PO's pairs share their initial latent and DPOK keeps per-prompt baselines: both stay
    // whole on one rank, and rank 0 computes the batch's advantages in one device's order.
    for algorithm in [AlgorithmKind::Dpok, AlgorithmKind::D3po] {
        let with_lcm = |batch, out| TrainConfig {
            sampler: Some(SamplerKind::Lcm),
            ..config(algorithm, batch, out)
        };
        let single = toy_trainer(with_lcm(2, "pg-1"), OK).unwrap();
        let parallel = replicated(with_lcm(1, "pg-2"), 2, None).unwrap();
        same_updates(single, parallel);
    }
}

#[test]
fn ranks_never_share_a_noise_seed() {
    let mut c = config(AlgorithmKind::Rocm, 2, "seeds");
    c.gradient_accumulation_steps = 2;
    let mut t = replicated(c, 3, None).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        t.train_iteration().unwrap();
        let seeds = t.replica_seeds();
        assert_eq!(seeds.len(), 3);
        for rank in seeds {
            assert_eq!(rank.len(), 2 * 2); // batch_size × accumulation on every rank
            for s in rank {
                assert!(seen.insert(*s), "seed {s} sampled twice");
            }
        }
    }
}

#[test]
fn a_resume_on_another_replica_count_keeps_the_effective_batch() {
    // 2 replicas × batch 1 × accumulation 2 = 4 per update, checkpointed at step 2.
    let mut c = config(AlgorithmKind::Rocm, 1, "resume");
    c.gradient_accumulation_steps = 2;
    c.iterations = 2;
    c.checkpoint_every = 2;
    let mut two = replicated(c.clone(), 2, None).unwrap();
    two.run(|_| {}).unwrap();
    let dir = checkpoint::latest_checkpoint(&two.checkpoints_dir())
        .unwrap()
        .unwrap();
    let state = checkpoint::read_state(&dir).unwrap();
    assert_eq!((state.devices, state.effective_batch), (2, Some(4)));
    // The uninterrupted run's third update…
    two.train_iteration().unwrap();
    let reference = flat_values(&two);
    // …and one device resumed from step 2: accumulation 2 → 4 keeps the 4 prompts per update.
    let mut one = toy_trainer(c.clone(), OK).unwrap();
    one.resume(&dir).unwrap();
    assert_eq!(one.config().gradient_accumulation_steps, 4);
    assert_eq!(one.effective_batch(), 4);
    one.train_iteration().unwrap();
    let resumed = flat_values(&one);
    let worst = reference
        .iter()
        .zip(&resumed)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-5, "adapters differ by {worst}");
    // A batch size that cannot keep it is refused, naming the numbers.
    let mut odd = c;
    odd.batch_size = 3;
    let err = toy_trainer(odd, OK).unwrap().resume(&dir).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Resume { .. }), "{text}");
    assert!(
        text.contains("effective batch of 4") && text.contains("3 × 1"),
        "{text}"
    );
}

fn flat_values(t: &Toy) -> Vec<f32> {
    let m = t.model();
    let mut layers = vec![&m.linear_in];
    layers.extend(m.hidden.iter());
    layers.push(&m.linear_out);
    layers
        .iter()
        .flat_map(|l| {
            let lora = l.lora.as_ref().unwrap();
            let mut v = lora.lora_a.val().into_data().try_into_vec::<f32>().unwrap();
            v.extend(lora.lora_b.val().into_data().try_into_vec::<f32>().unwrap());
            v
        })
        .collect()
}

#[test]
fn a_failing_replica_stops_the_run_with_its_error() {
    // The run on its own thread, so that a hang fails the test instead of stalling it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = replicated(config(AlgorithmKind::Rocm, 1, "fault"), 3, Some(2))
            .and_then(|mut t| t.run(|_| {}).map(|m| m.len()));
        tx.send(out.map_err(|e| e.to_string())).ok();
    });
    let out = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the run hung after a replica failed");
    let err = out.unwrap_err();
    assert!(
        err.contains("replica 2") && err.contains("injected reward failure"),
        "{err}"
    );
    // A replica whose factory fails is named before training starts.
    let c = config(AlgorithmKind::Rocm, 1, "fault-build");
    let err = Replicas::spawn(2, move |_| {
        toy_trainer(c.clone(), OK).and(Err::<Toy, BoxError>("no such device".into()))
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("replica 1: building its trainer: no such device"),
        "{err}"
    );
}

#[test]
fn the_all_reduce_path_reaches_burns_collective_which_flex_lacks() {
    // One device per rank is required…
    let replicas = Replicas::spawn(2, |_| {
        toy_trainer(config(AlgorithmKind::Rocm, 1, "nccl-count-r"), OK)
    })
    .unwrap();
    let err = replicas.with_all_reduce(vec![Device::flex()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 devices for the all-reduce of 2"),
        "{err}"
    );
    // …and once every rank has its gradient, each calls Burn's all-reduce, which Burn 0.22.1
    // implements on CUDA only: on Flex it panics, so this path cannot train on the CPU.
    let main = toy_trainer(config(AlgorithmKind::Rocm, 1, "nccl"), OK).unwrap();
    let replicas = Replicas::spawn(2, |_| {
        toy_trainer(config(AlgorithmKind::Rocm, 1, "nccl-r"), OK)
    })
    .unwrap()
    .with_all_reduce(vec![Device::flex(), Device::flex()])
    .unwrap();
    assert!(replicas.uses_all_reduce());
    let mut t = main.with_replicas(replicas);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.train_iteration()));
    let payload = out.expect_err("Flex has no all-reduce");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("istributed"), "{message}");
}
