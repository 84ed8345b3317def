//! Lines of text on an RGB buffer, in the embedded font (the caption strips of image grids).

use std::io;

use plotters::prelude::*;

use super::{failed, font};

/// Draws `lines` in black, `size` px high, one under the other from pixel row `top` with a
/// margin of `size / 2` on the left, on the interleaved RGB buffer `rgb` of `width × height`.
/// A line wider than the buffer is cut and ends in "…".
pub(crate) fn draw_lines(
    rgb: &mut [u8],
    (width, height): (u32, u32),
    top: u32,
    lines: &[String],
    size: u32,
) -> io::Result<()> {
    font::ensure()?;
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();
    let style = TextStyle::from((font::FAMILY, f64::from(size)).into_font()).color(&BLACK);
    let margin = size / 2;
    let room = width.saturating_sub(2 * margin);
    let fits = |s: &str| {
        root.estimate_text_size(s, &style)
            .is_ok_and(|(w, _)| w <= room)
    };
    let line_height = size * 5 / 4;
    for (i, line) in lines.iter().enumerate() {
        let mut shown = line.clone();
        while !fits(&shown) && !shown.is_empty() {
            let keep = shown
                .trim_end_matches('…')
                .chars()
                .count()
                .saturating_sub(1);
            shown = line.chars().take(keep).collect::<String>() + "…";
            if keep == 0 {
                shown.clear();
            }
        }
        let y = top + margin + line_height * i as u32;
        let at = (margin as i32, y as i32);
        root.draw(&Text::new(shown, at, style.clone()))
            .map_err(failed)?;
    }
    root.present().map_err(failed)
}
