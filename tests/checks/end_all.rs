//! Ending every session in the store (`SessionAdmin::end_all_sessions`,
//! for a breach): every user's browsers and anonymous ones are logged out,
//! a regenerate or a logout racing it leaves nothing behind, and a store
//! failure is reported and can be retried.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::test_suite::StoreOp;
use cloakroom::{store::SessionStore, SessionAdmin};

use crate::support::app::TestApp;
use crate::support::client::{logged_in, until_paused, whoami, with_handler_paused, Client};
use crate::support::logs;

/// Whether the browser's cart is still in its session.
async fn has_cart(client: &Client) -> bool {
    let reply = client.call("GET", "/get/cart", "").await;
    match reply.status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("unexpected status {other}: {}", reply.body),
    }
}

/// A visitor with something in an anonymous session.
async fn visitor_with_a_cart<S: SessionStore + Clone>(app: &TestApp<S>) -> Client {
    let mut visitor = app.client();
    assert_eq!(
        visitor.put("/set/cart", "socks").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(has_cart(&visitor).await);
    visitor
}

/// The `all_sessions_ended` events logged so far.
fn ended_events(logs: &logs::Captured) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|line| line.contains("event=\"all_sessions_ended\""))
        .map(str::to_owned)
        .collect()
}

pub(crate) async fn ending_all_sessions_logs_out_every_browser_of_every_user<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::new(store);
    let mut browsers = vec![
        logged_in(&app, "alice").await,
        logged_in(&app, "alice").await,
        logged_in(&app, "bob").await,
    ];
    // A session that moved to a new ID, leaving a forward behind.
    let mut moved = logged_in(&app, "carol").await;
    let old_id = moved.clone();
    assert_eq!(
        moved.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    browsers.push(moved);
    let visitor = visitor_with_a_cart(&app).await;
    app.store.reset();

    // From a tool that has the store alone.
    let ended = SessionAdmin::new(app.store.clone())
        .end_all_sessions()
        .await
        .unwrap();
    assert_eq!(ended, 5, "four users' sessions and the visitor's");
    assert_eq!(
        app.calls().delete_all,
        2,
        "passes until one ends nothing: the second"
    );
    for (i, browser) in browsers.iter().chain([&old_id]).enumerate() {
        assert_eq!(whoami(browser).await, None, "browser {i} logged out");
    }
    assert!(!has_cart(&visitor).await, "the anonymous session ended too");
    for user in ["alice", "bob", "carol"] {
        assert_eq!(app.sessions_of(user).await, 0, "{user}");
    }
    assert_eq!(
        ended_events(&logs).len(),
        1,
        "one security event: {}",
        logs.text()
    );
    assert!(
        ended_events(&logs)[0].contains("ended=5"),
        "{}",
        logs.text()
    );

    // From the app, a second later: the same.
    app.clock.advance(Duration::from_secs(1));
    let again = [
        logged_in(&app, "alice").await,
        logged_in(&app, "dave").await,
    ];
    let visitor = visitor_with_a_cart(&app).await;
    app.store.reset();
    assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 3);
    assert_eq!(app.calls().delete_all, 2);
    for browser in &again {
        assert_eq!(whoami(browser).await, None);
    }
    assert!(!has_cart(&visitor).await);
    assert_eq!(app.sessions_of("alice").await, 0);
    assert_eq!(app.sessions_of("dave").await, 0);
    assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 0);
    let events = ended_events(&logs);
    assert_eq!(events.len(), 3, "{}", logs.text());
    assert!(events[1].contains("ended=3"), "{}", logs.text());
    assert!(events[2].contains("ended=0"), "{}", logs.text());

    // A login after the cutoff's second is a new sign-in: it stays.
    let before = logged_in(&app, "erin").await;
    let mut pause = app.store.pause_next(StoreOp::DeleteAll);
    let admin = app.layer.admin();
    let ending = tokio::spawn(async move { admin.end_all_sessions().await });
    // The cutoff is taken; the first pass is held.
    pause.reached().await;
    app.clock.advance(Duration::from_secs(1));
    let after = logged_in(&app, "erin").await;
    pause.release();
    assert_eq!(ending.await.unwrap().unwrap(), 1);
    assert_eq!(whoami(&before).await, None);
    assert_eq!(
        whoami(&after).await.as_deref(),
        Some("erin"),
        "created after the cutoff"
    );
}

