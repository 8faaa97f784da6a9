//! Side-by-side load benchmark: the same axum app with no session layer,
//! with cloakroom, and with tower-sessions, on a memory store and on Redis,
//! under three scenarios.
//!
//! Run with: `cargo bench --bench load` (needs `redis-server` for the Redis
//! rows, like the tests; `LOAD_SECS` sets the seconds per cell, default 10;
//! `LOAD_CONNECTIONS` the concurrent connections, default 64; `LOAD_STORES`
//! and `LOAD_SCENARIOS` limit the stores and scenarios, e.g. `memory` or
//! `read,write`).
//!
//! The server runs in a child process pinned to core 0 (one tokio thread);
//! this process is the load generator, pinned to core 1, with one HTTP/1.1
//! keep-alive connection per virtual client. The server counts its own heap
//! allocations (a counting global allocator) and store calls (a counting
//! wrapper around each store) and reports them per request.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cloakroom::test_suite::CountingStore;
use cloakroom::{Key, MemoryStore, RedisStore, Session, SessionLayer, SessionStore};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// `tower-sessions` is configured for the same behaviour as cloakroom: an
/// idle timeout that every request rolls (`always_save`, since with
/// `Expiry::OnInactivity` alone "reading a session is not considered
/// activity"). `tower-sessions-modified-only` is its default save policy,
/// where reads never extend the session: cheaper, and shown for reference.
const IMPLS: [&str; 4] = [
    "baseline",
    "cloakroom",
    "tower-sessions",
    "tower-sessions-modified-only",
];
const SCENARIOS: [&str; 3] = ["anonymous", "read", "write"];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    if std::env::var("LOAD_ROLE").as_deref() == Ok("server") {
        server_main();
    } else {
        driver_main();
    }
}

// ---------------------------------------------------------------- server

/// Counts requests and store calls; reported by `GET /__stats`.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    store_calls: AtomicU64,
}

fn server_main() {
    let imp = std::env::var("LOAD_IMPL").expect("LOAD_IMPL");
    let store = std::env::var("LOAD_STORE").expect("LOAD_STORE");
    let addr: SocketAddr = std::env::var("LOAD_ADDR")
        .expect("LOAD_ADDR")
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let stats = Arc::new(Stats::default());
        let app = match imp.as_str() {
            "baseline" => baseline_app(),
            "cloakroom" => cloakroom_app(&store, stats.clone()).await,
            "tower-sessions" => tower_sessions_app(&store, stats.clone(), true).await,
            "tower-sessions-modified-only" => {
                tower_sessions_app(&store, stats.clone(), false).await
            }
            other => panic!("unknown implementation {other}"),
        };
        let counted = stats.clone();
        let app = app
            .route(
                "/__stats",
                get(move |State(stats): State<Arc<Stats>>| async move {
                    let allocs = ALLOCATOR.stats().allocations + ALLOCATOR.stats().reallocations;
                    Json(json!({
                        "requests": stats.requests.load(Ordering::Relaxed),
                        "store_calls": stats.store_calls.load(Ordering::Relaxed),
                        "allocations": allocs,
                    }))
                })
                .with_state(stats),
            )
            .layer(axum::middleware::from_fn(
                move |request: Request<axum::body::Body>, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        if request.uri().path() != "/__stats" {
                            counted.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        next.run(request).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("READY");
        axum::serve(listener, app).await.unwrap();
    });
}

fn baseline_app() -> Router {
    Router::new()
        .route("/anonymous", get(|| async { "ok" }))
        .route("/login", post(|| async { "ok" }))
        .route("/read", get(|| async { "alice" }))
        .route("/write", post(|| async { StatusCode::NO_CONTENT }))
}

/// Which write the `write` scenario makes: a value that changes on every
/// request, so that no implementation can skip it as unchanged.
fn next_value() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn cloakroom_app(store: &str, stats: Arc<Stats>) -> Router {
    async fn build<S: SessionStore + Clone>(store: S, stats: Arc<Stats>) -> Router {
        let counting = CountingStore::new(store);
        let layer = SessionLayer::builder(counting.clone())
            .key(Key::from_bytes(&[7; 32]).unwrap())
            .build()
            .unwrap();
        tokio::spawn(async move {
            // Mirror the wrapper's counter into the shared stats.
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                stats
                    .store_calls
                    .store(counting.calls().total(), Ordering::Relaxed);
            }
        });
        Router::new()
            .route("/anonymous", get(|| async { "ok" }))
            .route(
                "/login",
                post(|session: Session| async move {
                    session.login("alice").await.unwrap();
                    "ok"
                }),
            )
            .route(
                "/read",
                get(|session: Session| async move {
                    session.user_id().await.unwrap().unwrap_or_default()
                }),
            )
            .route(
                "/write",
                post(|session: Session| async move {
                    session.insert("page", next_value()).await.unwrap();
                    StatusCode::NO_CONTENT
                }),
            )
            .layer(layer)
    }
    match store {
        "memory" => build(MemoryStore::new(), stats).await,
        "redis" => {
            let url = std::env::var("REDIS_URL").expect("REDIS_URL");
            let connection = cloakroom::RedisConnection::connect(&url).await.unwrap();
            let store = RedisStore::builder()
                .key_prefix("bench-cloakroom:")
                .build(connection)
                .unwrap();
            build(store, stats).await
        }
        other => panic!("unknown store {other}"),
    }
}

