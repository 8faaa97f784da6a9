//! Store calls that fail, land without saying so, or are dropped
//! half-way through a login, regenerate or logout, on a multi-threaded
//! runtime: the user keeps exactly the sessions they should, and every
//! failed step can be retried.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::test_suite::StoreOp;
use cloakroom::SessionStore;

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
        // A failed create is taken back. A retire that failed every time
        // may have landed (a timeout), so the new record stays: one session
        // too many rather than none, and within reach of logout-everywhere.
        let extra = usize::from(failing[0] == StoreOp::Retire);
        assert_eq!(
            app.sessions_of("alice").await,
            before + extra,
            "{path} failing at {failing:?}"
        );
        // Once the store is back, the same request works.
        assert_eq!(browser.post(path).await.status, StatusCode::NO_CONTENT);
        assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
        assert_eq!(app.sessions_of("alice").await, before + extra);
    }
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        6,
        "four devices and two records left by failed retires"
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

    // No attempt gets an answer: whether the old session ended meanwhile
    // (a logout in another tab) is unknown, so the request fails closed,
    // handing out no cookie that could revive it. The new record stays,
    // within reach of logout-everywhere.
    let stranded = browser.clone();
    app.store.fail_after_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.set_cookies().is_empty(), "no cookie on a guess");
    assert_eq!(browser.cookie, stranded.cookie);
    assert_eq!(app.sessions_of("alice").await, 1, "never zero in the store");
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );

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
    eventually(async || app.store.calls().delete > deletes).await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, 1, "exactly the old session");

    // Dropped while the old record is being retired: the move completes,
    // leaving exactly the new session (which logout-everywhere reaches).
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut pause, &mut pending).await;
    pending.abort();
    let _ = pending.await;
    pause.release();
    eventually(async || whoami(&browser).await.is_none()).await;
    assert_eq!(app.sessions_of("alice").await, 1, "exactly the new session");
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
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
