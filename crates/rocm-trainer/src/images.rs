//! Images to PNG files: one file per image, and grids (the `rocm sample` command, the `sample`
//! example, and the trainer's evaluation grids under `<output_dir>/samples/`).
//!
//! Pixels are quantised as diffusers' `numpy_to_pil`: `(x·255).round()` of `x` clamped to
//! `[0, 1]`, 8-bit RGB. Grids written for people carry a caption strip under the images
//! ([`RgbImage::with_caption`]: prompts, seeds, step); single images stay bare, as diffusers
//! writes them.
//!
//! ```
//! use burn::prelude::*;
//! use rocm_trainer::images::{RgbImage, write_grid};
//!
//! let device = Device::flex();
//! let images = Tensor::<4>::ones([6, 3, 16, 16], &device); // 2 prompts × 3 seeds, in [0, 1]
//! let path = std::env::temp_dir().join(format!("rocm-grid-doc-{}.png", std::process::id()));
//! let grid = RgbImage::grid(&RgbImage::from_tensor(images), 3);
//! assert_eq!((grid.width, grid.height), (48, 32)); // 3 columns, 2 rows
//! let caption = ["step 10: rows = prompts, columns = seeds 0, 1, 2".to_string()];
//! write_grid(&path, Tensor::<4>::zeros([6, 3, 16, 16], &device), 3, &caption)?;
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), rocm_trainer::Error>(())
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::Error;
use crate::error::io;

/// An 8-bit RGB image, pixels interleaved row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width · 3` bytes, `[r, g, b]` per pixel, rows top to bottom.
    pub rgb: Vec<u8>,
}

impl RgbImage {
    /// Quantises a batch of images in `[0, 1]` (values outside are clamped).
    ///
    /// # Shapes
    /// - `images`: `[B, 3, H, W]`
    ///
    /// # Panics
    /// When the images do not have 3 channels.
    pub fn from_tensor(images: Tensor<4>) -> Vec<Self> {
        let [batch, channels, height, width] = images.dims();
        assert_eq!(
            channels,
            3,
            "RgbImage::from_tensor: images {:?} must be [B, 3, H, W]",
            [batch, channels, height, width]
        );
        let pixels: Vec<f32> = images
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let size = 3 * height * width;
        pixels
            .chunks_exact(size.max(1))
            .take(batch)
            .map(|chw| Self {
                width,
                height,
                rgb: to_rgb8(chw),
            })
            .collect()
    }

    /// Tiles equally sized images into a grid of `cols` columns, row-major (image `i` at row
    /// `i / cols`, column `i % cols`), black where the last row is short.
    ///
    /// # Panics
    /// When the images differ in size.
    pub fn grid(images: &[Self], cols: usize) -> Self {
        let cols = cols.clamp(1, images.len().max(1));
        let rows = images.len().div_ceil(cols);
        let (width, height) = images.first().map_or((0, 0), |i| (i.width, i.height));
        let (grid_w, grid_h) = (cols * width, rows * height);
        let mut rgb = vec![0u8; grid_w * grid_h * 3];
        for (i, image) in images.iter().enumerate() {
            assert_eq!(
                (image.width, image.height),
                (width, height),
                "RgbImage::grid: image {i} differs in size from image 0"
            );
            let (x0, y0) = ((i % cols) * width, (i / cols) * height);
            for y in 0..height {
                let dst = ((y0 + y) * grid_w + x0) * 3;
                let src = y * width * 3;
                rgb[dst..dst + width * 3].copy_from_slice(&image.rgb[src..src + width * 3]);
            }
        }
        Self {
            width: grid_w,
            height: grid_h,
            rgb,
        }
    }

    /// The number of columns of a near-square grid of `n` images: `⌈√n⌉`.
    pub fn square_columns(n: usize) -> usize {
        (n as f64).sqrt().ceil().max(1.0) as usize
    }

    /// The image with a white strip under it holding `lines` of black text (one line per entry,
    /// cut with "…" where wider than the image); the image itself when `lines` is empty.
    pub fn with_caption(&self, lines: &[String]) -> std::io::Result<Self> {
        if lines.is_empty() {
            return Ok(self.clone());
        }
        let strip = u32::try_from(caption_height(lines.len())).map_err(std::io::Error::other)?;
        let width = u32::try_from(self.width).map_err(std::io::Error::other)?;
        let height = u32::try_from(self.height).map_err(std::io::Error::other)?;
        let mut rgb = self.rgb.clone();
        rgb.resize(self.rgb.len() + (width * strip * 3) as usize, 255);
        let size = CAPTION_TEXT_PX as u32;
        crate::plot::draw_lines(&mut rgb, (width, height + strip), height, lines, size)?;
        Ok(Self {
            width: self.width,
            height: self.height + strip as usize,
            rgb,
        })
    }

