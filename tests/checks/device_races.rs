//! Ending a device by its handle on a multi-threaded runtime: racing that
//! device's own rotation, a logout-everywhere and a logout in another tab,
//! with the store failing or the request dropped at each step.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::SessionStore;
use cloakroom::test_suite::StoreOp;

use super::devices::devices;
use crate::support::app::TestApp;
use crate::support::client::{
    assert_unavailable, logged_in, until_paused, whoami, with_handler_paused, Client,
};
use crate::support::reply::Reply;

/// The handle of `client`'s other session, as `owner` lists it.
async fn other_handle(owner: &Client) -> String {
    let listed = devices(owner).await;
    let others: Vec<_> = listed.iter().filter(|d| !d.current).collect();
    assert_eq!(others.len(), 1, "{listed:?}");
    others[0].handle.clone()
}

/// Sends `owner`'s request to end the device behind `handle`, holds it at
/// the store call that would end the session while `meanwhile` runs, then
/// lets it go on and returns its reply.
async fn end_device_held_during<S: SessionStore + Clone>(
    app: &TestApp<S>,
    owner: &Client,
    handle: &str,
    meanwhile: impl std::future::Future<Output = ()>,
) -> Reply {
    let mut pause = app.store.pause_next(StoreOp::Delete);
    let mut pending = owner.spawn("DELETE", &format!("/devices/{handle}"), "");
    until_paused(&mut pause, &mut pending).await;
    meanwhile.await;
    pause.release();
    pending.await.unwrap()
}

pub(crate) async fn ending_a_device_while_it_regenerates_leaves_it_ended<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let device = logged_in(&app, "alice").await;
    let owner = logged_in(&app, "alice").await;
    let handle = other_handle(&owner).await;
    // The device's request has asked for a new ID; before it commits, the
    // owner signs the device out.
    let reply = with_handler_paused(
        &app,
        &device,
        "POST",
        "/wait/regenerate-then-commit",
        async {
            let reply = owner
                .call("DELETE", &format!("/devices/{handle}"), "")
                .await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for the ended session"
    );
    assert_eq!(whoami(&device).await, None, "the device stays signed out");
    assert_eq!(whoami(&owner).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1, "the owner's own session");
}

