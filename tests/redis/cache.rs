//! The local cache of `RedisStore`, shared by two instances of one app
//! (two layers, two stores, each with its own connections and cache) on
//! one Redis and on a Redis Cluster: what one instance changes or ends,
//! the other stops serving, also across a dropped subscription and a
//! Redis restart.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cloakroom::{store::RedisStore, store::StoreKey, KeyRing};

use crate::support::app::{key, TestApp};
use crate::support::client::{logged_in, Client};
use crate::support::harness::{tests, Test};
use crate::support::redis::{
    cached_cluster_pair, cached_pair, cached_pair_and_prefix, cluster_urls, delete_quietly,
    standalone,
};
use crate::support::redis_server::RedisServer;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::REDIS) => [
            changes_on_one_instance_reach_the_others_cache,
            counts_and_listings_read_redis_so_they_are_exact_at_once,
            ending_all_sessions_on_one_instance_empties_the_others_cache,
            a_dropped_subscription_flushes_the_cache_before_a_revocation_is_missed,
        ],
        Some(&crate::REDIS_CLUSTER) => [
            changes_on_one_instance_reach_the_others_cache_on_a_cluster,
            ending_all_sessions_on_one_instance_empties_the_others_cache_on_a_cluster,
            a_dropped_subscription_flushes_the_cache_on_a_cluster,
        ],
        Some(&crate::REDIS_SERVER) => [
            a_cached_read_sends_nothing_to_redis_and_own_writes_are_read_back,
            a_redis_restart_flushes_the_cache_so_a_later_revocation_holds,
            a_silent_subscription_stops_the_cache_serving,
            the_builder_refuses_a_cache_it_could_not_keep_true,
            a_write_the_acl_forbids_to_announce_fails_with_nothing_written,
        ],
    )
}

/// How long the other instance may take to hear of a change: the channel
/// delivers in well under a millisecond on loopback; this is only the
/// point at which the test gives up.
const WITHIN: Duration = Duration::from_secs(5);

/// Two instances of the test app, one per store.
fn instances((a, b): (RedisStore, RedisStore)) -> Instances {
    Instances {
        a: TestApp::new(a.clone()),
        b: TestApp::new(b.clone()),
        b_store: b,
    }
}

struct Instances {
    a: TestApp<RedisStore>,
    b: TestApp<RedisStore>,
    /// B's store, to look at its cache.
    b_store: RedisStore,
}

impl Instances {
    /// The same browser, talking to instance B.
    fn on_b(&self, client: &Client) -> Client {
        assert!(client.cookie.is_some(), "a browser with a session cookie");
        let mut on_b = client.clone();
        on_b.router = self.b.router.clone();
        on_b
    }

