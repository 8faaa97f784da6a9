//! Streams held on one instance while its `LISTEN` connection is killed,
//! or on a table without the announce trigger: no stream outlives its
//! session past the re-check bound.

use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use cloakroom::store::PostgresStore;

use crate::checks::streams::{open_stream, stream_routes};
use crate::support::app::TestApp;
use crate::support::client::logged_in;
use crate::support::harness::{tests, Test};
use crate::support::postgres::{connect, shared_url, store_on, unique_table, SCHEMA};

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::POSTGRES) => [
            a_logout_as_the_listen_connection_is_killed_still_ends_the_stream,
            a_table_without_the_trigger_ends_streams_by_polling,
        ],
    )
}

/// Two instances on one table, each with a pool of its own: `a` serves
/// the app, `b` the streams.
struct Instances {
    a: TestApp<PostgresStore>,
    _b: TestApp<PostgresStore>,
    streams: Router,
    pool: sqlx::PgPool,
    table: String,
}

async fn instances(url: &str) -> Instances {
    let table = unique_table();
    let pool = connect(url).await;
    let a = TestApp::new(store_on(pool.clone(), &table, |b| b).await);
    let b = TestApp::new(store_on(connect(url).await, &table, |b| b).await);
    let streams = stream_routes().layer(b.layer.clone());
    Instances {
        a,
        _b: b,
        streams,
        pool,
        table,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn a_logout_as_the_listen_connection_is_killed_still_ends_the_stream() {
    let Some(url) = shared_url() else {
        return;
    };
    let both = instances(url).await;
    let mut browser = logged_in(&both.a, "killed").await;
    let stream = open_stream(&both.streams, &browser).await;
    // The feed is up (its first heartbeat back) before it is cut.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let channel_listeners: Vec<(i32,)> =
        sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN \"cloakroom_%'")
            .fetch_all(&both.pool)
            .await
            .unwrap();
    assert!(
        !channel_listeners.is_empty(),
        "the stream's instance listens"
    );
    for (pid,) in channel_listeners {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&both.pool)
            .await
            .unwrap();
    }
    let reply = browser.post("/logout").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");
}

#[tokio::main(flavor = "current_thread")]
async fn a_table_without_the_trigger_ends_streams_by_polling() {
    let Some(url) = shared_url() else {
        return;
    };
    let both = instances(url).await;
    // As on a table an earlier version migrated.
    sqlx::query(&format!(
        "DROP TRIGGER \"{}_announce\" ON \"{SCHEMA}\".\"{}\"",
        both.table, both.table
    ))
    .execute(&both.pool)
    .await
    .unwrap();
    let mut browser = logged_in(&both.a, "untriggered").await;
    let stream = open_stream(&both.streams, &browser).await;
    // Long enough for a feed that trusted itself to have said so (its
    // first heartbeat): the logout must not be caught by the polling
    // every new feed starts with.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = browser.post("/logout").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");
}
