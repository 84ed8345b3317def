//! The study's SQLite database: the specification, the pairs, the images (PNG bytes under
//! their content key), what was served to whom, and the votes.
//!
//! The file is in WAL mode with `synchronous = FULL`, and every vote is one `IMMEDIATE`
//! transaction that checks the ballot and inserts it: once [`Store::vote`] returns, the vote is
//! on disk, and a ballot it refuses leaves the file as it was. `PRAGMA user_version` holds the
//! schema version ([`SCHEMA_VERSION`]); a file of another version is refused, not rewritten.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::study::sha256_hex;
use crate::{Ballot, Criterion, Error, ImageKey, Pair, StudySpec, Vote, Winner};
use crate::{left_arm, rater_order};

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The longest rater name accepted, in bytes.
pub const MAX_RATER_LEN: usize = 100;

const SCHEMA: &str = "
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    image_a TEXT NOT NULL,
    image_b TEXT NOT NULL,
    UNIQUE (prompt, seed)
);
CREATE TABLE images (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    png BLOB NOT NULL
);
CREATE TABLE serves (
    id INTEGER PRIMARY KEY,
    rater TEXT NOT NULL,
    pair_id INTEGER NOT NULL REFERENCES pairs (id),
    left_arm TEXT NOT NULL CHECK (left_arm IN ('a', 'b')),
    served_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX serves_by_rater ON serves (rater, pair_id);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY,
    serve_id INTEGER NOT NULL UNIQUE REFERENCES serves (id),
    rater TEXT NOT NULL,
    pair_id INTEGER NOT NULL REFERENCES pairs (id),
    left_arm TEXT NOT NULL CHECK (left_arm IN ('a', 'b')),
    visual_appeal TEXT NOT NULL CHECK (visual_appeal IN ('a', 'b', 'tie')),
    general_preference TEXT NOT NULL CHECK (general_preference IN ('a', 'b', 'tie')),
    prompt_alignment TEXT NOT NULL CHECK (prompt_alignment IN ('a', 'b', 'tie')),
    voted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (rater, pair_id)
);
";

/// A rater's progress: pairs voted on, of all pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Pairs this rater has voted on.
    pub done: usize,
    /// Pairs in the study.
    pub total: usize,
}

/// A pair served to a rater, with its sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The serve's id, which the ballot must name.
    pub serve_id: i64,
    /// The pair.
    pub pair: Pair,
    /// The arm on the left (`A` or `B`).
    pub left: Winner,
    /// The rater's progress before this pair.
    pub progress: Progress,
}

/// What a rater gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A pair to vote on.
    Pair(Served),
    /// Every pair has this rater's vote.
    Finished(Progress),
}

/// An image a pair needs that the database does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingImage {
    /// Whose image: [`Winner::A`] or [`Winner::B`].
    pub arm: Winner,
    /// The prompt.
    pub prompt: String,
    /// The seed.
    pub seed: u64,
    /// The key to store it under.
    pub key: ImageKey,
}

