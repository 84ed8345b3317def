//! The study's web server: the two pages, the JSON API they use, the images and the CSV.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | the voting page |
//! | `GET /results` | the results page |
//! | `GET /assets/{app.js,results.js,style.css}` | the pages' script and style |
//! | `GET /api/study` | the criteria and the number of pairs |
//! | `GET /api/next?rater=NAME` | the rater's next pair (`serve_id`, `pair_id`, `prompt`, `left`, `right` image URLs, `done`, `total`) or `{"finished": true, …}` |
//! | `POST /api/vote` | a [`Ballot`] as JSON; `{"done", "total"}` once committed |
//! | `GET /api/results` | the [`stats::results`] rows and the arms' labels |
//! | `GET /votes.csv` | every vote ([`report::write_csv`]) |
//! | `GET /images/{key}` | a pair's PNG |
//!
//! Refusals are 4xx with `{"error": …}` (or axum's plain-text rejection for a body that is not
//! JSON of the right shape, 400/415/422, and 413 past [`MAX_BODY_BYTES`]) and change nothing.
//! The server runs on one thread (a current-thread tokio runtime): the store is behind a mutex
//! and each request's SQL is short.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::page;
use crate::store::Next;
use crate::{Ballot, Criterion, Error, ImageKey, Store, StudySpec, report, stats};

/// The largest request body accepted (a ballot is about 200 bytes).
pub const MAX_BODY_BYTES: usize = 4096;

struct Shared {
    store: Mutex<Store>,
    spec: StudySpec,
}

type AppState = Arc<Shared>;

impl Shared {
    fn store(&self) -> Result<MutexGuard<'_, Store>, Error> {
        self.store.lock().map_err(|_| Error::Io {
            what: "the study database".into(),
            source: std::io::Error::other("a request panicked while holding the database"),
        })
    }
}

/// The server's routes on `store`'s study. Fails unless the database holds a study with
/// every image ([`Error::NoStudy`], [`Error::MissingImages`]).
pub fn router(store: Store) -> Result<Router, Error> {
    let spec = store.require_study()?;
    let missing = store.missing_images()?.len();
    if missing > 0 {
        return Err(Error::MissingImages { missing });
    }
    let state = Arc::new(Shared {
        store: Mutex::new(store),
        spec,
    });
    Ok(Router::new()
        .route("/", get(|| async { html(page::INDEX_HTML) }))
        .route("/results", get(|| async { html(page::RESULTS_HTML) }))
        .route("/assets/app.js", get(|| async { script(page::APP_JS) }))
        .route(
            "/assets/results.js",
            get(|| async { script(page::RESULTS_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    page::STYLE_CSS,
                )
            }),
        )
        .route("/api/study", get(study))
        .route("/api/next", get(next))
        .route("/api/vote", post(vote))
        .route("/api/results", get(results))
        .route("/votes.csv", get(csv))
        .route("/images/{key}", get(image))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state))
}

fn html(text: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], text)
}

fn script(text: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        text,
    )
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Request { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn study(State(state): State<AppState>) -> Json<Value> {
    let criteria: Vec<Value> = Criterion::ALL
        .iter()
        .map(|c| json!({ "name": c.name(), "question": c.question() }))
        .collect();
    let spec = &state.spec;
    Json(json!({
        "criteria": criteria,
        "pairs": spec.prompts.len() * spec.seeds.len(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaterQuery {
    rater: String,
}

async fn next(
    State(state): State<AppState>,
    Query(query): Query<RaterQuery>,
) -> Result<Json<Value>, Error> {
    let next = state.store()?.next(&query.rater)?;
    Ok(Json(match next {
        Next::Finished(progress) => json!({
            "finished": true,
            "done": progress.done,
            "total": progress.total,
        }),
        Next::Pair(served) => {
            let (left, right) = match served.left {
                crate::Winner::B => (&served.pair.image_b, &served.pair.image_a),
                _ => (&served.pair.image_a, &served.pair.image_b),
            };
            json!({
                "finished": false,
                "serve_id": served.serve_id,
                "pair_id": served.pair.id,
                "prompt": served.pair.prompt,
                "left": format!("/images/{left}"),
                "right": format!("/images/{right}"),
                "done": served.progress.done,
                "total": served.progress.total,
            })
        }
    }))
}

async fn vote(
    State(state): State<AppState>,
    Json(ballot): Json<Ballot>,
) -> Result<Json<Value>, Error> {
    let progress = state.store()?.vote(&ballot)?;
    Ok(Json(
        json!({ "done": progress.done, "total": progress.total }),
    ))
}

async fn results(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let votes = state.store()?.votes()?;
    let spec = &state.spec;
    let rows: Vec<Value> = stats::results(&votes)
        .into_iter()
        .map(|row| {
            let mut value = json!(row);
            value["question"] = json!(row.criterion.question());
            value
        })
        .collect();
    let raters: std::collections::BTreeSet<&str> = votes.iter().map(|v| v.rater.as_str()).collect();
    Ok(Json(json!({
        "a": spec.a.label,
        "b": spec.b.label,
        "pairs": spec.prompts.len() * spec.seeds.len(),
        "votes": votes.len(),
        "raters": raters.len(),
        "rows": rows,
    })))
}

async fn csv(State(state): State<AppState>) -> Result<Response, Error> {
    let votes = state.store()?.votes()?;
    let mut body = Vec::new();
    report::write_csv(&votes, &mut body)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"votes.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

async fn image(State(state): State<AppState>, Path(key): Path<String>) -> Result<Response, Error> {
    let not_found = || Error::request(404, format!("no image {key}"));
    if !ImageKey::is_well_formed(&key) {
        return Err(not_found());
    }
    let png = state.store()?.image(&key)?.ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        png,
    )
        .into_response())
}

/// A server bound to its address, not yet answering.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Binds `addr` (e.g. `127.0.0.1:8080`, port 0 for any free port) for `store`'s study.
    pub fn bind(store: Store, addr: &str) -> Result<Self, Error> {
        let router = router(store)?;
        let io = |source| Error::Io {
            what: format!("bind {addr}"),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        Ok(Self { listener, router })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Io {
            what: "the server's address".into(),
            source,
        })
    }

    /// Answers requests until the process ends (or the listener fails).
    pub fn run(self) -> Result<(), Error> {
        let io = |source| Error::Io {
            what: "the review server".into(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(io)?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener).map_err(io)?;
            axum::serve(listener, self.router).await.map_err(io)
        })
    }
}
