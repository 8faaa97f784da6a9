//! End-to-end checks through a real axum `Router`, generic over the store.
//! Each store's test file stamps them out with `e2e_tests!`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use cloakroom::{KeyRing, SameSite, SessionStore};

use super::{key, logs, with_handler_paused, Client, TestApp, ABSOLUTE, IDLE};

/// Stamps out one `#[tokio::test]` per check. The argument evaluates to an
/// `Option` of a store; `None` skips (backend not installed).
#[macro_export]
macro_rules! e2e_tests {
    ($make_store:expr) => {
        $crate::e2e_tests!(@checks $make_store;
            cookie_attributes_are_safe_by_default,
            configured_attributes_reach_the_cookie,
            host_prefix_cookie_is_named_and_scoped_for_it,
            a_request_that_ignores_its_session_costs_nothing,
            reading_a_new_session_stores_nothing_and_sets_no_cookie,
            first_write_creates_the_session_and_later_requests_write_only_changes,
            a_blind_write_is_one_save_and_no_load,
            a_blind_write_rolls_the_idle_deadline,
            a_blind_write_to_a_dead_session_starts_a_new_one,
            writes_before_a_read_are_seen_by_that_read,
            removals_and_clears_are_saved,
            login_rotates_the_id_and_deletes_the_old_one,
            a_planted_session_cookie_is_not_kept_through_login,
            a_dead_cookie_is_replaced_never_reused,
            login_as_another_user_drops_the_previous_users_data,
            regenerate_keeps_data_and_user_under_a_new_id,
            invalidate_expires_the_cookie_and_the_old_cookie_is_anonymous,
            logout_everywhere_ends_the_users_sessions_on_every_device,
            logout_other_devices_keeps_the_current_session,
            listing_marks_the_current_session,
            idle_timeout_ends_an_unused_session,
            activity_keeps_a_session_alive_until_the_absolute_timeout,
            rolling_expiry_writes_only_after_the_touch_threshold,
            remember_me_rolls_its_own_idle_window_until_its_lifetime_ends,
            remember_me_asked_before_login_is_kept_through_it,
            persistent_cookie_is_refreshed_only_when_the_deadline_moves,
            junk_cookies_are_anonymous_and_cost_no_store_call,
            a_valid_cookie_among_junk_duplicates_still_counts,
            key_rotation_keeps_sessions_until_the_old_key_leaves_the_ring,
            concurrent_requests_changing_different_keys_both_survive,
            a_write_racing_a_logout_does_not_resurrect_the_session,
            a_stale_cookie_never_clears_a_newer_login,
            regenerate_after_a_logout_elsewhere_does_not_revive_the_session,
            a_store_failure_drops_blind_writes_too,
            a_handler_ignoring_a_store_failure_still_gets_503_for_pending_changes,
            a_publicly_cacheable_response_never_carries_a_session_cookie,
            store_outage_answers_503_and_service_recovers,
            a_failed_commit_replaces_the_response_with_503,
            an_id_collision_on_create_is_retried,
            handler_cache_policy_is_kept,
            data_no_store_can_hold_answers_400_and_writes_nothing,
            login_can_keep_only_the_keys_it_expects,
            a_blind_write_with_a_cookie_that_moved_leaves_the_new_cookie_alone,
        );
    };
    (@checks $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                match $make_store {
                    Some(store) => $crate::common::e2e::$check(store).await,
                    None => eprintln!("skipped {}: store not available", stringify!($check)),
                }
            }
        )*
    };
}

fn cookie_of(reply: &super::Reply) -> cookie::Cookie<'static> {
    let text = reply.set_cookie().expect("a Set-Cookie header");
    cookie::Cookie::parse(text).expect("valid Set-Cookie")
}

fn is_removal(reply: &super::Reply) -> bool {
    reply.set_cookie().is_some_and(|text| {
        let c = cookie::Cookie::parse(text).expect("valid Set-Cookie");
        c.value().is_empty() && c.max_age() == Some(time::Duration::ZERO)
    })
}

