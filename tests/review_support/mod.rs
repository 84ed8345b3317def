//! Shared by the `rocm review` tests: the server as a child process, plain HTTP/1.1 over a
//! socket (the kill test needs to stop halfway through a request), the database's votes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder unique to this test process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rocm-review-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rocm review` running on a free port, killed when dropped.
pub struct ReviewServer {
    /// The child process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ReviewServer {
    /// Starts `rocm review ARGS --bind 127.0.0.1:0` in the repository root and reads the URL
    /// it prints (after any image generation).
    pub fn start(args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rocm"))
            .current_dir(root())
            .arg("review")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rocm review");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("http://")
            .and_then(|s| s.strip_suffix('/'))
            .unwrap_or_else(|| panic!("rocm review printed `{line}`, not its URL"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for ReviewServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The bytes of an HTTP/1.1 request (`Connection: close`).
pub fn request_bytes(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> Vec<u8> {
    let body = json.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json.is_some() {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head += "\r\n";
    [head.as_bytes(), body.as_bytes()].concat()
}

/// Sends a request and reads the whole answer: `(status, body)`.
pub fn http(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(&request_bytes(addr, method, path, json))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `(rater, pair_id, visual_appeal, general_preference, prompt_alignment, left_arm)` of every
/// vote in the database, read with SQL (not through `rocm_review`), in commit order.
pub fn db_votes(db: &Path) -> Vec<(String, i64, [String; 3], String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT rater, pair_id, visual_appeal, general_preference, prompt_alignment, left_arm
             FROM votes ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            [r.get(2)?, r.get(3)?, r.get(4)?],
            r.get(5)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// `PRAGMA integrity_check`'s answer.
pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}
