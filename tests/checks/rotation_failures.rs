//! Store calls that fail, land without saying so, or are dropped
//! half-way through a login, regenerate or logout, on a multi-threaded
//! runtime: the user keeps exactly the sessions they should, and every
//! failed step can be retried.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::SessionStore;
use cloakroom::test_suite::StoreOp;

use crate::support::app::TestApp;
use crate::support::client::{logged_in, until_paused, whoami};

pub(crate) async fn a_store_failure_at_each_rotation_step_leaves_exactly_the_old_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    // `Retire` three times: a failed retire is asked twice more before
    // giving up.
    const RETIRES: [StoreOp; 3] = [StoreOp::Retire; 3];
    for (path, failing) in [
        ("/regenerate", &[StoreOp::Create][..]),
        ("/login/alice", &[StoreOp::Create]),
        ("/regenerate", &RETIRES),
        ("/login/alice", &RETIRES),
    ] {
        let mut browser = logged_in(&app, "alice").await;
        let before = app.sessions_of("alice").await;
        let old = browser.cookie.clone();
        for step in failing {
            app.store.fail_next(*step);
        }
        let reply = browser.post(path).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} {failing:?}"
        );
        assert!(reply.set_cookies().is_empty(), "{path} {failing:?}");
        assert_eq!(browser.cookie, old);
        assert_eq!(
            whoami(&browser).await.as_deref(),
            Some("alice"),
            "{path} failing at {failing:?}: still logged in"
        );
        // The new record is taken back, whichever step failed: a retire
        // that failed every time is checked by the take-back, which finds
        // the old session as it was.
        assert_eq!(
            app.sessions_of("alice").await,
            before,
            "{path} failing at {failing:?}"
        );
        // Once the store is back, the same request works.
        assert_eq!(browser.post(path).await.status, StatusCode::NO_CONTENT);
        assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
        assert_eq!(app.sessions_of("alice").await, before);
    }
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        4,
        "four devices, nothing left by failed retires"
    );

    // A retire that fails twice is asked again, and the move completes.
    let mut browser = logged_in(&app, "carol").await;
    app.store.fail_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&browser).await.as_deref(), Some("carol"));
    assert_eq!(app.sessions_of("carol").await, 1);

    // A first login that fails leaves no session at all.
    let mut anonymous = app.client();
    app.store.fail_next(StoreOp::Create);
    assert_eq!(
        anonymous.post("/login/bob").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(anonymous.cookie, None);
    assert_eq!(app.sessions_of("bob").await, 0);
}

pub(crate) async fn a_failed_cleanup_leaves_the_extra_session_within_reach_of_logout_everywhere<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let other_tab = browser.clone();
    // The regenerate has created its new record when another tab logs
    // out; deleting the new record then fails too.
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut pause, &mut pending).await;
    assert_eq!(
        other_tab.call("POST", "/logout", "").await.status,
        StatusCode::NO_CONTENT
    );
    app.store.fail_next(StoreOp::Delete);
    pause.release();
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no new ID handed out");
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(
        app.sessions_of("alice").await,
        1,
        "the new record nobody holds is still indexed"
    );
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
}