    /// Reads `path` through B until B's cache holds one session (the
    /// tests end every other before), so that what the test checks next is
    /// the cache's answer, not a fresh read.
    async fn until_cached_on_b(&self, client: &Client, path: &str) {
        let on_b = self.on_b(client);
        let start = Instant::now();
        loop {
            assert!(served(&on_b, path).await, "{path} is served on B");
            if self.b_store.cached_sessions() == Some(1) {
                return;
            }
            assert!(
                start.elapsed() < WITHIN,
                "B never cached the session (subscription not confirmed?)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether `GET path` answers `200` (a `401` or `404` is no); a `503` is
/// retried for a while (the store may be reconnecting).
async fn served(client: &Client, path: &str) -> bool {
    let start = Instant::now();
    loop {
        let reply = client.call("GET", path, "").await;
        match reply.status {
            StatusCode::OK => return true,
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => return false,
            StatusCode::SERVICE_UNAVAILABLE if start.elapsed() < WITHIN => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("{path}: unexpected status {other}: {}", reply.body),
        }
    }
}

/// Waits until B stops serving `path` to the client, then checks that it
/// keeps refusing.
async fn refused_from_now_on(on_b: &Client, path: &str, what: &str) {
    refused_within(WITHIN, on_b, path, what).await;
}

/// [`refused_from_now_on`], in less than `within`.
async fn refused_within(within: Duration, on_b: &Client, path: &str, what: &str) {
    let start = Instant::now();
    while served(on_b, path).await {
        assert!(
            start.elapsed() < within,
            "{what}: B still serves {path} after {within:?}"
        );
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        assert!(!served(on_b, path).await, "{what}: B served {path} again");
    }
}

fn store_key(client: &Client) -> StoreKey {
    KeyRing::new(key(1))
        .verify(client.cookie.as_deref().expect("a session cookie"))
        .expect("signed by the test key")
        .store_key()
}

#[tokio::main(flavor = "current_thread")]
async fn changes_on_one_instance_reach_the_others_cache() {
    let Some(pair) = cached_pair().await else {
        return;
    };
    changes_reach_the_other_instance(instances(pair)).await;
}

#[tokio::main(flavor = "current_thread")]
async fn changes_on_one_instance_reach_the_others_cache_on_a_cluster() {
    let Some(pair) = cached_cluster_pair().await else {
        return;
    };
    changes_reach_the_other_instance(instances(pair)).await;
}

async fn changes_reach_the_other_instance(apps: Instances) {
    // A data write on A.
    let mut alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
    let alice_on_b = apps.on_b(&alice);
    assert_eq!(
        alice.put("/set/note", "one").await.status,
        StatusCode::NO_CONTENT
    );
    let start = Instant::now();
    loop {
        let reply = alice_on_b.call("GET", "/get/note", "").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "one");
            break;
        }
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert!(start.elapsed() < WITHIN, "B never saw A's write");
        tokio::task::yield_now().await;
    }

    // A logout on A.
    apps.until_cached_on_b(&alice, "/whoami").await;
    assert_eq!(alice.post("/logout").await.status, StatusCode::NO_CONTENT);
    refused_from_now_on(&alice_on_b, "/whoami", "logout").await;

    // A logout-everywhere on A, from another of alice's sessions.
    let mut laptop = logged_in(&apps.a, "alice").await;
    let phone = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&phone, "/whoami").await;
    assert_eq!(
        laptop.post("/logout-everywhere").await.status,
        StatusCode::OK
    );
    refused_from_now_on(&apps.on_b(&phone), "/whoami", "logout-everywhere").await;

    // An admin on A ends all of alice's sessions, then one session.
    let tablet = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&tablet, "/whoami").await;
    let ended = apps
        .a
        .layer
        .admin()
        .logout_everywhere("alice")
        .await
        .unwrap();
    assert!(ended >= 1);
    refused_from_now_on(&apps.on_b(&tablet), "/whoami", "admin logout-everywhere").await;

    let desktop = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&desktop, "/whoami").await;
    assert!(apps
        .a
        .layer
        .admin()
        .end_session(&store_key(&desktop))
        .await
        .unwrap());
    refused_from_now_on(&apps.on_b(&desktop), "/whoami", "admin end_session").await;

    // A back-channel logout on A ends the session linked to the
    // provider's session, which B holds in its cache.
    let mut linked = apps.a.client();
    let deadline = cloakroom::test_suite::Clock::now(&apps.a.clock).unix_timestamp() + 3600;
    let reply = linked
        .post(&format!("/idp-login/alice/sid-1/{deadline}"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    apps.until_cached_on_b(&linked, "/whoami").await;
    let ended = apps
        .a
        .layer
        .admin()
        .end_external_session("alice", "sid-1")
        .await
        .unwrap();
    assert_eq!(ended, 1);
    refused_from_now_on(&apps.on_b(&linked), "/whoami", "external logout").await;

    // A login on A moves a visitor's session to a new ID: the old one,
    // cached on B, is retired, and its cookie reads nothing there.
    let mut visitor = apps.a.client();
    assert_eq!(
        visitor.put("/set/cart", "socks").await.status,
        StatusCode::NO_CONTENT
    );
    let old_on_b = apps.on_b(&visitor);
    apps.until_cached_on_b(&visitor, "/get/cart").await;
    assert_eq!(
        visitor.post("/login/alice").await.status,
        StatusCode::NO_CONTENT
    );
    refused_from_now_on(&old_on_b, "/get/cart", "login").await;
}

/// What the docs of `Session::count_sessions` and `RedisStore` promise:
/// with the local cache, a count or a listing still reads Redis, so B's
/// answer is exact right after a login or a logout on A, with no wait for
/// a message.
#[tokio::main(flavor = "current_thread")]
async fn counts_and_listings_read_redis_so_they_are_exact_at_once() {
    let Some(pair) = cached_pair().await else {
        return;
    };
    let apps = instances(pair);
    let phone = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&phone, "/whoami").await;
    let phone_on_b = apps.on_b(&phone);
    let count_on_b = || async { phone_on_b.call("GET", "/sessions/count", "").await.body };
    let listed_on_b = || async {
        let reply = phone_on_b.call("GET", "/sessions", "").await;
        serde_json::from_str::<Vec<(String, bool)>>(&reply.body)
            .expect("a listing")
            .len()
    };
    assert_eq!(count_on_b().await, "1");
    let mut laptop = logged_in(&apps.a, "alice").await;
    assert_eq!(
        count_on_b().await,
        "2",
        "a login on A, counted on B at once"
    );
    assert_eq!(listed_on_b().await, 2);
    assert_eq!(laptop.post("/logout").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        count_on_b().await,
        "1",
        "a logout on A, counted on B at once"
    );
    assert_eq!(listed_on_b().await, 1);
}

