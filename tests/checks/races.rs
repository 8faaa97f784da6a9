//! Races on a multi-threaded runtime: concurrent writers, logouts and
//! logout-everywhere against writes, logins and regenerates, and the
//! per-user session limit under concurrent logins.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::Touch;
use cloakroom::test_suite::StoreOp;
use cloakroom::{store::SessionStore, KeyRing};

use crate::support::app::{key, TestApp};
use crate::support::client::{logged_in, until_paused, whoami, with_handler_paused, Client};
use crate::support::reply::Reply;

/// How many requests race each other in the two-hundred-writers checks.
const WRITERS: usize = 200;

/// Logs alice in on two devices, sends `POST path` (a `/wait/...` route)
/// from the first, and while its handler is held, logs out everywhere from
/// the second. Returns the first device and its reply.
async fn logout_everywhere_on_another_device_during<S: SessionStore + Clone>(
    app: &TestApp<S>,
    path: &str,
) -> (Client, Reply) {
    let device = logged_in(app, "alice").await;
    let owner = logged_in(app, "alice").await;
    let reply = with_handler_paused(app, &device, "POST", path, async {
        let reply = owner.call("POST", "/logout-everywhere", "").await;
        assert_eq!(reply.body, "2", "both sessions ended");
    })
    .await;
    (device, reply)
}

/// Logs alice in, sends `POST path` (a `/wait/...` route), and while its
/// handler is held, logs out in another tab of the same browser. Returns
/// the browser and the reply.
async fn logout_in_another_tab_during<S: SessionStore + Clone>(
    app: &TestApp<S>,
    path: &str,
) -> (Client, Reply) {
    let browser = logged_in(app, "alice").await;
    let other_tab = browser.clone();
    let reply = with_handler_paused(app, &browser, "POST", path, async {
        let reply = other_tab.call("POST", "/logout", "").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    })
    .await;
    (browser, reply)
}

/// What a request that changed alice's session (a regenerate, a login, a
/// remember-me) must leave when a logout ended that session before the
/// change was committed: the request answered, no cookie handed out for
/// the ended session, `browser` logged out, and no session of alice's
/// anywhere.
async fn assert_lost_to_the_logout<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &Client,
    reply: &Reply,
) {
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.set_cookies().is_empty(),
        "no cookie for the ended session"
    );
    assert_eq!(whoami(browser).await, None, "logged out");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn two_hundred_concurrent_writers_to_one_session_lose_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/base", "1").await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| client.spawn("PUT", &format!("/set/k{i:03}"), "v"))
        .collect();
    for writer in writers {
        let reply = writer.await.expect("writer task");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.set_cookies().is_empty(), "the session stays the same");
    }
    let keys: Vec<String> = client.get("/keys").await.json();
    assert_eq!(keys.len(), WRITERS + 1, "no concurrent write was lost");
    for i in 0..WRITERS {
        assert!(keys.contains(&format!("k{i:03}")), "k{i:03} lost");
    }
}

