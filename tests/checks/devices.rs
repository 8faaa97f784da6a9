//! A user's devices: what a login records about where it came from, the
//! listing a "your devices" page shows, ending one device by its handle
//! (and only one's own), and the admin handle a tool outside the app makes
//! from the store alone.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use cloakroom::device::{ClientIp, ParseSessionHandleError, SessionHandle};
use cloakroom::{store::SessionStore, SessionAdmin, SessionError};

use crate::support::app::{DeviceEntry, TestApp};
use crate::support::client::{logged_in, whoami, Client};
use crate::support::logs;

const FIREFOX_ON_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_ON_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) \
     AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";

/// Logs a new browser in as `user` with this User-Agent, over a connection
/// from `peer` that carries `forwarded` as `X-Forwarded-For`.
async fn log_in_from<S: SessionStore + Clone>(
    app: &TestApp<S>,
    user: &str,
    agent: &str,
    peer: &str,
    forwarded: Option<&str>,
) -> Client {
    let mut client = app.client();
    let mut request = client.request("POST", &format!("/login/{user}"), "");
    request
        .headers_mut()
        .insert(header::USER_AGENT, HeaderValue::from_str(agent).unwrap());
    if let Some(forwarded) = forwarded {
        request
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_str(forwarded).unwrap());
    }
    request
        .extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    let reply = client.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "login: {}",
        reply.body
    );
    client
}

pub(super) async fn devices(client: &Client) -> Vec<DeviceEntry> {
    let reply = client.call("GET", "/devices", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("device list")
}

pub(crate) async fn a_login_records_the_device_and_the_listing_shows_it<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::with(store, |b| {
        b.client_ip(ClientIp::from_socket_addr().trust_proxies(["10.0.0.0/8"]))
    });
    // Behind the trusted proxy: the address it reports.
    let laptop = log_in_from(
        &app,
        "alice",
        FIREFOX_ON_LINUX,
        "10.1.2.3:4000",
        Some("6.6.6.6, 192.0.2.7"),
    )
    .await;
    // Straight from the internet: its own address, whatever it claims.
    let phone = log_in_from(
        &app,
        "alice",
        SAFARI_ON_IPHONE,
        "[2001:db8::5]:4000",
        Some("10.0.0.1"),
    )
    .await;
    let listed = devices(&laptop).await;
    assert_eq!(listed.len(), 2);
    let (this, other): (Vec<_>, Vec<_>) = listed.into_iter().partition(|d| d.current);
    assert_eq!(this[0].label.as_deref(), Some("Firefox on Linux"));
    assert_eq!(this[0].user_agent.as_deref(), Some(FIREFOX_ON_LINUX));
    assert_eq!(this[0].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(other[0].label.as_deref(), Some("Safari on iPhone"));
    assert_eq!(other[0].ip.as_deref(), Some("2001:db8::5"));

    // A regenerate keeps the device; a later request from elsewhere does
    // not change it (it is where the login happened).
    let mut phone = phone;
    phone.post("/regenerate").await;
    let mut request = phone.request("GET", "/noop", "");
    request
        .extensions_mut()
        .insert("203.0.113.9:1".parse::<SocketAddr>().unwrap());
    phone.send(request).await;
    let phone_entry = devices(&phone)
        .await
        .into_iter()
        .find(|d| d.current)
        .expect("current");
    assert_eq!(phone_entry.ip.as_deref(), Some("2001:db8::5"));
    assert_eq!(phone_entry.label.as_deref(), Some("Safari on iPhone"));
}

/// Logs a new browser in as `user`, over a connection from `peer` as axum
/// reports it (`ConnectInfo<SocketAddr>`, no bare `SocketAddr`), or with no
/// peer at all.
async fn log_in_under_axum<S: SessionStore + Clone>(
    app: &TestApp<S>,
    user: &str,
    peer: Option<&str>,
) -> Client {
    let mut client = app.client();
    let mut request = client.request("POST", &format!("/login/{user}"), "");
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    }
    let reply = client.send(request).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    client
}