async fn logged_in<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> Client {
    let mut client = app.client();
    assert_eq!(
        client.post(&format!("/login/{user}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(client.cookie.is_some());
    client
}

async fn whoami(client: &mut Client) -> Option<String> {
    let reply = client.get("/whoami").await;
    match reply.status {
        StatusCode::OK => Some(reply.body),
        StatusCode::UNAUTHORIZED => None,
        other => panic!("unexpected status {other}"),
    }
}

pub async fn cookie_attributes_are_safe_by_default<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/set/k", "v").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let c = cookie_of(&reply);
    assert_eq!(c.name(), "__Host-id", "the __Host- prefix by default");
    assert_eq!(
        c.value().len(),
        66,
        "base64url ID, dot, base64url HMAC-SHA256"
    );
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(c.path(), Some("/"));
    assert_eq!(c.domain(), None);
    assert_eq!(c.max_age(), None, "a browser-session cookie by default");
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(reply.header(header::VARY), Some("Cookie"));
}

pub async fn configured_attributes_reach_the_cookie<S: SessionStore + Clone>(store: S) {
    let app = TestApp::with(store, |b| {
        b.cookie_name("sid")
            .domain("example.test")
            .path("/app")
            .same_site(SameSite::Strict)
            .secure(false)
            .http_only(false)
            .persistent(true)
    });
    let mut client = app.client();
    client.cookie_name = "sid".into();
    let reply = client.put("/set/k", "v").await;
    let c = cookie_of(&reply);
    assert_eq!(c.name(), "sid");
    assert_eq!(c.domain(), Some("example.test"));
    assert_eq!(c.path(), Some("/app"));
    assert_eq!(c.same_site(), Some(cookie::SameSite::Strict));
    assert_eq!(c.secure(), None);
    assert_eq!(c.http_only(), None);
    assert_eq!(
        c.max_age(),
        Some(time::Duration::seconds(IDLE.as_secs() as i64)),
        "persistent cookies live until the idle deadline"
    );
    assert_eq!(client.get("/get/k").await.body, "v");
}

pub async fn host_prefix_cookie_is_named_and_scoped_for_it<S: SessionStore + Clone>(store: S) {
    let app = TestApp::with(store, |b| b.host_prefix(true));
    let mut client = app.client();
    assert_eq!(client.cookie_name, "__Host-id");
    let c = cookie_of(&client.put("/set/k", "v").await);
    assert_eq!(c.name(), "__Host-id");
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.path(), Some("/"));
    assert_eq!(c.domain(), None);
    assert_eq!(client.get("/get/k").await.body, "v");
    // A cookie without the prefix is not the session cookie.
    let mut unprefixed = app.client();
    unprefixed.cookie_name = "id".into();
    unprefixed.cookie = client.cookie.clone();
    assert_eq!(unprefixed.get("/get/k").await.status, StatusCode::NOT_FOUND);
}

pub async fn a_request_that_ignores_its_session_costs_nothing<S: SessionStore + Clone>(store: S) {
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

pub async fn reading_a_new_session_stores_nothing_and_sets_no_cookie<S: SessionStore + Clone>(
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

pub async fn first_write_creates_the_session_and_later_requests_write_only_changes<
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
    client.put("/ensure/other", "w").await;
    assert_eq!(app.calls().save, 1);
    assert_eq!(client.get("/get/k").await.body, "v");
    assert_eq!(client.get("/get/other").await.body, "w");
}

pub async fn a_blind_write_is_one_save_and_no_load<S: SessionStore + Clone>(store: S) {
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
    assert_eq!(client.post("/incr/n").await.body, "1");
    assert_eq!(client.post("/incr/n").await.body, "2");
    assert_eq!(
        app.calls().total(),
        4,
        "read-modify-write: a load and a save each"
    );
}

pub async fn a_blind_write_rolls_the_idle_deadline<S: SessionStore + Clone>(store: S) {
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
        whoami(&mut client).await.as_deref(),
        Some("alice"),
        "alive 2000 s after login"
    );
}

pub async fn a_blind_write_to_a_dead_session_starts_a_new_one<S: SessionStore + Clone>(store: S) {
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
    assert_eq!(
        whoami(&mut stale).await,
        None,
        "the new session is anonymous"
    );
    let mut replay = app.client();
    replay.cookie = Some(old);
    assert_eq!(replay.get("/get/cart").await.status, StatusCode::NOT_FOUND);
}

pub async fn writes_before_a_read_are_seen_by_that_read<S: SessionStore + Clone>(store: S) {
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

pub async fn removals_and_clears_are_saved<S: SessionStore + Clone>(store: S) {
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
}

pub async fn login_rotates_the_id_and_deletes_the_old_one<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/cart", "3 items").await;
    let before = client.cookie.clone().expect("anonymous session cookie");

    let reply = client.post("/login/alice").await;
    let after = client.cookie.clone().expect("new cookie");
    assert_ne!(before, after, "login issues a fresh ID");
    assert_eq!(cookie_of(&reply).value(), after);
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
    assert_eq!(
        client.get("/get/cart").await.body,
        "3 items",
        "data carries over"
    );

    let mut old = app.client();
    old.cookie = Some(before);
    assert_eq!(whoami(&mut old).await, None, "the pre-login ID is dead");
    assert_eq!(old.get("/get/cart").await.status, StatusCode::NOT_FOUND);
}

pub async fn a_planted_session_cookie_is_not_kept_through_login<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut attacker = app.client();
    attacker.put("/set/bait", "x").await;
    let planted = attacker.cookie.clone().expect("attacker's session");

    let mut victim = app.client();
    victim.cookie = Some(planted.clone());
    victim.post("/login/victim").await;
    assert_ne!(victim.cookie.as_deref(), Some(planted.as_str()));
    assert_eq!(whoami(&mut victim).await.as_deref(), Some("victim"));
    assert_eq!(
        whoami(&mut attacker).await,
        None,
        "the planted ID learned nothing"
    );
}

