//! Sessions that follow an identity provider (ASVS 5.0 7.6.1): a login's
//! own absolute deadline (`Session::expire_login_at`), and the end of the
//! sessions linked to a provider's session (`Session::link_external_session`,
//! `SessionAdmin::end_external_session`), also racing a move of the
//! linked session.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::SessionStore;
use cloakroom::test_suite::{Clock, StoreOp};

use super::{cookie_of, is_removal};
use crate::support::app::{TestApp, ABSOLUTE};
use crate::support::client::{logged_in, whoami, with_handler_paused, Client};

/// The Unix time `seconds` from the app clock's now, whole seconds.
fn in_seconds<S: SessionStore + Clone>(app: &TestApp<S>, seconds: u64) -> i64 {
    Clock::now(&app.clock).unix_timestamp() + i64::try_from(seconds).unwrap()
}

/// A browser logged in as `user` through the provider's session `sid`,
/// which ends in `seconds`.
async fn provider_login<S: SessionStore + Clone>(
    app: &TestApp<S>,
    user: &str,
    sid: &str,
    seconds: u64,
) -> Client {
    let mut client = app.client();
    let deadline = in_seconds(app, seconds);
    let reply = client
        .post(&format!("/idp-login/{user}/{sid}/{deadline}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(client.cookie.is_some(), "the login sets the cookie");
    client
}

pub(crate) async fn a_login_with_its_own_deadline_ends_at_that_deadline<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    // Shorter than the layer's idle window (1800 s), so that only the
    // login's deadline can end it; used every 200 s meanwhile.
    let client = provider_login(&app, "alice", "sid-1", 1000).await;
    let listed = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(
        listed[0].expires_at.unix_timestamp(),
        in_seconds(&app, 1000),
        "the store holds the login's deadline"
    );
    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(200));
        assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    }
    app.clock.advance(Duration::from_secs(199));
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(whoami(&client).await, None, "ended at the login's deadline");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn remember_me_and_regenerate_do_not_extend_a_logins_deadline<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    // Remember-me (7 days idle, 30 days in all) asked after the deadline
    // of one hour.
    let deadline = in_seconds(&app, 3600);
    let reply = client
        .post(&format!("/idp-login-remembered/alice/{deadline}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::hours(1)),
        "a persistent cookie that ends with the login"
    );

    // Remember-me asked again later changes nothing, and a regenerate
    // keeps the deadline, its cookie too.
    app.clock.advance(Duration::from_secs(1200));
    assert_eq!(
        client.post("/remember").await.status,
        StatusCode::NO_CONTENT
    );
    let old_cookie = client.cookie.clone();
    let reply = client.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_ne!(client.cookie, old_cookie, "a new ID");
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::seconds(2400)),
        "the new cookie ends with the login too"
    );

    app.clock.advance(Duration::from_secs(1200));
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1199));
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(whoami(&client).await, None, "ended at the login's deadline");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn a_second_login_in_the_same_request_keeps_the_deadline<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let deadline = in_seconds(&app, 1000);
    let reply = client
        .post(&format!("/idp-login-twice/alice/{deadline}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.clock.advance(Duration::from_secs(999));
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(whoami(&client).await, None, "ended at the first deadline");
}

pub(crate) async fn a_deadline_later_than_the_layers_changes_nothing<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let client = provider_login(&app, "alice", "sid-1", ABSOLUTE.as_secs() + 3600).await;
    let mut elapsed = Duration::ZERO;
    let step = Duration::from_secs(1200);
    loop {
        app.clock.advance(step);
        elapsed += step;
        let user = whoami(&client).await;
        if elapsed < ABSOLUTE {
            assert_eq!(user.as_deref(), Some("alice"), "alive at {elapsed:?}");
        } else {
            assert_eq!(user, None, "the layer's absolute timeout still holds");
            break;
        }
    }
}

