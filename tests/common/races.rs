//! Races through a real axum `Router` on a multi-threaded runtime, generic
//! over the store. Each store's test file stamps them out with
//! `race_tests!`.

use std::time::Duration;

use axum::http::StatusCode;
use cloakroom::store::Touch;
use cloakroom::test_suite::StoreOp;
use cloakroom::{KeyRing, SessionStore};

use super::{key, with_handler_paused, Client, Reply, TestApp};

/// Stamps out one multi-threaded `#[tokio::test]` per race. The argument
/// evaluates to an `Option` of a store; `None` skips.
#[macro_export]
macro_rules! race_tests {
    ($make_store:expr) => {
        $crate::race_tests!(@checks $make_store;
            two_hundred_concurrent_writers_to_one_session_lose_nothing,
            a_logout_racing_two_hundred_writes_leaves_the_session_gone_for_good,
            logout_everywhere_racing_logins_leaves_no_earlier_session_and_an_exact_index,
            regenerate_racing_logout_everywhere_leaves_no_session,
            regenerate_racing_an_admin_logout_everywhere_leaves_no_session,
            regenerate_racing_a_logout_in_another_tab_leaves_no_session,
            a_logout_that_loaded_the_session_before_a_regenerate_ends_the_new_id_too,
            login_racing_logout_everywhere_leaves_no_session,
            remember_me_racing_a_logout_does_not_revive_the_session,
            logout_everywhere_racing_regenerates_leaves_nobody_logged_in,
            a_store_failure_at_each_rotation_step_leaves_exactly_the_old_session,
            a_failed_cleanup_leaves_the_extra_session_within_reach_of_logout_everywhere,
            store_calls_that_land_but_report_failure_never_leave_the_user_without_a_session,
            logout_everywhere_between_the_new_record_and_the_retire_leaves_no_session,
            logout_everywhere_that_loaded_the_session_before_a_login_as_another_user_ends_it,
            a_logout_everywhere_with_a_moved_cookie_ends_only_that_session,
            a_logout_that_failed_halfway_along_a_forward_can_be_retried,
            a_request_dropped_at_each_rotation_step_leaves_exactly_one_session,
            failed_logouts_change_nothing_and_can_be_retried,
            the_session_limit_evicts_the_least_recently_active,
        );
    };
    (@checks $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                match $make_store {
                    Some(store) => $crate::common::races::$check(store).await,
                    None => eprintln!("skipped {}: store not available", stringify!($check)),
                }
            }
        )*
    };
}

const WRITERS: usize = 200;

async fn send(client: &Client, method: &str, path: &str, body: &str) -> Reply {
    let request = client.request(method, path, body);
    client.clone().send(request).await
}

async fn whoami(client: &Client) -> Option<String> {
    let reply = send(client, "GET", "/whoami", "").await;
    match reply.status {
        StatusCode::OK => Some(reply.body),
        StatusCode::UNAUTHORIZED => None,
        other => panic!("unexpected status {other}"),
    }
}

async fn logged_in<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> Client {
    let mut client = app.client();
    let reply = client.post(&format!("/login/{user}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    client
}

pub async fn two_hundred_concurrent_writers_to_one_session_lose_nothing<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    client.put("/set/base", "1").await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { send(&client, "PUT", &format!("/set/k{i:03}"), "v").await })
        })
        .collect();
    for writer in writers {
        let reply = writer.await.expect("writer task");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.set_cookies().is_empty(), "the session stays the same");
    }
    let keys: Vec<String> = serde_json::from_str(&client.get("/keys").await.body).unwrap();
    assert_eq!(keys.len(), WRITERS + 1, "no concurrent write was lost");
    for i in 0..WRITERS {
        assert!(keys.contains(&format!("k{i:03}")), "k{i:03} lost");
    }
}

pub async fn a_logout_racing_two_hundred_writes_leaves_the_session_gone_for_good<
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
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                send(&client, "POST", "/logout", "").await
            }));
        }
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            send(&client, "PUT", &format!("/set/w{i:03}"), "v").await
        }));
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
    assert_eq!(send(&client, "GET", "/keys", "").await.body, "[]");
    let id = KeyRing::new(key(1)).verify(&cookie).expect("our cookie");
    let touch = Touch {
        now: cloakroom::Clock::now(&app.clock),
        after: 1.0,
    };
    let stored = app
        .store
        .inner()
        .load(&id.store_key(), touch)
        .await
        .unwrap();
    assert_eq!(stored, None, "no write brought the record back");
    assert!(app
        .layer
        .admin()
        .list_sessions("alice")
        .await
        .unwrap()
        .is_empty());
}

