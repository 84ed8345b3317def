//! `kind = "grids"`: the runs' final image grids, copied and side by side in one composite.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use toml::Value;

use super::context::{Context, Finished};
use super::{GridsReport, plot_error};
use crate::experiment::GridError;
use crate::experiment::error::io;
use crate::experiment::grid::{get_key, sanitise};
use crate::images::RgbImage;

pub(super) fn grids(ctx: &Context, r: &GridsReport, out: &Path) -> Result<String, GridError> {
    let kept = ctx.kept(&r.filter);
    let folder = out.join(&r.name);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let mut md = format!(
        "## {}\n\nThe last evaluation's images of each run (rows = evaluation prompts, columns = \
         seeds), same prompts and noise in every grid.\n\n",
        r.title
    );
    let sample = |f: &Finished, step: usize| {
        f.dir
            .join(crate::SAMPLES_DIR)
            .join(format!("step-{step:06}.png"))
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    if r.base
        && let Some(f) = kept.first()
        && f.curves.start().is_some()
    {
        entries.push(("base".into(), sample(f, 0)));
    }
    for label in ctx.labels_in(&r.series, &kept) {
        if let Some(f) = ctx.with_label(&kept, &r.series, &label).first()
            && let Some(last) = f.curves.last()
        {
            entries.push((label, sample(f, last.step)));
        }
    }
    md.push_str("| ");
    md.push_str(
        &entries
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    let _ = writeln!(md, " |\n|{}", "---|".repeat(entries.len()));
    md.push('|');
    for (label, src) in &entries {
        let file = format!("{}.png", sanitise(label));
        let dst = folder.join(&file);
        std::fs::copy(src, &dst).map_err(io(src))?;
        let _ = write!(md, " ![{label}]({}/{file}) |", r.name);
    }
    md.push('\n');
    if r.rows > 0 && !entries.is_empty() {
        let seeds = kept
            .first()
            .and_then(|f| get_key(&f.curves.config, "train.eval_seeds"))
            .and_then(Value::as_array)
            .map_or(1, |a| a.len().max(1));
        let prompts: Vec<String> = kept
            .first()
            .and_then(|f| get_key(&f.curves.config, "train.eval_prompts"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let file = format!("{}.png", r.name);
        let path = out.join(&file);
        composite(&entries, seeds, &prompts, r, &path)?;
        let _ = writeln!(
            md,
            "\nThe first {} prompts of each, side by side (`{file}`):\n\n![{}]({file})",
            r.rows, r.title
        );
    }
    Ok(md)
}

/// Reads an 8-bit RGB PNG (what [`crate::images::RgbImage::save`] writes).
pub(super) fn read_png(path: &Path) -> Result<RgbImage, GridError> {
    let bad = |message: String| GridError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "expected an 8-bit RGB PNG, found {:?} {:?}",
            info.color_type, info.bit_depth
        )));
    }
    buf.truncate(info.buffer_size());
    Ok(RgbImage {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    })
}

/// The first `r.rows` rows of square tiles (`seeds` per row) of each grid, side by side with a
/// white gap, zoomed by `r.zoom`, captioned with the labels and the prompts.
fn composite(
    entries: &[(String, PathBuf)],
    seeds: usize,
    prompts: &[String],
    r: &GridsReport,
    path: &Path,
) -> Result<(), GridError> {
    let zoom = r.zoom.clamp(1, 16);
    let grids: Vec<RgbImage> = entries
        .iter()
        .map(|(_, p)| read_png(p))
        .collect::<Result<_, _>>()?;
    let tile = grids[0].width / seeds;
    let rows = r.rows.min(grids[0].height / tile.max(1));
    let (block_w, block_h) = (seeds * tile * zoom, rows * tile * zoom);
    let gap = 2 * zoom;
    let width = entries.len() * (block_w + gap) - gap;
    let mut rgb = vec![255u8; width * block_h * 3];
    for (g, grid) in grids.iter().enumerate() {
        if grid.width != seeds * tile || grid.height < rows * tile {
            return Err(GridError::Parse {
                path: entries[g].1.clone(),
                message: format!(
                    "{}x{} is not a grid of {seeds} columns of {tile}-pixel tiles",
                    grid.width, grid.height
                ),
            });
        }
        let x0 = g * (block_w + gap);
        for y in 0..block_h {
            for x in 0..block_w {
                let src = ((y / zoom) * grid.width + x / zoom) * 3;
                let dst = (y * width + x0 + x) * 3;
                rgb[dst..dst + 3].copy_from_slice(&grid.rgb[src..src + 3]);
            }
        }
    }
    let labels: Vec<&str> = entries.iter().map(|(l, _)| l.as_str()).collect();
    let header = format!(
        "{}: left to right {} ({seeds} seeds each); rows = prompts",
        r.title,
        labels.join(", ")
    );
    let lines = crate::images::numbered_caption(header, "row", &prompts[..rows.min(prompts.len())]);
    let image = RgbImage {
        width,
        height: block_h,
        rgb,
    }
    .with_caption(&lines)
    .map_err(plot_error(path))?;
    image.save(path).map_err(|e| GridError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
