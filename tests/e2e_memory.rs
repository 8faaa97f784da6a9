//! End-to-end tests through a real axum `Router` on the memory store.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use cloakroom::{MemoryStore, Session};
use tower::ServiceExt;

e2e_tests!(Some(MemoryStore::new()));

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
    let reply = common::read(
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
    let reply = common::read(
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
    let app = common::TestApp::new(store.clone());
    for _ in 0..10 {
        app.client().put("/set/k", "v").await;
    }
    assert_eq!(store.len(), 10);
    app.clock.advance(common::IDLE);
    assert_eq!(app.layer.admin().sweep_expired().await.unwrap(), 10);
    assert!(store.is_empty());
}
