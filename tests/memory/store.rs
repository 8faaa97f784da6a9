//! What is particular to `MemoryStore` (sweeping, in place and in the
//! background) and to the layer without any backend (its extractor without
//! the layer, a session used after its response).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use cloakroom::{MemoryStore, Session};
use tower::ServiceExt;

use crate::support::app::{key, TestApp, IDLE};
use crate::support::reply::read;

#[tokio::test]
async fn session_extractor_without_the_layer_is_a_500_and_option_is_none() {
    let app = Router::new()
        .route("/required", get(|_s: Session| async { "unreachable" }))
        .route(
            "/optional",
            get(|s: Option<Session>| async move {
                if s.is_some() {
                    "some"
                } else {
                    "none"
                }
            }),
        );
    let reply = read(
        app.clone()
            .oneshot(Request::get("/required").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !reply.body.contains("cloakroom"),
        "internal wiring is not shown"
    );
    let reply = read(
        app.oneshot(Request::get("/optional").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body, "none");
}

#[tokio::test]
async fn expired_sessions_leave_memory_when_the_sweeper_runs() {
    let store = MemoryStore::new();
    let app = TestApp::new(store.clone());
    for _ in 0..10 {
        app.client().put("/set/k", "v").await;
    }
    assert_eq!(store.len(), 10);
    app.clock.advance(IDLE);
    assert_eq!(app.layer.admin().sweep_expired().await.unwrap(), 10);
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_spawned_sweeper_frees_expired_sessions_in_the_background() {
    let store = MemoryStore::new();
    let app = TestApp::new(store.clone());
    for _ in 0..5 {
        app.client().put("/set/k", "v").await;
    }
    app.clock.advance(IDLE);
    let sweeper = app.layer.admin().spawn_sweeper(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(store.is_empty(), "swept without any request");
    sweeper.abort();
}

#[tokio::test]
async fn a_session_used_after_its_response_reports_finished() {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Session>();
    let store = MemoryStore::new();
    let layer = cloakroom::SessionLayer::builder(store.clone())
        .key(key(1))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(move |session: Session| {
                let sender = sender.clone();
                async move {
                    session.insert("in_time", true).await.unwrap();
                    sender.send(session).unwrap();
                    "ok"
                }
            }),
        )
        .layer(layer);
    let reply = read(
        app.oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let late = receiver.recv().await.unwrap();
    assert!(matches!(
        late.insert("too_late", true).await,
        Err(cloakroom::SessionError::Finished)
    ));
    assert_eq!(store.len(), 1, "the in-time write was committed");
}

#[tokio::test]
async fn a_layer_sweeps_its_memory_store_in_the_background_with_its_own_clock() {
    let store = MemoryStore::builder()
        .sweep_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let app = TestApp::new(store.clone());
    for _ in 0..5 {
        app.client().put("/set/k", "v").await;
    }
    assert_eq!(store.len(), 5);
    // Expired by the layer's clock, with no request to notice it.
    app.clock.advance(IDLE);
    for _ in 0..100 {
        if store.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} expired sessions still held after 5 s", store.len());
}
