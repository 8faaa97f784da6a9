//! How fast a logout on one instance closes a stream held on another, and
//! what an open watch costs.
//!
//! Two session layers, each on a store of its own (its own connections,
//! subscription and cache) sharing one backend, stand for two instances
//! of an app. For each trial, a browser logs in through A; B opens a
//! watch for that session (what a stream handler does); then the clock
//! starts, A serves the logout request, and the clock stops when B's
//! watch resolves. So the time includes A's whole logout request, the
//! store's announcement, and B's read-back of the session.
//!
//! `lost` trials first cut B's channel (Redis `CLIENT KILL TYPE pubsub`,
//! PostgreSQL `pg_terminate_backend` of the `LISTEN` connection) and then
//! log out at once: the time until the watch resolves is the re-check
//! bound the docs state.
//!
//! Prints, per store and scenario:
//! `RESULT store=S scenario=stream-revocation impl=cloakroom p50_us= p99_us=`
//! (and `scenario=stream-revocation-lost`), and for 10,000 watches open
//! on the memory store `RESULT store=memory scenario=open-watches
//! impl=cloakroom bytes_per_watch=`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use cloakroom::store::SessionStore;
use cloakroom::watch::SessionWatch;
use cloakroom::{Key, MemoryStore, Session, SessionLayer};
use hdrhistogram::Histogram;
use http::{header, Request, Response};
use tokio::sync::mpsc;
use tower::{service_fn, Layer as _, ServiceExt as _};

use crate::ALLOCATOR;

/// Trials unless `LOAD_STREAM_TRIALS` says otherwise.
const TRIALS: u64 = 500;
/// Trials of the `lost` scenario (each waits for a re-check).
const LOST_TRIALS: u64 = 20;
/// Watches held open for the memory figure.
const OPEN_WATCHES: usize = 10_000;

/// One line of results.
pub(crate) struct StreamResult {
    pub(crate) store: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) trials: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

type Service = tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>;

/// One instance: its layer around a handler that logs in (`/login`),
/// opens a watch and hands it out (`/watch`), or logs out (`/logout`).
struct Instance {
    service: Service,
    layer: SessionLayer,
    watches: mpsc::UnboundedReceiver<SessionWatch>,
}