#[tokio::main(flavor = "current_thread")]
async fn ending_all_sessions_on_one_instance_empties_the_others_cache() {
    ending_all_reaches_the_other_instance(false).await;
}

#[tokio::main(flavor = "current_thread")]
async fn ending_all_sessions_on_one_instance_empties_the_others_cache_on_a_cluster() {
    ending_all_reaches_the_other_instance(true).await;
}

async fn ending_all_reaches_the_other_instance(cluster: bool) {
    let Some((pair, prefix)) = cached_pair_and_prefix(cluster).await else {
        return;
    };
    let apps = instances(pair);

    // A session cached on B, and all sessions ended on A.
    let bob = logged_in(&apps.a, "bob").await;
    apps.until_cached_on_b(&bob, "/whoami").await;
    let ended = apps.a.layer.admin().end_all_sessions().await.unwrap();
    assert_eq!(ended, 1);
    refused_from_now_on(&apps.on_b(&bob), "/whoami", "end all sessions").await;

    // A session whose deletion B never heard of (deleted behind the
    // stores' backs, as if its message were lost): B serves it from its
    // cache until ending all sessions on A tells every cache to drop
    // everything, though A finds nothing left to delete.
    let alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
    let record_key = format!("{prefix}s:{}", store_key(&alice).to_hex());
    assert!(delete_quietly(cluster, &record_key).await);
    let alice_on_b = apps.on_b(&alice);
    assert!(
        served(&alice_on_b, "/whoami").await,
        "B still serves it from its cache"
    );
    assert_eq!(apps.a.layer.admin().end_all_sessions().await.unwrap(), 0);
    refused_from_now_on(&alice_on_b, "/whoami", "the flush of end all sessions").await;
}