pub(crate) async fn axum_connect_info_gives_the_address_and_a_missing_peer_is_warned_once<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const WARNING: &str = "client_ip_unknown";
    let (logs, _guard) = logs::capture();
    // axum's own extension, named by type: no closure.
    let app = TestApp::with(store.clone(), |b| {
        b.client_ip(
            ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>().trust_proxies(["10.0.0.0/8"]),
        )
    });
    let laptop = log_in_under_axum(&app, "alice", Some("[2001:db8::5]:4000")).await;
    let mut request = laptop.request("GET", "/devices", "");
    request.extensions_mut().insert(ConnectInfo(
        "[2001:db8::5]:4001".parse::<SocketAddr>().unwrap(),
    ));
    let listed: Vec<DeviceEntry> =
        serde_json::from_str(&laptop.send_alone(request).await.body).expect("device list");
    assert_eq!(
        listed[0].ip.as_deref(),
        Some("2001:db8::5"),
        "the peer axum reports is recorded"
    );
    assert_eq!(logs.text().matches(WARNING).count(), 0, "{}", logs.text());
    // Served without connect info: nothing recorded, and said once (every
    // request is checked, the listings below too).
    for user in ["bob", "carol"] {
        let client = log_in_under_axum(&app, user, None).await;
        assert_eq!(devices(&client).await[0].ip, None);
    }
    assert_eq!(logs.text().matches(WARNING).count(), 1, "{}", logs.text());
    assert!(
        logs.text().contains("ConnectInfo"),
        "the warning names the missing extension: {}",
        logs.text()
    );

    // `from_socket_addr` under axum finds no bare `SocketAddr`: it records
    // nothing, and says so once per layer, pointing at the constructor for
    // axum.
    let app = TestApp::with(store, |b| b.client_ip(ClientIp::from_socket_addr()));
    for user in ["dave", "erin"] {
        let client = log_in_under_axum(&app, user, Some("192.0.2.7:4000")).await;
        assert_eq!(devices(&client).await[0].ip, None);
    }
    let text = logs.text();
    assert_eq!(text.matches(WARNING).count(), 2, "once per layer: {text}");
    assert!(text.contains("from_connect_info"), "{text}");
}

pub(crate) async fn devices_are_recorded_only_as_configured<S: SessionStore + Clone>(store: S) {
    // The default: the User-Agent, never the address.
    let app = TestApp::new(store.clone());
    let client = log_in_from(&app, "alice", FIREFOX_ON_LINUX, "192.0.2.1:1", None).await;
    let entry = devices(&client).await.remove(0);
    assert_eq!(entry.user_agent.as_deref(), Some(FIREFOX_ON_LINUX));
    assert_eq!(entry.ip, None, "addresses are opt-in");

    // Neither.
    let app = TestApp::with(store, |b| b.record_user_agent(false));
    let client = log_in_from(&app, "bob", FIREFOX_ON_LINUX, "192.0.2.1:1", None).await;
    let entry = devices(&client).await.remove(0);
    assert_eq!(
        (entry.user_agent, entry.label, entry.ip),
        (None, None, None)
    );
}

pub(crate) async fn the_listing_puts_the_latest_activity_first_and_marks_this_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    // Activity is recorded once half the idle window has passed.
    let app = TestApp::with(store, |b| b.touch_after(0.5));
    let mut older = logged_in(&app, "alice").await;
    app.clock.advance(Duration::from_secs(1000));
    let newer = logged_in(&app, "alice").await;
    let newer_login = devices(&newer).await[0].created;
    app.clock.advance(Duration::from_secs(100));
    // The older login is used again (its activity is recorded: 1100 s
    // passed), the newer one is not (100 s).
    older.get("/whoami").await;
    app.clock.advance(Duration::from_secs(50));
    // The store says the newer one was last seen at its login, 150 s ago,
    // and the older one 50 s ago...
    let stored = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].created_at.unix_timestamp(), newer_login - 1000);
    assert_eq!(stored[0].last_seen.unix_timestamp(), newer_login + 100);
    assert_eq!(stored[1].last_seen.unix_timestamp(), newer_login);
    // ... but the device in hand is active now: this request. It comes
    // first, with this request's time; the rest keep the store's order.
    let listed = devices(&newer).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed.iter().map(|d| d.current).collect::<Vec<_>>(),
        [true, false],
        "the session that listed comes first: {listed:?}"
    );
    assert_eq!(
        listed[0].last_seen,
        newer_login + 150,
        "this session was last seen by this very request"
    );
    assert_eq!(listed[0].created, newer_login);
    assert_eq!(
        (listed[1].created, listed[1].last_seen),
        (newer_login - 1000, newer_login + 100),
        "the other session shows what the store recorded"
    );
    // Listing wrote nothing: the store still has the login time.
    let stored = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(stored[1].last_seen.unix_timestamp(), newer_login);
    assert_eq!(stored[1].handle().to_string(), listed[0].handle);

    // The order stays total and stable: from the older device, it comes
    // first (now), then the newer one (its login, as stored); asked again,
    // the same.
    let from_older = devices(&older).await;
    assert_eq!(
        from_older.iter().map(|d| d.current).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(from_older[0].last_seen, newer_login + 150);
    assert_eq!(from_older[1].last_seen, newer_login);
    assert_eq!(devices(&older).await, from_older, "a stable order");

    // A device active in the same whole second as this request ties with
    // it on time (and was created later): this request still comes first.
    let _newest = logged_in(&app, "alice").await;
    for _ in 0..2 {
        let listed = devices(&older).await;
        assert_eq!(listed.len(), 3);
        assert!(listed[0].current, "this request first: {listed:?}");
    }
}

