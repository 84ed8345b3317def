//! Each training stage of the shapes world runs a few steps on tiny models: every loss is finite
//! and the loss falls, a stage resumes from its checkpoint, and the build's bad inputs (unknown
//! stage, unwritable output, a corrupt model file it reads) are one-line errors naming the culprit.
#![allow(clippy::unwrap_used)]

use burn::prelude::*;
use rocm_shapes::build::{BuildPlan, Stage, check_writable};
use rocm_shapes::tokenizer::WorldBpe;
use rocm_shapes::train::{StageOptions, Trainer, aesthetic, clip, distill, pref, teacher, vae};

mod common;
use common::{losses, options, scratch, tiny_cache, tiny_clip, tiny_unet_config, tokenizer};

/// Every loss finite, and the mean of the last quarter below the mean of the first quarter.
fn assert_falls(stage: &str, l: &[f32]) {
    assert!(l.iter().all(|v| v.is_finite()), "{stage}: {l:?}");
    let q = (l.len() / 4).max(1);
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    let (first, last) = (mean(&l[..q]), mean(&l[l.len() - q..]));
    assert!(
        last < first,
        "{stage}: loss did not fall ({first} → {last}): {l:?}"
    );
}

#[test]
fn the_vae_stage_trains_and_resumes() {
    let device = Device::flex();
    let work = scratch("vae");
    let config = vae::tiny_vae_config();
    let opts = options(16, 4, 3e-3);
    let l = losses(|f| {
        vae::train(&config, &opts, &work, &device, f).unwrap();
    });
    assert_falls("vae", &l);
    // A checkpoint at step 8, then a resumed run does only the remaining steps.
    let work2 = scratch("vae-resume");
    let first = StageOptions {
        checkpoint_every: 8,
        ..options(8, 4, 3e-3)
    };
    vae::train(&config, &first, &work2, &device, &mut |_| {}).unwrap();
    let rest = StageOptions {
        checkpoint_every: 8,
        ..options(12, 4, 3e-3)
    };
    let resumed = losses(|f| {
        vae::train(&config, &rest, &work2, &device, f).unwrap();
    });
    assert_eq!(resumed.len(), 4, "resumed from step 8 of 12");
}

#[test]
fn the_clip_stage_trains() {
    let device = Device::flex();
    let dir = scratch("clip");
    let bpe = WorldBpe::learn();
    let tok = tokenizer(&dir);
    let config = clip::world_clip_config(&bpe, 16, 1);
    let l = losses(|f| {
        clip::train(&config, &tok, &options(24, 16, 3e-3), &dir, &device, f).unwrap();
    });
    assert_falls("clip", &l);
}

#[test]
fn the_shape_loss_is_binary_cross_entropy_of_the_shapes_a_batch_holds() {
    use burn::module::Param;
    use burn::nn::LinearConfig;
    let device = Device::flex();
    let batch = clip::batch(&options(1, 16, 0.0), 0);
    assert_eq!(batch.shapes.len(), 16);
    for (caption, shapes) in batch.captions.iter().zip(&batch.shapes) {
        for (s, &on) in rocm_shapes::world::SHAPES.iter().zip(shapes) {
            assert_eq!(caption.contains(s.word()), on, "{caption}: {s:?}");
        }
    }
    let img = Tensor::<2>::ones([16, 8], &device);
    // Zero logits: ln 2 for every entry.
    let mut head = LinearConfig::new(8, rocm_shapes::world::SHAPES.len()).init(&device);
    head.weight = Param::from_tensor(Tensor::zeros([8, 4], &device));
    head.bias = Some(Param::from_tensor(Tensor::zeros([4], &device)));
    let l = clip::shape_loss(&head, img.clone(), &batch.shapes);
    let at_zero = f64::from(l.into_scalar::<f32>());
    assert!((at_zero - std::f64::consts::LN_2).abs() < 1e-6, "{at_zero}");
    // Logits of ±6 that agree with one scene's shapes, for every scene of a batch of that scene:
    // the loss is ln(1 + e⁻⁶); flipped, ln(1 + e⁶).
    let one = vec![batch.shapes[0]; 16];
    let signs: Vec<f32> = one[0]
        .iter()
        .map(|&on| if on { 6.0 } else { -6.0 })
        .collect();
    for (sign, want) in [
        (1.0f32, (1.0 + (-6.0f64).exp()).ln()),
        (-1.0, (1.0 + 6f64.exp()).ln()),
    ] {
        let bias: Vec<f32> = signs.iter().map(|v| v * sign).collect();
        head.bias = Some(Param::from_tensor(Tensor::from_floats(
            bias.as_slice(),
            &device,
        )));
        let got = f64::from(clip::shape_loss(&head, img.clone(), &one).into_scalar::<f32>());
        assert!((got - want).abs() < 1e-5, "{sign}: {got} against {want}");
    }
}