    /// Writes the image as an 8-bit RGB PNG.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let file = File::create(path).map_err(io(path))?;
        self.write_png(BufWriter::new(file)).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })
    }

    /// The bytes [`RgbImage::save`] writes (`rocm review` keeps its images in a database).
    ///
    /// # Panics
    /// For an image wider or taller than `u32::MAX` pixels (PNG's limit).
    pub fn to_png(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        // Writing to memory fails only for images wider or taller than u32::MAX pixels.
        if let Err(e) = self.write_png(&mut bytes) {
            panic!(
                "RgbImage::to_png of a {}x{} image: {e}",
                self.width, self.height
            );
        }
        bytes
    }

    fn write_png(&self, out: impl std::io::Write) -> Result<(), String> {
        let w = u32::try_from(self.width).map_err(|e| e.to_string())?;
        let h = u32::try_from(self.height).map_err(|e| e.to_string())?;
        let mut encoder = png::Encoder::new(out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&self.rgb)
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    }
}

/// The text height of caption lines, in pixels.
const CAPTION_TEXT_PX: usize = 15;

/// The height in pixels of the caption strip [`RgbImage::with_caption`] adds for `lines` lines
/// (0 without lines).
pub fn caption_height(lines: usize) -> usize {
    if lines == 0 {
        return 0;
    }
    CAPTION_TEXT_PX * 5 / 4 * lines + CAPTION_TEXT_PX
}