pub(crate) async fn a_deadline_set_after_the_login_only_ever_shortens_the_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let shorter = in_seconds(&app, 1000);
    let reply = client.post(&format!("/expire-login-at/{shorter}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let later = in_seconds(&app, 5000);
    let reply = client.post(&format!("/expire-login-at/{later}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.clock.advance(Duration::from_secs(999));
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(whoami(&client).await, None, "the earlier deadline holds");
}

pub(crate) async fn a_deadline_needs_a_user_and_one_already_passed_logs_out<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut visitor = app.client();
    let deadline = in_seconds(&app, 600);
    let reply = visitor.post(&format!("/expire-login-at/{deadline}")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "not logged in");
    assert!(reply.set_cookies().is_empty(), "no session made for it");
    let reply = visitor.post("/link/sid-1").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "not logged in");
    assert!(reply.set_cookies().is_empty(), "no session made for it");

    let mut client = logged_in(&app, "alice").await;
    let passed = in_seconds(&app, 0);
    let reply = client.post(&format!("/expire-login-at/{passed}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(is_removal(&reply), "the cookie is expired");
    assert_eq!(app.sessions_of("alice").await, 0, "the session ended");
}

pub(crate) async fn ending_an_external_session_ends_exactly_the_linked_sessions_of_that_user<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let hour = 3600;
    let mut laptop = provider_login(&app, "alice", "sid-1", hour).await;
    let mut phone = provider_login(&app, "alice", "sid-1", hour).await;
    let mut tablet = provider_login(&app, "alice", "sid-1", hour).await;
    let other_sid = provider_login(&app, "alice", "sid-2", hour).await;
    let unlinked = logged_in(&app, "alice").await;
    let bob = provider_login(&app, "bob", "sid-1", hour).await;
    // The link moves with the session (a regenerate, a login of the same
    // user), and a login as another user drops it.
    assert_eq!(
        phone.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        phone.post("/login/alice").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tablet.post("/login/carol").await.status,
        StatusCode::NO_CONTENT
    );
    let keys: Vec<String> = laptop.get("/keys").await.json();
    assert_eq!(keys, ["_external_session"], "a reserved key, listed");

    let admin = app.layer.admin();
    assert_eq!(
        admin.end_external_session("alice", "sid-1").await.unwrap(),
        2
    );
    assert_eq!(whoami(&laptop).await, None);
    assert_eq!(whoami(&phone).await, None);
    assert_eq!(whoami(&other_sid).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&unlinked).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&bob).await.as_deref(), Some("bob"), "another user's");
    assert_eq!(whoami(&tablet).await.as_deref(), Some("carol"));
    assert_eq!(app.sessions_of("alice").await, 2);
    assert_eq!(
        admin.end_external_session("alice", "sid-1").await.unwrap(),
        0,
        "nothing left to end"
    );
    assert_eq!(
        admin.end_external_session("carol", "sid-1").await.unwrap(),
        0,
        "the link left with alice's data"
    );
    assert_eq!(
        admin.end_external_session("nobody", "sid-1").await.unwrap(),
        0
    );
}

pub(crate) async fn ending_an_external_session_racing_a_regenerate_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = provider_login(&app, "alice", "sid-1", 3600).await;
    let reply = with_handler_paused(
        &app,
        &browser,
        "POST",
        "/wait/regenerate-then-commit",
        async {
            let ended = app
                .layer
                .admin()
                .end_external_session("alice", "sid-1")
                .await;
            assert_eq!(ended.unwrap(), 1);
        },
    )
    .await;
    assert_lost_to_the_provider(&app, &browser, &reply).await;
}

pub(crate) async fn ending_an_external_session_racing_a_login_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = provider_login(&app, "alice", "sid-1", 3600).await;
    let reply = with_handler_paused(
        &app,
        &browser,
        "POST",
        "/wait/login-then-commit/alice",
        async {
            let ended = app
                .layer
                .admin()
                .end_external_session("alice", "sid-1")
                .await;
            assert_eq!(ended.unwrap(), 1);
        },
    )
    .await;
    assert_lost_to_the_provider(&app, &browser, &reply).await;
}

pub(crate) async fn an_external_logout_that_listed_a_session_before_it_moved_ends_it_at_its_new_id<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = provider_login(&app, "alice", "sid-1", 3600).await;
    // The listing is made; the read of the session waits while the session
    // moves from start to finish.
    let ended = moved_during(&app, &browser, StoreOp::Load).await;
    assert_eq!(ended, 1, "the moved session is found and ended");
}

pub(crate) async fn an_external_logout_that_read_a_session_before_it_moved_ends_it_at_its_new_id<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = provider_login(&app, "alice", "sid-1", 3600).await;
    // The session was read and found linked; ending it waits while the
    // session moves from start to finish.
    let ended = moved_during(&app, &browser, StoreOp::Delete).await;
    assert_eq!(ended, 1, "the end follows the session to its new ID");
}

/// Ends alice's sessions linked to `sid-1` with the next `op` of the store
/// held while `browser` regenerates; checks that no session of alice's is
/// left and returns how many the call ended.
async fn moved_during<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &Client,
    op: StoreOp,
) -> u64 {
    let mut pause = app.store.pause_next(op);
    let admin = app.layer.admin();
    let mut ending =
        tokio::spawn(async move { admin.end_external_session("alice", "sid-1").await });
    tokio::select! {
        () = pause.reached() => {}
        result = &mut ending => panic!("the external logout finished before its pause: {result:?}"),
    }
    let mut moving = browser.clone();
    let reply = moving.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_ne!(moving.cookie, browser.cookie, "a new ID");
    assert_eq!(whoami(&moving).await.as_deref(), Some("alice"));
    pause.release();
    let ended = ending.await.unwrap().unwrap();
    assert_eq!(whoami(&moving).await, None, "the moved session ended");
    assert_eq!(whoami(browser).await, None);
    assert_eq!(app.sessions_of("alice").await, 0);
    ended
}

/// What a move of alice's linked session must leave when the provider's
/// logout ended it before the move was committed: the request answered,
/// no cookie handed out, and no session of alice's anywhere.
async fn assert_lost_to_the_provider<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &Client,
    reply: &crate::support::reply::Reply,
) {
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for the ended session"
    );
    assert_eq!(whoami(browser).await, None, "logged out");
    assert_eq!(app.sessions_of("alice").await, 0);
}
