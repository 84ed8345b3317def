//! The command-line plumbing the examples share: arguments parsed with clap's builder API, as the
//! `rocm` binary does (`src/bin/rocm/main.rs`), and every error reported as one line on stderr
//! with exit code 2.

use std::fmt::Display;
use std::process::ExitCode;

use clap::{ArgMatches, Command};

/// Parses the process arguments with `command` and calls `run` with them. `--help` prints clap's
/// help on stdout and exits with 0; a bad argument, or an error of `run`, prints one line
/// `error: …` on stderr and exits with 2.
pub fn main<E: Display>(
    command: Command,
    run: impl FnOnce(&ArgMatches) -> Result<(), E>,
) -> ExitCode {
    let matches = match command.args_override_self(true).try_get_matches() {
        Ok(matches) => matches,
        Err(e) if !e.use_stderr() => {
            // --help: clap writes it to stdout.
            return match e.print() {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(2),
            };
        }
        Err(e) => return fail(clap_message(&e)),
    };
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Prints `error: <message>` on one line (a message's own line breaks become spaces, as in the
/// `rocm` binary: a hub error's download hint) and returns exit code 2.
fn fail(message: impl Display) -> ExitCode {
    let text = message.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("error: {}", lines.join(" "));
    ExitCode::from(2)
}

/// clap's message without its `error: ` prefix and without the usage and tip paragraphs that
/// follow the first blank line (`invalid value 'x' for '--steps <K>': …`).
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.split("\n\n").next().unwrap_or_default().to_string()
}

/// A clap value parser for a count of at least 1 (`--steps`, `--iters`).
#[allow(dead_code, reason = "not every example has a count")]
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