/// `[3, H, W]` planar values in `[0, 1]` → interleaved RGB bytes, `(x·255).round()` as diffusers'
/// `numpy_to_pil`.
pub fn to_rgb8(chw: &[f32]) -> Vec<u8> {
    let plane = chw.len() / 3;
    (0..plane)
        .flat_map(|i| {
            (0..3).map(move |c| (chw[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8)
        })
        .collect()
}

/// Writes `dir/image-<i>.png` for each image and `dir/grid.png` (a near-square grid of all of
/// them, with `caption` under it, see [`RgbImage::with_caption`]), creating `dir`. Returns the
/// paths written, the grid last.
///
/// # Shapes
/// - `images`: `[B, 3, H, W]` in `[0, 1]`
pub fn write_images(
    dir: &Path,
    images: Tensor<4>,
    caption: &[String],
) -> Result<Vec<PathBuf>, Error> {
    check_rgb(dir, &images)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let images = RgbImage::from_tensor(images);
    let mut written = Vec::with_capacity(images.len() + 1);
    for (i, image) in images.iter().enumerate() {
        let path = dir.join(format!("image-{i}.png"));
        image.save(&path)?;
        written.push(path);
    }
    let path = dir.join("grid.png");
    RgbImage::grid(&images, RgbImage::square_columns(images.len()))
        .with_caption(caption)
        .map_err(io(&path))?
        .save(&path)?;
    written.push(path);
    Ok(written)
}

/// The caption of a grid: `header`, then one line `<label> <i>: <item>` per item (1-based), e.g.
/// `row 2: a photo of a cat` for a grid whose rows are prompts.
pub fn numbered_caption<S: AsRef<str>>(header: String, label: &str, items: &[S]) -> Vec<String> {
    let lines = items
        .iter()
        .enumerate()
        .map(|(i, item)| format!("{label} {}: {}", i + 1, item.as_ref()));
    std::iter::once(header).chain(lines).collect()
}

/// [`Error::ImageShape`] unless `images` is `[B, 3, H, W]` (what [`RgbImage::from_tensor`] takes).
fn check_rgb(path: &Path, images: &Tensor<4>) -> Result<(), Error> {
    let dims = images.dims();
    if dims[1] == 3 {
        return Ok(());
    }
    Err(Error::ImageShape {
        path: path.to_path_buf(),
        dims,
    })
}

/// Writes a grid of `cols` columns (row-major, see [`RgbImage::grid`]) with `caption` under it
/// ([`RgbImage::with_caption`]) to the PNG `path`, creating its folder.
///
/// # Shapes
/// - `images`: `[B, 3, H, W]` in `[0, 1]`; the grid is `[⌈B/cols⌉·H, cols·W]` plus the strip
pub fn write_grid(
    path: &Path,
    images: Tensor<4>,
    cols: usize,
    caption: &[String],
) -> Result<(), Error> {
    check_rgb(path, &images)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    RgbImage::grid(&RgbImage::from_tensor(images), cols)
        .with_caption(caption)
        .map_err(io(path))?
        .save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantises_like_numpy_to_pil() {
        // planar r = [0, 1], g = [0.5, −1], b = [2, 0.002]
        let rgb = to_rgb8(&[0.0, 1.0, 0.5, -1.0, 2.0, 0.002]);
        assert_eq!(rgb, [0, 128, 255, 255, 0, 1]);
    }

    #[test]
    fn grid_places_image_i_at_row_i_div_cols() {
        let device = Device::flex();
        // 3 images of 1×2 pixels with values 0, 0.5, 1
        let images = Tensor::<4>::from_data(
            TensorData::new(
                [0.0f32, 0.5, 1.0]
                    .iter()
                    .flat_map(|v| [*v; 6])
                    .collect::<Vec<_>>(),
                [3, 3, 1, 2],
            ),
            &device,
        );
        let grid = RgbImage::grid(&RgbImage::from_tensor(images), 2);
        assert_eq!((grid.width, grid.height), (4, 2));
        let px = |x: usize, y: usize| grid.rgb[(y * grid.width + x) * 3];
        assert_eq!([px(0, 0), px(1, 0), px(2, 0), px(3, 0)], [0, 0, 128, 128]);
        assert_eq!([px(0, 1), px(1, 1), px(2, 1), px(3, 1)], [255, 255, 0, 0]);
        assert_eq!(RgbImage::square_columns(3), 2);
        assert_eq!(RgbImage::square_columns(4), 2);
        assert_eq!(RgbImage::square_columns(5), 3);
    }

    #[test]
    fn write_images_writes_each_image_and_a_grid() {
        let device = Device::flex();
        let dir = std::env::temp_dir().join(format!("rocm-images-{}", std::process::id()));
        let written = write_images(&dir, Tensor::<4>::ones([2, 3, 4, 5], &device), &[]).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["image-0.png", "image-1.png", "grid.png"]);
        let decoder = png::Decoder::new(std::io::BufReader::new(
            File::open(dir.join("grid.png")).unwrap(),
        ));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (10, 4));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn numbered_captions_count_from_one() {
        let lines = numbered_caption("step 3".into(), "row", &["a cat", "a dog"]);
        assert_eq!(lines, ["step 3", "row 1: a cat", "row 2: a dog"]);
    }

    #[test]
    fn a_caption_strip_holds_dark_text_under_the_images() {
        let images = vec![
            RgbImage {
                width: 160,
                height: 40,
                rgb: vec![255; 160 * 40 * 3],
            };
            2
        ];
        let grid = RgbImage::grid(&images, 2);
        assert_eq!(grid.with_caption(&[]).unwrap(), grid);
        let lines = [
            "step 7: rows = prompts, columns = seeds 0, 1".to_string(),
            "1: a cat".into(),
        ];
        let captioned = grid.with_caption(&lines).unwrap();
        assert_eq!(captioned.width, 320);
        assert_eq!(captioned.height, 40 + caption_height(2));
        assert_eq!(
            captioned.rgb[..grid.rgb.len()],
            grid.rgb[..],
            "the images are unchanged"
        );
        let dark = |rows: std::ops::Range<usize>| {
            captioned.rgb[rows.start * 320 * 3..rows.end * 320 * 3]
                .chunks_exact(3)
                .filter(|p| p.iter().all(|&v| v < 100))
                .count()
        };
        let mid = 40 + (captioned.height - 40) / 2;
        assert!(dark(40..mid) > 40, "no first line");
        assert!(dark(mid..captioned.height) > 10, "no second line");
    }

    #[test]
    fn images_without_three_channels_are_an_error_naming_the_file() {
        let device = Device::flex();
        let path = std::env::temp_dir().join("rocm-images-never-written.png");
        let err = write_grid(&path, Tensor::<4>::ones([2, 1, 4, 4], &device), 2, &[]).unwrap_err();
        assert!(
            err.to_string().contains("rocm-images-never-written.png"),
            "{err}"
        );
        assert!(err.to_string().contains("[2, 1, 4, 4]"), "{err}");
        assert!(!path.exists());
    }
}
