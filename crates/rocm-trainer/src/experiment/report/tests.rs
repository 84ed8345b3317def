//! The reports on fabricated run folders, and the checks of their axis names and labels.
use super::grids::read_png;
use crate::experiment::{COMPLETED_FILE, Grid, Results};
use std::path::Path;

/// Two methods × two betas × two seeds on a fabricated world: method `a` climbs with β
/// in `score` and peaks in `truth` at β 1; `b` is slower.
const GRID: &str = r#"
    output_dir = "OUT"
    [base]
    model = "toy"
    [[axes]]
    name = "method"
    values = [
      { label = "a", set = { "train.algorithm" = "rocm" } },
      { label = "b", set = { "train.algorithm" = "rlcm" } },
    ]
    [[axes]]
    key = "train.beta"
    values = [0.0, 1.0, 3.0]
    [[axes]]
    key = "train.seed"
    values = [0, 1]
    [[reports]]
    kind = "table"
    name = "t1"
    title = "Table"
    rows = "method"
    split_by = "beta"
    columns = ["score", "truth"]
    omit = { "0.0" = "score" }
    base_rows = [{ label = "base", where = { method = ["a"] } }]
    [[reports]]
    kind = "sweep"
    name = "sw"
    title = "Sweep"
    x = "train.beta"
    x_label = "beta"
    symlog_x = true
    y = ["truth"]
    where = { method = ["a"] }
    [[reports]]
    kind = "curves"
    name = "cv"
    title = "Curves"
    series = "method"
    y = "reward"
    y_label = "reward"
    reach = "b"
    where = { beta = [1.0] }
    [[reports]]
    kind = "grids"
    name = "gr"
    title = "Grids"
    series = "method"
    base = true
    zoom = 2
    where = { beta = [1.0], seed = [0] }
"#;

