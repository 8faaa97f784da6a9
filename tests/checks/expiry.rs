//! Deadlines: idle and absolute timeouts, rolling expiry, remember-me
//! and persistent cookies.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::SessionStore;

use super::cookie_of;
use crate::support::app::{TestApp, ABSOLUTE, IDLE};
use crate::support::client::{logged_in, whoami};

pub(crate) async fn idle_timeout_ends_an_unused_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let early = logged_in(&app, "alice").await;
    let mut late = logged_in(&app, "alice").await;
    app.clock.advance(IDLE - Duration::from_secs(1));
    assert_eq!(whoami(&early).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    let reply = late.get("/whoami").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for a read that found nothing"
    );
    assert_eq!(
        whoami(&early).await.as_deref(),
        Some("alice"),
        "the touched one lives"
    );
}

pub(crate) async fn activity_keeps_a_session_alive_until_the_absolute_timeout<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let client = logged_in(&app, "alice").await;
    let step = Duration::from_secs(1500);
    let mut elapsed = Duration::ZERO;
    loop {
        app.clock.advance(step);
        elapsed += step;
        let user = whoami(&client).await;
        if elapsed < ABSOLUTE {
            assert_eq!(user.as_deref(), Some("alice"), "alive at {elapsed:?}");
        } else {
            assert_eq!(user, None, "absolute timeout reached at {elapsed:?}");
            break;
        }
    }
}

pub(crate) async fn rolling_expiry_writes_only_after_the_touch_threshold<
    S: SessionStore + Clone,
>(
    store: S,
) {
    // touch_after 0.1 of a 1800 s idle window: extend after 180 s.
    let app = TestApp::new(store);
    let quick = logged_in(&app, "alice").await;
    let patient = logged_in(&app, "alice").await;
    app.store.reset();

    app.clock.advance(Duration::from_secs(100));
    assert!(whoami(&quick).await.is_some());
    app.clock.advance(Duration::from_secs(100));
    assert!(whoami(&patient).await.is_some());
    assert_eq!(
        app.calls().save + app.calls().create,
        0,
        "reads never write"
    );
    assert_eq!(
        app.calls().load,
        2,
        "one store call per read, touch included"
    );

    // Original deadline: login + 1800 s. `quick` was seen at +100 (no
    // extension), `patient` at +200 (extended to +2000).
    app.clock.advance(IDLE - Duration::from_secs(200));
    assert_eq!(
        whoami(&quick).await,
        None,
        "a read before the threshold did not extend"
    );
    assert_eq!(whoami(&patient).await.as_deref(), Some("alice"));
}

pub(crate) async fn remember_me_rolls_its_own_idle_window_until_its_lifetime_ends<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const DAY: u64 = 86_400;
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.post("/remember-then-login/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::days(7)),
        "a persistent cookie for the remember-me idle window"
    );
    let created = cloakroom::test_suite::Clock::now(&app.clock);
    // Used every six days, it lives on past the ordinary timeouts...
    for day in [6_i64, 12, 18, 24] {
        app.clock.advance(Duration::from_secs(6 * DAY));
        let reply = client.get("/whoami").await;
        assert_eq!(reply.body, "alice", "day {day}");
        let c = cookie_of(&reply);
        let left = time::Duration::days(7).min(time::Duration::days(30 - day));
        assert_eq!(c.max_age(), Some(left), "day {day}");
        let listed = app.layer.admin().list_sessions("alice").await.unwrap();
        assert_eq!(
            listed[0].last_seen,
            created + time::Duration::days(day),
            "last_seen follows the activity"
        );
    }
    // ...asking again (without a login, where it changes nothing) does
    // not extend it...
    assert_eq!(
        client.post("/remember").await.status,
        StatusCode::NO_CONTENT
    );
    app.clock.advance(Duration::from_secs(5 * DAY));
    let reply = client.get("/whoami").await;
    assert_eq!(reply.body, "alice", "day 29");
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::days(1)),
        "the cookie ends with the session"
    );
    // ...and it ends 30 days after the login, however active.
    app.clock.advance(Duration::from_secs(DAY));
    assert_eq!(whoami(&client).await, None, "gone after 30 days");

    // Unused for its idle window, it ends too.
    let mut idle = app.client();
    idle.post("/remember-then-login/bob").await;
    app.clock.advance(Duration::from_secs(7 * DAY - 1));
    assert_eq!(whoami(&idle).await.as_deref(), Some("bob"));
    app.clock.advance(Duration::from_secs(7 * DAY));
    assert_eq!(whoami(&idle).await, None, "idle for 7 days");
}

pub(crate) async fn remember_me_asked_before_login_is_kept_through_it<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.post("/remember-then-login/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::days(7)),
        "the login's cookie is persistent"
    );
    app.clock.advance(ABSOLUTE + Duration::from_secs(60));
    assert_eq!(
        whoami(&client).await.as_deref(),
        Some("alice"),
        "past the ordinary absolute timeout"
    );
    // A later login of a remembered session stays remembered...
    let reply = client.post("/login/alice").await;
    assert_eq!(cookie_of(&reply).max_age(), Some(time::Duration::days(7)));
    // ...but another user's login on the same browser does not take it.
    let reply = client.post("/login/bob").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(cookie_of(&reply).max_age(), None, "bob did not ask");
}

pub(crate) async fn remember_me_without_a_login_changes_no_lifetime<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    // A logged-in session cannot stretch its own lifetime.
    let mut client = logged_in(&app, "alice").await;
    let reply = client.post("/remember").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no persistent cookie");
    app.clock.advance(ABSOLUTE + Duration::from_secs(60));
    assert_eq!(whoami(&client).await, None, "the ordinary absolute timeout");

    // An anonymous session (which an attacker may have planted) is never
    // remembered, and a login does not inherit a lifetime from it.
    let mut visitor = app.client();
    assert_eq!(
        visitor.put("/set/cart", "1").await.status,
        StatusCode::NO_CONTENT
    );
    visitor.post("/remember").await;
    let reply = visitor.post("/login/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(cookie_of(&reply).max_age(), None, "a session cookie");
    app.clock.advance(ABSOLUTE + Duration::from_secs(60));
    assert_eq!(
        whoami(&visitor).await,
        None,
        "the ordinary absolute timeout"
    );
}

pub(crate) async fn persistent_cookie_is_refreshed_only_when_the_deadline_moves<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::with(store, |b| b.persistent(true));
    let mut client = logged_in(&app, "alice").await;
    app.clock.advance(Duration::from_secs(100));
    let reply = client.get("/whoami").await;
    assert!(
        reply.set_cookies().is_empty(),
        "before the touch threshold: no refresh"
    );
    app.clock.advance(Duration::from_secs(100));
    let reply = client.get("/whoami").await;
    let c = cookie_of(&reply);
    assert_eq!(
        c.max_age(),
        Some(time::Duration::seconds(IDLE.as_secs() as i64)),
        "a touched session's cookie lives until the new idle deadline"
    );
    assert_eq!(
        Some(c.value().to_owned()),
        client.cookie,
        "same ID, new Max-Age"
    );
}
