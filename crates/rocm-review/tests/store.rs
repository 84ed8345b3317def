//! The study database on its own: resuming, sides, refusing another study or schema.

#![allow(clippy::unwrap_used)]

mod common;

use common::{study, temp_dir};
use rocm_review::store::Next;
use rocm_review::{Arm, Ballot, Choice, Error, Store, StudySpec, Winner};

fn served(next: Next) -> rocm_review::store::Served {
    match next {
        Next::Pair(s) => s,
        Next::Finished(p) => panic!("finished early: {p:?}"),
    }
}

#[test]
fn a_rater_resumes_where_they_stopped_and_finishes() {
    let dir = temp_dir("store-resume");
    let db = dir.join("review.sqlite");
    let mut store = study(&db);
    let first = served(store.next("ann").unwrap());
    // A reload before voting shows the same pair under the same serve.
    assert_eq!(served(store.next("ann").unwrap()), first);
    let ballot = |s: &rocm_review::store::Served| Ballot {
        rater: "ann".into(),
        pair_id: s.pair.id,
        serve_id: s.serve_id,
        visual_appeal: Choice::Left,
        general_preference: Choice::Right,
        prompt_alignment: Choice::Tie,
    };
    assert_eq!(store.vote(&ballot(&first)).unwrap().done, 1);
    drop(store);
    // Reopened (a restart): the next pair is another one, then the rest, then done.
    let mut store = Store::open(&db).unwrap();
    let mut seen = vec![first.pair.id];
    for done in 1..4 {
        let s = served(store.next("ann").unwrap());
        assert_eq!(s.progress.done, done);
        assert!(!seen.contains(&s.pair.id));
        seen.push(s.pair.id);
        store.vote(&ballot(&s)).unwrap();
    }
    assert!(matches!(store.next("ann").unwrap(), Next::Finished(p) if p.done == 4 && p.total == 4));
    let votes = store.votes().unwrap();
    assert_eq!(votes.len(), 4);
    for v in &votes {
        // Left chosen: the left arm wins; right chosen: the other one.
        assert_eq!(v.visual_appeal, v.left);
        assert_ne!(v.general_preference, v.left);
        assert_eq!(v.prompt_alignment, Winner::Tie);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn another_study_or_schema_is_refused() {
    let dir = temp_dir("store-refuse");
    let db = dir.join("review.sqlite");
    let mut store = study(&db);
    let mut other = store.require_study().unwrap();
    other.a.label = "renamed".into(); // labels may change
    store.ensure_study(&other).unwrap();
    other.seeds.push(9);
    let e = store.ensure_study(&other).unwrap_err();
    assert!(
        matches!(e, Error::StudyMismatch { field: "seeds", .. }),
        "{e}"
    );
    other.seeds.pop();
    other.b = Arm::new("tuned", "other-lora");
    let e = store.ensure_study(&other).unwrap_err();
    assert!(e.to_string().contains("arm B"), "{e}");
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA user_version = 7").unwrap();
    drop(conn);
    let e = Store::open(&db).err().unwrap();
    assert!(matches!(e, Error::Schema { found: 7, .. }), "{e}");
    let empty = StudySpec {
        seeds: vec![],
        ..other
    };
    let e = Store::open_in_memory()
        .unwrap()
        .ensure_study(&empty)
        .unwrap_err();
    assert!(matches!(e, Error::EmptyStudy), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