pub async fn a_dead_cookie_is_replaced_never_reused<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/k", "v").await;
    let old = client.cookie.clone().unwrap();
    app.clock.advance(IDLE);
    let reply = client.get("/get/k").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.set_cookies().is_empty(),
        "a cookie naming no live session is left alone (it may already be replaced)"
    );
    let mut replay = app.client();
    replay.cookie = Some(old.clone());
    replay.put("/set/k", "again").await;
    let fresh = replay.cookie.clone().expect("a new session");
    assert_ne!(fresh, old, "the client's ID is never adopted");
}

pub async fn login_as_another_user_drops_the_previous_users_data<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/secret", "alice's").await;
    client.post("/login/bob").await;
    assert_eq!(whoami(&mut client).await.as_deref(), Some("bob"));
    assert_eq!(
        client.get("/get/secret").await.status,
        StatusCode::NOT_FOUND
    );
}

pub async fn regenerate_keeps_data_and_user_under_a_new_id<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/k", "v").await;
    let before = client.cookie.clone().unwrap();
    assert_eq!(
        client.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    let after = client.cookie.clone().unwrap();
    assert_ne!(before, after);
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
    assert_eq!(client.get("/get/k").await.body, "v");
    let mut old = app.client();
    old.cookie = Some(before);
    assert_eq!(whoami(&mut old).await, None);
}

pub async fn invalidate_expires_the_cookie_and_the_old_cookie_is_anonymous<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let old = client.cookie.clone().unwrap();
    let reply = client.post("/logout").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(is_removal(&reply), "Max-Age=0 and an empty value");
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert!(client.cookie.is_none());

    let mut replay = app.client();
    replay.cookie = Some(old.clone());
    assert_eq!(whoami(&mut replay).await, None);
    replay.put("/set/k", "v").await;
    assert_ne!(
        replay.cookie.as_deref(),
        Some(old.as_str()),
        "never revived"
    );
}

pub async fn logout_everywhere_ends_the_users_sessions_on_every_device<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let mut phone = logged_in(&app, "alice").await;
    let mut other_user = logged_in(&app, "bob").await;

    let reply = laptop.post("/logout-everywhere").await;
    assert_eq!(reply.body, "2");
    assert!(is_removal(&reply));
    assert_eq!(whoami(&mut laptop).await, None);
    assert_eq!(
        whoami(&mut phone).await,
        None,
        "the other device is logged out"
    );
    assert_eq!(whoami(&mut other_user).await.as_deref(), Some("bob"));

    // The same through the admin handle, from outside any request.
    let mut tablet = logged_in(&app, "bob").await;
    assert_eq!(app.layer.admin().logout_everywhere("bob").await.unwrap(), 2);
    assert_eq!(whoami(&mut tablet).await, None);
    assert_eq!(whoami(&mut other_user).await, None);
}