pub async fn logout_everywhere_racing_logins_leaves_no_earlier_session_and_an_exact_index<
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
    let logout = {
        let client = earlier[0].clone();
        tokio::spawn(async move { send(&client, "POST", "/logout-everywhere", "").await })
    };
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

/// How many live sessions the user has, by the store's own count and by
/// its listing (which must agree).
async fn sessions_of<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> usize {
    let admin = app.layer.admin();
    let counted = admin.count_sessions(user).await.unwrap();
    let listed = admin.list_sessions(user).await.unwrap().len();
    assert_eq!(counted as usize, listed, "count and listing agree");
    listed
}

/// A second device of the same user.
async fn other_device<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> Client {
    logged_in(app, user).await
}

pub async fn regenerate_racing_logout_everywhere_leaves_no_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let thief = logged_in(&app, "alice").await;
    let owner = other_device(&app, "alice").await;
    // The thief's request has asked for a new ID; before it commits, the
    // owner logs out everywhere.
    let reply = with_handler_paused(
        &app,
        &thief,
        "POST",
        "/wait/regenerate-then-commit",
        async {
            let reply = send(&owner, "POST", "/logout-everywhere", "").await;
            assert_eq!(reply.body, "2", "both sessions ended");
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no new ID handed out");
    let mut thief = thief;
    thief.absorb(&reply);
    assert_eq!(whoami(&thief).await, None, "the thief is logged out");
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn regenerate_racing_an_admin_logout_everywhere_leaves_no_session<
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
    assert!(reply.set_cookies().is_empty());
    assert_eq!(whoami(&thief).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn regenerate_racing_a_logout_in_another_tab_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let other_tab = browser.clone();
    let reply = with_handler_paused(
        &app,
        &browser,
        "POST",
        "/wait/regenerate-then-commit",
        async {
            let reply = send(&other_tab, "POST", "/logout", "").await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT);
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no new ID handed out");
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn a_logout_that_loaded_the_session_before_a_regenerate_ends_the_new_id_too<
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
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn login_racing_logout_everywhere_leaves_no_session<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let device = logged_in(&app, "alice").await;
    let owner = other_device(&app, "alice").await;
    // Logging in again (re-entering the password) on a device whose session
    // logout-everywhere ends before the login commits.
    let reply = with_handler_paused(
        &app,
        &device,
        "POST",
        "/wait/login-then-commit/alice",
        async {
            send(&owner, "POST", "/logout-everywhere", "").await;
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(whoami(&device).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);

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

pub async fn remember_me_racing_a_logout_does_not_revive_the_session<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let other_tab = browser.clone();
    let reply = with_handler_paused(
        &app,
        &browser,
        "POST",
        "/wait/remember-then-commit",
        async {
            send(&other_tab, "POST", "/logout", "").await;
        },
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.set_cookies().is_empty(),
        "no persistent cookie for a dead session"
    );
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn logout_everywhere_racing_regenerates_leaves_nobody_logged_in<
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
        for (i, device) in devices.iter().enumerate() {
            if i == DEVICES / 2 {
                let owner = owner.clone();
                tasks.push(tokio::spawn(async move {
                    let reply = send(&owner, "POST", "/logout-everywhere", "").await;
                    (None, reply)
                }));
            }
            let device = device.clone();
            tasks.push(tokio::spawn(async move {
                let mut device = device;
                let reply = device
                    .clone()
                    .send(device.request("POST", "/regenerate", ""))
                    .await;
                device.absorb(&reply);
                (Some(device), reply)
            }));
        }
        let mut after = Vec::new();
        for task in tasks {
            let (device, reply) = task.await.unwrap();
            assert!(reply.status.is_success(), "{}", reply.status);
            after.extend(device);
        }
        // Every session existed before logout-everywhere started, so none
        // may survive it, whichever ID it moved to meanwhile.
        for device in after.iter().chain(&devices).chain([&owner]) {
            assert_eq!(
                whoami(device).await,
                None,
                "round {round}: a session escaped logout-everywhere"
            );
        }
        assert_eq!(sessions_of(&app, "alice").await, 0);
    }
}

pub async fn a_store_failure_at_each_rotation_step_leaves_exactly_the_old_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    // `Retire` twice: a failed retire is asked again before giving up.
    for (path, failing) in [
        ("/regenerate", &[StoreOp::Create][..]),
        ("/login/alice", &[StoreOp::Create]),
        ("/regenerate", &[StoreOp::Retire, StoreOp::Retire]),
        ("/login/alice", &[StoreOp::Retire, StoreOp::Retire]),
    ] {
        let mut browser = logged_in(&app, "alice").await;
        let before = sessions_of(&app, "alice").await;
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
        // A failed create is taken back. A retire that failed twice may
        // have landed (a timeout), so the new record stays: one session
        // too many rather than none, and within reach of logout-everywhere.
        let extra = usize::from(failing[0] == StoreOp::Retire);
        assert_eq!(
            sessions_of(&app, "alice").await,
            before + extra,
            "{path} failing at {failing:?}"
        );
        // Once the store is back, the same request works.
        assert_eq!(browser.post(path).await.status, StatusCode::NO_CONTENT);
        assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
        assert_eq!(sessions_of(&app, "alice").await, before + extra);
    }
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        6,
        "four devices and two records left by failed retires"
    );

    // A retire that fails once is asked again, and the move completes.
    let mut browser = logged_in(&app, "carol").await;
    app.store.fail_next(StoreOp::Retire);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&browser).await.as_deref(), Some("carol"));
    assert_eq!(sessions_of(&app, "carol").await, 1);

    // A first login that fails leaves no session at all.
    let mut anonymous = app.client();
    app.store.fail_next(StoreOp::Create);
    assert_eq!(
        anonymous.post("/login/bob").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(anonymous.cookie, None);
    assert_eq!(sessions_of(&app, "bob").await, 0);
}

pub async fn a_failed_cleanup_leaves_the_extra_session_within_reach_of_logout_everywhere<
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
    let request = browser.request("POST", "/regenerate", "");
    let pending = tokio::spawn({
        let mut c = browser.clone();
        async move { c.send(request).await }
    });
    pause.reached().await;
    assert_eq!(
        send(&other_tab, "POST", "/logout", "").await.status,
        StatusCode::NO_CONTENT
    );
    app.store.fail_next(StoreOp::Delete);
    pause.release();
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no new ID handed out");
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(
        sessions_of(&app, "alice").await,
        1,
        "the new record nobody holds is still indexed"
    );
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
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

pub async fn a_request_dropped_at_each_rotation_step_leaves_exactly_one_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);

    // Dropped after regenerate() but before the commit: nothing moved.
    let browser = logged_in(&app, "alice").await;
    let request = browser.request("POST", "/wait/regenerate-then-commit", "");
    let pending = tokio::spawn({
        let mut c = browser.clone();
        async move { c.send(request).await }
    });
    app.barrier.wait().await;
    pending.abort();
    let _ = pending.await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    assert_eq!(sessions_of(&app, "alice").await, 1);

    // Dropped while the new record is being created: the browser never
    // gets the new ID, so the old session stays and the new one goes.
    let mut pause = app.store.pause_next(StoreOp::Create);
    let request = browser.request("POST", "/regenerate", "");
    let pending = tokio::spawn({
        let mut c = browser.clone();
        async move { c.send(request).await }
    });
    pause.reached().await;
    pending.abort();
    let _ = pending.await;
    let deletes = app.store.calls().delete;
    pause.release();
    eventually(async || app.store.calls().delete > deletes).await;
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    assert_eq!(
        sessions_of(&app, "alice").await,
        1,
        "exactly the old session"
    );

    // Dropped while the old record is being retired: the move completes,
    // leaving exactly the new session (which logout-everywhere reaches).
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let request = browser.request("POST", "/regenerate", "");
    let pending = tokio::spawn({
        let mut c = browser.clone();
        async move { c.send(request).await }
    });
    pause.reached().await;
    pending.abort();
    let _ = pending.await;
    pause.release();
    eventually(async || whoami(&browser).await.is_none()).await;
    assert_eq!(
        sessions_of(&app, "alice").await,
        1,
        "exactly the new session"
    );
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        1
    );
}