pub(crate) async fn store_calls_that_land_but_report_failure_never_leave_the_user_without_a_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);

    // The retire lands but is reported failed (a timeout): the retry finds
    // the forward it wrote, and the move completes.
    let mut browser = logged_in(&app, "alice").await;
    app.store.fail_after_next(StoreOp::Retire);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(!reply.set_cookies().is_empty(), "the new ID is handed out");
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);

    // The retire lands, and the first retry fails too: the third attempt
    // gets an answer (the forward it wrote), and the move completes. The
    // browser works on the new ID; the retired one leads nowhere.
    for (path, user) in [("/regenerate", "alice"), ("/login/alice", "alice")] {
        let retired = browser.clone();
        app.store.fail_after_next(StoreOp::Retire);
        app.store.fail_next(StoreOp::Retire);
        let reply = browser.post(path).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{path}");
        assert_ne!(browser.cookie, retired.cookie, "{path}: the new ID");
        assert_eq!(whoami(&browser).await.as_deref(), Some(user), "{path}");
        assert_eq!(whoami(&retired).await, None, "{path}: the old ID is dead");
        assert_eq!(app.sessions_of(user).await, 1, "{path}: exactly one");
    }
    // A planted anonymous session: the user gets their new session, and
    // the planted ID reaches none of it.
    let mut victim = app.client();
    victim.put("/set/planted", "1").await;
    let planted = victim.clone();
    app.store.fail_after_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    let reply = victim.post("/login/dave").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&victim).await.as_deref(), Some("dave"));
    assert_eq!(whoami(&planted).await, None, "fixation");
    assert_eq!(app.sessions_of("dave").await, 1);

    // No attempt gets an answer, though the first landed: the request
    // fails closed, handing out no cookie on a guess, and the take-back
    // finds the forward, gives the old ID its session back and deletes
    // the new record. The user is still logged in, on the old cookie.
    for (path, user) in [("/regenerate", "alice"), ("/login/alice", "alice")] {
        let kept = browser.clone();
        app.store.fail_after_next(StoreOp::Retire);
        app.store.fail_next(StoreOp::Retire);
        app.store.fail_next(StoreOp::Retire);
        let reply = browser.post(path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            reply.set_cookies().is_empty(),
            "{path}: no cookie on a guess"
        );
        assert_eq!(browser.cookie, kept.cookie);
        assert_eq!(
            whoami(&browser).await.as_deref(),
            Some(user),
            "{path}: the old ID works"
        );
        assert_eq!(
            app.sessions_of(user).await,
            1,
            "{path}: exactly the old one"
        );
    }
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
    // The same for a planted anonymous session: it gets back its own data
    // and nothing of the login.
    let mut victim = app.client();
    victim.put("/set/planted", "1").await;
    let planted = victim.clone();
    app.store.fail_after_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    let reply = victim.post("/login/erin").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(whoami(&planted).await, None, "no fixation");
    assert_eq!(planted.call("GET", "/get/planted", "").await.body, "1");
    assert_eq!(app.sessions_of("erin").await, 0);

    // The create lands but is reported failed: it is taken back, and the
    // old session is all there is.
    let mut browser = logged_in(&app, "bob").await;
    app.store.fail_after_next(StoreOp::Create);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(whoami(&browser).await.as_deref(), Some("bob"));
    assert_eq!(app.sessions_of("bob").await, 1, "exactly the old session");
}

/// Waits until `done` holds (the detached rest of a dropped request).
async fn eventually(mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the dropped request's rotation did not settle");
}

pub(crate) async fn a_request_dropped_at_each_rotation_step_leaves_exactly_one_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);

    // Dropped after regenerate() but before the commit: nothing moved.
    let browser = logged_in(&app, "alice").await;
    let pending = browser.spawn("POST", "/wait/regenerate-then-commit", "");
    app.barrier.wait().await;
    pending.abort();
    let _ = pending.await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1);

    // Dropped while the new record is being created: the browser never
    // gets the new ID, so the old session stays and the new one goes.
    let mut pause = app.store.pause_next(StoreOp::Create);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut pause, &mut pending).await;
    pending.abort();
    let _ = pending.await;
    let deletes = app.store.calls().delete;
    pause.release();
    // The delete is counted when it is sent: wait for it to land.
    eventually(async || app.store.calls().delete > deletes && app.has_sessions("alice", 1).await)
        .await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));

    // Dropped while the old record is being retired, or after it, during
    // a login's limit check: the new cookie never goes out, so the move is
    // taken back. The old ID keeps its session; the new record goes.
    for (path, step) in [
        ("/regenerate", StoreOp::Retire),
        ("/login/alice", StoreOp::Retire),
        ("/login/alice", StoreOp::ListUser),
    ] {
        browser.call("PUT", "/set/kept", "yes").await;
        let mut pause = app.store.pause_next(step);
        let mut pending = browser.spawn("POST", path, "");
        until_paused(&mut pause, &mut pending).await;
        let restores = app.store.calls().restore;
        let deletes = app.store.calls().delete;
        pending.abort();
        let _ = pending.await;
        pause.release();
        eventually(async || {
            let calls = app.store.calls();
            calls.restore > restores && calls.delete > deletes && app.has_sessions("alice", 1).await
        })
        .await;
        assert_eq!(
            whoami(&browser).await.as_deref(),
            Some("alice"),
            "{path} dropped at {step:?}: the old ID works"
        );
        assert_eq!(browser.call("GET", "/get/kept", "").await.body, "yes");
        assert_eq!(
            app.sessions_of("alice").await,
            1,
            "{path} dropped at {step:?}: exactly the old session"
        );
    }

    // A login from a planted anonymous session, dropped during its retire:
    // the planted ID gets back its anonymous session, never the login;
    // also when the request moved the session twice.
    for path in ["/login/mallory", "/login-then-regenerate/mallory"] {
        let mut victim = app.client();
        victim.put("/set/planted", "1").await;
        let mut pause = app.store.pause_next(StoreOp::Retire);
        let mut pending = victim.spawn("POST", path, "");
        until_paused(&mut pause, &mut pending).await;
        pending.abort();
        let _ = pending.await;
        let deletes = app.store.calls().delete;
        pause.release();
        eventually(async || {
            app.store.calls().delete > deletes && app.has_sessions("mallory", 0).await
        })
        .await;
        assert_eq!(whoami(&victim).await, None, "{path}: no fixation");
        assert_eq!(victim.call("GET", "/get/planted", "").await.body, "1");
        assert_eq!(app.sessions_of("mallory").await, 0, "{path}");
    }
}