/// tower-sessions' store trait, counted like cloakroom's `CountingStore`.
#[derive(Debug, Clone)]
struct CountingTowerStore<S> {
    inner: S,
    stats: Arc<Stats>,
}

/// tower-sessions requires stores to be `Debug`.
impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

#[async_trait::async_trait]
impl<S: tower_sessions::SessionStore + Clone> tower_sessions::SessionStore
    for CountingTowerStore<S>
{
    async fn create(
        &self,
        record: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.create(record).await
    }

    async fn save(
        &self,
        record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.save(record).await
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.load(id).await
    }

    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(id).await
    }
}

async fn tower_sessions_app(store: &str, stats: Arc<Stats>, always_save: bool) -> Router {
    match store {
        "memory" => {
            build_tower_sessions(tower_sessions::MemoryStore::default(), stats, always_save)
        }
        "redis" => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let url = std::env::var("REDIS_URL").expect("REDIS_URL");
            let pool = Pool::new(Config::from_url(&url).unwrap(), None, None, None, 4).unwrap();
            pool.init().await.unwrap();
            let store = tower_sessions_redis_store::RedisStore::new(pool);
            build_tower_sessions(store, stats, always_save)
        }
        other => panic!("unknown store {other}"),
    }
}

fn build_tower_sessions<S: tower_sessions::SessionStore + Clone>(
    store: S,
    stats: Arc<Stats>,
    always_save: bool,
) -> Router {
    // The same timeout as cloakroom's defaults: 30 minutes idle.
    let layer = tower_sessions::SessionManagerLayer::new(CountingTowerStore {
        inner: store,
        stats,
    })
    .with_expiry(tower_sessions::Expiry::OnInactivity(
        time::Duration::minutes(30),
    ))
    .with_always_save(always_save);
    Router::new()
        .route("/anonymous", get(|| async { "ok" }))
        .route(
            "/login",
            post(|session: tower_sessions::Session| async move {
                session.cycle_id().await.unwrap();
                session.insert("user", "alice").await.unwrap();
                "ok"
            }),
        )
        .route(
            "/read",
            get(|session: tower_sessions::Session| async move {
                session
                    .get::<String>("user")
                    .await
                    .unwrap()
                    .unwrap_or_default()
            }),
        )
        .route(
            "/write",
            post(|session: tower_sessions::Session| async move {
                session.insert("page", next_value()).await.unwrap();
                StatusCode::NO_CONTENT
            }),
        )
        .layer(layer)
}

// ---------------------------------------------------------------- driver

struct Cell {
    store: &'static str,
    scenario: &'static str,
    imp: &'static str,
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    allocs: Option<f64>,
    store_calls: Option<f64>,
}