pub async fn failed_logouts_change_nothing_and_can_be_retried<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    let _phone = other_device(&app, "alice").await;
    app.store.fail_next(StoreOp::Delete);
    let reply = send(&browser, "POST", "/logout", "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.set_cookies().is_empty(),
        "the cookie stays with its session"
    );
    assert_eq!(whoami(&browser).await.as_deref(), Some("alice"));
    app.store.fail_next(StoreOp::DeleteUser);
    let reply = send(&browser, "POST", "/logout-everywhere", "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sessions_of(&app, "alice").await, 2);
    assert_eq!(
        send(&browser, "POST", "/logout-everywhere", "").await.body,
        "2"
    );
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn the_session_limit_evicts_the_least_recently_active<S: SessionStore + Clone>(store: S) {
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
    assert_eq!(sessions_of(&app, "alice").await, LIMIT);
    assert_eq!(
        whoami(&devices[1]).await,
        None,
        "the least recently active ended"
    );
    for client in [&devices[0], &devices[2], &newest] {
        assert_eq!(whoami(client).await.as_deref(), Some("alice"));
    }

    // Logins at the same moment never end each other's new sessions; they
    // overshoot by at most their number.
    const AT_ONCE: usize = 12;
    app.clock.advance(Duration::from_secs(1));
    let logins: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let mut client = app.client();
            tokio::spawn(async move {
                let request = client.request("POST", "/login/alice", "");
                let reply = client.clone().send(request).await;
                assert_eq!(reply.status, StatusCode::NO_CONTENT);
                client.absorb(&reply);
                client
            })
        })
        .collect();
    let mut at_once = Vec::new();
    for login in logins {
        at_once.push(login.await.unwrap());
    }
    for client in &at_once {
        assert_eq!(
            whoami(client).await.as_deref(),
            Some("alice"),
            "a login running at the same moment ended another's new session"
        );
    }
    let count = sessions_of(&app, "alice").await;
    assert!(
        (LIMIT..=LIMIT + AT_ONCE).contains(&count),
        "{count}: over by at most the logins at once, never under"
    );
    app.clock.advance(Duration::from_secs(1));
    let last = logged_in(&app, "alice").await;
    assert_eq!(
        sessions_of(&app, "alice").await,
        LIMIT,
        "the next login trims"
    );
    assert_eq!(whoami(&last).await.as_deref(), Some("alice"));
}

