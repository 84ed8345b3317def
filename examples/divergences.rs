//! Divergences between pairs of univariate Gaussians, computed in f64.
//!
//! ```text
//! cargo run --release --example divergences -- --input examples/data/pairs.json
//! ```
//!
//! `pairs.json` is a JSON array of objects `{"mu1", "s1", "mu2", "s2"}` (p = N(mu1, s1²),
//! q = N(mu2, s2²)). The same array is printed to stdout with the fields `kl`, `reverse_kl`, `js`,
//! `hellinger_sq`, `fisher`, `chi2` and `tv` added (`chi2` is `null` where it is infinite, i.e.
//! `2 s2² ≤ s1²`). Arguments are parsed with clap (`--help` lists them); bad input prints one line
//! on stderr and exits with code 2, printing nothing on stdout.

#![allow(clippy::print_stdout)] // an example owns the terminal

use std::process::ExitCode;

use clap::{Arg, Command};
use rocm::divergence::reference::{self, Normal};
use serde_json::{Map, Value};

mod common;

fn cli() -> Command {
    Command::new("divergences")
        .about("Divergences between pairs of univariate Gaussians, in f64")
        .arg(
            Arg::new("input")
                .long("input")
                .required(true)
                .value_name("PAIRS.json")
                .help("A JSON array of {\"mu1\", \"s1\", \"mu2\", \"s2\"} objects"),
        )
}

fn main() -> ExitCode {
    common::main(cli(), |m| {
        let path = m.get_one::<String>("input").cloned().unwrap_or_default();
        // Nothing on stdout unless every pair is valid.
        let output = run(&path)?;
        println!("{output}");
        Ok::<(), String>(())
    })
}

fn run(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{path} is not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(format!(
            "{path}: expected a JSON array of {{\"mu1\",\"s1\",\"mu2\",\"s2\"}} objects"
        ));
    };
    let out = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| with_divergences(item).map_err(|e| format!("{path}: element {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string_pretty(&Value::Array(out)).map_err(|e| e.to_string())
}

fn with_divergences(item: Value) -> Result<Value, String> {
    let Value::Object(mut object) = item else {
        return Err("expected an object {\"mu1\",\"s1\",\"mu2\",\"s2\"}".to_string());
    };
    let p = Normal::new(field(&object, "mu1")?, std_field(&object, "s1")?);
    let q = Normal::new(field(&object, "mu2")?, std_field(&object, "s2")?);
    let results = [
        ("kl", reference::kl(p, q)),
        ("reverse_kl", reference::reverse_kl(p, q)),
        ("js", reference::jensen_shannon(p, q)),
        ("hellinger_sq", reference::squared_hellinger(p, q)),
        ("fisher", reference::fisher(p, q)),
        ("chi2", reference::pearson_chi2(p, q)),
        ("tv", reference::total_variation(p, q)),
    ];
    for (name, value) in results {
        // serde_json writes non-finite numbers as null.
        object.insert(name.to_string(), Value::from(value));
    }
    Ok(Value::Object(object))
}

fn field(object: &Map<String, Value>, name: &str) -> Result<f64, String> {
    let value = object
        .get(name)
        .ok_or_else(|| format!("missing field `{name}`"))?;
    value
        .as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("field `{name}` must be a finite number, got {value}"))
}

fn std_field(object: &Map<String, Value>, name: &str) -> Result<f64, String> {
    let s = field(object, name)?;
    if s > 0.0 {
        Ok(s)
    } else {
        Err(format!(
            "field `{name}` is a standard deviation and must be > 0, got {s}"
        ))
    }
}
