//! What a rater says about a pair: a [`Choice`] per [`Criterion`], turned into a [`Winner`]
//! (arm A, arm B or a tie) by the side each arm was shown on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The three questions of the paper's user study, asked of every pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Which image is more visually appealing, whatever the prompt.
    VisualAppeal,
    /// Which image the rater prefers overall.
    GeneralPreference,
    /// Which image follows the prompt better.
    PromptAlignment,
}

impl Criterion {
    /// Every criterion, in the order the page asks them.
    pub const ALL: [Criterion; 3] = [
        Self::VisualAppeal,
        Self::GeneralPreference,
        Self::PromptAlignment,
    ];

    /// The column and JSON name: `visual_appeal`, `general_preference`, `prompt_alignment`.
    pub fn name(self) -> &'static str {
        match self {
            Self::VisualAppeal => "visual_appeal",
            Self::GeneralPreference => "general_preference",
            Self::PromptAlignment => "prompt_alignment",
        }
    }

    /// The question as the page and the report word it.
    pub fn question(self) -> &'static str {
        match self {
            Self::VisualAppeal => "Visual appeal",
            Self::GeneralPreference => "General preference",
            Self::PromptAlignment => "Prompt alignment",
        }
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the rater pressed: `1` = left, `2` = right, `0` = tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// The left image.
    Left,
    /// The right image.
    Right,
    /// Neither.
    Tie,
}

/// Which arm a vote favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    /// Arm A.
    A,
    /// Arm B.
    B,
    /// Neither.
    Tie,
}

impl Winner {
    /// The winner of `choice` when `left` is the arm shown on the left (`A` or `B`).
    pub fn of(choice: Choice, left: Winner) -> Self {
        match (choice, left) {
            (Choice::Tie, _) | (_, Winner::Tie) => Self::Tie,
            (Choice::Left, side) => side,
            (Choice::Right, Winner::A) => Self::B,
            (Choice::Right, Winner::B) => Self::A,
        }
    }

    /// `a`, `b` or `tie`, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::Tie => "tie",
        }
    }
}

impl FromStr for Winner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" => Ok(Self::A),
            "b" => Ok(Self::B),
            "tie" => Ok(Self::Tie),
            other => Err(format!("`{other}` is not a, b or tie")),
        }
    }
}

/// A vote as the page sends it: the pair it was served, and a choice per criterion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ballot {
    /// The rater's name.
    pub rater: String,
    /// The pair voted on.
    pub pair_id: i64,
    /// The serve the page showed (from `/api/next`).
    pub serve_id: i64,
    /// [`Criterion::VisualAppeal`].
    pub visual_appeal: Choice,
    /// [`Criterion::GeneralPreference`].
    pub general_preference: Choice,
    /// [`Criterion::PromptAlignment`].
    pub prompt_alignment: Choice,
}

impl Ballot {
    /// The choice for `criterion`.
    pub fn choice(&self, criterion: Criterion) -> Choice {
        match criterion {
            Criterion::VisualAppeal => self.visual_appeal,
            Criterion::GeneralPreference => self.general_preference,
            Criterion::PromptAlignment => self.prompt_alignment,
        }
    }
}

/// A committed vote, as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vote {
    /// Its row id (order of commitment).
    pub id: i64,
    /// The rater's name.
    pub rater: String,
    /// The pair.
    pub pair_id: i64,
    /// The pair's prompt.
    pub prompt: String,
    /// The pair's seed.
    pub seed: u64,
    /// The arm shown on the left (`A` or `B`).
    pub left: Winner,
    /// [`Criterion::VisualAppeal`]'s winner.
    pub visual_appeal: Winner,
    /// [`Criterion::GeneralPreference`]'s winner.
    pub general_preference: Winner,
    /// [`Criterion::PromptAlignment`]'s winner.
    pub prompt_alignment: Winner,
    /// When it was committed (UTC, ISO 8601).
    pub voted_at: String,
}

impl Vote {
    /// The winner for `criterion`.
    pub fn winner(&self, criterion: Criterion) -> Winner {
        match criterion {
            Criterion::VisualAppeal => self.visual_appeal,
            Criterion::GeneralPreference => self.general_preference,
            Criterion::PromptAlignment => self.prompt_alignment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_follow_the_side_shown() {
        assert_eq!(Winner::of(Choice::Left, Winner::A), Winner::A);
        assert_eq!(Winner::of(Choice::Left, Winner::B), Winner::B);
        assert_eq!(Winner::of(Choice::Right, Winner::A), Winner::B);
        assert_eq!(Winner::of(Choice::Right, Winner::B), Winner::A);
        assert_eq!(Winner::of(Choice::Tie, Winner::B), Winner::Tie);
    }
}