pub async fn store_calls_that_land_but_report_failure_never_leave_the_user_without_a_session<
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
    assert_eq!(sessions_of(&app, "alice").await, 1);

    // The retire lands, and the retry fails too: the outcome is unknown,
    // so the new record stays. The browser (still on the retired ID) is
    // logged out, but the user keeps one session, within reach.
    app.store.fail_after_next(StoreOp::Retire);
    app.store.fail_next(StoreOp::Retire);
    let reply = browser.post("/regenerate").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sessions_of(&app, "alice").await, 1, "never zero");
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
    assert_eq!(sessions_of(&app, "bob").await, 1, "exactly the old session");
}

pub async fn logout_everywhere_between_the_new_record_and_the_retire_leaves_no_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let browser = logged_in(&app, "alice").await;
    // The regenerate has created the new record and is about to retire the
    // old one when logout-everywhere runs.
    let mut pause = app.store.pause_next(StoreOp::Retire);
    let request = browser.request("POST", "/regenerate", "");
    let pending = tokio::spawn({
        let mut c = browser.clone();
        async move { c.send(request).await }
    });
    pause.reached().await;
    assert_eq!(
        sessions_of(&app, "alice").await,
        2,
        "old and new, both indexed"
    );
    assert_eq!(
        app.layer.admin().logout_everywhere("alice").await.unwrap(),
        2
    );
    pause.release();
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.set_cookies().is_empty(), "no new ID handed out");
    assert_eq!(whoami(&browser).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);
}

pub async fn logout_everywhere_that_loaded_the_session_before_a_login_as_another_user_ends_it<
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
    assert_eq!(sessions_of(&app, "alice").await, 0);
    assert_eq!(sessions_of(&app, "bob").await, 0);
}

pub async fn a_logout_everywhere_with_a_moved_cookie_ends_only_that_session<
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
    let reply = send(&laptop, "POST", "/logout-everywhere", "").await;
    assert_eq!(reply.body, "1", "the moved session, and nothing else");
    assert_eq!(whoami(&moved).await, None);
    assert_eq!(
        whoami(&phone).await.as_deref(),
        Some("alice"),
        "an old ID has no authority over the user's other sessions"
    );
}

pub async fn a_logout_that_failed_halfway_along_a_forward_can_be_retried<
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
    let reply = send(&browser, "POST", "/logout", "").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not a logout"
    );
    assert_eq!(whoami(&thief).await.as_deref(), Some("alice"));
    // The retry follows the forward again.
    let reply = send(&browser, "POST", "/logout", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&thief).await, None);
    assert_eq!(sessions_of(&app, "alice").await, 0);
}