pub(crate) async fn a_logout_racing_two_hundred_writes_leaves_the_session_gone_for_good<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().unwrap();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        if i == WRITERS / 2 {
            tasks.push(client.spawn("POST", "/logout", ""));
        }
        tasks.push(client.spawn("PUT", &format!("/set/w{i:03}"), "v"));
    }
    for task in tasks {
        let reply = task.await.expect("task");
        assert!(reply.status.is_success(), "{}", reply.status);
        for set_cookie in reply.set_cookies() {
            assert!(
                !set_cookie.starts_with(&format!("{}={cookie}", client.cookie_name)),
                "the logged-out ID was handed out again: {set_cookie}"
            );
        }
    }
    // The old cookie names nothing, now and later.
    assert_eq!(whoami(&client).await, None);
    assert_eq!(client.call("GET", "/keys", "").await.body, "[]");
    let id = KeyRing::new(key(1)).verify(&cookie).expect("our cookie");
    let touch = Touch {
        now: cloakroom::test_suite::Clock::now(&app.clock),
        after: 1.0,
    };
    let stored = app
        .store
        .inner()
        .load(&id.store_key(), touch)
        .await
        .unwrap();
    assert_eq!(stored, None, "no write brought the record back");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn logout_everywhere_racing_logins_leaves_no_earlier_session_and_an_exact_index<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const EARLIER: usize = 20;
    const RACING: usize = 50;
    let app = TestApp::new(store);
    let mut earlier = Vec::new();
    for _ in 0..EARLIER {
        earlier.push(logged_in(&app, "alice").await);
    }
    let mut logins = Vec::new();
    let logout = earlier[0].spawn("POST", "/logout-everywhere", "");
    for _ in 0..RACING {
        let app_client = app.client();
        logins.push(tokio::spawn(async move {
            let mut client = app_client;
            let reply = client.post("/login/alice").await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT);
            client
        }));
    }
    assert_eq!(logout.await.unwrap().status, StatusCode::OK);
    let mut racing = Vec::new();
    for login in logins {
        racing.push(login.await.unwrap());
    }
    for client in &earlier {
        assert_eq!(whoami(client).await, None, "a session from before survived");
    }
    // Every racing login that survived is in the user's index: the next
    // logout-everywhere must be able to reach it.
    let mut survivors = 0;
    for client in &racing {
        if whoami(client).await.is_some() {
            survivors += 1;
        }
    }
    let listed = app.layer.admin().list_sessions("alice").await.unwrap();
    assert_eq!(listed.len(), survivors, "index and live sessions agree");
    app.layer.admin().logout_everywhere("alice").await.unwrap();
    for client in racing.iter().chain(&earlier) {
        assert_eq!(
            whoami(client).await,
            None,
            "nothing escapes logout-everywhere"
        );
    }
}

pub(crate) async fn logout_everywhere_racing_regenerates_leaves_nobody_logged_in<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const DEVICES: usize = 60;
    const ROUNDS: usize = 8;
    let app = TestApp::new(store);
    for round in 0..ROUNDS {
        let mut devices = Vec::new();
        for _ in 0..DEVICES {
            devices.push(logged_in(&app, "alice").await);
        }
        // The owner's device takes no part in the regenerates: a cookie
        // that moved has authority over its own session only.
        let owner = logged_in(&app, "alice").await;
        let mut tasks = Vec::new();
        let mut logout = None;
        for (i, device) in devices.iter().enumerate() {
            if i == DEVICES / 2 {
                logout = Some(owner.spawn("POST", "/logout-everywhere", ""));
            }
            tasks.push(device.spawn_post("/regenerate"));
        }
        let mut after = Vec::new();
        for task in tasks {
            let (device, reply) = task.await.unwrap();
            assert!(reply.status.is_success(), "{}", reply.status);
            after.push(device);
        }
        let reply = logout.expect("sent").await.unwrap();
        assert!(reply.status.is_success(), "{}", reply.status);
        // Every session existed before logout-everywhere started, so none
        // may survive it, whichever ID it moved to meanwhile.
        for device in after.iter().chain(&devices).chain([&owner]) {
            assert_eq!(
                whoami(device).await,
                None,
                "round {round}: a session escaped logout-everywhere"
            );
        }
        assert_eq!(app.sessions_of("alice").await, 0);
    }
}

