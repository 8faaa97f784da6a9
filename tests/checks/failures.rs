//! A store that fails, and data no store can hold: `503` (or `400`)
//! of one shape, nothing half-written, nobody logged in or out.

use axum::http::StatusCode;
use cloakroom::store::SessionStore;
use cloakroom::test_suite::StoreOp;

use crate::support::app::TestApp;
use crate::support::client::{assert_unavailable, logged_in, whoami, with_handler_paused};
use crate::support::logs;

pub(crate) async fn store_outage_answers_503_and_service_recovers<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().unwrap();
    app.store.set_failing(true);
    // A read fails in the handler (its error answers); a blind write fails
    // at commit (the layer answers); a read-modify-write fails in the
    // handler. All three look the same.
    let replies = [
        ("read", client.get("/whoami").await),
        ("blind write", client.put("/set/k", "v").await),
        ("read-modify-write", client.post("/incr/n").await),
    ];
    for (what, reply) in &replies {
        assert_unavailable(reply, what);
        assert!(!reply.body.contains(&cookie[..22]));
    }
    assert_eq!(
        client.get("/noop").await.status,
        StatusCode::OK,
        "untouched routes still work"
    );
    app.store.set_failing(false);
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert_eq!(
        client.get("/get/k").await.status,
        StatusCode::NOT_FOUND,
        "nothing half-written"
    );
}

pub(crate) async fn a_failed_commit_replaces_the_response_with_503<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    // The handler has loaded the session; the store fails before it commits.
    let reply = with_handler_paused(&app, &client, "PUT", "/wait/set/k", async {
        app.store.set_failing(true);
    })
    .await;
    assert_unavailable(&reply, "a failed commit");
    app.store.set_failing(false);
    assert_eq!(client.get("/get/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
}

pub(crate) async fn a_store_failure_drops_blind_writes_too<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let reply = with_handler_paused(&app, &client, "POST", "/wait/blind-then-read", async {
        app.store.set_failing(true);
    })
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    app.store.set_failing(false);
    assert_eq!(
        client.get("/get/blind").await.status,
        StatusCode::NOT_FOUND,
        "a write made before the failure is not applied after it"
    );

    // The same when the store is back by the time the response goes out:
    // only the read fails, and the commit could have saved the write.
    app.store.reset();
    let reply = with_handler_paused(&app, &client, "POST", "/wait/blind-then-read", async {
        app.store.fail_next(StoreOp::Load);
    })
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.calls().save, 0, "nothing saved after the failure");
    assert_eq!(
        client.get("/get/blind").await.status,
        StatusCode::NOT_FOUND,
        "the request writes all of its changes or none"
    );
}

pub(crate) async fn a_handler_ignoring_a_store_failure_still_gets_503_for_pending_changes<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = with_handler_paused(
        &app,
        &client,
        "POST",
        "/wait/login-then-ignore/alice",
        async {
            app.store.set_failing(true);
        },
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no 'logged in' answer without the session behind it"
    );
    assert!(reply.set_cookies().is_empty());
    app.store.set_failing(false);
    client.absorb(&reply);
    assert_eq!(whoami(&client).await, None);
}

pub(crate) async fn data_no_store_can_hold_answers_400_and_writes_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/note", "kept").await;
    app.store.reset();
    for (method, path, body) in [
        ("PUT", "/set/note", "secret-card-1234\u{0}x"),
        ("PUT", "/set/a%00b", "value"),
        ("POST", "/login/a%00b", ""),
    ] {
        let request = client.request(method, path, body);
        let reply = client.send(request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(reply.body, "invalid session data\n");
        assert!(reply.set_cookies().is_empty());
    }
    assert_eq!(
        app.calls().save + app.calls().create,
        0,
        "refused before any write"
    );
    assert_eq!(client.get("/get/note").await.body, "kept");
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert!(!logs.text().contains("secret-card"), "no data in the logs");
}

pub(crate) async fn public_pages_that_opt_in_see_anonymous_during_an_outage_and_protected_pages_fail_closed<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().unwrap();
    assert_eq!(client.get("/home").await.body, "alice");
    assert_eq!(client.get("/home-me").await.body, "alice");

    app.store.set_failing(true);
    let (logs, _guard) = logs::capture();
    for page in ["/home", "/home-me"] {
        let reply = client.get(page).await;
        assert_eq!(reply.status, StatusCode::OK, "{page}: {}", reply.body);
        assert!(
            matches!(reply.body.as_str(), "anonymous" | "nobody"),
            "{page} is served as to an anonymous visitor: {}",
            reply.body
        );
        assert_eq!(reply.set_cookie(), None, "{page} leaves the cookie alone");
    }
    // The same app's pages that need the user, or only peek without the
    // opt-in, still fail closed.
    for page in [
        "/account",
        "/me",
        "/maybe-account",
        "/maybe-me",
        "/guarded",
        "/whoami",
    ] {
        assert_unavailable(&client.get(page).await, page);
    }
    // A degraded page that writes anyway writes nothing: the layer's 503.
    let reply = client.get("/home-counting").await;
    assert_unavailable(&reply, "a degraded page that writes");
    assert_eq!(
        client.cookie.as_deref(),
        Some(cookie.as_str()),
        "cookie kept"
    );

    // One line for the pages served so, not one per page.
    let text = logs.text();
    assert_eq!(
        text.matches("served_anonymous_during_outage").count(),
        1,
        "{text}"
    );
    assert!(!text.contains(&cookie[..22]), "no session ID in the logs");
    // Once the interval has passed, another line, counting the pages since.
    app.clock.advance(std::time::Duration::from_secs(10));
    client.get("/home").await;
    let text = logs.text();
    assert_eq!(
        text.matches("served_anonymous_during_outage").count(),
        2,
        "{text}"
    );
    assert!(text.contains("since_last=3"), "{text}");

    // Back: the same cookie is the same user again, nothing was written.
    app.store.set_failing(false);
    assert_eq!(client.get("/home").await.body, "alice");
    assert_eq!(client.get("/home-me").await.body, "alice");
    assert_eq!(client.get("/account").await.body, "alice");
    assert_eq!(
        client.get("/get/visited").await.status,
        StatusCode::NOT_FOUND
    );
}
