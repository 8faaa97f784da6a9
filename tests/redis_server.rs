//! RedisStore against a dedicated real server that the tests stop, restart
//! and count commands on.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use cloakroom::RedisStore;
use common::redis::{CommandRecorder, RedisServer};
use common::TestApp;

async fn app_on(server: &RedisServer) -> TestApp<RedisStore> {
    TestApp::new(RedisStore::connect(&server.url()).await.expect("connect"))
}

#[tokio::test]
async fn an_outage_answers_503_and_service_resumes_when_redis_returns() {
    // Append-only persistence, so the session survives the restart.
    let Some(mut server) = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let app = app_on(&server).await;
    let mut client = app.client();
    assert_eq!(
        client.post("/login/alice").await.status,
        StatusCode::NO_CONTENT
    );
    let cookie = client.cookie.clone().expect("logged in");

    server.stop();
    for path in ["/whoami", "/get/k"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.body, "service temporarily unavailable");
        assert!(
            reply.set_cookies().is_empty(),
            "an outage neither logs in nor out"
        );
        assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    }
    let write = client.put("/set/k", "lost").await;
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE);
    let anonymous = app.client().put("/set/k", "v").await;
    assert_eq!(
        anonymous.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "creating fails closed too"
    );
    assert!(anonymous.set_cookies().is_empty());
    assert_eq!(client.cookie.as_deref(), Some(cookie.as_str()));

    server.restart();
    // The connection manager reconnects by itself; no restart of the app.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.get("/whoami").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "alice", "the same session, intact");
            break;
        }
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "only 503 until Redis is back"
        );
        assert!(
            Instant::now() < deadline,
            "service did not resume after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.get("/get/k").await.status,
        StatusCode::NOT_FOUND,
        "nothing half-written"
    );
    assert_eq!(
        client.put("/set/k", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/get/k").await.body, "v");
}

#[tokio::test]
async fn a_read_is_one_round_trip_and_so_is_a_write() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let recorder = CommandRecorder::start(server.addr).await;
    let app = TestApp::new(RedisStore::connect(&recorder.url()).await.expect("connect"));
    let mut client = app.client();
    // Warm up: the first use of each script loads it into Redis.
    client.post("/login/alice").await;
    client.put("/set/k", "v").await;
    client.get("/whoami").await;

    let cost = |path: &str, method: &str| {
        recorder.reset();
        let request = client.request(method, path, "x");
        let mut client = client.clone();
        let recorder = &recorder;
        async move {
            let reply = client.send(request).await;
            (reply, recorder.commands())
        }
    };
    let (reply, read) = cost("/whoami", "GET").await;
    assert_eq!(reply.body, "alice");
    assert_eq!(read, ["EVALSHA"], "an authenticated read is one round trip");

    let (reply, untouched) = cost("/noop", "GET").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        untouched.is_empty(),
        "a request that ignores its session sends nothing"
    );

    let (reply, write) = cost("/set/other", "PUT").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        write,
        ["EVALSHA"],
        "a write without a read is one round trip"
    );

    let (reply, update) = cost("/incr/n", "POST").await;
    assert_eq!(reply.body, "1");
    assert_eq!(
        update,
        ["EVALSHA", "EVALSHA"],
        "read-modify-write: the load, then one patch script"
    );

    app.clock.advance(std::time::Duration::from_secs(600));
    let (reply, touched) = cost("/whoami", "GET").await;
    assert_eq!(reply.body, "alice");
    assert_eq!(
        touched,
        ["EVALSHA"],
        "a read that rolls the deadline is still one round trip"
    );

    recorder.reset();
    let reply = client
        .get_with_cookie_headers("/whoami", &[b"id=forged.cookie"])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        recorder.commands().is_empty(),
        "a junk cookie never reaches Redis"
    );
}

#[tokio::test]
async fn session_keys_carry_a_ttl_at_the_deadline_and_hold_no_raw_id() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let app = app_on(&server).await;
    let mut client = app.client();
    client.post("/login/alice").await;
    let cookie = client.cookie.clone().unwrap();

    let redis = redis::Client::open(server.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        2,
        "one session hash and one user index: {keys:?}"
    );
    for key in &keys {
        assert!(key.starts_with("cloakroom:"), "{key}");
        assert!(!key.contains(&cookie[..22]), "the raw ID is never a key");
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} expires on its own (TTL {ttl})");
    }
    let session_key = keys.iter().find(|k| k.starts_with("cloakroom:s:")).unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(session_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let idle = common::IDLE.as_secs() as i64;
    assert!(
        (idle - 5..=idle).contains(&ttl),
        "TTL {ttl} is the idle deadline"
    );
    let index_key = keys.iter().find(|k| k.starts_with("cloakroom:u:")).unwrap();
    assert!(
        !index_key.contains("alice"),
        "user ids are hashed in key names"
    );

    let dump: Vec<Vec<u8>> = redis::cmd("HGETALL")
        .arg(session_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.concat()).into_owned();
    assert!(!dump.contains(&cookie[..22]), "the raw ID is not stored");
}

#[tokio::test]
async fn the_user_index_is_pruned_and_bounded() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let app = app_on(&server).await;
    for _ in 0..5 {
        let mut c = app.client();
        c.post("/login/alice").await;
    }
    let redis = redis::Client::open(server.url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let index: String = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("cloakroom:u:*")
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.into_iter().next().expect("an index key")
    };
    let size = |c: &mut redis::aio::MultiplexedConnection| {
        let index = index.clone();
        let mut c = c.clone();
        async move {
            redis::cmd("ZCARD")
                .arg(index)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(size(&mut connection).await, 5);
    // Past every absolute deadline, the next login prunes all five.
    app.clock.advance(common::ABSOLUTE);
    app.client().post("/login/alice").await;
    assert_eq!(
        size(&mut connection).await,
        1,
        "expired entries pruned on login"
    );
    // Logging out removes the session's entry at once.
    let mut c = app.client();
    c.post("/login/alice").await;
    assert_eq!(size(&mut connection).await, 2);
    c.post("/logout").await;
    assert_eq!(size(&mut connection).await, 1, "logout dropped its entry");
    // Listing prunes entries whose sessions vanished another way.
    let redis = redis::Client::open(server.url()).unwrap();
    let mut direct = redis.get_multiplexed_async_connection().await.unwrap();
    let sessions: Vec<String> = redis::cmd("KEYS")
        .arg("cloakroom:s:*")
        .query_async(&mut direct)
        .await
        .unwrap();
    for key in sessions {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut direct)
            .await
            .unwrap();
    }
    assert_eq!(size(&mut connection).await, 1);
    assert!(app
        .layer
        .admin()
        .list_sessions("alice")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        size(&mut connection).await,
        0,
        "listing pruned the dangling entry"
    );
}
