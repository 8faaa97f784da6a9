//! The one warning about a `Secure` cookie set over plain http, which
//! browsers drop: given once, on the first cookie set in answer to a request
//! with no sign of https from a host that is not loopback, and never once
//! the app has been seen over https.

use axum::http::{HeaderValue, StatusCode};
use cloakroom::MemoryStore;

use crate::support::app::TestApp;
use crate::support::client::Client;
use crate::support::logs;

const WARNING: &str = "secure_cookie_over_plain_http";

/// Logs a new browser in as `user` through a request with these headers.
async fn log_in_with(
    app: &TestApp<MemoryStore>,
    user: &str,
    headers: &[(&'static str, &'static str)],
) {
    let mut client: Client = app.client();
    let mut request = client.request("POST", &format!("/login/{user}"), "");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    let reply = client.send(request).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(client.cookie.is_some(), "a cookie was set");
}

#[tokio::test]
async fn a_secure_cookie_over_plain_http_is_warned_about_once() {
    let (logs, _guard) = logs::capture();
    let app = TestApp::new(MemoryStore::new());

    // Browsers keep `Secure` cookies from loopback hosts: nothing to say,
    // and a later request from the LAN is still checked.
    log_in_with(&app, "alice", &[("host", "127.0.0.1:3000")]).await;
    log_in_with(&app, "alice", &[("host", "localhost:3000")]).await;
    assert_eq!(logs.text().matches(WARNING).count(), 0, "{}", logs.text());

    log_in_with(&app, "bob", &[("host", "192.168.1.20:3000")]).await;
    assert_eq!(logs.text().matches(WARNING).count(), 1, "{}", logs.text());
    log_in_with(&app, "carol", &[("host", "devbox.lan:3000")]).await;
    assert_eq!(logs.text().matches(WARNING).count(), 1, "once per layer");
}

#[tokio::test]
async fn an_app_seen_over_https_gets_no_warning() {
    let (logs, _guard) = logs::capture();
    let app = TestApp::new(MemoryStore::new());
    log_in_with(
        &app,
        "alice",
        &[("host", "app.example"), ("x-forwarded-proto", "https")],
    )
    .await;
    // A request the proxy did not mark (a health check, say) afterwards:
    // the app is served over https, so a warning would only mislead.
    log_in_with(&app, "bob", &[("host", "10.0.0.7:8080")]).await;
    assert_eq!(logs.text().matches(WARNING).count(), 0, "{}", logs.text());
}

#[tokio::test]
async fn an_insecure_cookie_by_choice_gets_no_warning() {
    let (logs, _guard) = logs::capture();
    let app = TestApp::with(MemoryStore::new(), |b| b.secure(false));
    log_in_with(&app, "alice", &[("host", "192.168.1.20:3000")]).await;
    assert_eq!(logs.text().matches(WARNING).count(), 0, "{}", logs.text());
}
