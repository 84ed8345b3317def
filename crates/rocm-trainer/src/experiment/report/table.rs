//! `kind = "table"`: final metrics per row label, one table per split.

use std::fmt::Write as _;
use std::path::Path;

use super::TableReport;
use super::context::{Context, Finished, final_values};
use crate::experiment::GridError;
use crate::experiment::curves::mean_and_std;
use crate::experiment::results::{mean_std, write_atomic};

pub(super) fn table(ctx: &Context, r: &TableReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let averaged = ctx.averaged();
    let splits: Vec<Option<String>> = match &r.split_by {
        Some(s) => ctx.labels_in(s, &kept).into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut md = format!(
        "## {}\n\nMean ± sample standard deviation over `{averaged}` (n runs) at each run's last \
         evaluation; base rows: the same runs' evaluation before training (step 0). Best trained \
         mean per column in bold. Numbers: `{}.csv`.\n",
        r.title, r.name
    );
    let mut csv = String::from("split,row,n,metric,mean,std\n");
    for split in &splits {
        let in_split: Vec<&Finished> = match (&r.split_by, split) {
            (Some(axis), Some(l)) => ctx.with_label(&kept, axis, l),
            _ => kept.clone(),
        };
        let omitted = split.as_ref().and_then(|s| r.omit.get(s));
        let columns: Vec<&String> = r.columns.iter().filter(|c| Some(*c) != omitted).collect();
        let mut rows: Vec<(String, Vec<Vec<f64>>, bool)> = Vec::new();
        for b in &r.base_rows {
            let runs: Vec<&Finished> = ctx
                .kept(&b.filter)
                .into_iter()
                .filter(|f| in_split.iter().any(|g| std::ptr::eq(*g, *f)))
                .collect();
            let cols = columns
                .iter()
                .map(|c| final_values(&runs, c, true))
                .collect();
            rows.push((b.label.clone(), cols, false));
        }
        for label in ctx.labels_in(&r.rows, &in_split) {
            let runs = ctx.with_label(&in_split, &r.rows, &label);
            let cols = columns
                .iter()
                .map(|c| final_values(&runs, c, false))
                .collect();
            rows.push((label, cols, true));
        }
        // The best trained mean of each column.
        let best: Vec<Option<f64>> = (0..columns.len())
            .map(|c| {
                rows.iter()
                    .filter(|(_, _, trained)| *trained)
                    .filter_map(|(_, cols, _)| mean_and_std(&cols[c]).map(|(m, _)| m))
                    .fold(None, |acc: Option<f64>, m| {
                        Some(acc.map_or(m, |a| a.max(m)))
                    })
            })
            .collect();
        if let (Some(axis), Some(l)) = (&r.split_by, split) {
            let _ = write!(md, "\n### {axis} = {l}");
            if let Some(o) = omitted {
                let _ = write!(md, " (column `{o}` left out: the trained reward)");
            }
            md.push('\n');
        }
        let header: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(md, "\n| {} | n | {} |", r.rows, header.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(columns.len()));
        for (label, cols, trained) in &rows {
            let n = cols.iter().map(Vec::len).max().unwrap_or(0);
            let cells: Vec<String> = cols
                .iter()
                .zip(&best)
                .map(|(v, b)| {
                    let text = mean_std(v);
                    let m = mean_and_std(v).map(|(m, _)| m);
                    if *trained && m.is_some() && m == *b {
                        format!("**{text}**")
                    } else {
                        text
                    }
                })
                .collect();
            let name = if *trained {
                label.clone()
            } else {
                format!("*{label}*")
            };
            let _ = writeln!(md, "| {name} | {n} | {} |", cells.join(" | "));
            for (c, v) in columns.iter().zip(cols) {
                if let Some((m, s)) = mean_and_std(v) {
                    let _ = writeln!(
                        csv,
                        "{},{},{},{c},{m},{s}",
                        split.as_deref().unwrap_or(""),
                        label,
                        v.len()
                    );
                }
            }
        }
    }
    write_atomic(&out.join(format!("{}.csv", r.name)), &csv)?;
    Ok(md)
}