pub async fn logout_other_devices_keeps_the_current_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let mut phone = logged_in(&app, "alice").await;
    assert_eq!(laptop.post("/logout-others").await.body, "1");
    assert_eq!(whoami(&mut laptop).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&mut phone).await, None);
}

pub async fn listing_marks_the_current_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let _phone = logged_in(&app, "alice").await;
    let listed: Vec<(String, bool)> =
        serde_json::from_str(&laptop.get("/sessions").await.body).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|(_, current)| *current).count(), 1);
    let admin_view = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(admin_view.len(), 2);
    assert!(admin_view.iter().all(|s| !s.current));
    assert_eq!(
        app.client().get("/sessions").await.body,
        "[]",
        "anonymous: no sessions"
    );
}

pub async fn idle_timeout_ends_an_unused_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut early = logged_in(&app, "alice").await;
    let mut late = logged_in(&app, "alice").await;
    app.clock.advance(IDLE - Duration::from_secs(1));
    assert_eq!(whoami(&mut early).await.as_deref(), Some("alice"));
    app.clock.advance(Duration::from_secs(1));
    let reply = late.get("/whoami").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for a read that found nothing"
    );
    assert_eq!(
        whoami(&mut early).await.as_deref(),
        Some("alice"),
        "the touched one lives"
    );
}

pub async fn activity_keeps_a_session_alive_until_the_absolute_timeout<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let step = Duration::from_secs(1500);
    let mut elapsed = Duration::ZERO;
    loop {
        app.clock.advance(step);
        elapsed += step;
        let user = whoami(&mut client).await;
        if elapsed < ABSOLUTE {
            assert_eq!(user.as_deref(), Some("alice"), "alive at {elapsed:?}");
        } else {
            assert_eq!(user, None, "absolute timeout reached at {elapsed:?}");
            break;
        }
    }
}

pub async fn rolling_expiry_writes_only_after_the_touch_threshold<S: SessionStore + Clone>(
    store: S,
) {
    // touch_after 0.1 of a 1800 s idle window: extend after 180 s.
    let app = TestApp::new(store);
    let mut quick = logged_in(&app, "alice").await;
    let mut patient = logged_in(&app, "alice").await;
    app.store.reset();

    app.clock.advance(Duration::from_secs(100));
    assert!(whoami(&mut quick).await.is_some());
    app.clock.advance(Duration::from_secs(100));
    assert!(whoami(&mut patient).await.is_some());
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
        whoami(&mut quick).await,
        None,
        "a read before the threshold did not extend"
    );
    assert_eq!(whoami(&mut patient).await.as_deref(), Some("alice"));
}

pub async fn remember_me_rolls_its_own_idle_window_until_its_lifetime_ends<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const DAY: u64 = 86_400;
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let reply = client.post("/remember").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        cookie_of(&reply).max_age(),
        Some(time::Duration::days(7)),
        "a persistent cookie for the remember-me idle window"
    );
    let created = cloakroom::Clock::now(&app.clock);
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
    // ...asking again does not extend it...
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
    assert_eq!(whoami(&mut client).await, None, "gone after 30 days");

    // Unused for its idle window, it ends too.
    let mut idle = logged_in(&app, "bob").await;
    idle.post("/remember").await;
    app.clock.advance(Duration::from_secs(7 * DAY - 1));
    assert_eq!(whoami(&mut idle).await.as_deref(), Some("bob"));
    app.clock.advance(Duration::from_secs(7 * DAY));
    assert_eq!(whoami(&mut idle).await, None, "idle for 7 days");
}

pub async fn remember_me_asked_before_login_is_kept_through_it<S: SessionStore + Clone>(store: S) {
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
        whoami(&mut client).await.as_deref(),
        Some("alice"),
        "past the ordinary absolute timeout"
    );
    // A later login of a remembered session stays remembered.
    let reply = client.post("/login/alice").await;
    assert_eq!(cookie_of(&reply).max_age(), Some(time::Duration::days(7)));
}

