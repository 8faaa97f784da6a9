//! Another connection holding SQLite's write lock past the busy timeout
//! (a long transaction of the application's, another process, a backup):
//! writes answer 503 only once the busy timeout has passed, reads go on
//! (WAL), nothing is lost or half-written, and service resumes as soon as
//! the lock is released.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cloakroom::store::{Patch, Touch};
use cloakroom::{id::SessionId, store::SessionStore, store::StoreError};
use serde_json::json;
use sqlx::Connection as _;

use crate::support::app::TestApp;
use crate::support::client::{assert_unavailable, logged_in, whoami};
use crate::support::sqlite::{connect_with, fresh_path, options, store_on};

const BUSY: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_answers_503_and_service_resumes() {
    let path = fresh_path();
    let store = store_on(connect_with(&path, BUSY).await, |b| b).await;
    let app = TestApp::new(store.clone());
    let mut client = logged_in(&app, "alice").await;
    assert_eq!(
        client.put("/set/k", "before").await.status,
        StatusCode::NO_CONTENT
    );

    // Someone else takes the write lock and keeps it.
    let mut holder = sqlx::SqliteConnection::connect_with(&options(&path, BUSY))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("DELETE FROM cloakroom_sessions WHERE 0")
        .execute(&mut holder)
        .await
        .unwrap();

    // A write waits the busy timeout, then answers 503.
    let started = Instant::now();
    let reply = client.put("/set/k", "during").await;
    let waited = started.elapsed();
    assert_unavailable(&reply, "a write while the lock is held");
    assert!(
        waited >= BUSY,
        "answered after {waited:?}, before the busy timeout"
    );
    // Reads do not wait for the writer (WAL): the session is still there.
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert_eq!(client.get("/get/k").await.body, "before");

    // The store's own error: Unavailable, with SQLite's busy code kept.
    let k = SessionId::generate().unwrap().store_key();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let mut patch = Patch::default();
    patch.set.insert("x".into(), json!(1));
    let error = store
        .save(&k, &patch, Touch { now, after: 1.0 })
        .await
        .expect_err("busy");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let logged = std::error::Error::source(&error)
        .expect("a source")
        .to_string();
    assert!(logged.contains("(SQLITE_BUSY)"), "{logged}");

    // Released: writes work again at once, and the one refused during the
    // outage was not written behind the client's back.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(client.get("/get/k").await.body, "before");
    assert_eq!(
        client.put("/set/k", "after").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/get/k").await.body, "after");
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_released_within_the_busy_timeout_costs_a_wait_and_no_error() {
    let path = fresh_path();
    let store = store_on(connect_with(&path, Duration::from_secs(5)).await, |b| b).await;
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "bob").await;

    let mut holder = sqlx::SqliteConnection::connect_with(&options(&path, BUSY))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    });
    let started = Instant::now();
    assert_eq!(
        client.put("/set/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    release.await.unwrap();
    assert_eq!(client.get("/get/k").await.body, "v");
}