pub(crate) async fn a_regenerate_held_between_its_new_record_and_the_retire_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    // The regenerate has created the new record, with the old one's
    // creation time, and is about to retire the old one.
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut pause, &mut pending).await;
    assert_eq!(app.sessions_of("alice").await, 2, "old and new");
    assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 2);
    pause.release();
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for the ended session"
    );
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(app.sessions_of("alice").await, 0);
    assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 0);
}

pub(crate) async fn logouts_racing_the_end_of_all_sessions_leave_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);

    // A logout-everywhere while the first pass is held: it ends alice's
    // sessions, the pass ends bob's.
    let alice = [
        logged_in(&app, "alice").await,
        logged_in(&app, "alice").await,
    ];
    let bob = logged_in(&app, "bob").await;
    let mut pause = app.store.pause_next(StoreOp::DeleteAll);
    let admin = app.layer.admin();
    let ending = tokio::spawn(async move { admin.end_all_sessions().await });
    pause.reached().await;
    let reply = alice[0].call("POST", "/logout-everywhere", "").await;
    assert_eq!(reply.body, "2");
    pause.release();
    assert_eq!(ending.await.unwrap().unwrap(), 1, "bob's session");
    for browser in alice.iter().chain([&bob]) {
        assert_eq!(whoami(browser).await, None);
    }

    // A logout-everywhere that loaded its session before all sessions
    // ended, and then finds nothing left.
    let carol = logged_in(&app, "carol").await;
    let other = logged_in(&app, "carol").await;
    let reply = with_handler_paused(
        &app,
        &carol,
        "POST",
        "/wait/load-then-logout-everywhere",
        async {
            assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 2);
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(whoami(&carol).await, None);
    assert_eq!(whoami(&other).await, None);
    assert_eq!(app.sessions_of("carol").await, 0);

    // A logout that loaded its session before all sessions ended.
    let dave = logged_in(&app, "dave").await;
    let reply = with_handler_paused(&app, &dave, "POST", "/wait/load-then-logout", async {
        assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 1);
    })
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&dave).await, None);
    assert_eq!(app.sessions_of("dave").await, 0);
    assert_eq!(app.layer.admin().end_all_sessions().await.unwrap(), 0);
}

pub(crate) async fn a_store_failure_while_ending_all_sessions_is_reported_and_a_retry_ends_all<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::new(store);
    let admin = app.layer.admin();
    let browsers = [logged_in(&app, "alice").await, logged_in(&app, "bob").await];
    let visitor = visitor_with_a_cart(&app).await;

    // The first pass fails before it reaches the store: an error, and
    // nothing ended.
    app.store.fail_next(StoreOp::DeleteAll);
    let error = admin.end_all_sessions().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(whoami(&browsers[0]).await.as_deref(), Some("alice"));
    assert_eq!(whoami(&browsers[1]).await.as_deref(), Some("bob"));
    assert!(has_cart(&visitor).await);
    assert!(ended_events(&logs).is_empty(), "{}", logs.text());
    // The retry ends everything.
    assert_eq!(admin.end_all_sessions().await.unwrap(), 3);
    for browser in &browsers {
        assert_eq!(whoami(browser).await, None);
    }
    assert!(!has_cart(&visitor).await);

    // A first pass that lands but reports a failure (a timeout), and a
    // second pass that fails: an error each time, never a false count; what
    // ended stays ended, and the retry finds nothing left.
    for (case, script) in [
        ("landed", &[StoreOp::DeleteAll][..]),
        ("second pass", &[StoreOp::DeleteAll, StoreOp::DeleteAll]),
    ] {
        let browsers = [
            logged_in(&app, "alice").await,
            logged_in(&app, "carol").await,
        ];
        let visitor = visitor_with_a_cart(&app).await;
        if script.len() == 1 {
            app.store.fail_after_next(StoreOp::DeleteAll);
        } else {
            app.store.pass_next(StoreOp::DeleteAll);
            app.store.fail_next(StoreOp::DeleteAll);
        }
        assert!(admin.end_all_sessions().await.is_err(), "{case}");
        for browser in &browsers {
            assert_eq!(whoami(browser).await, None, "{case}");
        }
        assert!(!has_cart(&visitor).await, "{case}");
        assert_eq!(admin.end_all_sessions().await.unwrap(), 0, "{case}");
    }
    assert_eq!(ended_events(&logs).len(), 3, "{}", logs.text());
}