/// A finished run folder: evaluations at steps 0, 2, 4 and 1 s per iteration.
fn fabricate(dir: &Path, method: &str, beta: f64, seed: i64) {
    std::fs::create_dir_all(dir.join("samples")).unwrap();
    let speed = if method == "a" { 2.0 } else { 1.0 };
    let mut metrics = String::new();
    for step in 1..=4 {
        let m = crate::IterationMetrics {
            step,
            seconds: if method == "a" { 1.0 } else { 2.0 },
            reward_queries: 8,
            ..crate::IterationMetrics::default()
        };
        metrics += &(serde_json::to_string(&m).unwrap() + "\n");
    }
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let mut evals = String::new();
    for step in [0usize, 2, 4] {
        let reward = 1.0 + speed * step as f64 + seed as f64 * 0.1;
        let score = reward + beta;
        let truth = if step == 0 {
            1.0
        } else {
            2.0 - (beta - 1.0).abs()
        };
        evals += &format!(
            "{{\"step\":{step},\"reward_mean\":{reward},\"held_out\":{{\
             \"score\":{{\"mean\":{score}}},\"truth\":{{\"mean\":{truth}}}}}}}\n"
        );
        // A grid of 2 seeds × 3 prompts of 2-pixel tiles, its colour saying the step.
        let v = (step * 50) as u8;
        crate::images::RgbImage {
            width: 4,
            height: 6,
            rgb: vec![v; 4 * 6 * 3],
        }
        .save(&dir.join(format!("samples/step-{step:06}.png")))
        .unwrap();
    }
    std::fs::write(dir.join("eval.jsonl"), evals).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[train]\nbeta = {beta:?}\nseed = {seed}\neval_seeds = [5, 6]\n\
             eval_prompts = [\"p1\", \"p2\", \"p3\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join(COMPLETED_FILE), "{}").unwrap();
}

#[test]
fn reports_tabulate_sweep_race_and_copy_grids() {
    let out = std::env::temp_dir().join(format!("rocm-report-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let text = GRID.replace("OUT", &out.display().to_string());
    let plan = Grid::from_toml_str(&text, "g.toml")
        .unwrap()
        .plan(false)
        .unwrap();
    for run in &plan.runs {
        let beta: f64 = run.labels[1].parse().unwrap();
        let seed: i64 = run.labels[2].parse().unwrap();
        fabricate(&plan.run_dir(run), &run.labels[0], beta, seed);
    }
    let results = Results::collect(&plan, std::slice::from_ref(&out)).unwrap();
    results.write(&out).unwrap();
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    // Table: the split β = 0 leaves `score` out; base rows from step 0; best in bold.
    let section = &md[md.find("### beta = 0.0").unwrap()..md.find("### beta = 1.0").unwrap()];
    assert!(section.contains("(column `score` left out"), "{section}");
    assert!(section.contains("| method | n | truth |"), "{section}");
    assert!(section.contains("| *base* | 2 | 1 ± 0 |"), "{section}");
    assert!(
        md.contains("| a | 2 | **10.0500 ± 0.0707** | **2 ± 0** |"),
        "{md}"
    );
    let t1 = std::fs::read_to_string(out.join("t1.csv")).unwrap();
    assert!(t1.contains("3.0,b,2,score,8.0"), "{t1}");
    // Sweep: truth peaks at β = 1, one chart per metric.
    assert!(
        md.contains("`truth` is highest at train.beta = 1 (2)"),
        "{md}"
    );
    assert!(out.join("sw_truth.png").is_file());
    let sw = std::fs::read_to_string(out.join("sw.csv")).unwrap();
    assert!(sw.contains("3,truth,2,0,0"), "{sw}");
    // Curves: b ends at 5.05 after 8 s; a reaches that at step 2, after 2 s: ratio 0.25.
    assert!(
        md.contains("| a | 2 | 1.0500 | 9.0500 | 4 | 32 | 2 | 0.2500 | 16 |"),
        "{md}"
    );
    assert!(md.contains("`b`'s final mean 5.0500 after 8 s"), "{md}");
    assert!(out.join("cv_vs_seconds.png").is_file() && out.join("cv_vs_queries.png").is_file());
    // Grids: the base (step 0) and each method's last grid (step 4), and the composite of
    // their first rows (all 3 here), zoom 2: 3 grids of 8 px with 4-px gaps, 12 px high.
    let sample = |id: &str, step: usize| {
        std::fs::read(
            out.join("runs")
                .join(id)
                .join(format!("samples/step-{step:06}.png")),
        )
        .unwrap()
    };
    let first = "method-a_beta-1.0_seed-0";
    assert_eq!(
        std::fs::read(out.join("gr/base.png")).unwrap(),
        sample(first, 0)
    );
    assert_eq!(
        std::fs::read(out.join("gr/a.png")).unwrap(),
        sample(first, 4)
    );
    assert!(md.contains("![b](gr/b.png)"), "{md}");
    let composite = read_png(&out.join("gr.png")).unwrap();
    assert_eq!(composite.width, 3 * 8 + 2 * 4);
    assert!(composite.height > 12, "a caption strip under the images");
    let px = |x: usize, y: usize| composite.rgb[(y * composite.width + x) * 3];
    assert_eq!(
        (px(0, 0), px(12, 11), px(9, 5)),
        (0, 200, 255),
        "base, a at step 4, the gap"
    );
    // curves.csv: every evaluation of every run, the held-out metrics as columns.
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    let lines: Vec<&str> = curves.lines().collect();
    assert_eq!(
        lines[0],
        "run,method,beta,seed,step,seconds,reward_queries,reward,score,truth"
    );
    assert_eq!(lines.len(), 1 + 12 * 3);
    assert_eq!(lines[2], "method-a_beta-0.0_seed-0,a,0.0,0,2,2,16,5,5,1");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn reports_naming_unknown_axes_or_labels_are_refused() {
    for (from, to, needle) in [
        (
            "rows = \"method\"",
            "rows = \"methd\"",
            "`reports[0].rows`: no axis `methd`",
        ),
        (
            "omit = { \"0.0\" = \"score\" }",
            "omit = { \"9\" = \"score\" }",
            "`reports[0].omit`: `9` is not a label of `beta`",
        ),
        (
            "name = \"t1\"",
            "name = \"t1\"\nwhere = { method = [\"c\"] }",
            "`reports[0].where.method`",
        ),
        ("reach = \"b\"", "reach = \"z\"", "`reports[2].reach`"),
    ] {
        let text = GRID.replacen(from, to, 1);
        let e = Grid::from_toml_str(&text, "g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    let twice = GRID.replace("name = \"sw\"", "name = \"t1\"");
    let e = Grid::from_toml_str(&twice, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("two reports are named `t1`"), "{e}");
}