pub async fn persistent_cookie_is_refreshed_only_when_the_deadline_moves<
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

pub async fn junk_cookies_are_anonymous_and_cost_no_store_call<S: SessionStore + Clone>(store: S) {
    // The unprefixed name, which the literal headers below use.
    let app = TestApp::with(store, |b| b.host_prefix(false));
    let mut real = app.client();
    real.put("/set/k", "v").await;
    let good = real.cookie.clone().unwrap();
    let (id_part, tag_part) = good.split_at(22);
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_key = KeyRing::new(key(7)).sign(&cloakroom::SessionId::generate().unwrap());
    let huge = format!("id={}", "a".repeat(8192));
    let many: Vec<String> = (0..100).map(|i| format!("id=junk{i}")).collect();
    let repeated = "id=a; ".repeat(40);

    let cases: Vec<Vec<Vec<u8>>> = vec![
        vec![b"id=not base64!!".to_vec()],
        vec![b"id=".to_vec()],
        vec![b"id".to_vec()],
        vec![b"=".to_vec()],
        vec![b";;;;".to_vec()],
        vec![format!("id={id_part}").into_bytes()],
        vec![format!("id={id_part}.").into_bytes()],
        vec![format!("id={id_part}{tag_part}x").into_bytes()],
        vec![format!("id={}", &good[..65]).into_bytes()],
        vec![format!("id={flipped}").into_bytes()],
        vec![format!("id={other_key}").into_bytes()],
        vec![format!("id={}", good.replace('.', "!")).into_bytes()],
        vec!["id=ключ✓".as_bytes().to_vec()],
        // Exactly the cookie's byte length, with a multi-byte character
        // across the ID/tag boundary (once a panic in `KeyRing::verify`).
        vec![format!("id={}ക{}", "A".repeat(21), "B".repeat(42)).into_bytes()],
        vec![b"id=\xe9\xe9\xff".to_vec()],
        vec![huge.into_bytes()],
        many.iter().map(|c| c.clone().into_bytes()).collect(),
        vec![repeated.into_bytes()],
        vec![format!("id=\"{flipped}\"").into_bytes()],
    ];
    app.store.reset();
    for case in &cases {
        let headers: Vec<&[u8]> = case.iter().map(Vec::as_slice).collect();
        for path in ["/whoami", "/get/k"] {
            let reply = real.get_with_cookie_headers(path, &headers).await;
            assert!(
                reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::NOT_FOUND,
                "{path} with {case:?}: {}",
                reply.status
            );
            assert!(
                reply.set_cookies().is_empty(),
                "junk is not answered with cookies"
            );
        }
    }
    assert_eq!(app.calls().total(), 0, "no junk cookie reached the store");
    // The real session is untouched by all of that.
    assert_eq!(real.get("/get/k").await.body, "v");
}

pub async fn a_valid_cookie_among_junk_duplicates_still_counts<S: SessionStore + Clone>(store: S) {
    let app = TestApp::with(store, |b| b.host_prefix(false));
    let mut real = app.client();
    real.put("/set/k", "v").await;
    let good = real.cookie.clone().unwrap();
    let header = format!("id=junk; other=1; id={good}; id=more-junk");
    let reply = real
        .get_with_cookie_headers("/get/k", &[header.as_bytes()])
        .await;
    assert_eq!(reply.body, "v");
    let reply = real
        .get_with_cookie_headers(
            "/get/k",
            &[b"id=x", b"a=b", format!("id={good}").as_bytes()],
        )
        .await;
    assert_eq!(reply.body, "v");
}