pub(crate) async fn ending_a_device_that_moves_follows_it_while_the_old_id_leads_there<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut device = logged_in(&app, "alice").await;
    let owner = logged_in(&app, "alice").await;
    let handle = other_handle(&owner).await;

    // The device moves to a new ID while the owner's request is on its way
    // to end it: the end follows the move.
    let reply = end_device_held_during(&app, &owner, &handle, async {
        assert_eq!(
            device.post("/regenerate").await.status,
            StatusCode::NO_CONTENT
        );
    })
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(whoami(&device).await, None, "ended at its new ID");
    assert_eq!(whoami(&owner).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);

    // A handle listed before the device moved (a regenerate, or a login
    // as the same user) leads to the same user's session: it is followed,
    // and the device is signed out.
    for step in ["/regenerate", "/login/alice"] {
        let mut device = logged_in(&app, "alice").await;
        let listed = other_handle(&owner).await;
        let reply = with_handler_paused(
            &app,
            &owner,
            "POST",
            &format!("/wait/load-then-end/{listed}"),
            async {
                assert_eq!(device.post(step).await.status, StatusCode::NO_CONTENT);
                assert_ne!(other_handle(&owner).await, listed, "{step} moved it");
            },
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{step}: {}",
            reply.body
        );
        assert_eq!(whoami(&device).await, None, "{step}: ended at its new ID");
        assert_eq!(whoami(&owner).await.as_deref(), Some("alice"));
        assert_eq!(app.sessions_of("alice").await, 1, "{step}");
    }

    // Once the old ID no longer leads anywhere (its forward lapsed), the
    // handle is unknown, ends nothing, and the fresh listing's one works.
    let mut device = logged_in(&app, "alice").await;
    let stale = other_handle(&owner).await;
    assert_eq!(
        device.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    app.clock.advance(Duration::from_secs(6 * 60));
    let reply = owner.call("DELETE", &format!("/devices/{stale}"), "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert_eq!(whoami(&device).await.as_deref(), Some("alice"));
    let fresh = other_handle(&owner).await;
    assert_ne!(fresh, stale);
    let reply = owner.call("DELETE", &format!("/devices/{fresh}"), "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&device).await, None);
    assert_eq!(app.sessions_of("alice").await, 1);
}

pub(crate) async fn ending_a_device_that_logs_in_as_another_user_meanwhile_ends_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut device = logged_in(&app, "alice").await;
    let owner = logged_in(&app, "alice").await;
    let handle = other_handle(&owner).await;

    // Alice's request to sign the device out is held at the store call
    // that would end it; meanwhile the device logs in as bob, so the
    // handle's ID now leads to bob's fresh session.
    let reply = end_device_held_during(&app, &owner, &handle, async {
        assert_eq!(
            device.post("/login/bob").await.status,
            StatusCode::NO_CONTENT
        );
    })
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "alice's handle must not end bob's session: {}",
        reply.body
    );
    assert!(reply.set_cookies().is_empty(), "{reply:?}");
    assert_eq!(
        whoami(&device).await.as_deref(),
        Some("bob"),
        "bob's session on the device lives"
    );
    assert_eq!(app.sessions_of("bob").await, 1);
    assert_eq!(whoami(&owner).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1, "alice keeps her own");

    // The same once the move is done: the handle alice listed is refused,
    // ending nothing.
    let reply = owner
        .call("DELETE", &format!("/devices/{handle}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert_eq!(whoami(&device).await.as_deref(), Some("bob"));
}

pub(crate) async fn ending_a_device_racing_logout_everywhere_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let device = logged_in(&app, "alice").await;
    let owner = logged_in(&app, "alice").await;
    let handle = other_handle(&owner).await;
    // The owner's request has loaded its session; the device then logs out
    // everywhere, ending both; then the owner's request ends the device.
    let reply = with_handler_paused(
        &app,
        &owner,
        "POST",
        &format!("/wait/load-then-end/{handle}"),
        async {
            let reply = device.call("POST", "/logout-everywhere", "").await;
            assert_eq!(reply.body, "2", "both sessions ended");
        },
    )
    .await;
    // Either answer is honest (the device is gone either way); nothing
    // may come back to life.
    assert!(
        matches!(reply.status, StatusCode::NO_CONTENT | StatusCode::NOT_FOUND),
        "{reply:?}"
    );
    assert!(
        reply.set_cookies().iter().all(|c| c.contains("Max-Age=0")),
        "{reply:?}"
    );
    assert_eq!(whoami(&owner).await, None);
    assert_eq!(whoami(&device).await, None);
    assert_eq!(app.sessions_of("alice").await, 0);

    // And ending a device racing a logout in the owner's other tab.
    let device = logged_in(&app, "bob").await;
    let owner = logged_in(&app, "bob").await;
    let other_tab = owner.clone();
    let handle = other_handle(&owner).await;
    let reply = with_handler_paused(
        &app,
        &owner,
        "POST",
        &format!("/wait/load-then-end/{handle}"),
        async {
            assert_eq!(
                other_tab.call("POST", "/logout", "").await.status,
                StatusCode::NO_CONTENT
            );
        },
    )
    .await;
    assert!(
        matches!(
            reply.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
        ),
        "{reply:?}"
    );
    assert_eq!(whoami(&owner).await, None, "the tab's logout holds");
    assert_eq!(
        app.sessions_of("bob").await,
        usize::from(whoami(&device).await.is_some())
    );
}

pub(crate) async fn a_store_failure_while_ending_a_device_ends_nothing_and_can_be_retried<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let device = logged_in(&app, "alice").await;
    let owner = logged_in(&app, "alice").await;
    let handle = other_handle(&owner).await;
    let listings = app.calls().list_user;
    for step in [StoreOp::Load, StoreOp::Delete] {
        app.store.fail_next(step);
        let reply = owner
            .call("DELETE", &format!("/devices/{handle}"), "")
            .await;
        assert_unavailable(&reply, &format!("failing at {step:?}"));
        assert_eq!(
            whoami(&device).await.as_deref(),
            Some("alice"),
            "failing at {step:?}: nothing ended"
        );
        assert_eq!(whoami(&owner).await.as_deref(), Some("alice"));
    }
    let reply = owner
        .call("DELETE", &format!("/devices/{handle}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "the retry works");
    assert_eq!(
        app.calls().list_user,
        listings,
        "no listing: the store checks the owner in the step that deletes"
    );
    assert_eq!(whoami(&device).await, None);
    assert_eq!(app.sessions_of("alice").await, 1);
}

pub(crate) async fn a_dropped_request_ending_a_device_leaves_it_live_or_ended<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    for step in [StoreOp::Load, StoreOp::Delete] {
        let device = logged_in(&app, "alice").await;
        let owner = logged_in(&app, "alice").await;
        let handle = other_handle(&owner).await;
        // The request is dropped while that store call is in flight.
        let mut pause = app.store.pause_next(step);
        let mut pending = owner.spawn("DELETE", &format!("/devices/{handle}"), "");
        until_paused(&mut pause, &mut pending).await;
        pending.abort();
        let _ = pending.await;
        pause.release();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The owner is untouched; the device is either still live (and the
        // owner can end it again) or ended, never half.
        assert_eq!(whoami(&owner).await.as_deref(), Some("alice"), "{step:?}");
        if whoami(&device).await.is_some() {
            let reply = owner
                .call("DELETE", &format!("/devices/{handle}"), "")
                .await;
            // 404 only if the dropped request's delete landed meanwhile.
            assert!(
                matches!(reply.status, StatusCode::NO_CONTENT | StatusCode::NOT_FOUND),
                "{step:?}: {reply:?}"
            );
        }
        assert_eq!(whoami(&device).await, None, "{step:?}");
        assert_eq!(app.sessions_of("alice").await, 1, "{step:?}");
        app.layer.admin().logout_everywhere("alice").await.unwrap();
    }
}