impl Cell {
    /// The mean of several runs of one cell: throughput, latency
    /// percentiles and per-request counts.
    fn average(runs: &[&Cell]) -> Cell {
        let n = runs.len() as f64;
        let mean = |f: &dyn Fn(&Cell) -> f64| runs.iter().map(|c| f(c)).sum::<f64>() / n;
        let first = runs[0];
        Cell {
            store: first.store,
            scenario: first.scenario,
            imp: first.imp,
            rps: mean(&|c| c.rps),
            p50_us: mean(&|c| c.p50_us as f64).round() as u64,
            p99_us: mean(&|c| c.p99_us as f64).round() as u64,
            allocs: first.allocs.map(|_| mean(&|c| c.allocs.unwrap_or(0.0))),
            store_calls: first
                .store_calls
                .map(|_| mean(&|c| c.store_calls.unwrap_or(0.0))),
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn driver_main() {
    // Pin this process (the load generator) to core 1 by re-running it
    // under `taskset`, once.
    if std::env::var_os("LOAD_PINNED").is_none() && which("taskset") {
        let status = Command::new("taskset")
            .arg("-c")
            .arg("1")
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("LOAD_PINNED", "1")
            .status()
            .expect("taskset");
        std::process::exit(status.code().unwrap_or(1));
    }
    let secs = env_u64("LOAD_SECS", 10);
    let connections = env_u64("LOAD_CONNECTIONS", 64) as usize;
    let stores: Vec<&'static str> = match std::env::var("LOAD_STORES") {
        Ok(list) => ["memory", "redis"]
            .into_iter()
            .filter(|s| list.split(',').any(|l| l.trim() == *s))
            .collect(),
        Err(_) => vec!["memory", "redis"],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut redis: Option<(String, Option<Child>)> = None;
    let mut cells = Vec::new();
    for store in stores {
        let redis_url = if store == "redis" {
            if redis.is_none() {
                redis = start_redis();
            }
            match &redis {
                Some((url, _)) => Some(url.clone()),
                None => {
                    eprintln!("NOTICE: no redis-server and no REDIS_URL: skipping the Redis rows");
                    continue;
                }
            }
        } else {
            None
        };
        let scenarios: Vec<&'static str> = match std::env::var("LOAD_SCENARIOS") {
            Ok(list) => SCENARIOS
                .into_iter()
                .filter(|s| list.split(',').any(|l| l.trim() == *s))
                .collect(),
            Err(_) => SCENARIOS.to_vec(),
        };
        for scenario in scenarios {
            // Two passes in opposite orders (A B C, then C B A), each half
            // of LOAD_SECS, averaged: a machine that drifts faster or slower
            // during a scenario then tilts no implementation.
            let half = (secs as f64 / 2.0).max(1.0);
            let mut passes: Vec<Cell> = Vec::new();
            let order: Vec<&'static str> =
                IMPLS.iter().chain(IMPLS.iter().rev()).copied().collect();
            for imp in order {
                eprintln!("running store={store} scenario={scenario} impl={imp} for {half}s ...");
                passes.push(runtime.block_on(run_cell(
                    store,
                    scenario,
                    imp,
                    redis_url.as_deref(),
                    half,
                    connections,
                )));
            }
            for imp in IMPLS {
                let runs: Vec<&Cell> = passes.iter().filter(|c| c.imp == imp).collect();
                cells.push(Cell::average(&runs));
            }
        }
    }
    if let Some((_, Some(mut child))) = redis {
        let _ = child.kill();
        let _ = child.wait();
    }
    report(&cells, secs, connections);
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `REDIS_URL`, or a throwaway `redis-server` (pinned with the load
/// generator, on core 1).
fn start_redis() -> Option<(String, Option<Child>)> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Some((url, None));
    }
    if !which("redis-server") {
        return None;
    }
    let addr = free_addr();
    let mut command = if which("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "redis-server"]);
        c
    } else {
        Command::new("redis-server")
    };
    let child = command
        .args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(addr);
    Some((format!("redis://{addr}/"), Some(child)))
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(imp: &str, store: &str, redis_url: Option<&str>) -> (Server, SocketAddr) {
    let addr = free_addr();
    let exe = std::env::current_exe().unwrap();
    let mut command = if which("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    command
        .env("LOAD_ROLE", "server")
        .env("LOAD_IMPL", imp)
        .env("LOAD_STORE", store)
        .env("LOAD_ADDR", addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let mut child = command.spawn().expect("server process");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "READY", "server did not start");
    (Server(child), addr)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    cookie: Option<&HeaderValue>,
) -> (StatusCode, Option<HeaderValue>) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "bench.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    if let Some(cookie) = cookie {
        request.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let set_cookie = response.headers().get(header::SET_COOKIE).cloned();
    response.into_body().collect().await.unwrap();
    (status, set_cookie)
}

fn cookie_pair(set_cookie: &HeaderValue) -> HeaderValue {
    let text = set_cookie.to_str().unwrap();
    HeaderValue::from_str(text.split(';').next().unwrap()).unwrap()
}

async fn stats(addr: SocketAddr) -> (u64, u64, u64) {
    let mut sender = connect(addr).await;
    let request = Request::get("/__stats")
        .header(header::HOST, "bench.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (
        v["requests"].as_u64().unwrap(),
        v["store_calls"].as_u64().unwrap(),
        v["allocations"].as_u64().unwrap(),
    )
}

async fn run_cell(
    store: &'static str,
    scenario: &'static str,
    imp: &'static str,
    redis_url: Option<&str>,
    secs: f64,
    connections: usize,
) -> Cell {
    let (_server, addr) = start_server(imp, store, redis_url);
    // One keep-alive connection (and one session) per virtual client.
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut sender = connect(addr).await;
        let cookie = if scenario == "anonymous" {
            None
        } else {
            let (status, set_cookie) = send(&mut sender, "POST", "/login", None).await;
            assert!(status.is_success(), "login: {status}");
            match set_cookie.as_ref().map(cookie_pair) {
                Some(pair) => Some(pair),
                // The app without sessions still receives the browser's
                // cookies: send the baseline a cookie of the same shape,
                // so that every implementation parses the same request.
                None if imp == "baseline" => Some(HeaderValue::from_static(
                    "__Host-id=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                )),
                None => panic!("{imp} set no cookie at login"),
            }
        };
        clients.push((sender, cookie));
    }
    let (method, path) = match scenario {
        "anonymous" => ("GET", "/anonymous"),
        "read" => ("GET", "/read"),
        _ => ("POST", "/write"),
    };
    // Warm up, then measure.
    let warmup = Duration::from_millis(1000);
    let measure = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut tasks = Vec::new();
    for (mut sender, cookie) in clients {
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut count = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let (status, _) = send(&mut sender, method, path, cookie.as_ref()).await;
                assert!(status.is_success(), "{method} {path}: {status}");
                if sent >= measure_from {
                    let micros = sent.elapsed().as_micros().max(1) as u64;
                    histogram.record(micros.min(60_000_000)).unwrap();
                    count += 1;
                }
            }
            (histogram, count)
        }));
    }
    // Server counters at the start and end of the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let first = stats(addr).await;
    tokio::time::sleep_until(end.into()).await;
    let last = stats(addr).await;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut total = 0u64;
    for task in tasks {
        let (h, count) = task.await.unwrap();
        histogram.add(h).unwrap();
        total += count;
    }
    let requests = (last.0 - first.0).max(1) as f64;
    // `/__stats` itself allocates a little; spread over thousands of
    // requests it is noise.
    let allocs = (last.2 - first.2) as f64 / requests;
    let store_calls = (last.1 - first.1) as f64 / requests;
    Cell {
        store,
        scenario,
        imp,
        rps: total as f64 / measure.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        allocs: Some(allocs),
        store_calls: (imp != "baseline").then_some(store_calls),
    }
}

