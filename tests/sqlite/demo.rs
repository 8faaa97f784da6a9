//! The demo binary with `SESSION_STORE=sqlite`, over real HTTP, on a
//! SQLite file that does not exist yet: the whole contract, sessions that
//! survive a restart of the demo, and a look at the file.

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::demo::{check_contract, check_streams, start_demo, Browser, Demo};
use crate::support::sqlite::{connect, fresh_path};

async fn demo_on(url: &str, key: &str) -> Demo {
    start_demo(&[
        ("SESSION_STORE", "sqlite"),
        ("DATABASE_URL", url),
        ("SESSION_KEY", key),
    ])
    .await
}

#[tokio::test]
async fn the_demo_answers_its_contract_on_sqlite_and_sessions_survive_a_restart() {
    let path = fresh_path();
    assert!(!path.exists());
    let url = format!("sqlite://{}", path.display());
    let key = "42".repeat(32);
    let demo = demo_on(&url, &key).await;
    assert!(path.exists(), "the demo created the file");
    check_contract(&demo, "").await;

    let mut browser = Browser::new(&demo);
    browser.login("restart-erin").await;
    for _ in 0..3 {
        browser.api(Method::POST, "/api/counter", "").await;
    }

    // The demo stops (killed, as a crash would) and starts again on the
    // same file and key: the browser is still logged in, with its data.
    drop(demo);
    let demo = demo_on(&url, &key).await;
    let cookie = browser.cookie.clone();
    let mut browser = Browser::new(&demo);
    browser.cookie = cookie;
    let me = browser.get("/api/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.json::<Value>()["user"], "restart-erin");
    let counted = browser.api(Method::POST, "/api/counter", "").await;
    assert_eq!(counted.json::<Value>()["counter"], 4);

    // The session is a row of the demo's table, under the hashed key, and
    // the raw session ID is nowhere in the file or its WAL.
    let pool = connect(&path).await;
    let (rows, counter): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), max(data ->> '$.counter') FROM cloakroom_sessions WHERE user_id = ?1",
    )
    .bind("restart-erin")
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, counter), (1, Some(4)));
    let cookie = browser.cookie.clone().unwrap();
    let (_, value) = cookie.split_once('=').expect("name=value");
    let raw_id = value.split('.').next().unwrap().to_owned();
    assert_eq!(raw_id.len(), 22, "a 16-byte ID in base64url: {cookie}");
    pool.close().await;
    drop(demo);
    crate::store::assert_nowhere_in_the_files(&path, raw_id.as_bytes());
}

/// `GET /api/stream` on SQLite: the demo's streams end with their
/// sessions, by every means the contract names.
#[tokio::test]
async fn the_demos_streams_end_with_their_sessions_on_sqlite() {
    let url = format!("sqlite://{}", fresh_path().display());
    let demo = start_demo(&[
        ("SESSION_STORE", "sqlite"),
        ("DATABASE_URL", &url),
        ("SESSION_KEY", &"42".repeat(32)),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
    ])
    .await;
    check_streams(&demo, &demo, "").await;
}
