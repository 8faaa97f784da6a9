//! Login, regenerate, logout, logout-everywhere and listing: IDs move,
//! old ones die, and no session outlives its logout.

use axum::http::{header, StatusCode};
use cloakroom::store::SessionStore;

use super::{cookie_of, is_removal, store_key_of};
use crate::support::app::{TestApp, IDLE};
use crate::support::client::{logged_in, whoami, with_handler_paused};

pub(crate) async fn login_rotates_the_id_and_deletes_the_old_one<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/cart", "3 items").await;
    let before = client.cookie.clone().expect("anonymous session cookie");

    let reply = client.post("/login/alice").await;
    let after = client.cookie.clone().expect("new cookie");
    assert_ne!(before, after, "login issues a fresh ID");
    assert_eq!(cookie_of(&reply).value(), after);
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert_eq!(
        client.get("/get/cart").await.body,
        "3 items",
        "data carries over"
    );

    let mut old = app.client();
    old.cookie = Some(before);
    assert_eq!(whoami(&old).await, None, "the pre-login ID is dead");
    assert_eq!(old.get("/get/cart").await.status, StatusCode::NOT_FOUND);
}

pub(crate) async fn writes_made_before_login_in_the_same_request_are_kept<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    // A new visitor, and one whose session the request has not read.
    let mut fresh = app.client();
    let request = fresh.request("POST", "/set-then-login/alice", "2 items");
    fresh.send(request).await;
    let mut returning = app.client();
    returning.put("/set/seen", "yes").await;
    let request = returning.request("POST", "/set-then-login/bob", "5 items");
    returning.send(request).await;
    for (client, user, cart) in [(&fresh, "alice", "2 items"), (&returning, "bob", "5 items")] {
        assert_eq!(whoami(client).await.as_deref(), Some(user));
        assert_eq!(
            client.call("GET", "/get/cart", "").await.body,
            cart,
            "{user}"
        );
    }
    assert_eq!(returning.get("/get/seen").await.body, "yes");
}

pub(crate) async fn a_planted_session_cookie_is_not_kept_through_login<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut attacker = app.client();
    attacker.put("/set/bait", "x").await;
    let planted = attacker.cookie.clone().expect("attacker's session");

    let mut victim = app.client();
    victim.cookie = Some(planted.clone());
    victim.post("/login/victim").await;
    assert_ne!(victim.cookie.as_deref(), Some(planted.as_str()));
    assert_eq!(whoami(&victim).await.as_deref(), Some("victim"));
    assert_eq!(
        whoami(&attacker).await,
        None,
        "the planted ID learned nothing"
    );
}

pub(crate) async fn a_dead_cookie_is_replaced_never_reused<S: SessionStore + Clone>(store: S) {
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

pub(crate) async fn login_as_another_user_drops_the_previous_users_data<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/secret", "alice's").await;
    client.post("/login/bob").await;
    assert_eq!(whoami(&client).await.as_deref(), Some("bob"));
    assert_eq!(
        client.get("/get/secret").await.status,
        StatusCode::NOT_FOUND
    );
}

pub(crate) async fn login_can_keep_only_the_keys_it_expects<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    // An anonymous session, possibly planted, with a page to return to.
    let mut client = app.client();
    client.put("/set/cart", "3 items").await;
    client.put("/set/return_to", "https://evil.example").await;
    let reply = client.post("/login-keeping-cart/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert_eq!(client.get("/get/cart").await.body, "3 items");
    assert_eq!(
        client.get("/get/return_to").await.status,
        StatusCode::NOT_FOUND
    );
}

pub(crate) async fn regenerate_keeps_data_and_user_under_a_new_id<S: SessionStore + Clone>(
    store: S,
) {
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
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
    assert_eq!(client.get("/get/k").await.body, "v");
    let mut old = app.client();
    old.cookie = Some(before);
    assert_eq!(whoami(&old).await, None);
}

pub(crate) async fn invalidate_expires_the_cookie_and_the_old_cookie_is_anonymous<
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
    assert_eq!(whoami(&replay).await, None);
    replay.put("/set/k", "v").await;
    assert_ne!(
        replay.cookie.as_deref(),
        Some(old.as_str()),
        "never revived"
    );
}

pub(crate) async fn logout_everywhere_ends_the_users_sessions_on_every_device<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let phone = logged_in(&app, "alice").await;
    let other_user = logged_in(&app, "bob").await;

    let reply = laptop.post("/logout-everywhere").await;
    assert_eq!(reply.body, "2");
    assert!(is_removal(&reply));
    assert_eq!(whoami(&laptop).await, None);
    assert_eq!(whoami(&phone).await, None, "the other device is logged out");
    assert_eq!(whoami(&other_user).await.as_deref(), Some("bob"));

    // The same through the admin handle, from outside any request.
    let tablet = logged_in(&app, "bob").await;
    assert_eq!(app.layer.admin().logout_everywhere("bob").await.unwrap(), 2);
    assert_eq!(whoami(&tablet).await, None);
    assert_eq!(whoami(&other_user).await, None);
}

pub(crate) async fn logout_other_devices_keeps_the_current_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let phone = logged_in(&app, "alice").await;
    assert_eq!(laptop.post("/logout-others").await.body, "1");
    assert_eq!(whoami(&laptop).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&phone).await, None);
}

pub(crate) async fn listing_marks_the_current_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let _phone = logged_in(&app, "alice").await;
    let listed: Vec<(String, bool)> = laptop.get("/sessions").await.json();
    assert_eq!(listed.len(), 2);
    let current: Vec<&str> = listed
        .iter()
        .filter(|(_, current)| *current)
        .map(|(key, _)| key.as_str())
        .collect();
    assert_eq!(
        current,
        [store_key_of(&laptop).as_str()],
        "this one, and only this one"
    );
    assert_eq!(laptop.get("/sessions/count").await.body, "2");
    let _tablet = logged_in(&app, "alice").await;
    assert_eq!(laptop.get("/sessions/count").await.body, "3");
    assert_eq!(
        app.client().get("/sessions/count").await.body,
        "0",
        "anonymous"
    );
    let admin_view = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(admin_view.len(), 3);
    assert!(admin_view.iter().all(|s| !s.current));
    assert_eq!(
        app.client().get("/sessions").await.body,
        "[]",
        "anonymous: no sessions"
    );
}

pub(crate) async fn a_stale_cookie_never_clears_a_newer_login<S: SessionStore + Clone>(store: S) {
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
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
}

pub(crate) async fn regenerate_after_a_logout_elsewhere_does_not_revive_the_session<
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
    assert_eq!(
        app.sessions_of("alice").await,
        0,
        "regenerate must not bring the ended session back under a new ID"
    );
    let mut after = app.client();
    after.absorb(&reply);
    assert_eq!(whoami(&after).await, None);
}
