//! Races through a real axum `Router` on a multi-threaded runtime, generic
//! over the store. Each store's test file stamps them out with
//! `race_tests!`.

use axum::http::StatusCode;
use cloakroom::{KeyRing, SessionStore, Touch};

use super::{key, Client, Reply, TestApp};

/// Stamps out one multi-threaded `#[tokio::test]` per race. The argument
/// evaluates to an `Option` of a store; `None` skips.
#[macro_export]
macro_rules! race_tests {
    ($make_store:expr) => {
        $crate::race_tests!(@checks $make_store;
            two_hundred_concurrent_writers_to_one_session_lose_nothing,
            a_logout_racing_two_hundred_writes_leaves_the_session_gone_for_good,
            logout_everywhere_racing_logins_leaves_no_earlier_session_and_an_exact_index,
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
    (reply.status == StatusCode::OK).then_some(reply.body)
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
                !set_cookie.starts_with(&format!("id={cookie}")),
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
