//! `rocm review`: a human-preference study of two models on one LCM pipeline. Generates (or
//! finds in the database, by content key) both arms' images of the same prompts × seeds, then
//! serves the voting page of [`rocm_review`]; `--report` prints the results table instead.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Arg, ArgAction, ArgMatches, Command};
use rocm::lora::{adapter_weights_file, load_adapters_with};
use rocm::models::LcmPipeline;
use rocm::models::hub;
use rocm::models::pipeline::NoiseSource;
use rocm::run::{ModelSource, RunConfig};
use rocm::trainer::checkpoint::latest_checkpoint;
use rocm::trainer::images::RgbImage;
use rocm_review::{Arm, Server, Store, StudySpec, Winner, report, sha256_hex};

use crate::Failure;
use crate::export::load_options;
use crate::train::check_lora;

/// The `review` subcommand's arguments.
pub fn command() -> Command {
    let path_arg = |id: &'static str, value: &'static str, help: &'static str| {
        Arg::new(id)
            .long(id)
            .value_name(value)
            .value_parser(clap::value_parser!(PathBuf))
            .help(help)
    };
    Command::new("review")
        .about("A human-preference study: two models' images side by side in a local web page, votes in SQLite")
        .arg(path_arg("db", "FILE", "The study's SQLite database (created if missing)").required(true))
        .arg(arm_arg("a", "Arm A"))
        .arg(arm_arg("b", "Arm B"))
        .arg(
            Arg::new("model")
                .long("model")
                .value_name("DIR_OR_HUB_ID")
                .help("The LCM pipeline both arms sample (default: the model of a RUN.toml arm)"),
        )
        .arg(path_arg(
            "prompts",
            "FILE",
            "Prompts, one per line (default: a RUN.toml arm's train.eval_prompts)",
        ))
        .arg(
            Arg::new("seeds")
                .long("seeds")
                .value_name("LIST")
                .value_parser(parse_seeds)
                .help("Noise seeds, e.g. 0,1,2 or 0..8 (default: a RUN.toml arm's train.eval_seeds, else 0)"),
        )
        .arg(
            Arg::new("steps")
                .long("steps")
                .value_name("K")
                .value_parser(clap::value_parser!(usize))
                .help("Sampler steps K (default: a RUN.toml arm's train.num_steps, else 4)"),
        )
        .arg(
            Arg::new("guidance")
                .long("guidance")
                .value_name("G")
                .value_parser(clap::value_parser!(f32))
                .help("Guidance scale g (default: a RUN.toml arm's train.guidance_scale, else 8.0)"),
        )
        .arg(
            Arg::new("bind")
                .long("bind")
                .value_name("ADDR")
                .default_value("127.0.0.1:8080")
                .help("Address to serve on (port 0: any free port)"),
        )
        .arg(
            Arg::new("report")
                .long("report")
                .action(ArgAction::SetTrue)
                .help("Print the results table of --db and exit"),
        )
        .arg(path_arg("csv", "FILE", "With --report: also write the raw votes as CSV"))
        .arg(crate::skip_text_encoder_arg())
        .arg(crate::device_arg())
}

fn arm_arg(id: &'static str, which: &'static str) -> Arg {
    Arg::new(id)
        .long(id)
        .value_name("RUN_OR_LORA")
        .help(format!(
            "{which}: `base` (no adapters), a LoRA file or checkpoint folder, a run's output folder \
             (its newest checkpoint) or its RUN.toml configuration (its newest checkpoint)"
        ))
}

/// `0,1,2`, `0..8` (end excluded) or a mix.
fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let mut seeds = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|e| format!("seed `{t}`: {e}"))
        };
        match part.split_once("..") {
            Some((from, to)) => seeds.extend(number(from)?..number(to)?),
            None => seeds.push(number(part)?),
        }
    }
    if seeds.is_empty() {
        return Err(format!("`{s}` names no seed"));
    }
    Ok(seeds)
}

/// One arm as given on the command line, resolved.
struct ArmSource {
    arm: Arm,
    /// The adapter file or folder to load, `None` for the base model.
    lora: Option<PathBuf>,
    /// The run configuration, when the arm was given as one.
    config: Option<RunConfig>,
}