fn instance<S: SessionStore>(store: S) -> Instance {
    let layer = SessionLayer::builder(store)
        .key(Key::from_bytes(&[7; 32]).expect("a 32-byte key"))
        .build()
        .expect("a valid layer");
    let (sender, watches) = mpsc::unbounded_channel();
    let service = layer
        .clone()
        .layer(service_fn(move |request: Request<String>| {
            let sender = sender.clone();
            async move {
                let session = request
                    .extensions()
                    .get::<Session>()
                    .cloned()
                    .expect("the layer's session");
                match request.uri().path() {
                    "/login" => session.login(request.into_body()).await.expect("login"),
                    "/watch" => {
                        let watch = session.watch().await.expect("a watch");
                        let _ = sender.send(watch);
                    }
                    _ => session.invalidate().await.expect("logout"),
                }
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }));
    Instance {
        service: tower::util::BoxCloneSyncService::new(service),
        layer,
        watches,
    }
}

async fn call(
    instance: &Instance,
    path: &str,
    cookie: Option<&str>,
    body: String,
) -> Response<String> {
    let mut request = Request::post(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(body).expect("a request");
    instance
        .service
        .clone()
        .oneshot(request)
        .await
        .expect("infallible")
}

/// Logs a new user in through `a`; the cookie to send back.
async fn login(a: &Instance, user: String) -> String {
    let response = call(a, "/login", None, user).await;
    let set = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("an ASCII cookie");
    set.split(';').next().expect("name=value").to_owned()
}

/// Opens a watch on `b` for the session behind `cookie`.
async fn watch(b: &mut Instance, cookie: &str) -> SessionWatch {
    call(b, "/watch", Some(cookie), String::new()).await;
    b.watches.recv().await.expect("the handler's watch")
}

/// Times `trials` logouts on `a` until `b`'s watch resolves; `cut` runs
/// between opening the watch and the logout (for the `lost` scenario).
async fn measure<S, F, Fut>(
    store: &'static str,
    scenario: &'static str,
    a_store: S,
    b_store: S,
    trials: u64,
    mut cut: F,
) -> StreamResult
where
    S: SessionStore,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let a = instance(a_store);
    let mut b = instance(b_store);
    // The first watch starts B's feed (a subscription, a `LISTEN`); the
    // trials measure a feed that is up.
    let warm = login(&a, "warm-up".to_owned()).await;
    let _warm = watch(&mut b, &warm).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut histogram = Histogram::<u64>::new(3).expect("a histogram");
    let run = std::process::id();
    for trial in 0..trials {
        let cookie = login(&a, format!("stream-{run}-{trial}")).await;
        let mut watch = watch(&mut b, &cookie).await;
        cut().await;
        let started = Instant::now();
        call(&a, "/logout", Some(&cookie), String::new()).await;
        tokio::time::timeout(Duration::from_secs(30), watch.ended())
            .await
            .expect("the watch resolves");
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.record(micros.max(1)).expect("in range");
    }
    drop(b.layer);
    StreamResult {
        store,
        scenario,
        trials,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    }
}

async fn nothing() {}

fn trials() -> u64 {
    std::env::var("LOAD_STREAM_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(TRIALS)
}

/// Two instances on one memory store (one process).
pub(crate) async fn memory() -> StreamResult {
    let store = MemoryStore::new();
    measure(
        "memory",
        "stream-revocation",
        store.clone(),
        store,
        trials(),
        nothing,
    )
    .await
}

/// Heap bytes one open watch holds, over 10,000 open watches of as many
/// sessions on the memory store.
pub(crate) async fn bytes_per_watch() -> u64 {
    let store = MemoryStore::new();
    let a = instance(store.clone());
    let mut b = instance(store);
    let mut cookies = Vec::with_capacity(OPEN_WATCHES);
    for n in 0..OPEN_WATCHES {
        cookies.push(login(&a, format!("watcher-{n}")).await);
    }
    // Open one first, so that the register and its task exist.
    let first = watch(&mut b, &cookies[0]).await;
    let mut held = Vec::with_capacity(OPEN_WATCHES);
    let before = ALLOCATOR.stats();
    for cookie in &cookies[1..] {
        held.push(watch(&mut b, cookie).await);
    }
    let after = ALLOCATOR.stats();
    assert_eq!(b.layer.open_watches(), OPEN_WATCHES);
    let retained = (after.bytes_allocated - before.bytes_allocated)
        .saturating_sub(after.bytes_deallocated - before.bytes_deallocated);
    drop((first, held));
    // The vector holding the watches is the caller's, not the watches'.
    let holder = std::mem::size_of::<SessionWatch>() * (OPEN_WATCHES - 1);
    ((retained as u64).saturating_sub(holder as u64)) / (OPEN_WATCHES as u64 - 1)
}

#[cfg(feature = "redis")]
pub(crate) mod redis {
    use cloakroom::store::{RedisConnection, RedisStore};

    use super::{measure, nothing, trials, StreamResult, LOST_TRIALS};

    async fn store(urls: &[String], prefix: &str, cluster: bool) -> RedisStore {
        let connection = if cluster {
            RedisConnection::connect_cluster(urls).await
        } else {
            RedisConnection::connect(&urls[0]).await
        }
        .expect("connect");
        RedisStore::builder(connection)
            .key_prefix(prefix)
            .local_cache(100_000)
            .build()
            .expect("a valid store")
    }

    /// Two cached instances on one server, or on one cluster.
    pub(crate) async fn revocation(
        label: &'static str,
        urls: &[String],
        cluster: bool,
    ) -> StreamResult {
        let prefix = format!("bench-streams-{}:", std::process::id());
        let (a, b) = (
            store(urls, &prefix, cluster).await,
            store(urls, &prefix, cluster).await,
        );
        measure(label, "stream-revocation", a, b, trials(), nothing).await
    }

    /// As [`revocation`] on one server, with the subscriptions cut just
    /// before each logout.
    pub(crate) async fn lost(url: &str) -> StreamResult {
        let prefix = format!("bench-streams-lost-{}:", std::process::id());
        let urls = [url.to_owned()];
        let (a, b) = (
            store(&urls, &prefix, false).await,
            store(&urls, &prefix, false).await,
        );
        let client = redis::Client::open(url).expect("a Redis URL");
        let cut = move || {
            let client = client.clone();
            async move {
                let mut connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async(&mut connection)
                    .await;
            }
        };
        measure("redis", "stream-revocation-lost", a, b, LOST_TRIALS, cut).await
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use cloakroom::store::PostgresStore;
    use sqlx::postgres::PgPoolOptions;

    use super::{measure, nothing, trials, StreamResult, LOST_TRIALS};

    async fn store(url: &str, table: &str) -> PostgresStore {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .expect("connect");
        let store = PostgresStore::builder(pool)
            .table(table)
            .build()
            .expect("a valid store");
        store.migrate().await.expect("migration");
        store
    }

    fn table() -> String {
        format!("bench_streams_{}", std::process::id())
    }

    /// Two instances, each with a pool of its own, on one table.
    pub(crate) async fn revocation(url: &str) -> StreamResult {
        let table = table();
        let (a, b) = (store(url, &table).await, store(url, &table).await);
        measure("postgres", "stream-revocation", a, b, trials(), nothing).await
    }

    /// As [`revocation`], with the `LISTEN` connections terminated just
    /// before each logout.
    pub(crate) async fn lost(url: &str) -> StreamResult {
        let table = format!("{}_lost", table());
        let (a, b) = (store(url, &table).await, store(url, &table).await);
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("connect");
        let cut = move || {
            let admin = admin.clone();
            async move {
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE query LIKE 'LISTEN \"cloakroom_%'",
                )
                .execute(&admin)
                .await;
            }
        };
        measure("postgres", "stream-revocation-lost", a, b, LOST_TRIALS, cut).await
    }
}

/// Every stream measurement this build and machine can make: the memory
/// store; Redis (`redis_url`) standalone, with a cut channel, and on a
/// 3-master cluster (`REDIS_CLUSTER_URLS`, or one started as the tests
/// start it); PostgreSQL (`DATABASE_URL`, or a throwaway server) when
/// built with `postgres`.
pub(crate) async fn run_all(redis_url: Option<&str>) -> Vec<Line> {
    let mut lines = Vec::new();
    eprintln!("running scenario=stream-revocation on memory ...");
    lines.push(Line::Revocation(memory().await));
    lines.push(Line::Bytes(bytes_per_watch().await));
    #[cfg(feature = "redis")]
    if let Some(url) = redis_url {
        eprintln!("running scenario=stream-revocation on redis ...");
        lines.push(Line::Revocation(
            redis::revocation("redis", &[url.to_owned()], false).await,
        ));
        eprintln!("running scenario=stream-revocation-lost on redis ...");
        lines.push(Line::Revocation(redis::lost(url).await));
        match crate::support::redis::cluster_urls() {
            Some(urls) => {
                eprintln!("running scenario=stream-revocation on redis-cluster ...");
                lines.push(Line::Revocation(
                    redis::revocation("redis-cluster", &urls, true).await,
                ));
            }
            None => eprintln!("NOTICE: no Redis Cluster: skipping its stream row"),
        }
    }
    #[cfg(not(feature = "redis"))]
    let _ = redis_url;
    #[cfg(feature = "postgres")]
    match crate::support::postgres::shared_url() {
        Some(url) => {
            eprintln!("running scenario=stream-revocation on postgres ...");
            lines.push(Line::Revocation(postgres::revocation(url).await));
            eprintln!("running scenario=stream-revocation-lost on postgres ...");
            lines.push(Line::Revocation(postgres::lost(url).await));
        }
        None => eprintln!("NOTICE: no PostgreSQL: skipping its stream rows"),
    }
    lines
}

/// A line of the stream figures.
pub(crate) enum Line {
    Revocation(StreamResult),
    Bytes(u64),
}

/// Prints the stream figures and their `RESULT` lines.
pub(crate) fn report(lines: &[Line]) {
    if lines.is_empty() {
        return;
    }
    println!("\nStreams: a logout on one instance to the close of a stream held on another");
    for line in lines {
        match line {
            Line::Revocation(r) => {
                println!(
                    "  {} {}: {} trials, p50 {} µs, p99 {} µs, max {} µs",
                    r.store, r.scenario, r.trials, r.p50_us, r.p99_us, r.max_us
                );
                println!(
                    "RESULT store={} scenario={} impl=cloakroom p50_us={} p99_us={}",
                    r.store, r.scenario, r.p50_us, r.p99_us
                );
            }
            Line::Bytes(bytes) => {
                println!("  memory: {bytes} bytes of heap per open watch, {OPEN_WATCHES} open");
                println!(
                    "RESULT store=memory scenario=open-watches impl=cloakroom bytes_per_watch={bytes}"
                );
            }
        }
    }
}
