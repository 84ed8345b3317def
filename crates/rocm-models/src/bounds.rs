//! Bounds on what a `config.json` may declare, checked while it is parsed and before anything is
//! allocated from it: a size outside them is an [`Error::UnsupportedConfig`] naming the file and
//! the field, never a capacity-overflow panic or an out-of-memory abort later. The limits are far
//! above every published model of the families ported here (SD 1.5: 1280 channels, 96 latent
//! pixels; CLIP ViT-bigG: 1664 wide, 48 layers) and low enough that a product of two of them
//! fits in memory arithmetic.

use std::path::Path;

use crate::Error;

/// Largest latent or image side (`sample_size`, `image_size`): 8192 pixels through an 8× VAE.
pub const MAX_SAMPLE_SIZE: usize = 8192;
/// Largest latent side of a UNet (`sample_size`): 1024, an 8192-pixel image through an 8× VAE.
pub const MAX_LATENT_SIZE: usize = 1024;
/// Largest channel count or width (`block_out_channels`, `hidden_size`, `cross_attention_dim`, …).
pub const MAX_WIDTH: usize = 16_384;
/// Largest number of resolution levels (`block_out_channels.len()`).
pub const MAX_LEVELS: usize = 8;
/// Largest number of layers in one stack (`layers_per_block`, `num_hidden_layers`, …).
pub const MAX_LAYERS: usize = 128;
/// Largest vocabulary (`vocab_size`).
pub const MAX_VOCAB: usize = 1 << 20;
/// Largest number of positions (`max_position_embeddings`).
pub const MAX_POSITIONS: usize = 1 << 16;

/// Checks of one config file's fields; errors name the file.
pub(crate) struct Fields<'a> {
    path: &'a Path,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(path: &'a Path) -> Self {
        Self { path }
    }

    pub(crate) fn error(&self, field: &str, value: String, reason: &str) -> Error {
        Error::UnsupportedConfig {
            path: self.path.to_path_buf(),
            field: field.into(),
            value,
            reason: reason.into(),
        }
    }

    /// `value` in `1..=max`.
    pub(crate) fn size(&self, field: &str, value: usize, max: usize) -> Result<usize, Error> {
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.error(field, value.to_string(), &format!("must be in 1..={max}")))
        }
    }

    /// Every entry of `values` in `1..=max`, and at most `max_len` of them (at least one).
    pub(crate) fn sizes(
        &self,
        field: &str,
        values: &[usize],
        max: usize,
        max_len: usize,
    ) -> Result<(), Error> {
        if values.is_empty() || values.len() > max_len {
            let reason = format!("must have 1..={max_len} entries");
            return Err(self.error(field, format!("{values:?}"), &reason));
        }
        for &v in values {
            if !(1..=max).contains(&v) {
                let reason = format!("entries must be in 1..={max}");
                return Err(self.error(field, format!("{values:?}"), &reason));
            }
        }
        Ok(())
    }

    /// A finite number.
    pub(crate) fn finite(&self, field: &str, value: f64) -> Result<f64, Error> {
        if value.is_finite() {
            Ok(value)
        } else {
            Err(self.error(field, value.to_string(), "must be finite"))
        }
    }

    /// A finite number > 0.
    pub(crate) fn positive(&self, field: &str, value: f64) -> Result<f64, Error> {
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(self.error(field, value.to_string(), "must be finite and > 0"))
        }
    }

    /// `divisor` divides every entry of `values` (GroupNorm groups, attention heads).
    pub(crate) fn divides(
        &self,
        field: &str,
        divisor: usize,
        values: &[usize],
        of: &str,
    ) -> Result<(), Error> {
        if divisor > 0 && values.iter().all(|v| v.is_multiple_of(divisor)) {
            Ok(())
        } else {
            let reason = format!("must divide every {of} {values:?}");
            Err(self.error(field, divisor.to_string(), &reason))
        }
    }
}
