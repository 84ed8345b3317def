//! Every request the server refuses gets a 4xx and leaves the database exactly as it was:
//! unknown pairs, pairs not served to the rater, second votes, malformed, mistyped and
//! oversized bodies, bad rater names, unknown images and routes. A valid vote, for contrast,
//! changes it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{dump, request, serve, study, temp_dir};
use rocm_review::http::MAX_BODY_BYTES;
use serde_json::{Value, json};

const JSON: Option<&str> = Some("application/json");

/// What is wrong, method, path, content type, body, and the status it must get.
type Case<'a> = (&'a str, &'a str, String, Option<&'a str>, String, u16);

#[tokio::test(flavor = "current_thread")]
async fn bad_requests_are_4xx_and_change_nothing() {
    let dir = temp_dir("bad-requests");
    let db = dir.join("review.sqlite");
    let addr = serve(study(&db));

    // Serve ann a pair (and bob one, so that a serve of another rater exists).
    let (status, body) = request(addr, "GET", "/api/next?rater=ann", None, b"").await;
    assert_eq!(status, 200, "{body}");
    let ann: Value = serde_json::from_str(&body).unwrap();
    let (serve_id, pair_id) = (
        ann["serve_id"].as_i64().unwrap(),
        ann["pair_id"].as_i64().unwrap(),
    );
    let (_, body) = request(addr, "GET", "/api/next?rater=bob", None, b"").await;
    let bob: Value = serde_json::from_str(&body).unwrap();
    let other_pair = (1..=4).find(|&p| p != pair_id).unwrap();
    let ballot = |rater: &str, pair: i64, serve: i64| {
        json!({
            "rater": rater, "pair_id": pair, "serve_id": serve,
            "visual_appeal": "left", "general_preference": "right", "prompt_alignment": "tie",
        })
    };
    let valid = ballot("ann", pair_id, serve_id).to_string();

    let mut padded = ballot("ann", pair_id, serve_id);
    padded["rater"] = json!("x".repeat(MAX_BODY_BYTES));
    let oversize = padded.to_string();
    let mut unknown_choice = ballot("ann", pair_id, serve_id);
    unknown_choice["visual_appeal"] = json!("up");
    let mut missing_field = ballot("ann", pair_id, serve_id);
    missing_field
        .as_object_mut()
        .unwrap()
        .remove("prompt_alignment");
    let mut extra_field = ballot("ann", pair_id, serve_id);
    extra_field["winner"] = json!("a");
    let mut string_id = ballot("ann", pair_id, serve_id);
    string_id["pair_id"] = json!("1");

    let bad: Vec<Case> = vec![
        (
            "unknown pair id",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("ann", 999, serve_id).to_string(),
            404,
        ),
        (
            "pair not served to the rater",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("ann", other_pair, serve_id).to_string(),
            409,
        ),
        (
            "another rater's serve",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot(
                "ann",
                bob["pair_id"].as_i64().unwrap(),
                bob["serve_id"].as_i64().unwrap(),
            )
            .to_string(),
            409,
        ),
        (
            "serve of another rater's name",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("bob", pair_id, serve_id).to_string(),
            409,
        ),
        (
            "unknown serve id",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("ann", pair_id, 12345).to_string(),
            409,
        ),
        (
            "truncated JSON",
            "POST",
            "/api/vote".into(),
            JSON,
            valid[..valid.len() / 2].to_string(),
            400,
        ),
        (
            "not JSON",
            "POST",
            "/api/vote".into(),
            JSON,
            "rater=ann&pair_id=1".into(),
            400,
        ),
        (
            "empty body",
            "POST",
            "/api/vote".into(),
            JSON,
            String::new(),
            400,
        ),
        (
            "no content type",
            "POST",
            "/api/vote".into(),
            None,
            valid.clone(),
            415,
        ),
        (
            "unknown choice",
            "POST",
            "/api/vote".into(),
            JSON,
            unknown_choice.to_string(),
            422,
        ),
        (
            "missing criterion",
            "POST",
            "/api/vote".into(),
            JSON,
            missing_field.to_string(),
            422,
        ),
        (
            "unknown field",
            "POST",
            "/api/vote".into(),
            JSON,
            extra_field.to_string(),
            422,
        ),
        (
            "pair id as a string",
            "POST",
            "/api/vote".into(),
            JSON,
            string_id.to_string(),
            422,
        ),
        (
            "a JSON array",
            "POST",
            "/api/vote".into(),
            JSON,
            "[1, 2, 3]".into(),
            422,
        ),
        (
            "oversize body",
            "POST",
            "/api/vote".into(),
            JSON,
            oversize,
            413,
        ),
        (
            "empty rater name",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("", pair_id, serve_id).to_string(),
            400,
        ),
        (
            "rater name with a newline",
            "POST",
            "/api/vote".into(),
            JSON,
            ballot("ann\n", pair_id, serve_id).to_string(),
            400,
        ),
        (
            "next without a rater",
            "GET",
            "/api/next".into(),
            None,
            String::new(),
            400,
        ),
        (
            "next with an empty rater",
            "GET",
            "/api/next?rater=".into(),
            None,
            String::new(),
            400,
        ),
        (
            "next with a too long name",
            "GET",
            format!("/api/next?rater={}", "y".repeat(101)),
            None,
            String::new(),
            400,
        ),
        (
            "image key not hex",
            "GET",
            "/images/..%2Fstudy".into(),
            None,
            String::new(),
            404,
        ),
        (
            "unknown image key",
            "GET",
            format!("/images/{}", "0".repeat(64)),
            None,
            String::new(),
            404,
        ),
        (
            "unknown route",
            "GET",
            "/api/pairs".into(),
            None,
            String::new(),
            404,
        ),
        (
            "vote by GET",
            "GET",
            "/api/vote".into(),
            None,
            String::new(),
            405,
        ),
    ];

    let before = dump(&db);
    assert!(
        before.iter().any(|r| r.starts_with("serves:")),
        "{before:?}"
    );
    for (what, method, path, content_type, body, want) in &bad {
        let (status, answer) = request(addr, method, path, *content_type, body.as_bytes()).await;
        assert_eq!(status, *want, "{what}: {answer}");
        assert_eq!(dump(&db), before, "{what} changed the database");
    }

    // The valid ballot is accepted and changes the database; a second copy of it is refused.
    let (status, answer) = request(addr, "POST", "/api/vote", JSON, valid.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let after = dump(&db);
    assert_ne!(after, before);
    assert_eq!(after.iter().filter(|r| r.starts_with("votes:")).count(), 1);
    let (status, answer) = request(addr, "POST", "/api/vote", JSON, valid.as_bytes()).await;
    assert_eq!(status, 409, "second vote: {answer}");
    assert_eq!(dump(&db), after, "a second vote changed the database");
    std::fs::remove_dir_all(&dir).ok();
}
