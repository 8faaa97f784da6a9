//! `RedisStore` against a dedicated real server that the tests stop,
//! restart, freeze and count commands on.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cloakroom::store::{Deleted, Patch, SessionRecord, Touch};
use cloakroom::{
    device::Device, id::SessionId, store::ConfigError, store::RedisConnection, store::RedisStore,
    store::SessionStore, store::StoreError, store::StoreKey, test_suite::Clock as _, KeyRing,
};
use time::OffsetDateTime;

use crate::support::app::{key, TestApp, ABSOLUTE, IDLE};
use crate::support::client::{assert_unavailable, logged_in, Client};
use crate::support::harness::{tests, Test};
use crate::support::redis::{CommandGate, CommandRecorder};
use crate::support::redis_server::RedisServer;
use crate::support::reply::Reply;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::REDIS_SERVER) => [
            an_outage_answers_503_and_service_resumes_when_redis_returns,
            a_read_is_one_native_round_trip_a_touch_adds_one_and_a_write_is_one,
            a_load_sends_one_hgetall_whatever_the_key_holds_and_one_touch_when_due,
            a_touch_due_at_the_read_writes_only_into_a_session_still_live_and_due,
            session_keys_carry_a_ttl_at_the_deadline_and_hold_no_raw_id,
            the_builder_checks_the_prefix_and_the_store_writes_under_it,
            the_user_index_is_pruned_and_bounded,
            the_user_index_follows_each_deadline_and_prunes_a_batch_at_a_time,
            a_frozen_redis_answers_503_within_the_store_timeout_and_service_resumes,
            a_redis_still_loading_its_data_is_unavailable_until_it_has_loaded,
            a_retired_session_becomes_a_small_forward_expiring_with_it,
            the_device_is_two_text_fields_of_the_hash_that_saves_leave_alone,
            counting_listing_and_logging_out_a_user_with_hundreds_of_sessions_go_in_batches,
            logout_everywhere_catches_a_session_that_keeps_moving_to_new_ids,
            ending_all_sessions_deletes_the_stores_keys_by_scanning_and_no_others,
            ending_all_sessions_follows_a_session_moved_behind_the_scan,
        ],
    )
}

async fn app_on(server: &RedisServer) -> TestApp<RedisStore> {
    TestApp::new(RedisStore::connect(&server.url()).await.expect("connect"))
}

#[tokio::main(flavor = "current_thread")]
async fn an_outage_answers_503_and_service_resumes_when_redis_returns() {
    // Append-only persistence, so the session survives the restart.
    let Some(mut server) = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let app = app_on(&server).await;
    let mut client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().expect("logged in");

    server.stop();
    for path in ["/whoami", "/get/k"] {
        assert_unavailable(&client.get(path).await, path);
    }
    assert_unavailable(&client.put("/set/k", "lost").await, "a write");
    assert_unavailable(
        &app.client().put("/set/k", "v").await,
        "creating fails closed too",
    );
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

#[tokio::main(flavor = "current_thread")]
async fn a_read_is_one_native_round_trip_a_touch_adds_one_and_a_write_is_one() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let recorder = CommandRecorder::start(server.addr).await;
    let app = TestApp::new(RedisStore::connect(&recorder.url()).await.expect("connect"));
    let mut client = app.client();
    // Warm up: the first use of each script loads it into Redis (the touch
    // script too: the clock moves past the touch threshold once).
    client.post("/login/alice").await;
    client.put("/set/k", "v").await;
    app.clock.advance(std::time::Duration::from_secs(600));
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
    assert_eq!(
        read,
        ["HGETALL"],
        "an authenticated read with no touch due is one round trip, of a native command"
    );

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
        ["HGETALL", "EVALSHA"],
        "read-modify-write: the load, then one patch script"
    );

    // Past the touch threshold (a tenth of the 30-minute idle timeout):
    // the read rolls the deadline, once: the user index is raised to the
    // new deadline, then the record touched.
    app.clock.advance(std::time::Duration::from_secs(600));
    let (reply, touched) = cost("/whoami", "GET").await;
    assert_eq!(reply.body, "alice");
    assert_eq!(
        touched,
        ["HGETALL", "EVALSHA", "EVALSHA"],
        "a read that rolls a logged-in session's deadline adds two calls"
    );
    let (reply, after) = cost("/whoami", "GET").await;
    assert_eq!(reply.body, "alice");
    assert_eq!(
        after,
        ["HGETALL"],
        "the touch is not repeated until due again"
    );

    recorder.reset();
    // A well-formed cookie under the session cookie's name, with a tag no
    // key of the layer made.
    let forged = format!(
        "{}={}",
        client.cookie_name,
        KeyRing::new(key(9)).sign(&SessionId::generate().unwrap())
    );
    let reply = client
        .get_with_cookie_headers("/whoami", &[forged.as_bytes()])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        recorder.commands().is_empty(),
        "a junk cookie never reaches Redis"
    );
}

