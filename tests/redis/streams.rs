//! Streams held on one instance while Redis restarts, freezes or drops
//! the subscription, as a logout happens on another instance: no stream
//! outlives its session past the re-check bound, and no stream of a live
//! session is closed.

use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use cloakroom::store::RedisStore;

use crate::checks::streams::{open_stream, stream_routes};
use crate::support::app::TestApp;
use crate::support::client::logged_in;
use crate::support::harness::{tests, Test};
use crate::support::redis::standalone;
use crate::support::redis_server::RedisServer;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::REDIS_SERVER) => [
            a_stream_outlives_a_redis_restart_and_ends_on_the_logout_after_it,
            a_logout_sent_while_redis_is_frozen_ends_the_stream_once_it_thaws,
            a_logout_while_the_subscription_is_dropped_still_ends_the_stream,
            a_restart_that_lost_the_session_ends_its_stream,
        ],
    )
}

/// Two instances on one server: `a` (cached) serves the app, `b` (no
/// cache: its watches subscribe on their own) the streams.
struct Instances {
    a: TestApp<RedisStore>,
    _b: TestApp<RedisStore>,
    streams: Router,
}

async fn instances(server: &RedisServer) -> Instances {
    let prefix = format!("streams-{}:", std::process::id());
    let url = server.url();
    let a = TestApp::new(standalone(&url, &prefix, Some(1000)).await);
    let b = TestApp::new(standalone(&url, &prefix, None).await);
    let streams = stream_routes().layer(b.layer.clone());
    Instances { a, _b: b, streams }
}

/// Persistent, so that sessions survive a restart.
fn persistent_server() -> Option<RedisServer> {
    RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"])
}

#[tokio::main(flavor = "current_thread")]
async fn a_stream_outlives_a_redis_restart_and_ends_on_the_logout_after_it() {
    let Some(mut server) = persistent_server() else {
        return;
    };
    let both = instances(&server).await;
    let mut browser = logged_in(&both.a, "restart").await;
    let mut stream = open_stream(&both.streams, &browser).await;

    server.stop();
    let reply = browser.post("/logout").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no logout without Redis"
    );
    server.run();
    // The watch re-checks once Redis is back (its subscription was lost):
    // the session survived, so the stream stays open. Two re-check
    // periods pass before looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!stream.has_ended(), "no false close across a restart");

    let reply = browser.post("/logout").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");
}

#[tokio::main(flavor = "current_thread")]
async fn a_logout_sent_while_redis_is_frozen_ends_the_stream_once_it_thaws() {
    let Some(server) = persistent_server() else {
        return;
    };
    let both = instances(&server).await;
    let browser = logged_in(&both.a, "frozen").await;
    let stream = open_stream(&both.streams, &browser).await;

    let paused = server.pause().await;
    // The logout is sent to a frozen server: it may answer 503 (the store
    // timeout) and still be carried out when Redis thaws.
    let logout = browser.spawn("POST", "/logout", "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    paused.resume();
    let reply = logout.await.expect("the logout request");
    if reply.status == StatusCode::SERVICE_UNAVAILABLE {
        // Timed out before Redis thawed: the session may or may not have
        // ended. Log out again, as the user would.
        let mut browser = browser.clone();
        let again = browser.post("/logout").await;
        assert!(again.status.is_success(), "{}", again.status);
    }
    assert_eq!(stream.end().await, "session ended");
}

#[tokio::main(flavor = "current_thread")]
async fn a_logout_while_the_subscription_is_dropped_still_ends_the_stream() {
    let Some(server) = persistent_server() else {
        return;
    };
    let both = instances(&server).await;
    let mut browser = logged_in(&both.a, "dropped").await;
    let stream = open_stream(&both.streams, &browser).await;

    let mut admin = server.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL TYPE pubsub");
    // At once, before either instance has subscribed again: the
    // announcement may be lost, the re-check is not.
    let reply = browser.post("/logout").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");
}

#[tokio::main(flavor = "current_thread")]
async fn a_restart_that_lost_the_session_ends_its_stream() {
    // No persistence: a restart loses every session.
    let Some(mut server) = RedisServer::start(&[]) else {
        return;
    };
    let both = instances(&server).await;
    let browser = logged_in(&both.a, "lost").await;
    let stream = open_stream(&both.streams, &browser).await;
    server.restart();
    assert_eq!(stream.end().await, "session ended");
}