pub async fn key_rotation_keeps_sessions_until_the_old_key_leaves_the_ring<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let old_app = TestApp::new(store.clone());
    let client = logged_in(&old_app, "alice").await;
    let old_cookie = client.cookie.clone().unwrap();

    let rotated = TestApp::with(store.clone(), |b| {
        b.key_ring(KeyRing::new(key(2)).with_previous(key(1)))
    });
    let mut on_rotated = rotated.client();
    on_rotated.cookie = Some(old_cookie.clone());
    assert_eq!(
        whoami(&mut on_rotated).await.as_deref(),
        Some("alice"),
        "nobody is logged out"
    );
    let mut fresh = logged_in(&rotated, "bob").await;

    let retired = TestApp::with(store, |b| b.key_ring(KeyRing::new(key(2))));
    let mut on_retired = retired.client();
    on_retired.cookie = Some(old_cookie);
    assert_eq!(
        whoami(&mut on_retired).await,
        None,
        "old key dropped: logged out"
    );
    assert_eq!(retired.calls().total(), 0, "rejected before the store");
    on_retired.cookie = fresh.cookie.clone();
    assert_eq!(
        whoami(&mut on_retired).await.as_deref(),
        Some("bob"),
        "new cookies use the new key"
    );
    assert_eq!(whoami(&mut fresh).await.as_deref(), Some("bob"));
}

pub async fn concurrent_requests_changing_different_keys_both_survive<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/base", "1").await;
    let a = tokio::spawn({
        let c = client.clone();
        async move { c.clone().send(c.request("PUT", "/wait/set/a", "")).await }
    });
    let b = tokio::spawn({
        let c = client.clone();
        async move { c.clone().send(c.request("PUT", "/wait/set/b", "")).await }
    });
    assert_eq!(a.await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(b.await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(client.get("/keys").await.body, r#"["a","b","base"]"#);
}

pub async fn a_write_racing_a_logout_does_not_resurrect_the_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let old = client.cookie.clone().unwrap();
    let writer = tokio::spawn({
        let c = client.clone();
        async move { c.clone().send(c.request("PUT", "/wait/set/late", "")).await }
    });
    let logout = tokio::spawn({
        let c = client.clone();
        async move { c.clone().send(c.request("POST", "/wait/logout", "")).await }
    });
    assert_eq!(logout.await.unwrap().status, StatusCode::NO_CONTENT);
    let written = writer.await.unwrap();
    assert_eq!(written.status, StatusCode::NO_CONTENT);
    assert!(
        written.set_cookies().is_empty(),
        "the late writer's changes are dropped, and the cookie left alone"
    );

    client.cookie = Some(old);
    assert_eq!(whoami(&mut client).await, None);
    assert!(app
        .layer
        .admin()
        .list_sessions("alice")
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_stale_cookie_never_clears_a_newer_login<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut browser = logged_in(&app, "alice").await;
    let stale = browser.clone();
    // The browser logs in again (another tab); requests that left with the
    // old cookie (a page polling `/whoami`) come back afterwards. Reads
    // must not clear or replace the new cookie. (A write with the stale
    // cookie starts a new anonymous session, as for any expired one.)
    browser.post("/login/alice").await;
    for path in ["/whoami", "/get/k", "/keys", "/noop"] {
        let reply = stale.clone().get(path).await;
        assert!(
            reply.set_cookies().is_empty(),
            "{path}: a response to the stale cookie must not touch the new one"
        );
    }
    assert_eq!(whoami(&mut browser).await.as_deref(), Some("alice"));
}

pub async fn regenerate_after_a_logout_elsewhere_does_not_revive_the_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let client = logged_in(&app, "alice").await;
    // The handler has loaded the session; it is ended before it regenerates.
    let reply = with_handler_paused(&app, &client, "POST", "/wait/regenerate", async {
        assert_eq!(
            app.layer.admin().logout_everywhere("alice").await.unwrap(),
            1
        );
    })
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        app.layer
            .admin()
            .list_sessions("alice")
            .await
            .unwrap()
            .is_empty(),
        "regenerate must not bring the ended session back under a new ID"
    );
    let mut after = app.client();
    after.absorb(&reply);
    assert_eq!(whoami(&mut after).await, None);
}

pub async fn a_store_failure_drops_blind_writes_too<S: SessionStore + Clone>(store: S) {
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
}

pub async fn a_handler_ignoring_a_store_failure_still_gets_503_for_pending_changes<
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
    assert_eq!(whoami(&mut client).await, None);
}

pub async fn a_publicly_cacheable_response_never_carries_a_session_cookie<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/public/k", "").await;
    assert!(!reply.set_cookies().is_empty());
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
}

