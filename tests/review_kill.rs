//! `rocm review` killed with `kill -9` between votes, halfway through sending a vote, and
//! right after sending one: every vote the server acknowledged is in the database after a
//! restart, the half-sent one is not, the file passes SQLite's integrity check, and the
//! raters carry on where they were.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod review_support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use review_support::{ReviewServer, db_votes, http, integrity, request_bytes, scratch};
use rocm_review::{Arm, Store, StudySpec};
use serde_json::{Value, json};

/// A study of 4 prompts × 2 seeds with placeholder images (the server does not decode them).
fn study(db: &Path) {
    let spec = StudySpec {
        a: Arm::new("base", "base"),
        b: Arm::new("tuned", "lora x"),
        settings: "kill test".into(),
        prompts: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        seeds: vec![0, 1],
    };
    let mut store = Store::open(db).unwrap();
    store.ensure_study(&spec).unwrap();
    for m in store.missing_images().unwrap() {
        store.put_image(&m.key, m.key.0.as_bytes()).unwrap();
    }
}

/// The rater's next pair as a ballot body (choices from `n`), or `None` when finished.
fn ballot(server: &ReviewServer, rater: &str, n: usize) -> Option<(i64, String)> {
    let (status, body) = http(
        server.addr,
        "GET",
        &format!("/api/next?rater={rater}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let next: Value = serde_json::from_str(&body).unwrap();
    if next["finished"] == json!(true) {
        return None;
    }
    let choices = ["left", "right", "tie"];
    let pair = next["pair_id"].as_i64().unwrap();
    let body = json!({
        "rater": rater,
        "pair_id": pair,
        "serve_id": next["serve_id"],
        "visual_appeal": choices[n % 3],
        "general_preference": choices[(n + 1) % 3],
        "prompt_alignment": choices[(n / 3) % 3],
    });
    Some((pair, body.to_string()))
}

#[test]
fn kill_9_loses_no_acknowledged_vote() {
    let dir = scratch("kill");
    let db = dir.join("review.sqlite");
    study(&db);
    let args = [std::ffi::OsStr::new("--db"), db.as_os_str()];
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut n = 0;

    for round in 0..4 {
        let server = ReviewServer::start(&args);
        // The votes acknowledged before the last kill are all there, in order.
        let stored: Vec<(String, i64)> = db_votes(&db)
            .into_iter()
            .map(|(rater, pair, _, _)| (rater, pair))
            .collect();
        assert_eq!(
            stored.len(),
            acked.len(),
            "round {round}: {stored:?} vs acknowledged {acked:?}"
        );
        assert_eq!(stored, acked, "round {round}");
        assert_eq!(integrity(&db), "ok");
        for rater in ["ann", "bob"] {
            // Between votes: two acknowledged votes per rater, then (below) the kill.
            for _ in 0..2 {
                let Some((pair, body)) = ballot(&server, rater, n) else {
                    break;
                };
                n += 1;
                let (status, answer) = http(server.addr, "POST", "/api/vote", Some(&body));
                assert_eq!(status, 200, "{answer}");
                acked.push((rater.to_string(), pair));
            }
        }
        match round {
            // Mid-request: the headers and half the body are sent, then the server dies.
            1 => {
                let (_, body) = ballot(&server, "ann", n).unwrap();
                let bytes = request_bytes(server.addr, "POST", "/api/vote", Some(&body));
                let mut stream = TcpStream::connect(server.addr).unwrap();
                stream
                    .write_all(&bytes[..bytes.len() - body.len() / 2])
                    .unwrap();
                stream.flush().unwrap();
                server.kill9();
            }
            // A whole vote sent, the answer never read: committed or not, nothing else lost.
            2 => {
                let (pair, body) = ballot(&server, "bob", n).unwrap();
                let bytes = request_bytes(server.addr, "POST", "/api/vote", Some(&body));
                let mut stream = TcpStream::connect(server.addr).unwrap();
                stream.write_all(&bytes).unwrap();
                server.kill9();
                let after = db_votes(&db);
                if after.len() == acked.len() + 1 {
                    acked.push(("bob".into(), pair)); // it made it: the next round expects it
                }
            }
            _ => server.kill9(),
        }
    }

    // After the last restart both raters finish; each pair has each rater's vote once.
    let server = ReviewServer::start(&args);
    for rater in ["ann", "bob"] {
        while let Some((pair, body)) = ballot(&server, rater, n) {
            n += 1;
            let (status, answer) = http(server.addr, "POST", "/api/vote", Some(&body));
            assert_eq!(status, 200, "{answer}");
            acked.push((rater.to_string(), pair));
        }
    }
    let stored: Vec<(String, i64)> = db_votes(&db)
        .into_iter()
        .map(|(rater, pair, _, _)| (rater, pair))
        .collect();
    assert_eq!(stored, acked);
    assert_eq!(stored.len(), 16); // 8 pairs × 2 raters
    assert_eq!(integrity(&db), "ok");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
