//! The one font every plot and caption is drawn in: Roboto Regular, embedded in the crate
//! (`assets/fonts/`, Apache-2.0, see the README there) and registered with plotters' `ab_glyph`
//! text backend, so no system fonts, fontconfig or FreeType are needed.

use std::io;
use std::sync::OnceLock;

use plotters::style::{FontFamily, FontStyle, register_font};

/// Roboto Regular, as shipped in `assets/fonts/Roboto-Regular.ttf`.
const ROBOTO: &[u8] = include_bytes!("../../assets/fonts/Roboto-Regular.ttf");

/// The family every text element names.
pub(crate) const FAMILY: FontFamily<'static> = FontFamily::SansSerif;

/// Registers the embedded font as plotters' sans-serif (once per process).
pub(crate) fn ensure() -> io::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FAMILY.as_str(), FontStyle::Normal, ROBOTO).is_ok());
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(
            "the embedded Roboto-Regular.ttf is not a valid font",
        ))
    }
}