fn report(cells: &[Cell], secs: u64, connections: usize) {
    let find = |store: &str, scenario: &str, imp: &str| {
        cells
            .iter()
            .find(|c| c.store == store && c.scenario == scenario && c.imp == imp)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{secs} s per cell, {connections} connections; server on core 0, load generator on core 1\n"
    );
    let _ = writeln!(
        table,
        "| store | scenario | impl | req/s | p50 µs | p99 µs | vs baseline | vs tower-sessions | allocs/req | store calls/req |"
    );
    let _ = writeln!(
        table,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cells {
        let ratio = |other: Option<&Cell>| match other {
            Some(o) if o.rps > 0.0 && !std::ptr::eq(o, c) => format!("{:.2}x", c.rps / o.rps),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            c.store,
            c.scenario,
            c.imp,
            c.rps,
            c.p50_us,
            c.p99_us,
            ratio(find(c.store, c.scenario, "baseline")),
            ratio(find(c.store, c.scenario, "tower-sessions")),
            c.allocs.map_or("-".into(), |a| format!("{a:.1}")),
            c.store_calls.map_or("-".into(), |s| format!("{s:.2}")),
        );
    }
    println!("{table}");
    // The script lines keep to the three implementations of the spec; the
    // reference configuration is in the table only.
    for c in cells
        .iter()
        .filter(|c| c.imp != "tower-sessions-modified-only")
    {
        println!(
            "RESULT store={} scenario={} impl={} rps={:.1} p50_us={} p99_us={} allocs={} store_calls={}",
            c.store,
            c.scenario,
            c.imp,
            c.rps,
            c.p50_us,
            c.p99_us,
            c.allocs.map_or("-".into(), |a| format!("{a:.2}")),
            c.store_calls.map_or("-".into(), |s| format!("{s:.2}")),
        );
    }
}
