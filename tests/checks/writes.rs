//! What requests cost the store, and that what they write is what is
//! stored: blind writes, read-modify-writes, concurrent writers, ID
//! collisions.

use std::time::Duration;

use axum::http::{header, StatusCode};
use cloakroom::{store::SessionStore, test_suite::Clock as _};

use crate::support::app::{TestApp, IDLE};
use crate::support::client::{logged_in, whoami};

pub(crate) async fn a_request_that_ignores_its_session_costs_nothing<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.get("/noop").await;
    assert!(reply.set_cookies().is_empty());
    assert_eq!(reply.header(header::VARY), None);
    assert_eq!(app.calls().total(), 0);

    client.put("/set/k", "v").await;
    app.store.reset();
    let reply = client.get("/noop").await;
    assert!(reply.set_cookies().is_empty());
    assert_eq!(app.calls().total(), 0, "a valid cookie alone loads nothing");
}

pub(crate) async fn reading_a_new_session_stores_nothing_and_sets_no_cookie<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.get("/get/k").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.set_cookies().is_empty(),
        "an anonymous visit sets no cookie"
    );
    assert_eq!(reply.header(header::VARY), Some("Cookie"));
    assert_eq!(
        app.calls().total(),
        0,
        "no cookie, nothing to load or store"
    );
    assert_eq!(client.post("/clear").await.status, StatusCode::NO_CONTENT);
    assert_eq!(client.delete("/set/k").await.status, StatusCode::NOT_FOUND);
    assert!(client.cookie.is_none());
    assert_eq!(app.calls().total(), 0);
}

pub(crate) async fn first_write_creates_the_session_and_later_requests_write_only_changes<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/set/k", "v").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(app.calls().create, 1);

    app.store.reset();
    let reply = client.get("/get/k").await;
    assert_eq!(reply.body, "v");
    assert!(
        reply.set_cookies().is_empty(),
        "nothing to tell the browser"
    );
    assert_eq!(app.calls().load, 1);
    assert_eq!(app.calls().total(), 1, "a read is one store call");

    app.store.reset();
    client.put("/ensure/k", "v").await;
    assert_eq!(
        app.calls().save,
        0,
        "rewriting a value just read writes nothing"
    );
    let reply = client.put("/ensure/other", "w").await;
    assert_eq!(app.calls().save, 1);
    assert!(
        reply.set_cookies().is_empty(),
        "a saved change leaves the cookie as it is"
    );
    assert_eq!(client.get("/get/k").await.body, "v");
    assert_eq!(client.get("/get/other").await.body, "w");
}

pub(crate) async fn a_blind_write_is_one_save_and_no_load<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/a", "1").await;
    app.store.reset();
    let reply = client.put("/set/b", "2").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(app.calls().save, 1);
    assert_eq!(
        app.calls().total(),
        1,
        "a write without a read is one store call"
    );
    assert_eq!(client.get("/keys").await.body, r#"["a","b"]"#);
    app.store.reset();
    client.put("/set-two/c/d", "3").await;
    assert_eq!(
        (app.calls().save, app.calls().total()),
        (1, 1),
        "two writes without a read are still one save"
    );
    assert_eq!(client.get("/keys").await.body, r#"["a","b","c","d"]"#);
    app.store.reset();
    assert_eq!(client.post("/incr/n").await.body, "1");
    assert_eq!(client.post("/incr/n").await.body, "2");
    assert_eq!(
        app.calls().total(),
        4,
        "read-modify-write: a load and a save each"
    );
}

pub(crate) async fn a_blind_write_rolls_the_idle_deadline<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    // Past the touch threshold: the write alone must count as activity.
    app.clock.advance(Duration::from_secs(1000));
    assert_eq!(
        client.put("/set/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
    app.clock.advance(Duration::from_secs(1000));
    assert_eq!(
        whoami(&client).await.as_deref(),
        Some("alice"),
        "alive 2000 s after login"
    );
}

pub(crate) async fn a_blind_write_to_a_dead_session_starts_a_new_one<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let old = client.cookie.clone().unwrap();
    client.post("/logout-everywhere").await;
    let mut stale = app.client();
    stale.cookie = Some(old.clone());
    let reply = stale.put("/set/cart", "1 item").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let fresh = stale.cookie.clone().expect("a new session for the write");
    assert_ne!(fresh, old, "the dead ID is never revived");
    assert_eq!(stale.get("/get/cart").await.body, "1 item");
    assert_eq!(whoami(&stale).await, None, "the new session is anonymous");
    let mut replay = app.client();
    replay.cookie = Some(old);
    assert_eq!(replay.get("/get/cart").await.status, StatusCode::NOT_FOUND);
}

pub(crate) async fn a_blind_write_with_a_cookie_that_moved_leaves_the_new_cookie_alone<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let stale = logged_in(&app, "alice").await;
    // Another tab logs in again: the session moves to a new ID.
    let mut browser = stale.clone();
    browser.post("/login/alice").await;
    assert_ne!(browser.cookie, stale.cookie);
    // Requests that left with the old cookie write without reading.
    for (method, path) in [("PUT", "/set/k"), ("POST", "/clear")] {
        let request = stale.request(method, path, "v");
        let reply = stale.clone().send(request).await;
        assert!(
            reply.status.is_success(),
            "{method} {path}: {}",
            reply.status
        );
        assert!(
            reply.set_cookies().is_empty(),
            "{method} {path}: the login's cookie is neither replaced nor cleared"
        );
    }
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
}