pub(crate) async fn ending_all_sessions_racing_regenerates_and_logins_leaves_only_the_later_logins<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const DEVICES: usize = 40;
    const LOGINS: usize = 10;
    const ROUNDS: usize = 4;
    let app = TestApp::new(store);
    for round in 0..ROUNDS {
        let mut devices = Vec::new();
        for i in 0..DEVICES {
            devices.push(logged_in(&app, ["alice", "bob"][i % 2]).await);
        }
        // The cutoff is taken and the first pass held; then the clock
        // moves on, so the logins below come after the cutoff, while the
        // regenerates keep their sessions' creation times.
        let mut pause = app.store.pause_next(StoreOp::DeleteAll);
        let admin = app.layer.admin();
        let ending = tokio::spawn(async move { admin.end_all_sessions().await });
        pause.reached().await;
        app.clock.advance(Duration::from_secs(1));
        let mut pause = Some(pause);
        let mut tasks = Vec::new();
        for (i, device) in devices.iter().enumerate() {
            if i == DEVICES / 2 {
                // Released while half the regenerates are on their way.
                if let Some(pause) = pause.take() {
                    pause.release();
                }
            }
            tasks.push(device.spawn_post("/regenerate"));
        }
        let logins: Vec<_> = (0..LOGINS)
            .map(|_| app.client().spawn_post("/login/carol"))
            .collect();
        let ended = ending.await.unwrap().expect("every pass succeeds");
        assert!(ended <= DEVICES as u64 * 2, "round {round}: {ended}");
        let mut after = Vec::new();
        for task in tasks {
            let (device, reply) = task.await.unwrap();
            assert!(reply.status.is_success(), "{}", reply.status);
            after.push(device);
        }
        let mut later = Vec::new();
        for login in logins {
            let (client, reply) = login.await.unwrap();
            assert_eq!(reply.status, StatusCode::NO_CONTENT);
            later.push(client);
        }
        // Every device's session existed before the cutoff, so none may
        // survive, whichever ID it moved to meanwhile.
        for device in after.iter().chain(&devices) {
            assert_eq!(
                whoami(device).await,
                None,
                "round {round}: a session escaped the end of all sessions"
            );
        }
        assert_eq!(app.sessions_of("alice").await, 0);
        assert_eq!(app.sessions_of("bob").await, 0);
        for client in &later {
            assert_eq!(
                whoami(client).await.as_deref(),
                Some("carol"),
                "round {round}: a login after the cutoff stays"
            );
        }
        assert_eq!(
            app.layer.admin().logout_everywhere("carol").await.unwrap(),
            LOGINS as u64
        );
    }
}

pub(crate) async fn regenerate_racing_logout_everywhere_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    // The thief's request has asked for a new ID; before it commits, the
    // owner logs out everywhere.
    let (thief, reply) =
        logout_everywhere_on_another_device_during(&app, "/wait/regenerate-then-commit").await;
    assert_lost_to_the_logout(&app, &thief, &reply).await;
}

pub(crate) async fn regenerate_racing_an_admin_logout_everywhere_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let thief = logged_in(&app, "alice").await;
    let reply = with_handler_paused(
        &app,
        &thief,
        "POST",
        "/wait/regenerate-then-commit",
        async {
            let ended = app.layer.admin().logout_everywhere("alice").await.unwrap();
            assert_eq!(ended, 1);
        },
    )
    .await;
    assert_lost_to_the_logout(&app, &thief, &reply).await;
}

pub(crate) async fn regenerate_racing_a_logout_in_another_tab_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let (browser, reply) = logout_in_another_tab_during(&app, "/wait/regenerate-then-commit").await;
    assert_lost_to_the_logout(&app, &browser, &reply).await;
}

pub(crate) async fn a_logout_that_loaded_the_session_before_a_regenerate_ends_the_new_id_too<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let mut regenerating_tab = browser.clone();
    // The logout has loaded the session; the other tab's regenerate then
    // runs from start to finish and hands out a new ID; then the logout
    // deletes the old ID.
    let reply = with_handler_paused(&app, &browser, "POST", "/wait/load-then-logout", async {
        let reply = regenerating_tab.post("/regenerate").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(regenerating_tab.cookie != browser.cookie, "a new ID");
        assert_eq!(whoami(&regenerating_tab).await.as_deref(), Some("alice"));
    })
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&regenerating_tab).await,
        None,
        "the logout followed the session to its new ID"
    );
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn login_racing_logout_everywhere_leaves_no_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    // Logging in again (re-entering the password) on a device whose session
    // logout-everywhere ends before the login commits.
    let (device, reply) =
        logout_everywhere_on_another_device_during(&app, "/wait/login-then-commit/alice").await;
    assert_lost_to_the_logout(&app, &device, &reply).await;

    // A login from no session at all that commits after logout-everywhere
    // is a new login: it stands, and the next logout-everywhere ends it.
    let mut fresh = app.client();
    let reply = with_handler_paused(
        &app,
        &fresh,
        "POST",
        "/wait/login-then-commit/alice",
        async {
            app.layer.admin().logout_everywhere("alice").await.unwrap();
        },
    )
    .await;
    fresh.absorb(&reply);
    assert_eq!(whoami(&fresh).await.as_deref(), Some("alice"));
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
    assert_eq!(whoami(&fresh).await, None);
}

