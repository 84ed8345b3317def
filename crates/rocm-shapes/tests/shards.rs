//! Data parallelism in the stages (`train::shards`): the gradients summed over the shards are
//! one worker's gradients on the whole batch, for a loss that is a mean over rows (VAE, teacher,
//! distillation) and for the CLIP stage's contrastive loss, which couples every row with every
//! other and is computed with the shards' embeddings exchanged.
#![allow(clippy::unwrap_used)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rocm_models::UNet2DConditionModel;
use rocm_shapes::tokenizer::WorldBpe;
use rocm_shapes::train::distill::{self, DistillOptions, Frozen};
use rocm_shapes::train::shards::{self, SHARDS, Shard};
use rocm_shapes::train::{clip, teacher, vae};

/// The tests of this file take turns: one of them seeds the device's generator, which the others
/// draw their initial weights from.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod common;
use common::{options, scratch, tiny_cache, tiny_clip, tiny_unet_config, tokenizer};

/// Every parameter's gradient, flattened, in the module's order (empty where it has none).
fn flat<M: Module>(model: &M, grads: &GradientsParams) -> Vec<Vec<f32>> {
    struct Flat<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor for Flat<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self.0.get::<D>(param.id);
            self.1.push(g.map_or_else(Vec::new, |g| {
                g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
            }));
        }
    }
    let mut f = Flat(grads, Vec::new());
    model.visit(&mut f);
    f.1
}

/// Largest `|a − b| / (1e-3 + max|b|)` over each parameter, after checking that both have the
/// same parameters with gradients.
fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "a parameter has a gradient in one only");
        let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-3;
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() / scale);
        }
    }
    worst
}

fn whole<M: Module>(model: &M, loss: Tensor<1>) -> (f32, Vec<Vec<f32>>) {
    let (value, grads) = shards::backward(model, loss);
    (value, flat(model, &grads))
}

/// The shards' summed loss and gradients of `model` against one worker's on the whole batch
/// (`whole`): the loss to 1e-5, every gradient to 1e-4.
fn assert_as_whole<M: Module>(
    label: &str,
    model: &M,
    (value, want): &(f32, Vec<Vec<f32>>),
    (sharded, grads): (f32, GradientsParams),
) {
    assert!(
        (sharded - value).abs() < 1e-5 * value.abs(),
        "{label}: loss {sharded} vs {value}"
    );
    let err = max_rel_diff(&flat(model, &grads), want);
    assert!(err < 1e-4, "{label}: gradients differ by {err}");
}

/// Tracked parameters of `model`, and how many of them `loss` gives a gradient.
fn tracked_and_reached<M: Module>(model: &M, loss: Tensor<1>) -> (usize, usize) {
    struct Tracked(usize);
    impl ModuleVisitor for Tracked {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += usize::from(param.val().is_require_grad());
        }
    }
    let mut tracked = Tracked(0);
    model.visit(&mut tracked);
    let (_, grads) = shards::backward(model, loss);
    (tracked.0, grads.len())
}

#[test]
fn every_tracked_parameter_of_a_stage_takes_part_in_its_loss() {
    // A tracked parameter no loss reads is orphaned in Burn's graph registry once per fork per
    // step, and the registry's cleaner walks the orphans on every backward pass: the aesthetic
    // stage, with the CLIP's text tower tracked, slowed tenfold over 2,000 steps.
    let _serial = serial();
    let device = Device::flex().autodiff();
    let bpe = WorldBpe::learn();
    let (config, clip_model) = tiny_clip(&bpe, &device);
    let aesthetic = rocm_shapes::train::aesthetic::AestheticTrain::new(clip_model.clone(), &device);
    let (images, targets) = rocm_shapes::train::aesthetic::batch(
        &mut options(1, 4, 1e-3).rng(0),
        rocm_shapes::Split::Train,
        4,
    );
    let (tracked, reached) = tracked_and_reached(&aesthetic, aesthetic.loss(&images, &targets));
    assert_eq!(tracked, reached, "aesthetic");
    let tok = tokenizer(&scratch("shards-tracked"));
    let clip_train =
        clip::ClipTrain::with_shape_head(clip_model.clone(), config.projection_dim, &device);
    let batch = clip::batch(&options(1, 6, 1e-3), 1);
    let refs: Vec<&str> = batch.captions.iter().map(String::as_str).collect();
    let ids = tok.encode_to_tensor(&refs, &device).unwrap();
    let (tracked, reached) =
        tracked_and_reached(&clip_train, clip::stage_loss(&clip_train, &batch, ids));
    assert_eq!(tracked, reached, "clip");
    let vae_model = vae::tiny_vae_config().init(&device);
    let opts = options(1, 2, 1e-3);
    let images = vae::batch(&opts, 0);
    let (tracked, reached) = tracked_and_reached(
        &vae_model,
        vae::loss(
            &vae_model,
            &images,
            &mut opts.rng(1),
            &Shard::whole(2),
            &device,
        ),
    );
    assert_eq!(tracked, reached, "vae");
}