fn resolve_arm(flag: &str, given: &str) -> Result<ArmSource, Failure> {
    if given == "base" {
        return Ok(ArmSource {
            arm: Arm::new("base", "base"),
            lora: None,
            config: None,
        });
    }
    let path = PathBuf::from(given);
    let (lora, config) = if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
        let config = RunConfig::load(&path).map_err(|e| format!("--{flag}: {e}"))?;
        let checkpoints = config.train.output_dir.join("checkpoints");
        let latest = latest_checkpoint(&checkpoints)?.ok_or_else(|| {
            format!(
                "--{flag} {given}: no checkpoint under {}",
                checkpoints.display()
            )
        })?;
        (latest, Some(config))
    } else if path.join("checkpoints").is_dir() {
        let checkpoints = path.join("checkpoints");
        let latest = latest_checkpoint(&checkpoints)?.ok_or_else(|| {
            format!(
                "--{flag} {given}: no checkpoint under {}",
                checkpoints.display()
            )
        })?;
        (latest, None)
    } else {
        (path, None)
    };
    check_lora(&lora).map_err(|e| format!("--{flag}: {e}"))?;
    let weights = adapter_weights_file(&lora);
    let mut bytes = std::fs::read(&weights).map_err(|e| format!("{}: {e}", weights.display()))?;
    // α may come from the PEFT config beside the weights: it changes the images too.
    if let Ok(config) = std::fs::read(weights.with_file_name(rocm::lora::PEFT_CONFIG)) {
        bytes.extend(config);
    }
    Ok(ArmSource {
        arm: Arm::new(
            lora.display().to_string(),
            format!("lora {}", sha256_hex(&bytes)),
        ),
        lora: Some(lora),
        config,
    })
}

/// The first value a run-configuration arm gives, if any.
fn from_configs<'a, T>(
    arms: &'a [&ArmSource],
    get: impl Fn(&'a RunConfig) -> Option<T>,
) -> Option<T> {
    arms.iter().filter_map(|a| a.config.as_ref()).find_map(get)
}

/// The identity of a pipeline folder's weights: its path and every file's size and
/// modification time (a changed file gives new images; hashing gigabytes at each start would
/// not be worth it).
fn model_identity(dir: &Path) -> Result<String, Failure> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", d.display()))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let name = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                entries.push(format!("{name}\t{}\t{modified}", meta.len()));
            }
        }
    }
    entries.sort();
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(format!(
        "{} {}",
        canonical.display(),
        &sha256_hex(entries.join("\n").as_bytes())[..16]
    ))
}

fn read_prompts(path: &Path) -> Result<Vec<String>, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--prompts {}: {e}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        return Err(format!("--prompts {}: no prompt in the file", path.display()).into());
    }
    Ok(prompts)
}

/// The study the command line describes, and where its arms' adapters are.
struct Plan {
    spec: StudySpec,
    model: String,
    steps: usize,
    guidance: f32,
    lora: [Option<PathBuf>; 2],
}

fn plan(m: &ArgMatches, a: &str, b: &str) -> Result<Plan, Failure> {
    let arms = [resolve_arm("a", a)?, resolve_arm("b", b)?];
    let refs = [&arms[0], &arms[1]];
    let model = match m.get_one::<String>("model") {
        Some(model) => model.clone(),
        None => from_configs(&refs, |c| match &c.model {
            ModelSource::Pretrained(name) => Some(name.clone()),
            ModelSource::Toy => None,
        })
        .ok_or("--model is needed (no RUN.toml arm names an LCM pipeline)")?,
    };
    let prompts = match m.get_one::<PathBuf>("prompts") {
        Some(path) => read_prompts(path)?,
        None => from_configs(&refs, |c| {
            (!c.train.eval_prompts.is_empty()).then(|| c.train.eval_prompts.clone())
        })
        .ok_or("--prompts is needed (no RUN.toml arm has train.eval_prompts)")?,
    };
    let seeds = m
        .get_one::<Vec<u64>>("seeds")
        .cloned()
        .or_else(|| from_configs(&refs, |c| Some(c.train.eval_seeds.clone())))
        .unwrap_or_else(|| vec![0]);
    let steps = m
        .get_one::<usize>("steps")
        .copied()
        .or_else(|| from_configs(&refs, |c| Some(c.train.num_steps)))
        .unwrap_or(4);
    let guidance = m
        .get_one::<f32>("guidance")
        .copied()
        .or_else(|| from_configs(&refs, |c| Some(c.train.guidance_scale)))
        .unwrap_or(8.0);
    if steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    let dir = hub::model_dir(&model, &rocm::models::pipeline::LCM_FOLDER_FILES)
        .map_err(|e| format!("--model `{model}`: {e}"))?;
    let settings = format!(
        "model {}; steps {steps}; guidance {guidance}",
        model_identity(&dir)?
    );
    let [a, b] = arms;
    Ok(Plan {
        spec: StudySpec {
            a: a.arm,
            b: b.arm,
            settings,
            prompts,
            seeds,
        },
        model,
        steps,
        guidance,
        lora: [a.lora, b.lora],
    })
}