pub(crate) async fn remember_me_racing_a_logout_does_not_revive_the_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let (browser, reply) = logout_in_another_tab_during(&app, "/wait/remember-then-commit").await;
    assert_lost_to_the_logout(&app, &browser, &reply).await;
}

pub(crate) async fn logout_everywhere_between_the_new_record_and_the_retire_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    // The regenerate has created the new record and is about to retire the
    // old one when logout-everywhere runs.
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let mut pending = browser.spawn("POST", "/regenerate", "");
    until_paused(&mut pause, &mut pending).await;
    assert_eq!(
        app.sessions_of("alice").await,
        2,
        "old and new, both indexed"
    );
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        2
    );
    pause.release();
    let reply = pending.await.unwrap();
    assert_lost_to_the_logout(&app, &browser, &reply).await;
}

pub(crate) async fn logout_everywhere_that_loaded_the_session_before_a_login_as_another_user_ends_it<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let mut other_tab = browser.clone();
    let reply = with_handler_paused(
        &app,
        &browser,
        "POST",
        "/wait/load-then-logout-everywhere",
        async {
            // Another tab logs in as bob: alice's session moves to bob's.
            let reply = other_tab.post("/login/bob").await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT);
            assert_eq!(whoami(&other_tab).await.as_deref(), Some("bob"));
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        whoami(&other_tab).await,
        None,
        "the logout followed the session it loaded to its new ID"
    );
    assert_eq!(app.sessions_of("alice").await, 0);
    assert_eq!(app.sessions_of("bob").await, 0);
}

pub(crate) async fn a_logout_everywhere_with_a_moved_cookie_ends_only_that_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let phone = logged_in(&app, "alice").await;
    let laptop = logged_in(&app, "alice").await;
    let mut moved = laptop.clone();
    assert_eq!(
        moved.post("/regenerate").await.status,
        StatusCode::NO_CONTENT
    );
    // The old cookie arrives after the move, within the forward's life.
    let reply = laptop.call("POST", "/logout-everywhere", "").await;
    assert_eq!(reply.body, "1", "the moved session, and nothing else");
    assert_eq!(whoami(&moved).await, None);
    assert_eq!(
        whoami(&phone).await.as_deref(),
        Some("alice"),
        "an old ID has no authority over the user's other sessions"
    );
}

pub(crate) async fn the_session_limit_evicts_the_least_recently_active<S: SessionStore + Clone>(
    store: S,
) {
    const LIMIT: usize = 3;
    let app = TestApp::with(store, |b| b.max_sessions_per_user(Some(LIMIT)));
    let mut devices = Vec::new();
    for _ in 0..LIMIT {
        devices.push(logged_in(&app, "alice").await);
        // Past the touch threshold (a tenth of the 30-minute idle window).
        app.clock.advance(Duration::from_secs(200));
    }
    // The first device is the most recently active of the three.
    assert_eq!(whoami(&devices[0]).await.as_deref(), Some("alice"));
    let newest = logged_in(&app, "alice").await;
    assert_eq!(app.sessions_of("alice").await, LIMIT);
    assert_eq!(
        whoami(&devices[1]).await,
        None,
        "the least recently active ended"
    );
    for client in [&devices[0], &devices[2], &newest] {
        assert_eq!(whoami(client).await.as_deref(), Some("alice"));
    }
}