#[tokio::main(flavor = "current_thread")]
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
    let idle = IDLE.as_secs() as i64;
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

#[tokio::main(flavor = "current_thread")]
async fn the_builder_checks_the_prefix_and_the_store_writes_under_it() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let connection = RedisConnection::connect(&server.url())
        .await
        .expect("connect");
    for bad in ["app{1}:".to_owned(), "app}".to_owned(), "x".repeat(129)] {
        let built = RedisStore::builder(connection.clone())
            .key_prefix(bad.as_str())
            .build();
        assert!(
            matches!(built, Err(ConfigError::InvalidKeyPrefix(_))),
            "{bad:?}"
        );
    }
    // A connection manager the application already has does as well.
    let manager = redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap())
        .await
        .unwrap();
    let store = RedisStore::builder(manager)
        .key_prefix("app:")
        .build()
        .expect("a valid prefix");
    let key = new_key();
    assert!(store
        .create(&key, &session_of("alice", now()), now())
        .await
        .unwrap());

    let mut redis = server.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], format!("app:s:{}", key.to_hex()));
    assert!(keys[1].starts_with("app:u:"), "{keys:?}");
}

#[tokio::main(flavor = "current_thread")]
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
    app.clock.advance(ABSOLUTE);
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

/// Sends a request, failing the test rather than hanging if no answer
/// comes within `limit`; returns the reply and how long it took.
async fn within(
    limit: Duration,
    client: &mut Client,
    method: &str,
    path: &str,
) -> (Reply, Duration) {
    let request = client.request(method, path, "v");
    let started = Instant::now();
    let reply = tokio::time::timeout(limit, client.send(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung for {limit:?}"));
    (reply, started.elapsed())
}

#[tokio::main(flavor = "current_thread")]
async fn a_frozen_redis_answers_503_within_the_store_timeout_and_service_resumes() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let app = TestApp::with(store, |b| b.store_timeout(Duration::from_millis(500)));
    let mut client = logged_in(&app, "alice").await;
    assert_eq!(client.get("/whoami").await.body, "alice");
    let cookie = client.cookie.clone();

    // SIGSTOP: the connection stays open and nothing answers, which no
    // connection error reveals; only the layer's timeout ends the wait. The
    // guard resumes the server even if an assertion below fails.
    let paused = server.pause().await;
    for (method, path) in [("GET", "/whoami"), ("PUT", "/set/k"), ("GET", "/get/k")] {
        let (reply, took) = within(Duration::from_secs(10), &mut client, method, path).await;
        assert_unavailable(&reply, &format!("{method} {path}"));
        assert!(
            took < Duration::from_secs(2),
            "{method} {path} took {took:?} with a 500 ms store timeout"
        );
    }
    let mut anonymous = app.client();
    let (reply, took) = within(Duration::from_secs(10), &mut anonymous, "PUT", "/set/k").await;
    assert_unavailable(&reply, "creating too");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(client.cookie, cookie, "the client keeps its session");

    paused.resume();
    // The commands sent during the freeze are still queued on the
    // connection and run now (so the abandoned write above may yet land,
    // as the store timeout warns); then service goes on as before.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (reply, _) = within(Duration::from_secs(10), &mut client, "GET", "/whoami").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "alice", "the same session, intact");
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "service did not resume after Redis did"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.put("/set/after", "v").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/get/after").await.body, "v");
}

/// Whether the store error is Redis answering `LOADING`.
fn is_loading(error: &StoreError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<redis::RedisError>())
        .is_some_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading))
}