/// Generates the images the database lacks, arm by arm, each committed as it is made (an
/// interrupted run resumes). Each image is its own batch of one: the same as `rocm sample
/// --prompt P --seed S`.
fn generate(plan: &Plan, store: &mut Store, m: &ArgMatches) -> Result<(), Failure> {
    let missing = store.missing_images()?;
    if missing.is_empty() {
        eprintln!(
            "all {} images found in {}",
            2 * plan.spec.pairs().len(),
            store.path().display()
        );
        return Ok(());
    }
    let device_name = m.get_one::<String>("device").cloned().unwrap_or_default();
    let (device, backend) = rocm::select_device(&device_name)?;
    for (arm, lora) in [(Winner::A, &plan.lora[0]), (Winner::B, &plan.lora[1])] {
        let todo: Vec<_> = missing.iter().filter(|i| i.arm == arm).collect();
        if todo.is_empty() {
            continue;
        }
        let mut pipeline = LcmPipeline::from_pretrained(&plan.model, &device)
            .map_err(|e| format!("--model `{}`: {e}", plan.model))?;
        if let Some(lora) = lora {
            let options = load_options(m.get_flag("skip-text-encoder"));
            let report = load_adapters_with(&mut pipeline.unet, lora, &options)
                .map_err(|e| format!("{}: {e}", lora.display()))?;
            eprintln!(
                "arm {}: {} LoRA adapters from {}",
                arm.name(),
                report.loaded.len(),
                report.file.display()
            );
        }
        let start = Instant::now();
        for (i, image) in todo.iter().enumerate() {
            let tensor = pipeline.generate(
                &[image.prompt.as_str()],
                plan.steps,
                plan.guidance,
                NoiseSource::Seed(image.seed),
            )?;
            let png = RgbImage::from_tensor(tensor)
                .first()
                .map(RgbImage::to_png)
                .ok_or("the pipeline returned no image")?;
            store.put_image(&image.key, &png)?;
            eprintln!(
                "arm {}: image {}/{} on {backend} ({:.1} s): {:?}, seed {}",
                arm.name(),
                i + 1,
                todo.len(),
                start.elapsed().as_secs_f32(),
                image.prompt,
                image.seed
            );
        }
    }
    Ok(())
}

/// Runs `rocm review`.
pub fn review(m: &ArgMatches) -> Result<(), Failure> {
    let db = m.get_one::<PathBuf>("db").cloned().unwrap_or_default();
    if m.get_flag("report") {
        if !db.is_file() {
            return Err(format!("--db {}: no such file", db.display()).into());
        }
        let store = Store::open(&db)?;
        let spec = store.require_study()?;
        let votes = store.votes()?;
        print!("{}", report::table(&spec, &votes));
        if let Some(csv) = m.get_one::<PathBuf>("csv") {
            let file =
                std::fs::File::create(csv).map_err(|e| format!("--csv {}: {e}", csv.display()))?;
            report::write_csv(&votes, std::io::BufWriter::new(file))?;
            eprintln!("wrote {} votes to {}", votes.len(), csv.display());
        }
        return Ok(());
    }
    let mut store = Store::open(&db)?;
    match (m.get_one::<String>("a"), m.get_one::<String>("b")) {
        (Some(a), Some(b)) => {
            let plan = plan(m, a, b)?;
            store.ensure_study(&plan.spec)?;
            generate(&plan, &mut store, m)?;
        }
        (None, None) => {
            store.require_study()?; // resume a study without the models
        }
        _ => return Err("give both --a and --b (or neither, to serve the study in --db)".into()),
    }
    let bind = m.get_one::<String>("bind").cloned().unwrap_or_default();
    let server = Server::bind(store, &bind)?;
    let addr = server.local_addr()?;
    println!("http://{addr}/");
    eprintln!(
        "voting page http://{addr}/, results http://{addr}/results (Ctrl-C stops; votes are saved as they come)"
    );
    server.run()?;
    Ok(())
}