/// Every 503 of the layer has one shape, whether the handler's error or
/// a failed commit produced it.
fn assert_unavailable(reply: &super::Reply) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "session store unavailable, try again shortly\n");
    assert_eq!(reply.header(header::RETRY_AFTER), Some("5"));
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert!(
        reply.set_cookies().is_empty(),
        "never logged out or in by an outage"
    );
}

pub async fn store_outage_answers_503_and_service_recovers<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().unwrap();
    app.store.set_failing(true);
    // A read fails in the handler (its error answers); a blind write fails
    // at commit (the layer answers); a read-modify-write fails in the
    // handler. All three look the same.
    let replies = [
        client.get("/whoami").await,
        client.put("/set/k", "v").await,
        client.post("/incr/n").await,
    ];
    for reply in &replies {
        assert_unavailable(reply);
        assert!(!reply.body.contains(&cookie[..22]));
    }
    assert_eq!(
        client.get("/noop").await.status,
        StatusCode::OK,
        "untouched routes still work"
    );
    app.store.set_failing(false);
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
    assert_eq!(
        client.get("/get/k").await.status,
        StatusCode::NOT_FOUND,
        "nothing half-written"
    );
}

pub async fn a_failed_commit_replaces_the_response_with_503<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    // The handler has loaded the session; the store fails before it commits.
    let reply = with_handler_paused(&app, &client, "PUT", "/wait/set/k", async {
        app.store.set_failing(true);
    })
    .await;
    assert_unavailable(&reply);
    app.store.set_failing(false);
    assert_eq!(client.get("/get/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
}

pub async fn an_id_collision_on_create_is_retried<S: SessionStore + Clone>(store: S) {
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

pub async fn handler_cache_policy_is_kept<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/cached/k", "").await;
    assert!(!reply.set_cookies().is_empty());
    assert_eq!(
        reply.header(header::CACHE_CONTROL),
        Some("private, max-age=60")
    );
    assert_eq!(reply.header(header::VARY), Some("Cookie"));
}

pub async fn security_events_never_show_the_session_id<S: SessionStore + Clone>(store: S) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::with(store, |b| b.host_prefix(false));
    let mut client = app.client();
    client.put("/set/k", "v").await;
    let first = client.cookie.clone().unwrap();
    client.post("/login/alice").await;
    let second = client.cookie.clone().unwrap();
    let mut tampered = second.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    client
        .get_with_cookie_headers("/whoami", &[format!("id={tampered}").as_bytes()])
        .await;
    client
        .get_with_cookie_headers("/whoami", &[b"id=junk"])
        .await;
    client.post("/regenerate").await;
    let third = client.cookie.clone().unwrap();
    let _other = logged_in(&app, "alice").await;
    client.post("/logout-everywhere").await;
    let mut again = logged_in(&app, "alice").await;
    again.post("/logout").await;

    let text = logs.text();
    for event in [
        "session_created",
        "session_rotated",
        "session_invalidated",
        "logged_out_everywhere",
        "cookie_rejected",
        "bad_signature",
        "malformed",
    ] {
        assert!(text.contains(event), "missing {event} in:\n{text}");
    }
    for cookie in [&first, &second, &third] {
        let (id, tag) = cookie.split_at(22);
        assert!(!text.contains(id), "a session ID reached the logs");
        assert!(!text.contains(&tag[1..]), "a cookie tag reached the logs");
    }
    assert!(!text.contains(&tampered[..22]));
}

pub async fn data_no_store_can_hold_answers_400_and_writes_nothing<S: SessionStore + Clone>(
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
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
    assert!(!logs.text().contains("secret-card"), "no data in the logs");
}

pub async fn login_can_keep_only_the_keys_it_expects<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    // An anonymous session, possibly planted, with a page to return to.
    let mut client = app.client();
    client.put("/set/cart", "3 items").await;
    client.put("/set/return_to", "https://evil.example").await;
    let reply = client.post("/login-keeping-cart/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&mut client).await.as_deref(), Some("alice"));
    assert_eq!(client.get("/get/cart").await.body, "3 items");
    assert_eq!(
        client.get("/get/return_to").await.status,
        StatusCode::NOT_FOUND
    );
}

pub async fn a_blind_write_with_a_cookie_that_moved_leaves_the_new_cookie_alone<
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
    assert_eq!(whoami(&mut browser).await.as_deref(), Some("alice"));
}
