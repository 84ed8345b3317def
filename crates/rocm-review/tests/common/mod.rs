//! A study in a temporary database, a server on it, and an HTTP client for the tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rocm_review::{Arm, Server, Store, StudySpec};

/// A fresh folder under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-review-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A study of 2 prompts × 2 seeds whose images are placeholder bytes (the server does not
/// decode them).
pub fn study(db: &Path) -> Store {
    let spec = StudySpec {
        a: Arm::new("base", "base"),
        b: Arm::new("tuned", "lora-sha"),
        settings: "test".into(),
        prompts: vec!["a red circle".into(), "two blue squares".into()],
        seeds: vec![0, 1],
    };
    let mut store = Store::open(db).unwrap();
    store.ensure_study(&spec).unwrap();
    for missing in store.missing_images().unwrap() {
        let png = format!(
            "png of {} {} {:?}",
            missing.prompt, missing.seed, missing.arm
        );
        store.put_image(&missing.key, png.as_bytes()).unwrap();
    }
    store
}

/// Serves `store` on a free port in a background thread.
pub fn serve(store: Store) -> SocketAddr {
    let server = Server::bind(store, "127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || server.run());
    addr
}

/// One request: `(status, body)`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let response = client
        .request(
            builder
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every row of every table as text: equal dumps mean an unchanged database.
pub fn dump(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut rows = Vec::new();
    for table in ["study", "pairs", "images", "serves", "votes"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows
}
