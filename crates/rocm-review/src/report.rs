//! The results as text: a table for the terminal (`rocm review --report`), the same rows the
//! results page shows, and the raw votes as CSV.

use std::fmt::Write as _;
use std::io::Write;

use crate::stats::{ResultRow, results};
use crate::{Error, StudySpec, Vote};

/// The label of the pooled rows.
pub const ALL_RATERS: &str = "(all)";

/// The results table of `votes` in `spec`'s study: one line per criterion and rater (pooled
/// first), with the counts, A's win rate and its 95 % Wilson interval.
pub fn table(spec: &StudySpec, votes: &[Vote]) -> String {
    let rows = results(votes);
    let mut out = String::new();
    let _ = writeln!(out, "A: {}", spec.a.label);
    let _ = writeln!(out, "B: {}", spec.b.label);
    let _ = writeln!(
        out,
        "{} pairs, {} votes; win rate of A over B (ties count 1/2), 95 % Wilson interval",
        spec.prompts.len() * spec.seeds.len(),
        votes.len()
    );
    let raters = rows
        .iter()
        .map(|r| r.rater.as_deref().unwrap_or(ALL_RATERS).chars().count())
        .max()
        .unwrap_or(0)
        .max("rater".len());
    let _ = writeln!(
        out,
        "{:<18}  {:<raters$}  {:>5}  {:>5}  {:>5}  {:>5}  {:>8}  {:<16}",
        "criterion", "rater", "n", "A", "tie", "B", "win rate", "95 % interval"
    );
    for row in &rows {
        let _ = writeln!(out, "{}", line(row, raters));
    }
    out
}

fn line(row: &ResultRow, raters: usize) -> String {
    let rate = row.win_rate.map_or("-".to_string(), |r| format!("{r:.3}"));
    let interval = match (row.low, row.high) {
        (Some(l), Some(h)) => format!("[{l:.3}, {h:.3}]"),
        _ => "-".to_string(),
    };
    format!(
        "{:<18}  {:<raters$}  {:>5}  {:>5}  {:>5}  {:>5}  {:>8}  {:<16}",
        row.criterion.name(),
        row.rater.as_deref().unwrap_or(ALL_RATERS),
        row.tally.n(),
        row.tally.a,
        row.tally.tie,
        row.tally.b,
        rate,
        interval
    )
    .trim_end()
    .to_string()
}

/// The CSV header of [`write_csv`].
pub const CSV_HEADER: [&str; 10] = [
    "vote_id",
    "rater",
    "pair_id",
    "prompt",
    "seed",
    "left",
    "visual_appeal",
    "general_preference",
    "prompt_alignment",
    "voted_at",
];

/// Writes every vote as one CSV row ([`CSV_HEADER`]): `left` is the arm shown on the left and
/// each criterion holds its winner, `a`, `b` or `tie`.
pub fn write_csv(votes: &[Vote], out: impl Write) -> Result<(), Error> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(CSV_HEADER)?;
    for v in votes {
        csv.write_record([
            v.id.to_string().as_str(),
            &v.rater,
            &v.pair_id.to_string(),
            &v.prompt,
            &v.seed.to_string(),
            v.left.name(),
            v.visual_appeal.name(),
            v.general_preference.name(),
            v.prompt_alignment.name(),
            &v.voted_at,
        ])?;
    }
    csv.flush().map_err(|source| Error::Io {
        what: "CSV export".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arm, Winner};

    #[test]
    fn table_and_csv_show_every_vote() {
        let spec = StudySpec {
            a: Arm::new("base", "base"),
            b: Arm::new("tuned", "x"),
            settings: String::new(),
            prompts: vec!["a, \"quoted\" prompt".into()],
            seeds: vec![0, 1],
        };
        let vote = |id, w| Vote {
            id,
            rater: "ann".into(),
            pair_id: id,
            prompt: spec.prompts[0].clone(),
            seed: id as u64 - 1,
            left: Winner::B,
            visual_appeal: w,
            general_preference: Winner::A,
            prompt_alignment: Winner::Tie,
            voted_at: "t".into(),
        };
        let votes = [vote(1, Winner::A), vote(2, Winner::B)];
        let text = table(&spec, &votes);
        assert!(text.contains("2 pairs, 2 votes"), "{text}");
        assert!(
            text.contains(
                "visual_appeal       (all)      2      1      0      1     0.500  [0.095, 0.905]"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "general_preference  ann        2      2      0      0     1.000  [0.342, 1.000]"
            ),
            "{text}"
        );
        let mut csv = Vec::new();
        write_csv(&votes, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert_eq!(
            lines[1],
            "1,ann,1,\"a, \"\"quoted\"\" prompt\",0,b,a,a,tie,t"
        );
        assert_eq!(lines.len(), 3);
    }
}