#[tokio::main(flavor = "current_thread")]
async fn a_redis_still_loading_its_data_is_unavailable_until_it_has_loaded() {
    // Loading sleeps 1 ms per key and answers clients every KiB read, so a
    // restart spends about 3 s answering LOADING.
    let Some(mut server) = RedisServer::start(&[
        "--key-load-delay",
        "1000",
        "--loading-process-events-interval-bytes",
        "1024",
    ]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    let cookie = client.cookie.clone().expect("logged in");
    let key = KeyRing::new(key(1))
        .verify(&cookie)
        .expect("our cookie")
        .store_key();
    let mut direct = server.connection().await;
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, 3000 do redis.call('SET', 'filler:' .. i, 'x') end return 1")
        .arg(0)
        .query_async(&mut direct)
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut direct).await.unwrap();
    drop(direct);

    // Back as soon as it accepts connections: while it is still loading.
    server.restart();
    let touch = Touch {
        now: app.clock.now(),
        after: 1.0,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut loading_seen = false;
    loop {
        assert!(Instant::now() < deadline, "Redis never finished loading");
        match app.store.inner().load(&key, touch).await {
            Ok(Some(record)) => {
                assert_eq!(record.user_id.as_deref(), Some("alice"));
                break;
            }
            Ok(None) => panic!("the session was lost in the restart"),
            Err(error) => {
                // Reconnecting fails as unavailable too; LOADING must as well.
                assert!(error.is_unavailable(), "{error:?}");
                if is_loading(&error) && !loading_seen {
                    loading_seen = true;
                    assert_unavailable(&client.get("/whoami").await, "while loading");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        loading_seen,
        "no LOADING reply was seen; loading was too quick"
    );
    assert_eq!(client.get("/whoami").await.body, "alice");
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn new_key() -> StoreKey {
    SessionId::generate().unwrap().store_key()
}

fn session_of(user: &str, created: OffsetDateTime) -> SessionRecord {
    let mut record = SessionRecord::new(
        created,
        Duration::from_secs(30 * 60),
        Duration::from_secs(12 * 3600),
    );
    record.user_id = Some(user.to_owned());
    record
}

/// How many members the user's index holds (0 once it is gone).
async fn index_size(connection: &mut redis::aio::MultiplexedConnection, user: &str) -> i64 {
    use sha2::Digest as _;
    let index = format!("cloakroom:u:{}", hex::encode(sha2::Sha256::digest(user)));
    redis::cmd("ZCARD")
        .arg(index)
        .query_async(connection)
        .await
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn a_retired_session_becomes_a_small_forward_expiring_with_it() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let mut direct = server.connection().await;
    let t0 = now();
    let (old, new) = (new_key(), new_key());
    let mut session = session_of("alice", t0);
    session.device = Device {
        user_agent: Some("Mozilla/5.0".into()),
        ip: Some("192.0.2.1".parse().unwrap()),
    };
    assert!(store.create(&old, &session, t0).await.unwrap());
    assert_eq!(index_size(&mut direct, "alice").await, 1);
    let until = t0 + time::Duration::seconds(60);
    assert!(store.retire(&old, &new, until, t0).await.unwrap());

    let record_key = format!("cloakroom:s:{}", old.to_hex());
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&record_key)
        .query_async(&mut direct)
        .await
        .unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("f".to_owned(), new.to_hex()),
            ("w".to_owned(), until.unix_timestamp().to_string())
        ],
        "the session's data and device are gone; only the forward is left"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&record_key)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(
        (55..=60).contains(&ttl),
        "the forward expires at until: {ttl}"
    );
    assert_eq!(
        index_size(&mut direct, "alice").await,
        0,
        "left the user index"
    );
    let touch = Touch {
        now: t0,
        after: 0.0,
    };
    assert_eq!(store.load(&old, touch).await.unwrap(), None);
    assert_eq!(store.delete(&old, t0).await.unwrap(), Deleted::Forward(new));

    // A hash that is neither a session nor a forward is reported, not
    // taken for absent.
    let junk = new_key();
    let _: i64 = redis::cmd("HSET")
        .arg(format!("cloakroom:s:{}", junk.to_hex()))
        .arg("x")
        .arg("1")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(matches!(
        store.load(&junk, touch).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::main(flavor = "current_thread")]
async fn a_load_sends_one_hgetall_whatever_the_key_holds_and_one_touch_when_due() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let recorder = CommandRecorder::start(server.addr).await;
    let store = RedisStore::connect(&recorder.url()).await.expect("connect");
    let t0 = now();
    let at = |secs: i64, after: f64| Touch {
        now: t0 + time::Duration::seconds(secs),
        after,
    };
    let (live, retired, successor) = (new_key(), new_key(), new_key());
    let session = session_of("alice", t0);
    assert!(store.create(&live, &session, t0).await.unwrap());
    assert!(store.create(&retired, &session, t0).await.unwrap());
    assert!(store
        .retire(&retired, &successor, t0 + time::Duration::seconds(300), t0)
        .await
        .unwrap());
    // Loads the touch script into Redis.
    store.load(&live, at(0, 0.0)).await.unwrap();

    let cost = |key: StoreKey, touch: Touch| {
        recorder.reset();
        let store = store.clone();
        let recorder = &recorder;
        async move {
            let loaded = store.load(&key, touch).await.unwrap();
            (loaded.is_some(), recorder.commands())
        }
    };
    // 180 s is a tenth of the 30-minute idle timeout.
    assert_eq!(
        cost(live, at(179, 0.1)).await,
        (true, vec!["HGETALL".into()])
    );
    assert_eq!(
        cost(live, at(180, 0.1)).await,
        (
            true,
            vec![
                "HGETALL".to_owned(),
                "EVALSHA".to_owned(),
                "EVALSHA".to_owned()
            ]
        ),
        "due: the user index raised, then the touch"
    );
    assert_eq!(
        cost(live, at(181, 0.1)).await,
        (true, vec!["HGETALL".into()]),
        "touched: not due again for another 180 s"
    );
    for (what, key, touch) in [
        ("a forward", retired, at(1, 0.0)),
        ("nothing", new_key(), at(1, 0.0)),
        ("an expired session", live, at(180 + 1800, 0.0)),
    ] {
        assert_eq!(
            cost(key, touch).await,
            (false, vec!["HGETALL".into()]),
            "{what}: one read and no touch"
        );
    }
}

/// `cloakroom:s:<hex>`, the hash of a session under the default prefix.
fn record_key(key: &StoreKey) -> String {
    format!("cloakroom:s:{}", key.to_hex())
}

/// The hash under `key`, sorted by field.
async fn hash_of(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &StoreKey,
) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(record_key(key))
        .query_async(connection)
        .await
        .unwrap();
    fields.sort();
    fields
}

#[tokio::main(flavor = "current_thread")]
async fn a_touch_due_at_the_read_writes_only_into_a_session_still_live_and_due() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    // Loads go through a gate that can hold the touch (`EVALSHA`) back
    // after the read went through; everything else goes straight to Redis.
    let gate = CommandGate::start(server.addr).await;
    let gated = RedisStore::connect(&gate.url()).await.expect("connect");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let mut direct = server.connection().await;
    let t0 = now();
    let at = move |secs: i64| Touch {
        now: t0 + time::Duration::seconds(secs),
        after: 0.1,
    };
    let session = session_of("alice", t0);
    // Loads the touch script into Redis, so that a held `EVALSHA` is the
    // whole touch.
    let warm = new_key();
    assert!(store.create(&warm, &session, t0).await.unwrap());
    assert!(store.load(&warm, at(600)).await.unwrap().is_some());

    // Runs a load at `touch` through the gate, does `meanwhile` between its
    // read and its touch, and returns what the load returned.
    let race = |key: StoreKey, touch: Touch, meanwhile| {
        let mut held = gate.hold_next("EVALSHA");
        let gated = gated.clone();
        async move {
            let load = tokio::spawn(async move { gated.load(&key, touch).await });
            held.reached().await;
            meanwhile.await;
            held.release();
            load.await.unwrap().expect("load")
        }
    };

    // Logged out between the read and the touch: the load already read
    // the session, but the touch must not bring back a hash.
    let key = new_key();
    assert!(store.create(&key, &session, t0).await.unwrap());
    let logout = {
        let store = store.clone();
        async move {
            assert_eq!(store.delete(&key, t0).await.unwrap(), Deleted::Session);
        }
    };
    let loaded = race(key, at(600), Box::pin(logout) as BoxFuture).await;
    assert_eq!(loaded, Some(session.clone()), "the record as read");
    assert_eq!(hash_of(&mut direct, &key).await, [], "never re-created");

    // Retired (a login elsewhere) between the read and the touch: the
    // forward stays a forward.
    let (key, successor) = (new_key(), new_key());
    assert!(store.create(&key, &session, t0).await.unwrap());
    let until = t0 + time::Duration::seconds(300);
    let login = {
        let store = store.clone();
        async move {
            assert!(store.retire(&key, &successor, until, t0).await.unwrap());
        }
    };
    race(key, at(600), Box::pin(login) as BoxFuture).await;
    assert_eq!(
        hash_of(&mut direct, &key).await,
        [
            ("f".to_owned(), successor.to_hex()),
            ("w".to_owned(), until.unix_timestamp().to_string())
        ],
        "nothing written into the forward"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(record_key(&key))
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!((1..=300).contains(&ttl), "the forward still lapses: {ttl}");

    // A later request (another instance, a clock a little ahead) touched
    // it meanwhile: the held touch, at an earlier time, is no longer due
    // and must not move `last_seen` back.
    let key = new_key();
    assert!(store.create(&key, &session, t0).await.unwrap());
    let later = {
        let store = store.clone();
        async move {
            assert!(store.load(&key, at(900)).await.unwrap().is_some());
        }
    };
    race(key, at(600), Box::pin(later) as BoxFuture).await;
    let last_seen: String = redis::cmd("HGET")
        .arg(record_key(&key))
        .arg("s")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(
        last_seen,
        at(900).now.unix_timestamp().to_string(),
        "last_seen never moves backwards"
    );

    // A save shortened the lifetime meanwhile (the session is over by the
    // touch's time): the touch writes nothing, so it neither extends the
    // session nor leaves a `last_seen` past its end.
    let key = new_key();
    assert!(store.create(&key, &session, t0).await.unwrap());
    let shorten = {
        let store = store.clone();
        async move {
            let patch = Patch {
                lifetime: Some(cloakroom::store::Lifetime {
                    idle_timeout: Duration::from_secs(30 * 60),
                    absolute_deadline: t0 + time::Duration::seconds(500),
                    persistent: false,
                }),
                ..Patch::default()
            };
            assert!(store.save(&key, &patch, at(1)).await.unwrap());
        }
    };
    race(key, at(600), Box::pin(shorten) as BoxFuture).await;
    let fields = hash_of(&mut direct, &key).await;
    assert!(
        fields.contains(&("s".to_owned(), t0.unix_timestamp().to_string())),
        "no touch past the deadline: {fields:?}"
    );
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The device fields (`b`, `r`) of the session's hash.
async fn device_fields(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &StoreKey,
) -> Vec<Option<String>> {
    redis::cmd("HMGET")
        .arg(format!("cloakroom:s:{}", key.to_hex()))
        .arg(&["b", "r"])
        .query_async(connection)
        .await
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn the_device_is_two_text_fields_of_the_hash_that_saves_leave_alone() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let mut direct = server.connection().await;
    let t0 = now();
    let (k, bare) = (new_key(), new_key());
    let mut session = session_of("alice", t0);
    session.device = Device {
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) ✓".into()),
        ip: Some("2001:db8::7".parse().unwrap()),
    };
    assert!(store.create(&k, &session, t0).await.unwrap());
    assert!(store
        .create(&bare, &session_of("alice", t0), t0)
        .await
        .unwrap());

    let written = vec![
        Some("Mozilla/5.0 (X11; Linux x86_64) ✓".to_owned()),
        Some("2001:db8::7".to_owned()),
    ];
    assert_eq!(device_fields(&mut direct, &k).await, written);
    assert_eq!(
        device_fields(&mut direct, &bare).await,
        [None, None],
        "no device, no fields"
    );

    // A save that clears the data and touches leaves the device alone.
    let clear = Patch {
        clear: true,
        ..Patch::default()
    };
    let touch = Touch {
        now: t0 + time::Duration::seconds(5),
        after: 0.0,
    };
    assert!(store.save(&k, &clear, touch).await.unwrap());
    assert!(store.load(&k, touch).await.unwrap().is_some());
    assert_eq!(device_fields(&mut direct, &k).await, written);
}

#[tokio::main(flavor = "current_thread")]
async fn counting_listing_and_logging_out_a_user_with_hundreds_of_sessions_go_in_batches() {
    const SESSIONS: usize = 250;
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let mut direct = server.connection().await;
    let t0 = now();
    let mut keys = Vec::new();
    for i in 0..SESSIONS {
        let created = t0 - time::Duration::seconds((SESSIONS - i) as i64);
        let key = new_key();
        assert!(store
            .create(&key, &session_of("alice", created), created)
            .await
            .unwrap());
        keys.push(key);
    }
    let other = new_key();
    store
        .create(&other, &session_of("bob", t0), t0)
        .await
        .unwrap();
    // 120 records vanish behind the index's back (more than one batch),
    // 10 are retired, 5 end by an ordinary logout.
    for key in &keys[..120] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("cloakroom:s:{}", key.to_hex()))
            .query_async(&mut direct)
            .await
            .unwrap();
    }
    for key in &keys[120..130] {
        assert!(store
            .retire(key, &new_key(), t0 + time::Duration::seconds(60), t0)
            .await
            .unwrap());
    }
    for key in &keys[130..135] {
        assert_eq!(store.delete(key, t0).await.unwrap(), Deleted::Session);
    }
    let live = &keys[135..];
    assert_eq!(
        index_size(&mut direct, "alice").await,
        (SESSIONS - 15) as i64
    );

    assert_eq!(
        store.count_user("alice", t0).await.unwrap(),
        live.len() as u64
    );
    assert_eq!(
        index_size(&mut direct, "alice").await,
        live.len() as i64,
        "the count pruned the members of vanished records"
    );
    let newest = store.list_user("alice", t0, 7).await.unwrap();
    assert_eq!(
        newest.iter().map(|s| s.key).collect::<Vec<_>>(),
        live[live.len() - 7..],
        "the seven newest, oldest first"
    );
    let all = store.list_user("alice", t0, usize::MAX).await.unwrap();
    assert_eq!(all.iter().map(|s| s.key).collect::<Vec<_>>(), live);

    let kept = live[0];
    assert_eq!(
        store.delete_user("alice", Some(&kept)).await.unwrap(),
        live.len() as u64 - 1
    );
    assert_eq!(store.count_user("alice", t0).await.unwrap(), 1);
    assert_eq!(store.delete_user("alice", None).await.unwrap(), 1);
    assert_eq!(store.count_user("alice", t0).await.unwrap(), 0);
    assert_eq!(
        index_size(&mut direct, "alice").await,
        0,
        "the index is gone"
    );
    assert_eq!(
        store.count_user("bob", t0).await.unwrap(),
        1,
        "bob untouched"
    );
}

