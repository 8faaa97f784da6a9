//! Security events: stable names in the logs, and never a session ID.

use std::time::Duration;

use cloakroom::store::SessionStore;

use super::store_key_of;
use crate::support::app::TestApp;
use crate::support::client::{logged_in, with_handler_paused};
use crate::support::logs;

pub(crate) async fn security_events_never_show_the_session_id<S: SessionStore + Clone>(store: S) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::with(store, |b| b.secure(false));
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
    // The handle's Debug names the stored session by its short store key,
    // never by its ID.
    let shown = client.get("/debug").await.body;
    let short = &store_key_of(&client)[..8];
    assert!(shown.contains(&format!("stored {short}")), "{shown}");
    assert!(!shown.contains(&third[..22]), "{shown}");

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

pub(crate) async fn evictions_and_dropped_saves_are_reported_once_with_their_counts<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::with(store, |b| b.max_sessions_per_user(Some(2)));
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/k", "saved").await;
    // Logins a second apart: logins at the same moment never evict each
    // other.
    app.clock.advance(Duration::from_secs(1));
    let _second = logged_in(&app, "alice").await;
    assert!(
        !logs.text().contains("sessions_evicted"),
        "within the limit: {}",
        logs.text()
    );
    assert!(!logs.text().contains("session_vanished"), "{}", logs.text());
    // A third login ends the least recently active session: one.
    app.clock.advance(Duration::from_secs(1));
    let _third = logged_in(&app, "alice").await;
    let evicted: Vec<&str> = logs
        .text()
        .lines()
        .filter(|line| line.contains("sessions_evicted"))
        .map(|line| {
            if line.contains("ended=1 limit=2") {
                "one of 2"
            } else {
                "other"
            }
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    assert_eq!(evicted, ["one of 2"], "{}", logs.text());

    // A write whose session a logout ended meanwhile is dropped, and said
    // so once.
    let mut client = logged_in(&app, "bob").await;
    let writer = client.spawn("PUT", "/wait/set/late", "");
    let logout = client.spawn("POST", "/wait/logout", "");
    logout.await.unwrap();
    writer.await.unwrap();
    client.get("/noop").await;
    let vanished = logs.text().matches("session_vanished").count();
    assert_eq!(vanished, 1, "{}", logs.text());
    assert!(logs.text().contains("when=\"save\""), "{}", logs.text());

    // Logging out everywhere ends the user's sessions, this one with them:
    // nothing vanished.
    let mut carol = logged_in(&app, "carol").await;
    assert_eq!(carol.post("/logout-everywhere").await.body, "1");
    assert_eq!(logs.text().matches("session_vanished").count(), 1);
    // Nor does a second ending in the request that already ended it.
    let mut dave = logged_in(&app, "dave").await;
    assert_eq!(dave.post("/logout-then-everywhere").await.body, "0");
    assert_eq!(
        logs.text().matches("session_vanished").count(),
        1,
        "{}",
        logs.text()
    );

    // A visitor's session that another tab ended while this request held
    // it: the logout-everywhere finds it gone, and says so.
    let mut visitor = app.client();
    visitor.put("/set/cart", "1").await;
    let reply = with_handler_paused(
        &app,
        &visitor,
        "POST",
        "/wait/load-then-logout-everywhere",
        async {
            visitor.clone().post("/logout").await;
        },
    )
    .await;
    assert_eq!(reply.body, "0");
    assert_eq!(
        logs.text().matches("session_vanished").count(),
        2,
        "{}",
        logs.text()
    );
    assert!(
        logs.text().contains("when=\"invalidate\""),
        "{}",
        logs.text()
    );
}
