//! The page's files, compiled into the binary: no file or network access at run time, and
//! nothing on the page loads from elsewhere (it works offline).

/// The voting page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The results page.
pub const RESULTS_HTML: &str = include_str!("../assets/results.html");
/// The voting page's script.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The results page's script.
pub const RESULTS_JS: &str = include_str!("../assets/results.js");
/// Both pages' style sheet.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URL the pages name is one of the server's own paths.
    #[test]
    fn pages_load_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("results.html", RESULTS_HTML),
            ("app.js", APP_JS),
            ("results.js", RESULTS_JS),
            ("style.css", STYLE_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "url(", "@import"] {
                assert!(!text.contains(needle), "{name} contains `{needle}`");
            }
        }
    }
}