#[test]
fn shape_twins_differ_in_one_shape_only() {
    let mut rng = StageOptions {
        seed: 5,
        ..options(1, 1, 0.0)
    }
    .rng(0);
    for i in 0..100 {
        let scene = rocm_shapes::Split::Train.scene(i);
        let twin = clip::shape_twin(&mut rng, &scene).unwrap();
        let changed: Vec<usize> = (0..scene.objects.len())
            .filter(|&k| scene.objects[k].shape != twin.objects[k].shape)
            .collect();
        assert_eq!(changed.len(), 1, "{} / {}", scene.caption, twin.caption);
        assert_ne!(scene.caption, twin.caption);
        assert!(
            twin.objects
                .iter()
                .all(|o| !rocm_shapes::world::is_held_out(o.colour, o.shape)),
            "{}",
            twin.caption
        );
    }
}

#[test]
fn the_preference_stage_trains() {
    let device = Device::flex();
    let dir = scratch("pref");
    let bpe = WorldBpe::learn();
    let tok = tokenizer(&dir);
    let ad = device.clone().autodiff();
    // The stage itself: fresh noisy-labelled pairs every step, so only finiteness is checked.
    let (_, init) = tiny_clip(&bpe, &ad);
    let l = losses(|f| {
        pref::train(init, &tok, None, &options(6, 8, 3e-3), &dir, &device, f).unwrap();
    });
    assert!(l.len() == 6 && l.iter().all(|v| v.is_finite()), "{l:?}");
    // Its loss and optimiser on one fixed batch of pairs: the loss falls.
    let (_, init) = tiny_clip(&bpe, &ad);
    let mut trainer = Trainer::new(clip::ClipTrain::new(init, &ad));
    let pairs = pref::pairs(
        &mut options(1, 1, 0.0).rng(0),
        rocm_shapes::Split::Train,
        16,
    );
    let prompts: Vec<&str> = pairs.iter().map(|p| p.prompt.as_str()).collect();
    let l: Vec<f32> = (0..16)
        .map(|_| {
            let ids = tok.encode_to_tensor(&prompts, &ad).unwrap();
            let loss = pref::bradley_terry_loss(&trainer.model, &pairs, ids);
            trainer.apply(loss, 3e-3)
        })
        .collect();
    assert_falls("pref", &l);
}

#[test]
fn the_aesthetic_stage_trains() {
    let device = Device::flex();
    let dir = scratch("aesthetic");
    let bpe = WorldBpe::learn();
    let (_, init) = tiny_clip(&bpe, &device.clone().autodiff());
    let l = losses(|f| {
        aesthetic::train(init, &options(24, 16, 3e-3), &dir, &device, f).unwrap();
    });
    assert_falls("aesthetic", &l);
}

fn one_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "not one line: {s}");
    s
}