/// Kills the subscriptions on every node of `urls`, as a network failure or
/// a server-side client timeout would drop them.
async fn kill_subscriptions(urls: &[String]) {
    for url in urls {
        let mut connection = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn a_dropped_subscription_flushes_the_cache_before_a_revocation_is_missed() {
    // A server of the test's own: killing subscriptions on the shared one
    // would disturb the other tests' caches.
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let prefix = "dropped:";
    let apps = instances((
        standalone(&url, prefix, Some(100)).await,
        standalone(&url, prefix, Some(100)).await,
    ));
    dropped_subscription(&apps, &[url]).await;
}

/// On the shared cluster (a cluster per test would cost too much): the
/// cached stores of other tests lose their subscriptions too, which only
/// makes them read from Redis for a while.
#[tokio::main(flavor = "current_thread")]
async fn a_dropped_subscription_flushes_the_cache_on_a_cluster() {
    let Some(pair) = cached_cluster_pair().await else {
        return;
    };
    let urls = cluster_urls().expect("the cluster is up");
    dropped_subscription(&instances(pair), &urls).await;
}

async fn dropped_subscription(apps: &Instances, urls: &[String]) {
    for round in 0..3 {
        let mut alice = logged_in(&apps.a, "alice").await;
        apps.until_cached_on_b(&alice, "/whoami").await;
        // The same cookie on B (the logout below empties alice's jar).
        let alice_on_b = apps.on_b(&alice);
        // The invalidation A is about to send can no longer reach B.
        kill_subscriptions(urls).await;
        assert_eq!(alice.post("/logout").await.status, StatusCode::NO_CONTENT);
        // Sooner than the 1.5 s of silence after which a cache stops
        // serving anyway, and than the 1 s the subscriber waits before it
        // subscribes again (and flushes): the lost connection itself must
        // flush it.
        refused_within(
            Duration::from_millis(700),
            &alice_on_b,
            "/whoami",
            &format!("round {round}"),
        )
        .await;
    }
    // And B subscribes again and caches as before.
    let alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
}

#[tokio::main(flavor = "current_thread")]
async fn a_redis_restart_flushes_the_cache_so_a_later_revocation_holds() {
    // Persistence, so that sessions survive the restart.
    let Some(mut server) = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let url = server.url();
    let apps = instances((
        standalone(&url, "restart:", Some(100)).await,
        standalone(&url, "restart:", Some(100)).await,
    ));
    let mut alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
    let alice_on_b = apps.on_b(&alice);

    server.restart();
    // A's connection reconnects by itself; its logout is retried until it
    // gets through.
    let start = Instant::now();
    loop {
        let status = alice.post("/logout").await.status;
        if status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(start.elapsed() < WITHIN * 6, "A never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused_from_now_on(&alice_on_b, "/whoami", "logout after a restart").await;

    // The cache works again after the restart.
    let alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
}

#[tokio::main(flavor = "current_thread")]
async fn a_silent_subscription_stops_the_cache_serving() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let apps = instances((
        standalone(&url, "silent:", Some(100)).await,
        standalone(&url, "silent:", Some(100)).await,
    ));
    let alice = logged_in(&apps.a, "alice").await;
    apps.until_cached_on_b(&alice, "/whoami").await;
    let alice_on_b = apps.on_b(&alice);

    // A frozen server keeps its connections open but answers nothing, so
    // no invalidation could arrive: once the subscriber's ping has gone
    // unanswered, B must not answer from its cache.
    let frozen = server.pause().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = alice_on_b.call("GET", "/whoami", "").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(apps.b_store.cached_sessions(), Some(0), "flushed");
    frozen.resume();
    assert!(served(&alice_on_b, "/whoami").await, "back once Redis is");
}

#[tokio::main(flavor = "current_thread")]
async fn a_cached_read_sends_nothing_to_redis_and_own_writes_are_read_back() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let store = standalone(&url, "wire:", Some(100)).await;
    let apps = instances((store.clone(), store));
    let mut alice = logged_in(&apps.a, "alice").await;
    assert_eq!(
        alice.put("/set/k", "one").await.status,
        StatusCode::NO_CONTENT
    );
    apps.until_cached_on_b(&alice, "/get/k").await;

    let mut admin = server.connection().await;
    let calls = |stats: &str, command: &str| -> u64 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    };
    let stats = || async {
        let mut admin = server.connection().await;
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut admin)
            .await
            .unwrap()
    };
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(alice.get("/get/k").await.body, "one");
    }
    let after_reads = stats().await;
    assert_eq!(calls(&after_reads, "hgetall"), 0, "{after_reads}");
    assert_eq!(calls(&after_reads, "evalsha"), 0, "{after_reads}");

    // A write evicts the session from the writer's own cache: the next
    // read fetches it (one HGETALL) and sees the write; the ones after are
    // cached again.
    assert_eq!(
        alice.put("/set/k", "two").await.status,
        StatusCode::NO_CONTENT
    );
    for _ in 0..10 {
        assert_eq!(alice.get("/get/k").await.body, "two");
    }
    let after_write = stats().await;
    assert_eq!(calls(&after_write, "evalsha"), 1, "the save: {after_write}");
    assert!(
        (1..=3).contains(&calls(&after_write, "hgetall")),
        "one read after the write, a few more at most while the eviction \
         message arrives: {after_write}"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn the_builder_refuses_a_cache_it_could_not_keep_true() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let manager = redis::Client::open(server.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    assert_eq!(
        RedisStore::builder(manager)
            .local_cache(10)
            .build()
            .unwrap_err(),
        cloakroom::store::ConfigError::LocalCacheWithoutUrls
    );
    let connection = cloakroom::store::RedisConnection::connect(&server.url())
        .await
        .unwrap();
    assert_eq!(
        RedisStore::builder(connection.clone())
            .local_cache(0)
            .build()
            .unwrap_err(),
        cloakroom::store::ConfigError::ZeroCapacity
    );
    let store = RedisStore::builder(connection.clone())
        .local_cache(10)
        .build()
        .unwrap();
    assert_eq!(store.cached_sessions(), Some(0));
    assert!(format!("{store:?}").contains("local_cache: true"));
    let plain = RedisStore::builder(connection).build().unwrap();
    assert_eq!(plain.cached_sessions(), None);
}

#[tokio::main(flavor = "current_thread")]
async fn a_write_the_acl_forbids_to_announce_fails_with_nothing_written() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let mut admin = server.connection().await;
    // Every command and key, but no pub/sub channel (Redis 7's default for
    // new users).
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "app",
                "on",
                ">secret",
                "~*",
                "+@all",
                "resetchannels",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = server
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let url = format!("redis://app:secret@127.0.0.1:{port}/");
    let app = TestApp::new(standalone(&url, "acl:", None).await);
    let mut alice = logged_in(&app, "alice").await;
    let key = store_key(&alice);
    let record = format!("acl:s:{}", key.to_hex());

    let reply = alice.put("/set/k", "v").await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let written: Option<String> = redis::cmd("HGET")
        .arg(&record)
        .arg("d:k")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(written, None, "the refused save wrote nothing");

    let reply = alice.post("/logout").await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&record)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        exists,
        "the refused logout deleted nothing: it failed whole"
    );
}