/// What a login or regenerate does to the store, over and over: create the
/// successor, retire the current session to it, and give up (deleting the
/// successor, as the layer does) once the current session has ended.
/// Returns how many moves were made, or `None` if the chain was still
/// alive when `deadline` came.
async fn keep_moving(store: RedisStore, mut current: StoreKey, deadline: Instant) -> Option<u32> {
    let mut moves = 0;
    while Instant::now() < deadline {
        let t = now();
        let next = new_key();
        assert!(store
            .create(&next, &session_of("alice", t), t)
            .await
            .unwrap());
        let until = t + time::Duration::seconds(60);
        if !store.retire(&current, &next, until, t).await.unwrap() {
            store.delete(&next, t).await.unwrap();
            return Some(moves);
        }
        current = next;
        moves += 1;
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_catches_a_session_that_keeps_moving_to_new_ids() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    // One pass alone misses the chain whenever a move lands between its
    // ZRANGE and its delete; repeated rounds make that near certain to
    // happen at least once.
    for round in 0..20 {
        let first = new_key();
        let t = now();
        assert!(store
            .create(&first, &session_of("alice", t), t)
            .await
            .unwrap());
        let mover = tokio::spawn(keep_moving(
            store.clone(),
            first,
            Instant::now() + Duration::from_secs(10),
        ));
        tokio::time::sleep(Duration::from_millis(2 + round % 5)).await;
        store.delete_user("alice", None).await.unwrap();
        let moves = mover.await.unwrap();
        assert!(
            moves.is_some(),
            "round {round}: the session escaped logout-everywhere"
        );
        assert_eq!(
            store.count_user("alice", now()).await.unwrap(),
            0,
            "round {round}: a session of the user survived"
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn ending_all_sessions_deletes_the_stores_keys_by_scanning_and_no_others() {
    use sha2::Digest as _;
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let connection = RedisConnection::connect(&server.url())
        .await
        .expect("connect");
    // A prefix with the characters a SCAN pattern gives a meaning to, and
    // another app's prefix that the pattern would match if they were not
    // escaped.
    let prefix = "app*[1]?:";
    let store = RedisStore::builder(connection.clone())
        .key_prefix(prefix)
        .build()
        .unwrap();
    let other = RedisStore::builder(connection)
        .key_prefix("app-other1x:")
        .build()
        .unwrap();
    let mut direct = server.connection().await;
    let t0 = now();
    let index_of =
        |prefix: &str, user: &str| format!("{prefix}u:{}", hex::encode(sha2::Sha256::digest(user)));

    // 300 sessions created before the cutoff: 100 of alice's (20 of them
    // since moved, leaving forwards), 50 of bob's, 150 anonymous.
    let mut ended = 0;
    for i in 0..300 {
        let created = t0 - time::Duration::seconds(300 - i);
        let mut record = session_of(["alice", "bob", "x"][(i % 6).min(2) as usize], created);
        if i % 6 >= 3 {
            record.user_id = None;
        }
        let key = new_key();
        assert!(store.create(&key, &record, created).await.unwrap());
        if i % 6 == 0 && i < 120 {
            assert!(store
                .retire(&key, &new_key(), t0 + time::Duration::seconds(60), t0)
                .await
                .unwrap());
        } else {
            ended += 1;
        }
    }
    // Created after the cutoff: kept.
    let (later, later_anonymous) = (new_key(), new_key());
    let after = t0 + time::Duration::seconds(1);
    assert!(store
        .create(&later, &session_of("carol", after), after)
        .await
        .unwrap());
    let mut anonymous = session_of("carol", after);
    anonymous.user_id = None;
    assert!(store
        .create(&later_anonymous, &anonymous, after)
        .await
        .unwrap());
    // Another app's session, and a key under the prefix that is no record.
    let theirs = new_key();
    assert!(other
        .create(&theirs, &session_of("alice", t0), t0)
        .await
        .unwrap());
    let junk = format!("{prefix}s:not-a-record");
    let _: () = redis::cmd("SET")
        .arg(&junk)
        .arg("1")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(ended, 280);

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(store.delete_all(t0, after).await.unwrap(), ended);

    // It walked the keys with SCAN, never KEYS, and announced the flush.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut direct)
        .await
        .unwrap();
    // Successful calls of `command`.
    let calls = |command: &str| -> u64 {
        let Some(line) = stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:")))
        else {
            return 0;
        };
        let field = |name: &str| -> u64 {
            line.split(',')
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .map_or(0, |n| n.parse().unwrap())
        };
        field("calls") - field("failed_calls")
    };
    assert!(calls("scan") >= 1, "{stats}");
    assert_eq!(calls("keys"), 0, "{stats}");
    assert_eq!(
        calls("evalsha") + calls("eval"),
        302 + 20,
        "one script per record key (the two later ones too), and one per \
         successor a live forward names: {stats}"
    );
    assert_eq!(calls("del"), 300, "{stats}");
    assert_eq!(
        calls("publish"),
        301,
        "each deletion, then the flush: {stats}"
    );

    let mut left: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut direct)
        .await
        .unwrap();
    left.sort();
    let mut expected = vec![
        format!("{prefix}s:{}", later.to_hex()),
        format!("{prefix}s:{}", later_anonymous.to_hex()),
        junk,
        index_of(prefix, "carol"),
        format!("app-other1x:s:{}", theirs.to_hex()),
        index_of("app-other1x:", "alice"),
    ];
    expected.sort();
    assert_eq!(
        left, expected,
        "the sessions, forwards and emptied user indexes are gone; nothing else is"
    );
    let touch = Touch {
        now: after,
        after: 1.0,
    };
    assert!(other.load(&theirs, touch).await.unwrap().is_some());
}

#[tokio::main(flavor = "current_thread")]
async fn ending_all_sessions_follows_a_session_moved_behind_the_scan() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    // The pass goes through a gate that holds its scripts back once the
    // scan has answered; everything else goes straight to Redis.
    let gate = CommandGate::start(server.addr).await;
    let gated = RedisStore::connect(&gate.url()).await.expect("connect");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let t0 = now();
    let secs = time::Duration::seconds;
    let created = t0 - secs(10);
    let old = new_key();
    assert!(store
        .create(&old, &session_of("alice", created), created)
        .await
        .unwrap());
    // A login after the cutoff, which stays.
    let later = new_key();
    assert!(store
        .create(&later, &session_of("bob", t0 + secs(1)), t0 + secs(1))
        .await
        .unwrap());

    let now = t0 + secs(2);
    let mut held = gate.hold_next("EVALSHA");
    let pass = tokio::spawn(async move { gated.delete_all(t0, now).await });
    held.reached().await;
    // The scan has answered (without the new record) and its scripts are
    // held: a regenerate now creates the new record, with the old creation
    // time, and retires the old one, which the pass then finds a forward.
    let new = new_key();
    assert!(store
        .create(&new, &session_of("alice", created), now)
        .await
        .unwrap());
    assert!(store.retire(&old, &new, now + secs(60), now).await.unwrap());
    held.release();
    assert_eq!(
        pass.await.unwrap().unwrap(),
        1,
        "the moved session, reached through its forward, and counted: \
         a pass that ends nothing would be taken for the last"
    );
    let touch = Touch { now, after: 1.0 };
    assert_eq!(store.load(&new, touch).await.unwrap(), None);
    assert_eq!(store.delete(&old, now).await.unwrap(), Deleted::Nothing);
    assert_eq!(store.count_user("alice", now).await.unwrap(), 0);
    assert!(
        store.load(&later, touch).await.unwrap().is_some(),
        "created after the cutoff"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn the_user_index_follows_each_deadline_and_prunes_a_batch_at_a_time() {
    const DEAD: usize = 250;
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let mut direct = server.connection().await;
    let index = {
        use sha2::Digest as _;
        format!("cloakroom:u:{}", hex::encode(sha2::Sha256::digest("alice")))
    };
    let scores = direct.clone();
    let score = |key: StoreKey| {
        let mut direct = scores.clone();
        let index = index.clone();
        async move {
            redis::cmd("ZSCORE")
                .arg(index)
                .arg(key.to_hex())
                .query_async::<Option<i64>>(&mut direct)
                .await
                .unwrap()
        }
    };
    let idle = time::Duration::minutes(30);
    let t0 = now();

    // Scored at its deadline when created, and raised when the deadline
    // moves: by a load's touch, and by a blind save's.
    let live = new_key();
    assert!(store
        .create(&live, &session_of("alice", t0), t0)
        .await
        .unwrap());
    assert_eq!(score(live).await, Some((t0 + idle).unix_timestamp()));
    // The index itself lives until the session's absolute deadline, so a
    // member whose raise was lost is still there for logout-everywhere.
    let expires: i64 = redis::cmd("EXPIRETIME")
        .arg(&index)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(expires, (t0 + time::Duration::hours(12)).unix_timestamp());
    let read_at = t0 + time::Duration::minutes(20);
    let touch = |now| Touch { now, after: 0.1 };
    assert!(store.load(&live, touch(read_at)).await.unwrap().is_some());
    assert_eq!(score(live).await, Some((read_at + idle).unix_timestamp()));
    let written_at = read_at + time::Duration::minutes(10);
    let mut patch = Patch::default();
    patch.set.insert("k".into(), serde_json::json!(1));
    assert!(store.save(&live, &patch, touch(written_at)).await.unwrap());
    let deadline = (written_at + idle).unix_timestamp();
    assert_eq!(score(live).await, Some(deadline));

    // Sessions that idled out long ago: their records are gone, their
    // members stay, scored in the past.
    for i in 0..DEAD {
        let created = t0 - time::Duration::hours(2) - time::Duration::seconds(i as i64);
        assert!(store
            .create(&new_key(), &session_of("alice", created), created)
            .await
            .unwrap());
    }
    assert_eq!(index_size(&mut direct, "alice").await, (DEAD + 1) as i64);
    // A raise that was lost (a save landed, the index call failed): the
    // live session's member is scored in the past too.
    let _: i64 = redis::cmd("ZADD")
        .arg(&index)
        .arg("XX")
        .arg(1)
        .arg(live.to_hex())
        .query_async(&mut direct)
        .await
        .unwrap();

    // Each count looks at one batch of the members scored in the past
    // (100), checks their records, raises the live one and drops the dead.
    let now = written_at;
    assert_eq!(store.count_user("alice", now).await.unwrap(), 1);
    assert_eq!(score(live).await, Some(deadline), "raised, not dropped");
    assert_eq!(
        index_size(&mut direct, "alice").await,
        (DEAD + 1 - 99) as i64,
        "one batch pruned"
    );
    assert_eq!(store.count_user("alice", now).await.unwrap(), 1);
    assert_eq!(
        index_size(&mut direct, "alice").await,
        (DEAD + 1 - 199) as i64
    );
    let listed = store.list_user("alice", now, 10).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [live]);
    assert_eq!(index_size(&mut direct, "alice").await, 1, "all pruned");
    // And logout-everywhere still reaches it.
    assert_eq!(store.delete_user("alice", None).await.unwrap(), 1);
}