/// Drops a regenerate of `browser` once its retire has landed, and holds
/// the take-back that follows at its restore.
async fn drop_a_regenerate_and_hold_its_take_back<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &crate::support::client::Client,
) -> cloakroom::test_suite::Pause {
    let mut retire = app.store.pause_next(StoreOp::Retire);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut retire, &mut pending).await;
    pending.abort();
    let _ = pending.await;
    let mut restore = app.store.pause_next(StoreOp::Restore);
    retire.release();
    restore.reached().await;
    restore
}

pub(crate) async fn a_take_back_racing_logout_everywhere_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let restore = drop_a_regenerate_and_hold_its_take_back(&app, &browser).await;
    // Logout-everywhere ends the new session; the old ID is a forward,
    // which it does not see.
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
    let deletes = app.store.calls().delete;
    restore.release();
    // The take-back restores the old session, finds the new one gone, and
    // ends the old one again.
    eventually(async || {
        app.store.calls().delete >= deletes + 2 && whoami(&browser).await.is_none()
    })
    .await;
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn a_take_back_racing_a_logout_along_the_forward_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let other_tab = browser.clone();
    let restore = drop_a_regenerate_and_hold_its_take_back(&app, &browser).await;
    // Another tab logs out with the old cookie: it finds the forward, and
    // is held before it ends the new session.
    let mut at_forward = app.store.pause_next(StoreOp::Delete);
    let mut logout = other_tab.spawn("POST", "/logout", "");
    until_paused(&mut at_forward, &mut logout).await;
    let mut at_successor = app.store.pause_next(StoreOp::Delete);
    at_forward.release();
    at_successor.reached().await;
    // Meanwhile the take-back completes: the old ID has its session back
    // and the new record is gone.
    let deletes = app.store.calls().delete;
    restore.release();
    eventually(async || app.store.calls().delete > deletes).await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    // The logout finds the new session gone, and ends the old ID's again.
    at_successor.release();
    let reply = logout.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&browser).await, None, "ended stays ended");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn failed_logouts_change_nothing_and_can_be_retried<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let _phone = logged_in(&app, "alice").await;
    app.store.fail_next(StoreOp::Delete);
    let reply = browser.call("POST", "/logout", "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.set_cookies().is_empty(),
        "the cookie stays with its session"
    );
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    app.store.fail_next(StoreOp::DeleteUser);
    let reply = browser.call("POST", "/logout-everywhere", "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.sessions_of("alice").await, 2);
    assert_eq!(
        browser.call("POST", "/logout-everywhere", "").await.body,
        "2"
    );
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn a_logout_that_failed_halfway_along_a_forward_can_be_retried<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let mut thief = browser.clone();
    assert_eq!(
        thief.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    // The owner's logout finds the forward, then fails to end the session
    // it leads to.
    app.store.pass_next(StoreOp::Delete);
    app.store.fail_next(StoreOp::Delete);
    let reply = browser.call("POST", "/logout", "").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not a logout"
    );
    assert_eq!(whoami(&thief).await.as_deref(), Some("alice"));
    // The retry follows the forward again.
    let reply = browser.call("POST", "/logout", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&thief).await, None);
    assert_eq!(app.sessions_of("alice").await, 0);
}