pub(crate) async fn a_failed_limit_check_keeps_the_login_and_the_next_login_trims<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const LIMIT: usize = 2;
    let app = TestApp::with(store, |b| b.max_sessions_per_user(Some(LIMIT)));
    // A second apart, so that each login ranks first.
    let tick = || app.clock.advance(Duration::from_secs(1));
    for _ in 0..LIMIT {
        logged_in(&app, "alice").await;
        tick();
    }
    // The check's listing fails: the login itself succeeded and stands,
    // one over the limit.
    app.store.fail_next(StoreOp::ListUser);
    let over = logged_in(&app, "alice").await;
    tick();
    assert_eq!(whoami(&over).await.as_deref(), Some("alice"));
    assert_eq!(app.sessions_of("alice").await, LIMIT + 1);
    // Ending one of the extra sessions fails too: still working.
    app.store.fail_next(StoreOp::Delete);
    let again = logged_in(&app, "alice").await;
    tick();
    assert_eq!(whoami(&again).await.as_deref(), Some("alice"));
    // The next login with the store well trims back to the limit.
    let last = logged_in(&app, "alice").await;
    assert_eq!(app.sessions_of("alice").await, LIMIT);
    assert_eq!(whoami(&last).await.as_deref(), Some("alice"));
}

pub(crate) async fn a_login_in_flight_is_the_one_session_over_the_limit_until_its_check<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const LIMIT: usize = 2;
    let app = TestApp::with(store, |b| b.max_sessions_per_user(Some(LIMIT)));
    for _ in 0..LIMIT {
        logged_in(&app, "alice").await;
        app.clock.advance(Duration::from_secs(1));
    }
    // The next login has stored its session and is held before its check
    // lists the user's sessions: the bound in flight is the limit plus one
    // per login in that state.
    let mut pause = app.store.pause_next(StoreOp::ListUser);
    let mut pending = app.client().spawn("POST", "/login/alice", "");
    until_paused(&mut pause, &mut pending).await;
    assert_eq!(app.sessions_of("alice").await, LIMIT + 1);
    pause.release();
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(!reply.set_cookies().is_empty(), "the newest login stays");
    assert_eq!(app.sessions_of("alice").await, LIMIT, "back within it");
}

pub(crate) async fn the_session_limit_holds_through_bursts_of_logins_in_one_second<
    S: SessionStore + Clone,
>(
    store: S,
) {
    const LIMIT: usize = 3;
    let app = TestApp::with(store, |b| b.max_sessions_per_user(Some(LIMIT)));
    // The clock stands still: every login below happens in the same second.
    let mut sequential = Vec::new();
    for n in 1..=10 {
        // Not `logged_in`: a login outranked at once hands out no cookie.
        let mut client = app.client();
        let reply = client.post("/login/alice").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        sequential.push(client);
        assert_eq!(
            app.sessions_of("alice").await,
            n.min(LIMIT),
            "after login {n} in one second"
        );
    }
    // Exactly the sessions left are signed in: ties went by key, the same
    // way for every login.
    let mut signed_in = 0;
    for client in &sequential {
        if whoami(client).await.is_some() {
            signed_in += 1;
        }
    }
    assert_eq!(signed_in, LIMIT);

    // Logins at once, a second later: while they run, each may add its
    // session before trimming (the limit plus the logins in flight); once
    // all have answered, every check having agreed on one order, exactly
    // the first `LIMIT` in it stay: all of them the burst's (newer than
    // every earlier session), each held by the browser that logged in.
    app.clock.advance(Duration::from_secs(1));
    const AT_ONCE: usize = 24;
    let logins: Vec<_> = (0..AT_ONCE)
        .map(|_| app.client().spawn_post("/login/alice"))
        .collect();
    let mut at_once = Vec::new();
    for login in logins {
        let (client, reply) = login.await.unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        at_once.push(client);
    }
    assert_eq!(
        app.sessions_of("alice").await,
        LIMIT,
        "after {AT_ONCE} logins at once, with a limit of {LIMIT}"
    );
    let mut signed_in = 0;
    for client in &at_once {
        if whoami(client).await.is_some() {
            signed_in += 1;
        }
    }
    assert_eq!(signed_in, LIMIT, "every session left is one of the burst's");
    app.clock.advance(Duration::from_secs(1));
    let last = logged_in(&app, "alice").await;
    assert_eq!(app.sessions_of("alice").await, LIMIT, "the next login too");
    assert_eq!(whoami(&last).await.as_deref(), Some("alice"));
}
