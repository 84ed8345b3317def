//! `kind = "sweep"`: final metrics against a numeric configuration key.

use std::fmt::Write as _;
use std::path::Path;

use super::context::{Context, Finished, final_values};
use super::{SweepReport, plot_error};
use crate::experiment::GridError;
use crate::experiment::curves::mean_and_std;
use crate::experiment::grid::{get_key, sanitise};
use crate::experiment::results::{mean_std, number, write_atomic};
use crate::plot::{self, Chart, Series};

pub(super) fn sweep(ctx: &Context, r: &SweepReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    // x → the kept runs there, in x order.
    let mut points: Vec<(f64, Vec<&Finished>)> = Vec::new();
    for f in &kept {
        let x = get_key(&f.curves.config, &r.x)
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .ok_or_else(|| GridError::Parse {
                path: f.dir.join("config.toml"),
                message: format!("report `{}`: `{}` is not a number here", r.name, r.x),
            })?;
        match points.iter_mut().find(|(v, _)| *v == x) {
            Some((_, runs)) => runs.push(f),
            None => points.push((x, vec![f])),
        }
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut md = format!(
        "## {}\n\nEach metric at the last evaluation against `{}`: mean ± sample standard \
         deviation over `{averaged}` (n runs). Numbers: `{}.csv`.\n\n| `{}` | n |",
        r.title, r.x, r.name, r.x
    );
    for y in &r.y {
        let _ = write!(md, " {y} |");
    }
    let _ = writeln!(md, "\n|---|---|{}", "---|".repeat(r.y.len()));
    let mut csv = String::from("x,metric,n,mean,std\n");
    for (x, runs) in &points {
        let _ = write!(md, "| {x} | {} |", runs.len());
        for y in &r.y {
            let v = final_values(runs, y, false);
            let _ = write!(md, " {} |", mean_std(&v));
            if let Some((m, s)) = mean_and_std(&v) {
                let _ = writeln!(csv, "{x},{y},{},{m},{s}", v.len());
            }
        }
        md.push('\n');
    }
    md.push('\n');
    for y in &r.y {
        let means: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|(x, runs)| {
                mean_and_std(&final_values(runs, y, false)).map(|(m, _)| (*x, m))
            })
            .collect();
        if let Some((x, m)) = means.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
            let _ = writeln!(md, "- `{y}` is highest at {} = {x} ({}).", r.x, number(m));
        }
        let mut series = vec![Series::new(format!("mean over {averaged}"), means)];
        // Each averaged run as its own faint line, by its label on the averaged axis.
        let mut by_label: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (x, runs) in &points {
            for f in runs {
                let label = ctx.label(f, &averaged).unwrap_or("run").to_string();
                if let Some(v) = f.curves.last().and_then(|e| e.values.get(y)) {
                    match by_label.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, p)) => p.push((*x, *v)),
                        None => by_label.push((label, vec![(*x, *v)])),
                    }
                }
            }
        }
        series.extend(
            by_label
                .into_iter()
                .map(|(l, p)| Series::new(format!("{averaged} {l}"), p)),
        );
        let mut chart = Chart::new(format!("{}: {y}", r.title), &r.x_label, y.clone());
        if r.symlog_x {
            chart = chart.symlog_x();
        }
        let file = format!("{}_{}.png", r.name, sanitise(y));
        let path = out.join(&file);
        plot::curves(&path, &chart, &series).map_err(plot_error(&path))?;
        let _ = writeln!(md, "\n![{y} against {}]({file})", r.x);
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    Ok(md)
}
