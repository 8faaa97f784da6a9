//! The database going away under traffic, on a PostgreSQL server of this
//! test's own (stopped and restarted for real; the shared test server is
//! not touched), and a database that holds every call up (a table locked
//! by another connection, on the shared server).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cloakroom::store::{SessionRecord, Touch};
use cloakroom::{id::SessionId, store::SessionStore, store::StoreError, test_suite::Clock};

use crate::support::app::TestApp;
use crate::support::client::{assert_unavailable, logged_in};
use crate::support::harness::{tests, Test};
use crate::support::postgres::{
    connect, connect_with, fresh_store, shared_url, store_on, unique_table, Server,
};

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::POSTGRES_SERVER) => [
            a_database_outage_answers_503_and_the_service_recovers_when_it_is_back,
        ],
        Some(&crate::POSTGRES) => [
            a_locked_table_answers_503_within_the_store_timeout_and_service_resumes_after,
        ],
    )
}

fn assert_store_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(error @ StoreError::Unavailable(_)) => {
            let source = std::error::Error::source(&error).expect("a source");
            assert!(
                source
                    .source()
                    .and_then(|e| e.downcast_ref::<sqlx::Error>())
                    .is_some(),
                "{what}: the sqlx error is kept, below the error that is logged"
            );
        }
        other => panic!("{what}: expected StoreError::Unavailable, got {other:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_the_service_recovers_when_it_is_back() {
    let Some(mut server) = Server::start() else {
        return;
    };
    // Calls made while the server is down fail after this long.
    let pool = connect_with(&server.url(), Duration::from_millis(500)).await;
    let store = store_on(pool, &unique_table(), |b| b).await;
    let app = TestApp::new(store.clone());
    let mut client = logged_in(&app, "alice").await;
    assert_eq!(
        client.put("/set/k", "before").await.status,
        StatusCode::NO_CONTENT
    );

    // Traffic from a logged-in browser for the whole outage: every answer
    // is either the real one or a 503, never "logged out".
    let traffic = Traffic::default();
    let traffic_task = tokio::spawn({
        let mut client = client.clone();
        let traffic = traffic.clone();
        async move {
            for _ in 0..10_000 {
                if traffic.stop.load(Ordering::Relaxed) {
                    break;
                }
                let reply = client.get("/whoami").await;
                match reply.status {
                    StatusCode::OK => {
                        assert_eq!(reply.body, "alice");
                        traffic.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(reply.set_cookies().is_empty());
                        traffic.unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("an outage answered {other}: {}", reply.body),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    traffic.wait_for(&traffic.ok, 1).await;

    tokio::task::block_in_place(|| server.stop());

    // The store reports a typed error for every kind of call.
    let key = SessionId::generate().unwrap().store_key();
    let now = app.clock.now();
    let record = SessionRecord::new(
        now,
        Duration::from_secs(30 * 60),
        Duration::from_secs(24 * 3600),
    );
    assert_store_unavailable(store.create(&key, &record, now).await, "create");
    assert_store_unavailable(store.load(&key, Touch { now, after: 0.5 }).await, "load");
    assert_store_unavailable(store.delete_user("alice", None).await, "delete_user");
    assert_store_unavailable(store.list_user("alice", now, 100).await, "list_user");
    assert_store_unavailable(store.count_user("alice", now).await, "count_user");
    assert_store_unavailable(store.delete(&key, now).await, "delete");
    assert_store_unavailable(store.retire(&key, &key, now, now).await, "retire");
    assert_store_unavailable(store.sweep_expired(now).await, "sweep_expired");

    // Through the layer: 503, no cookie changes, nothing half-written.
    assert_unavailable(&client.get("/whoami").await, "read");
    assert_unavailable(&client.put("/set/during", "x").await, "write");
    assert_unavailable(&client.post("/logout").await, "logout");
    let mut stranger = app.client();
    assert_unavailable(&stranger.put("/set/k", "v").await, "new session");
    assert_unavailable(&stranger.post("/login/mallory").await, "login");
    assert_eq!(client.get("/noop").await.status, StatusCode::OK);

    tokio::task::block_in_place(|| server.start_again());

    // The pool reconnects by itself. The server may still be finishing its
    // start-up for a moment (answered with 503), so wait for the first
    // success, then check what it says.
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        let reply = client.get("/whoami").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.status, StatusCode::OK, "recovered: {}", reply.body);
    assert_eq!(reply.body, "alice", "the session survived the outage");
    assert_eq!(client.get("/get/k").await.body, "before");
    assert_eq!(
        client.get("/get/during").await.status,
        StatusCode::NOT_FOUND,
        "the write refused during the outage was not stored"
    );
    assert_eq!(
        client.put("/set/after", "y").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/get/after").await.body, "y");

    // The traffic, too, gets real answers again.
    let before = traffic.ok.load(Ordering::Relaxed);
    traffic.wait_for(&traffic.ok, before + 1).await;
    traffic.stop.store(true, Ordering::Relaxed);
    traffic_task.await.expect("no panic under traffic");
    assert!(
        traffic.unavailable.load(Ordering::Relaxed) > 0,
        "the traffic saw the outage"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_answers_503_within_the_store_timeout_and_service_resumes_after() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let url = shared_url().expect("a server");
    let store_timeout = Duration::from_millis(500);
    let app = TestApp::with(store.clone(), |b| b.store_timeout(store_timeout));
    let mut client = logged_in(&app, "alice").await;
    assert_eq!(
        client.put("/set/k", "before").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/whoami").await.body, "alice");

    // Another connection takes the table, as a long migration or a
    // careless `LOCK TABLE` would, and holds it for `held`: every
    // statement on the table waits for it, without any error.
    let held = Duration::from_secs(5);
    let locker_pool = connect(url).await;
    let mut locker = locker_pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        store.quoted_table()
    ))
    .execute(&mut *locker)
    .await
    .unwrap();
    let locked_at = Instant::now();

    // Requests that need the store get a 503 once the store timeout runs
    // out, long before the lock goes away. (The write below may still be
    // applied when the lock is released: an abandoned call can still take
    // effect, so nothing is asserted about it afterwards.)
    let quick = store_timeout * 3;
    for (what, method, path) in [
        ("read", "GET", "/whoami"),
        ("write", "PUT", "/set/during"),
        ("second read", "GET", "/get/k"),
    ] {
        let started = Instant::now();
        let request = client.request(method, path, "x");
        let reply = client.send(request).await;
        let took = started.elapsed();
        assert_unavailable(&reply, what);
        assert!(
            took >= store_timeout && took < quick,
            "{what} answered after {took:?}, with a store timeout of {store_timeout:?}"
        );
    }
    assert!(
        locked_at.elapsed() < held,
        "the answers came while the lock was held"
    );
    assert_eq!(
        client.get("/noop").await.status,
        StatusCode::OK,
        "requests that do not need the store are served"
    );
    tokio::time::sleep_until((locked_at + held).into()).await;
    locker.rollback().await.unwrap();

    // Service resumes once the lock is gone: the abandoned calls finish,
    // and the pool's connections serve again. Wait for the first success,
    // then check what it says.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let reply = client.get("/whoami").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, StatusCode::OK, "resumed: {}", reply.body);
    assert_eq!(reply.body, "alice", "the session outlived the lock");
    assert_eq!(client.get("/get/k").await.body, "before");
    assert_eq!(
        client.put("/set/after", "y").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/get/after").await.body, "y");
}

/// Counters shared with the traffic task.
#[derive(Clone, Default)]
struct Traffic {
    ok: Arc<AtomicU32>,
    unavailable: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Traffic {
    /// Waits until `counter` reaches `at_least` (at most a minute, so a
    /// broken test fails instead of hanging).
    async fn wait_for(&self, counter: &AtomicU32, at_least: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "the traffic made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