#[test]
fn shards_split_a_batch_into_contiguous_weighted_slices() {
    for batch in [1, 2, 5, 16, 33] {
        let parts: Vec<Shard> = (0..SHARDS).map(|s| Shard::of(s, SHARDS, batch)).collect();
        assert_eq!(parts[0].rows.start, 0);
        assert_eq!(parts[SHARDS - 1].rows.end, batch);
        for w in parts.windows(2) {
            assert_eq!(w[0].rows.end, w[1].rows.start);
            assert!(w[0].len() >= w[1].len() && w[0].len() <= w[1].len() + 1);
        }
        let weight: f64 = parts.iter().map(Shard::weight).sum();
        assert!((weight - 1.0).abs() < 1e-12, "batch {batch}: {weight}");
    }
    assert_eq!(Shard::whole(7).rows, 0..7);
}

#[test]
fn a_model_with_lazy_parameters_takes_its_first_step_whole() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let opts = options(1, 4, 1e-3);
    let images = vae::batch(&opts, 0);
    let loss = |m: &rocm_models::AutoencoderKL, shard: &Shard| {
        vae::loss(m, &images, &mut opts.rng(9), shard, &device)
    };
    // One worker's first step: the parameters drawn in the order the forward pass reads them.
    device.seed(5);
    let mut one = rocm_shapes::train::Trainer::new(vae::tiny_vae_config().init(&device));
    let first = one.apply(loss(&one.model, &Shard::whole(4)), 1e-3);
    device.seed(5);
    let model = vae::tiny_vae_config().init(&device);
    assert!(!shards::is_materialized(&model));
    let mut sharded = rocm_shapes::train::Trainer::new(model);
    assert_eq!(sharded.apply_sharded(1e-3, 4, loss), first);
    assert!(shards::is_materialized(&sharded.model));
    let (a, b) = (
        one.apply_sharded(1e-3, 4, loss),
        sharded.apply_sharded(1e-3, 4, loss),
    );
    assert!((a - b).abs() < 1e-6 * a.abs(), "second step {a} vs {b}");
}

#[test]
fn sharded_vae_gradients_are_the_whole_batchs() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let model = vae::tiny_vae_config().init(&device);
    let opts = options(1, 6, 1e-3);
    let images = vae::batch(&opts, 0);
    let expected = whole(
        &model,
        vae::loss(&model, &images, &mut opts.rng(9), &Shard::whole(6), &device),
    );
    let sharded = shards::gradients(&model, 6, |m, shard| {
        vae::loss(m, &images, &mut opts.rng(9), shard, &device)
    });
    assert_as_whole("VAE", &model, &expected, sharded);
}

#[test]
fn sharded_teacher_and_distillation_gradients_are_the_whole_batchs() {
    let _serial = serial();
    let inner = Device::flex();
    let device = inner.clone().autodiff();
    let cache = tiny_cache(&scratch("shards-teacher"), &inner);
    let opts = options(1, 6, 1e-3);
    let schedule = rocm_sampler::NoiseSchedule::sd15();
    let unet: UNet2DConditionModel = tiny_unet_config().init(&device);
    let expected = whole(
        &unet,
        teacher::loss(
            &unet,
            &cache,
            &schedule,
            &opts,
            3,
            &Shard::whole(6),
            &device,
        ),
    );
    let sharded = shards::gradients(&unet, 6, |m, shard| {
        teacher::loss(m, &cache, &schedule, &opts, 3, shard, &device)
    });
    assert_as_whole("teacher", &unet, &expected, sharded);
    // Every parameter takes part (see every_tracked_parameter_of_a_stage_takes_part_in_its_loss).
    assert!(
        expected.1.iter().all(|g| !g.is_empty()),
        "a teacher parameter without gradient"
    );

    let settings = DistillOptions::default();
    let config = distill::student_config(&tiny_unet_config(), &settings);
    let teacher_unet = unet.valid();
    let student = distill::student_from_teacher(&teacher_unet, &config, &device).unwrap();
    let target = student.valid();
    let frozen = Frozen {
        teacher: &teacher_unet,
        target: &target,
    };
    let scheduler = rocm_sampler::LcmScheduler::sd15();
    let loss = |m: &UNet2DConditionModel, shard: &Shard| {
        distill::loss(
            m, &frozen, &cache, &scheduler, &opts, &settings, 5, shard, &device, &inner,
        )
    };
    let expected = whole(&student, loss(&student, &Shard::whole(6)));
    let sharded = shards::gradients(&student, 6, loss);
    assert_as_whole("distillation", &student, &expected, sharded);
    assert!(
        expected.1.iter().all(|g| !g.is_empty()),
        "a student parameter without gradient"
    );
}

#[test]
fn sharded_clip_gradients_are_the_whole_batchs_contrastive_gradients() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let bpe = WorldBpe::learn();
    let tok = tokenizer(&scratch("shards-clip"));
    let (config, model) = tiny_clip(&bpe, &device);
    let model = clip::ClipTrain::with_shape_head(model, config.projection_dim, &device);
    let batch = clip::batch(&options(1, 10, 1e-3), 4);
    let refs: Vec<&str> = batch.captions.iter().map(String::as_str).collect();
    let ids = tok.encode_to_tensor(&refs, &device).unwrap();
    let expected = whole(&model, clip::stage_loss(&model, &batch, ids.clone()));
    // Both towers, the projections, the temperature and the shape head, each counted once.
    let sharded = clip::sharded_gradients(&model, &batch, &ids);
    assert_as_whole("CLIP", &model, &expected, sharded);
}
