//! `kind = "curves"`: a metric against training seconds and reward queries, and the race to a
//! reference line's final value.

use std::fmt::Write as _;
use std::path::Path;

use super::context::{Context, Finished};
use super::{CurvesReport, plot_error};
use crate::experiment::GridError;
use crate::experiment::curves::{EvalPoint, mean_and_std};
use crate::experiment::results::{number, write_atomic};
use crate::plot::{self, Chart, Series};

/// One point of a mean curve.
#[derive(Clone, Copy, Debug)]
struct CurvePoint {
    step: usize,
    seconds: f64,
    queries: f64,
    mean: f64,
    std: f64,
}

/// The mean curve of `runs` over their common evaluation steps.
fn mean_curve(runs: &[&Finished], y: &str) -> Vec<CurvePoint> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in &first.curves.evals {
        let at: Vec<&EvalPoint> = runs
            .iter()
            .filter_map(|r| r.curves.evals.iter().find(|p| p.step == e.step))
            .filter(|p| p.values.contains_key(y))
            .collect();
        if at.len() != runs.len() {
            continue;
        }
        let mean =
            |f: &dyn Fn(&EvalPoint) -> f64| at.iter().map(|p| f(p)).sum::<f64>() / at.len() as f64;
        let ys: Vec<f64> = at.iter().map(|p| p.values[y]).collect();
        let (m, s) = mean_and_std(&ys).unwrap_or((f64::NAN, 0.0));
        out.push(CurvePoint {
            step: e.step,
            seconds: mean(&|p| p.seconds),
            queries: mean(&|p| p.reward_queries),
            mean: m,
            std: s,
        });
    }
    out
}

pub(super) fn curves(ctx: &Context, r: &CurvesReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    // (label, runs averaged, mean curve) per label of the series axis.
    let mut lines: Vec<(String, usize, Vec<CurvePoint>)> = Vec::new();
    for label in ctx.labels_in(&r.series, &kept) {
        let runs = ctx.with_label(&kept, &r.series, &label);
        let curve = mean_curve(&runs, &r.y);
        lines.push((label, runs.len(), curve));
    }
    let mut csv = String::from("series,step,seconds,reward_queries,mean,std\n");
    for (label, _, curve) in &lines {
        for p in curve {
            let _ = writeln!(
                csv,
                "{label},{},{},{},{},{}",
                p.step, p.seconds, p.queries, p.mean, p.std
            );
        }
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    let mut md = format!(
        "## {}\n\n`{}` at each evaluation against the training seconds (the iterations' own \
         wall-clock, evaluations excluded) and the reward queries spent up to it, mean over \
         `{averaged}`. Numbers: `{}.csv`.\n\n",
        r.title, r.y, r.name
    );
    for (suffix, x_label, pick) in [
        (
            "seconds",
            "training wall-clock (s)",
            (|p: &CurvePoint| p.seconds) as fn(&CurvePoint) -> f64,
        ),
        ("queries", "reward queries", |p| p.queries),
    ] {
        let series: Vec<Series> = lines
            .iter()
            .map(|(l, _, c)| Series::new(l.clone(), c.iter().map(|p| (pick(p), p.mean)).collect()))
            .collect();
        let file = format!("{}_vs_{suffix}.png", r.name);
        let path = out.join(&file);
        let chart = Chart::new(r.title.clone(), x_label, r.y_label.clone());
        plot::curves(&path, &chart, &series).map_err(plot_error(&path))?;
        let _ = writeln!(md, "![{} against {x_label}]({file})\n", r.y);
    }
    let _ = writeln!(
        md,
        "| {} | n | before | after | seconds | reward queries |{}",
        r.series,
        if r.reach.is_some() {
            " seconds to reach the reference's final | ratio to the reference's seconds | queries to reach it |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|{}",
        if r.reach.is_some() {
            "---|---|---|"
        } else {
            ""
        }
    );
    let reference = r
        .reach
        .as_ref()
        .and_then(|l| lines.iter().find(|(x, _, _)| x == l))
        .and_then(|(_, _, c)| c.last().copied());
    for (label, n, curve) in &lines {
        let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
            continue;
        };
        let _ = write!(
            md,
            "| {label} | {n} | {} | {} | {} | {} |",
            number(first.mean),
            number(last.mean),
            number(last.seconds),
            number(last.queries)
        );
        if let Some(reference) = reference {
            // The first evaluation after training started (step 0 is the base model).
            match curve
                .iter()
                .find(|p| p.step > 0 && p.mean >= reference.mean)
            {
                Some(p) => {
                    let _ = write!(
                        md,
                        " {} | {} | {} |",
                        number(p.seconds),
                        number(p.seconds / reference.seconds),
                        number(p.queries)
                    );
                }
                None => md.push_str(" not reached | — | — |"),
            }
        }
        md.push('\n');
    }
    if let (Some(l), Some(reference)) = (&r.reach, reference) {
        let _ = writeln!(
            md,
            "\nReference: `{l}`'s final mean {} after {} s. \"Reach\": the first evaluation \
             after step 0 whose mean is at least that.",
            number(reference.mean),
            number(reference.seconds)
        );
        let start = lines
            .iter()
            .find(|(x, _, _)| x == l)
            .and_then(|(_, _, c)| c.first().copied());
        if let Some(start) = start
            && reference.mean <= start.mean
        {
            let _ = writeln!(
                md,
                "\n**`{l}` ended at or below where it started ({} → {}): reaching its final value \
                 says nothing about speed here.**",
                number(start.mean),
                number(reference.mean)
            );
        }
    }
    Ok(md)
}