pub(crate) async fn writes_before_a_read_are_seen_by_that_read<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/old", "x").await;
    let reply = client.put("/write-then-read/new", "fresh").await;
    assert_eq!(
        reply.body, r#"fresh ["new"]"#,
        "clear and insert, then read"
    );
    assert_eq!(
        client.get("/keys").await.body,
        r#"["new"]"#,
        "and stored so"
    );
}

pub(crate) async fn removals_and_clears_are_saved<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    for k in ["a", "b", "c"] {
        client.put(&format!("/set/{k}"), k).await;
    }
    assert_eq!(client.delete("/set/b").await.status, StatusCode::NO_CONTENT);
    assert_eq!(client.get("/keys").await.body, r#"["a","c"]"#);
    client.post("/clear").await;
    assert_eq!(client.get("/keys").await.body, "[]");
    assert!(client.cookie.is_some(), "clearing data keeps the session");

    // The same once the request has read the session.
    client.put("/set/d", "d").await;
    assert_eq!(client.get("/keys").await.body, r#"["d"]"#);
    let reply = client.post("/read-then-clear").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "the cookie stays as it is");
    assert_eq!(client.get("/keys").await.body, "[]");
}

pub(crate) async fn take_removes_what_it_returns_and_get_value_shows_the_json<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    assert_eq!(client.get("/raw/k").await.status, StatusCode::NOT_FOUND);
    client.put("/set/k", "v").await;
    client.put("/set/other", "o").await;
    assert_eq!(client.get("/raw/k").await.body, r#""v""#);
    let taken = client.post("/take/k").await;
    assert_eq!((taken.status, taken.body.as_str()), (StatusCode::OK, "v"));
    assert_eq!(client.get("/get/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.post("/take/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get("/keys").await.body, r#"["other"]"#);
}

pub(crate) async fn expires_at_is_the_idle_deadline_of_a_stored_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let start = app.clock.now().unix_timestamp();
    let idle = IDLE.as_secs() as i64;
    assert_eq!(client.get("/expires").await.body, "none", "nothing stored");
    // A new session with content expires a full idle window from now, even
    // before it is stored.
    let mut other = app.client();
    assert_eq!(
        other.put("/set-then-expires/k", "v").await.body,
        (start + idle).to_string()
    );
    // So does a stored session whose data is all cleared.
    other.post("/clear").await;
    assert_eq!(other.get("/expires").await.body, (start + idle).to_string());
    client.put("/set/k", "v").await;
    assert_eq!(
        client.get("/expires").await.body,
        (start + idle).to_string()
    );
    // Once the idle window has mostly passed, a visit rolls the deadline.
    app.clock.advance(IDLE - Duration::from_secs(60));
    client.get("/get/k").await;
    assert_eq!(
        client.get("/expires").await.body,
        (start + idle - 60 + idle).to_string()
    );
}

pub(crate) async fn concurrent_requests_changing_different_keys_both_survive<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/base", "1").await;
    let a = client.spawn("PUT", "/wait/set/a", "");
    let b = client.spawn("PUT", "/wait/set/b", "");
    assert_eq!(a.await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(b.await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(client.get("/keys").await.body, r#"["a","b","base"]"#);
}

pub(crate) async fn a_write_racing_a_logout_does_not_resurrect_the_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let old = client.cookie.clone().unwrap();
    let writer = client.spawn("PUT", "/wait/set/late", "");
    let logout = client.spawn("POST", "/wait/logout", "");
    assert_eq!(logout.await.unwrap().status, StatusCode::NO_CONTENT);
    let written = writer.await.unwrap();
    assert_eq!(written.status, StatusCode::NO_CONTENT);
    assert!(
        written.set_cookies().is_empty(),
        "the late writer's changes are dropped, and the cookie left alone"
    );

    client.cookie = Some(old);
    assert_eq!(whoami(&client).await, None);
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn an_id_collision_on_create_is_retried<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    app.store.collide_next_creates(1);
    assert_eq!(
        client.put("/set/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.calls().create, 2, "one collision, one retry");
    assert_eq!(client.get("/get/k").await.body, "v");

    let mut unlucky = app.client();
    app.store.collide_next_creates(3);
    let reply = unlucky.put("/set/k", "v").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "gives up after three draws"
    );
    assert!(unlucky.cookie.is_none());
}