/// The study database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open(path).map_err(sqlite(path))?;
        Self::init(conn, path.to_path_buf())
    }

    /// A database in memory (tests, documentation).
    pub fn open_in_memory() -> Result<Self, Error> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sqlite(&path))?;
        Self::init(conn, path)
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Self, Error> {
        let mut store = Self { conn, path };
        let path = store.path.clone();
        // `journal_mode` answers with the mode it is in: a row to read, not a plain pragma.
        let _mode: String = store
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sqlite(&path))?;
        store
            .conn
            .execute_batch(
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            )
            .map_err(sqlite(&path))?;
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite(&path))?;
        match version {
            0 => {
                let tx = store.conn.transaction().map_err(sqlite(&path))?;
                tx.execute_batch(SCHEMA).map_err(sqlite(&path))?;
                tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                    .map_err(sqlite(&path))?;
                tx.commit().map_err(sqlite(&path))?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(Error::Schema {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The study in the database, if any.
    pub fn study(&self) -> Result<Option<StudySpec>, Error> {
        let spec: Option<String> = self
            .conn
            .query_row("SELECT spec FROM study WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(sqlite(&self.path))?;
        spec.map(|s| {
            serde_json::from_str(&s).map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                what: format!("study.spec: {e}"),
            })
        })
        .transpose()
    }

    /// The study, or [`Error::NoStudy`].
    pub fn require_study(&self) -> Result<StudySpec, Error> {
        self.study()?.ok_or_else(|| Error::NoStudy {
            path: self.path.clone(),
        })
    }

    /// Creates the study `spec` with its pairs, or checks that the database holds this very
    /// study ([`Error::StudyMismatch`] naming the first field that differs; arm labels may
    /// change).
    pub fn ensure_study(&mut self, spec: &StudySpec) -> Result<(), Error> {
        if spec.prompts.is_empty() || spec.seeds.is_empty() {
            return Err(Error::EmptyStudy);
        }
        if let Some(stored) = self.study()? {
            return self.check_same(&stored, spec);
        }
        let path = self.path.clone();
        let json = serde_json::to_string(spec).map_err(|e| Error::Corrupt {
            path: path.clone(),
            what: format!("study spec: {e}"),
        })?;
        let tx = self.conn.transaction().map_err(sqlite(&path))?;
        tx.execute("INSERT INTO study (id, spec) VALUES (1, ?1)", [json])
            .map_err(sqlite(&path))?;
        for pair in spec.pairs() {
            tx.execute(
                "INSERT INTO pairs (id, prompt, seed, image_a, image_b) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    pair.id,
                    pair.prompt,
                    seed_to_sql(pair.seed),
                    pair.image_a.0,
                    pair.image_b.0
                ],
            )
            .map_err(sqlite(&path))?;
        }
        tx.commit().map_err(sqlite(&path))
    }

    fn check_same(&self, stored: &StudySpec, asked: &StudySpec) -> Result<(), Error> {
        let fields: [(&'static str, String, String); 5] = [
            ("arm A", stored.a.identity.clone(), asked.a.identity.clone()),
            ("arm B", stored.b.identity.clone(), asked.b.identity.clone()),
            ("settings", stored.settings.clone(), asked.settings.clone()),
            (
                "prompts",
                format!("{:?}", stored.prompts),
                format!("{:?}", asked.prompts),
            ),
            (
                "seeds",
                format!("{:?}", stored.seeds),
                format!("{:?}", asked.seeds),
            ),
        ];
        match fields.into_iter().find(|(_, s, a)| s != a) {
            None => Ok(()),
            Some((field, stored, asked)) => Err(Error::StudyMismatch {
                path: self.path.clone(),
                field,
                stored,
                asked,
            }),
        }
    }

    /// Every pair, by id.
    pub fn pairs(&self) -> Result<Vec<Pair>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, prompt, seed, image_a, image_b FROM pairs ORDER BY id")
            .map_err(sqlite(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Pair {
                    id: r.get(0)?,
                    prompt: r.get(1)?,
                    seed: seed_from_sql(r.get(2)?),
                    image_a: ImageKey(r.get(3)?),
                    image_b: ImageKey(r.get(4)?),
                })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sqlite(&self.path))
    }

    fn pair(&self, id: i64) -> Result<Option<Pair>, Error> {
        self.conn
            .query_row(
                "SELECT id, prompt, seed, image_a, image_b FROM pairs WHERE id = ?1",
                [id],
                |r| {
                    Ok(Pair {
                        id: r.get(0)?,
                        prompt: r.get(1)?,
                        seed: seed_from_sql(r.get(2)?),
                        image_a: ImageKey(r.get(3)?),
                        image_b: ImageKey(r.get(4)?),
                    })
                },
            )
            .optional()
            .map_err(sqlite(&self.path))
    }

    /// The images the pairs need and the database lacks, each key once (arm A's first).
    pub fn missing_images(&self) -> Result<Vec<MissingImage>, Error> {
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for pair in self.pairs()? {
            for (arm, key) in [(Winner::A, &pair.image_a), (Winner::B, &pair.image_b)] {
                if !self.has_image(key)? && seen.insert(key.clone()) {
                    missing.push(MissingImage {
                        arm,
                        prompt: pair.prompt.clone(),
                        seed: pair.seed,
                        key: key.clone(),
                    });
                }
            }
        }
        Ok(missing)
    }

    fn has_image(&self, key: &ImageKey) -> Result<bool, Error> {
        self.conn
            .query_row("SELECT 1 FROM images WHERE key = ?1", [&key.0], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(sqlite(&self.path))
    }

    /// Stores `png` under `key` (one transaction; a key already present is kept).
    pub fn put_image(&mut self, key: &ImageKey, png: &[u8]) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO images (key, sha256, png) VALUES (?1, ?2, ?3)",
                params![key.0, sha256_hex(png), png],
            )
            .map(|_| ())
            .map_err(sqlite(&self.path))
    }

    /// The PNG bytes stored under `key`.
    pub fn image(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.conn
            .query_row("SELECT png FROM images WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sqlite(&self.path))
    }

    /// The next pair for `rater` in their order ([`rater_order`]): the first without their
    /// vote. A pair already served and not voted on is served again under the same serve id
    /// (a reload); otherwise the serve is recorded with its sides ([`left_arm`]).
    pub fn next(&mut self, rater: &str) -> Result<Next, Error> {
        check_rater(rater)?;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare("SELECT id FROM pairs ORDER BY id")
                .map_err(sqlite(&path))?;
            stmt.query_map([], |r| r.get(0))
                .map_err(sqlite(&path))?
                .collect::<Result<_, _>>()
                .map_err(sqlite(&path))?
        };
        let voted: HashSet<i64> = {
            let mut stmt = tx
                .prepare("SELECT pair_id FROM votes WHERE rater = ?1")
                .map_err(sqlite(&path))?;
            stmt.query_map([rater], |r| r.get(0))
                .map_err(sqlite(&path))?
                .collect::<Result<_, _>>()
                .map_err(sqlite(&path))?
        };
        let progress = Progress {
            done: voted.len(),
            total: ids.len(),
        };
        let Some(pair_id) = rater_order(rater, &ids)
            .into_iter()
            .find(|id| !voted.contains(id))
        else {
            return Ok(Next::Finished(progress));
        };
        let previous: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, left_arm FROM serves WHERE rater = ?1 AND pair_id = ?2 ORDER BY id DESC LIMIT 1",
                params![rater, pair_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sqlite(&path))?;
        let (serve_id, left) = match previous {
            Some((id, left)) => (id, parse_winner(&path, "serves.left_arm", &left)?),
            None => {
                let left = left_arm(rater, pair_id);
                tx.execute(
                    "INSERT INTO serves (rater, pair_id, left_arm) VALUES (?1, ?2, ?3)",
                    params![rater, pair_id, left.name()],
                )
                .map_err(sqlite(&path))?;
                (tx.last_insert_rowid(), left)
            }
        };
        tx.commit().map_err(sqlite(&path))?;
        let pair = self.pair(pair_id)?.ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            what: format!("pair {pair_id} vanished"),
        })?;
        Ok(Next::Pair(Served {
            serve_id,
            pair,
            left,
            progress,
        }))
    }

    /// Records `ballot` in one transaction, committed before this returns. Refused
    /// ([`Error::Request`], nothing written): a bad rater name (400), an unknown pair (404), a
    /// serve that is not this rater's serve of this pair (409), a second vote of a rater on a
    /// pair (409).
    pub fn vote(&mut self, ballot: &Ballot) -> Result<Progress, Error> {
        check_rater(&ballot.rater)?;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&path))?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM pairs WHERE id = ?1",
                [ballot.pair_id],
                |_| Ok(()),
            )
            .optional()
            .map_err(sqlite(&path))?
            .is_some();
        if !exists {
            return Err(Error::request(
                404,
                format!("no pair {} in this study", ballot.pair_id),
            ));
        }
        let serve: Option<(String, i64, String)> = tx
            .query_row(
                "SELECT rater, pair_id, left_arm FROM serves WHERE id = ?1",
                [ballot.serve_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sqlite(&path))?;
        let left = match serve {
            Some((rater, pair_id, left)) if rater == ballot.rater && pair_id == ballot.pair_id => {
                parse_winner(&path, "serves.left_arm", &left)?
            }
            _ => {
                return Err(Error::request(
                    409,
                    format!(
                        "pair {} was not served to `{}` as serve {}",
                        ballot.pair_id, ballot.rater, ballot.serve_id
                    ),
                ));
            }
        };
        let already = tx
            .query_row(
                "SELECT 1 FROM votes WHERE rater = ?1 AND pair_id = ?2",
                params![ballot.rater, ballot.pair_id],
                |_| Ok(()),
            )
            .optional()
            .map_err(sqlite(&path))?
            .is_some();
        if already {
            return Err(Error::request(
                409,
                format!(
                    "`{}` already voted on pair {}",
                    ballot.rater, ballot.pair_id
                ),
            ));
        }
        let winner = |c: Criterion| Winner::of(ballot.choice(c), left).name();
        tx.execute(
            "INSERT INTO votes (serve_id, rater, pair_id, left_arm, visual_appeal, general_preference, prompt_alignment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                ballot.serve_id,
                ballot.rater,
                ballot.pair_id,
                left.name(),
                winner(Criterion::VisualAppeal),
                winner(Criterion::GeneralPreference),
                winner(Criterion::PromptAlignment),
            ],
        )
        .map_err(sqlite(&path))?;
        let done: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM votes WHERE rater = ?1",
                [&ballot.rater],
                |r| r.get(0),
            )
            .map_err(sqlite(&path))?;
        let total: i64 = tx
            .query_row("SELECT COUNT(*) FROM pairs", [], |r| r.get(0))
            .map_err(sqlite(&path))?;
        tx.commit().map_err(sqlite(&path))?;
        Ok(Progress {
            done: usize::try_from(done).unwrap_or(0),
            total: usize::try_from(total).unwrap_or(0),
        })
    }

    /// Every committed vote, in the order of commitment, with its pair's prompt and seed.
    pub fn votes(&self) -> Result<Vec<Vote>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT v.id, v.rater, v.pair_id, p.prompt, p.seed, v.left_arm, v.visual_appeal,
                        v.general_preference, v.prompt_alignment, v.voted_at
                 FROM votes v JOIN pairs p ON p.id = v.pair_id ORDER BY v.id",
            )
            .map_err(sqlite(&self.path))?;
        type Row = (i64, String, i64, String, i64, [String; 4], String);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
                    r.get(9)?,
                ))
            })
            .map_err(sqlite(&self.path))?
            .collect::<Result<_, _>>()
            .map_err(sqlite(&self.path))?;
        rows.into_iter()
            .map(|(id, rater, pair_id, prompt, seed, w, voted_at)| {
                let parse = |what, s: &str| parse_winner(&self.path, what, s);
                Ok(Vote {
                    id,
                    rater,
                    pair_id,
                    prompt,
                    seed: seed_from_sql(seed),
                    left: parse("votes.left_arm", &w[0])?,
                    visual_appeal: parse("votes.visual_appeal", &w[1])?,
                    general_preference: parse("votes.general_preference", &w[2])?,
                    prompt_alignment: parse("votes.prompt_alignment", &w[3])?,
                    voted_at,
                })
            })
            .collect()
    }
}

/// A 400 for names the page should not have sent: empty, too long, or with control
/// characters.
fn check_rater(rater: &str) -> Result<(), Error> {
    let bad = if rater.trim().is_empty() {
        Some("the rater's name is empty")
    } else if rater.len() > MAX_RATER_LEN {
        Some("the rater's name is longer than 100 bytes")
    } else if rater.chars().any(char::is_control) || rater.trim() != rater {
        Some("the rater's name has control characters or surrounding spaces")
    } else {
        None
    };
    bad.map_or(Ok(()), |why| Err(Error::request(400, why)))
}

fn parse_winner(path: &Path, what: &str, s: &str) -> Result<Winner, Error> {
    s.parse().map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        what: format!("{what}: {e}"),
    })
}

/// Seeds are `u64`; SQLite integers are `i64`: stored as the same 64 bits.
fn seed_to_sql(seed: u64) -> i64 {
    i64::from_ne_bytes(seed.to_ne_bytes())
}

fn seed_from_sql(seed: i64) -> u64 {
    u64::from_ne_bytes(seed.to_ne_bytes())
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}