#[test]
fn bad_build_inputs_are_one_line_errors() {
    let e = Stage::parse("vea").unwrap_err();
    let s = one_line(&e);
    assert!(s.contains("vea") && s.contains("aesthetic"), "{s}");

    // An output below a regular file cannot be created.
    let dir = scratch("bad-out");
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let s = one_line(&check_writable(&file.join("world")).unwrap_err());
    assert!(s.contains(&file.display().to_string()), "{s}");

    // The preference stage reads the CLIP folder: a corrupt weight file is named.
    let device = Device::flex();
    let bpe = WorldBpe::learn();
    let clip_dir = dir.join("world/clip");
    let (config, model) = tiny_clip(&bpe, &device);
    clip::export(&model, &config, &bpe, &clip_dir).unwrap();
    let weights = clip_dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&weights, bytes).unwrap();
    let plan = BuildPlan {
        out: dir.join("world"),
        work: dir.join("work"),
        seed: 0,
        scale: 0.001,
    };
    let e = plan.run(Stage::Pref, &device, &mut |_| {}).unwrap_err();
    let s = one_line(&e);
    assert!(s.contains("model.safetensors"), "{s}");
}

/// The initial weights come from the stage's seed: a zero-step VAE stage gives the same model
/// twice, and another seed another one (the build is reproducible from its seed).
#[test]
fn a_stage_initialises_from_its_seed() {
    let device = Device::flex();
    let config = vae::tiny_vae_config();
    let weights = |seed: u64, name: &str| {
        let opts = StageOptions {
            seed,
            ..options(0, 4, 3e-3)
        };
        let model = vae::train(&config, &opts, &scratch(name), &device, &mut |_| {}).unwrap();
        model
            .encoder
            .conv_in
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let a = weights(5, "seed-a");
    assert_eq!(a, weights(5, "seed-b"));
    assert_ne!(a, weights(6, "seed-c"));
}

#[test]
fn the_teacher_stage_trains_and_resumes() {
    let device = Device::flex();
    let work = scratch("teacher");
    let cache = tiny_cache(&work, &device);
    assert_eq!(cache.latent_shape, [4, 16, 16]);
    let config = tiny_unet_config();
    let l = losses(|f| {
        teacher::train(&config, &cache, &options(24, 8, 3e-3), &work, &device, f).unwrap();
    });
    assert_falls("teacher", &l);
    let work2 = scratch("teacher-resume");
    let first = StageOptions {
        checkpoint_every: 4,
        ..options(4, 8, 3e-3)
    };
    teacher::train(&config, &cache, &first, &work2, &device, &mut |_| {}).unwrap();
    let rest = StageOptions {
        checkpoint_every: 4,
        ..options(6, 8, 3e-3)
    };
    let resumed = losses(|f| {
        teacher::train(&config, &cache, &rest, &work2, &device, f).unwrap();
    });
    assert_eq!(resumed.len(), 2, "resumed from step 4 of 6");
}

#[test]
fn the_distillation_stage_trains_from_the_teacher() {
    let device = Device::flex();
    let work = scratch("distill");
    let cache = tiny_cache(&work, &device);
    let config = tiny_unet_config();
    let teacher_model = teacher::train(
        &config,
        &cache,
        &options(8, 8, 3e-3),
        &work.join("teacher"),
        &device,
        &mut |_| {},
    )
    .unwrap();
    let settings = distill::DistillOptions {
        time_cond_proj_dim: 8,
        ..Default::default()
    };
    let student_config = distill::student_config(&config, &settings);
    // The student starts as the teacher: same output without the guidance embedding's effect
    // is not checkable, but every shared weight is copied.
    let student = distill::student_from_teacher(&teacher_model, &student_config, &device).unwrap();
    assert_eq!(
        student.conv_in.weight.val().into_data(),
        teacher_model.conv_in.weight.val().into_data()
    );
    assert!(student.time_embedding.cond_proj.is_some());
    // The stage: finite losses, falling.
    let l = losses(|f| {
        distill::train(
            &teacher_model,
            &student_config,
            &cache,
            &options(24, 8, 3e-3),
            &settings,
            &work.join("lcm"),
            &device,
            f,
        )
        .unwrap();
    });
    assert_falls("distill", &l);
}

#[test]
fn the_ema_moves_the_target_towards_the_online_network() {
    let device = Device::flex();
    let config = tiny_unet_config();
    device.seed(1);
    let target = config.init(&device);
    device.seed(2);
    let online = config.init(&device);
    let value = |m: &rocm_models::UNet2DConditionModel| {
        m.conv_out
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (t0, o) = (value(&target), value(&online));
    let updated = value(&distill::update_ema(target, &online, 0.75));
    for ((u, t), o) in updated.iter().zip(&t0).zip(&o) {
        assert!((u - (0.75 * t + 0.25 * o)).abs() < 1e-6, "{u} {t} {o}");
    }
}

/// Both diffusion pipeline folders load through the repo's own loaders (`LcmPipeline`, its
/// `ddim_scheduler()`), sample finite images in `[0, 1]`, and name a bad file on failure.
#[test]
fn the_pipeline_folders_load_and_sample() {
    use rocm_models::{LcmPipeline, UNet2DConditionModel};
    use rocm_shapes::pipelines::{PipelineKind, export};
    let device = Device::flex();
    let dir = scratch("pipelines");
    let bpe = WorldBpe::learn();
    let (clip_config, clip_model) = tiny_clip(&bpe, &device);
    let clip_dir = dir.join("clip");
    clip::export(&clip_model, &clip_config, &bpe, &clip_dir).unwrap();
    let vae_dir = dir.join("vae");
    let vae_config = vae::tiny_vae_config();
    vae::export(&vae_config.init(&device), &vae_config, 0.5, &vae_dir).unwrap();
    let config = tiny_unet_config();
    let lcm_config = config.clone().with_time_cond_proj_dim(Some(8));
    let prompts = ["a red circle", "a small blue square on a white background"];
    for (kind, unet_config) in [
        (PipelineKind::StableDiffusionDdim, &config),
        (PipelineKind::Lcm, &lcm_config),
    ] {
        let unet = unet_config.init(&device);
        let out = dir.join(format!("{kind:?}"));
        export(kind, &unet, unet_config, &vae_dir, &clip_dir, &out).unwrap();
        let pipeline = LcmPipeline::from_folder(&out, &device).unwrap();
        let images = match kind {
            PipelineKind::Lcm => {
                rocm_shapes::evaluate::lcm_samples(&pipeline, &prompts.map(String::from), 2, 5.0, 0)
            }
            PipelineKind::StableDiffusionDdim => rocm_shapes::evaluate::ddim_samples(
                &pipeline,
                &prompts.map(String::from),
                3,
                5.0,
                0,
            ),
        }
        .unwrap();
        assert_eq!(images.len(), 2);
        for image in &images {
            assert!(image.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // The exported UNet is the trained one, key for key (strict load).
        let reloaded = UNet2DConditionModel::from_pretrained(out.join("unet"), &device).unwrap();
        assert_eq!(reloaded.time_cond_proj_dim, unet.time_cond_proj_dim);
    }
    let index = std::fs::read_to_string(dir.join("Lcm/model_index.json")).unwrap();
    assert!(index.contains("LatentConsistencyModelPipeline"), "{index}");
    let scheduler =
        std::fs::read_to_string(dir.join("StableDiffusionDdim/scheduler/scheduler_config.json"))
            .unwrap();
    assert!(scheduler.contains("DDIMScheduler"), "{scheduler}");
    // A truncated UNet file is an error naming it.
    let weights = dir.join("Lcm/unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = LcmPipeline::from_folder(dir.join("Lcm"), &device).unwrap_err();
    let s = one_line(&e);
    assert!(s.contains("diffusion_pytorch_model.safetensors"), "{s}");
}

#[test]
fn colour_and_shape_are_judged_by_the_detector() {
    use rocm_shapes::evaluate::colour_and_shape_right;
    let scenes = rocm_shapes::Split::Test.scenes(0, 40);
    for scene in &scenes {
        let image = rocm_shapes::render(scene);
        assert!(
            colour_and_shape_right(&image, &scene.caption),
            "{}",
            scene.caption
        );
    }
    // A render judged against another scene's caption is mostly wrong.
    let wrong = scenes
        .windows(2)
        .filter(|w| !colour_and_shape_right(&rocm_shapes::render(&w[0]), &w[1].caption))
        .count();
    assert!(wrong > 30, "{wrong} of 39 mismatched captions judged wrong");
}