pub(crate) async fn a_user_ends_another_of_their_sessions_by_its_handle<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let phone = logged_in(&app, "alice").await;
    let listed = devices(&laptop).await;
    let phone_handle = &listed.iter().find(|d| !d.current).expect("phone").handle;
    assert_ne!(
        Some(phone_handle.as_str()),
        phone.cookie.as_deref(),
        "a handle is not a cookie"
    );
    assert!(
        !phone
            .cookie
            .as_deref()
            .unwrap()
            .contains(phone_handle.as_str()),
        "nor part of one"
    );
    let reply = laptop.delete(&format!("/devices/{phone_handle}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(reply.set_cookies().is_empty(), "this device's cookie stays");
    assert_eq!(whoami(&phone).await, None, "the phone is signed out");
    assert_eq!(whoami(&laptop).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);
    // Once gone, the handle names nothing of the user's.
    let again = laptop.delete(&format!("/devices/{phone_handle}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

pub(crate) async fn handles_of_other_users_or_none_are_refused_alike<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut alice = logged_in(&app, "alice").await;
    let bob = logged_in(&app, "bob").await;
    let bobs = app.layer.admin().list_sessions("bob").await.unwrap()[0].handle();
    let reply = alice.delete(&format!("/devices/{bobs}")).await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "another user's session"
    );
    assert_eq!(
        whoami(&bob).await.as_deref(),
        Some("bob"),
        "bob is untouched"
    );
    let unknown = "ab".repeat(32);
    let reply = alice.delete(&format!("/devices/{unknown}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "a handle never issued");
    let reply = alice.delete("/devices/not-a-handle").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "not a handle at all");
    assert_eq!(whoami(&alice).await.as_deref(), Some("alice"));

    let mut anonymous = app.client();
    let reply = anonymous.delete(&format!("/devices/{bobs}")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&bob).await.as_deref(), Some("bob"));
    assert_eq!(app.sessions_of("bob").await, 1);
}

pub(crate) async fn a_malformed_handle_answers_as_an_unknown_one_and_names_nothing_internal<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut alice = logged_in(&app, "alice").await;
    let unknown = alice.delete(&format!("/devices/{}", "ab".repeat(32))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for junk in [
        "not-a-handle",
        "ab",
        &"ab".repeat(31),
        &"ab".repeat(33),
        &"zz".repeat(32),
        "%00",
        &format!("{}%20", "ab".repeat(32)),
    ] {
        let reply = alice.delete(&format!("/devices/{junk}")).await;
        assert_eq!(
            (reply.status, &reply.body),
            (unknown.status, &unknown.body),
            "{junk:?} answers as an unknown handle does"
        );
        let body = reply.body.to_lowercase();
        for internal in [
            "store key",
            "storekey",
            "hex",
            "sha",
            "parse",
            "invalid url",
        ] {
            assert!(
                !body.contains(internal),
                "{junk:?}: {internal:?} in {body:?}"
            );
        }
    }
    assert_eq!(whoami(&alice).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);

    // The parse error itself speaks of handles, not of what they are made
    // of; and it is what an app's own `Path<SessionHandle>` would show.
    let error = "not-a-handle".parse::<SessionHandle>().unwrap_err();
    assert_eq!(error.to_string(), "not a session handle");
    let error = serde_json::from_str::<SessionHandle>("\"ab\"").unwrap_err();
    assert!(!error.to_string().contains("store key"), "{error}");
    assert_eq!(
        SessionError::from(error_of("zz")).status(),
        StatusCode::NOT_FOUND,
        "converted for `?`, it is an unknown session"
    );
}

fn error_of(text: &str) -> ParseSessionHandleError {
    text.parse::<SessionHandle>().unwrap_err()
}

pub(crate) async fn ending_this_session_by_its_handle_logs_out<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut laptop = logged_in(&app, "alice").await;
    let phone = logged_in(&app, "alice").await;
    let own = devices(&laptop)
        .await
        .into_iter()
        .find(|d| d.current)
        .expect("current")
        .handle;
    let reply = laptop.delete(&format!("/devices/{own}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(super::is_removal(&reply), "the cookie is expired");
    assert_eq!(laptop.cookie, None);
    assert_eq!(whoami(&phone).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);

    // This session's handle from before it moved to a new ID leads here
    // too: a logout all the same.
    let mut phone = phone;
    let own = devices(&phone)
        .await
        .into_iter()
        .find(|d| d.current)
        .expect("current")
        .handle;
    assert_eq!(
        phone.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    let reply = phone.delete(&format!("/devices/{own}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(super::is_removal(&reply), "the cookie is expired");
    assert_eq!(phone.cookie, None);
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn an_admin_made_from_the_store_alone_manages_the_apps_sessions<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let laptop = logged_in(&app, "alice").await;
    let phone = logged_in(&app, "alice").await;
    // An operations tool: the same store, no key, no layer.
    let tool = SessionAdmin::new(app.store.clone());
    assert_eq!(tool.count_sessions("alice").await.unwrap(), 2);
    let listed = tool.list_sessions("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(tool.end_session(&listed[0].key).await.unwrap());
    assert_eq!(app.sessions_of("alice").await, 1);
    assert_eq!(tool.logout_everywhere("alice").await.unwrap(), 1);
    assert_eq!(whoami(&laptop).await, None);
    assert_eq!(whoami(&phone).await, None);
}
