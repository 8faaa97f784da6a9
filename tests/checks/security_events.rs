//! Security events: stable names in the logs, and never a session ID.

use cloakroom::SessionStore;

use crate::support::app::TestApp;
use crate::support::client::logged_in;
use crate::support::logs;

pub(crate) async fn security_events_never_show_the_session_id<S: SessionStore + Clone>(store: S) {
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
