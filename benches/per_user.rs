//! What one user's history costs: a login, a count and a listing of one
//! user's sessions when the store holds 10 and when it holds 10,000
//! sessions of that user, on every store (memory, SQLite, PostgreSQL,
//! Redis).
//!
//! The user's 10 most recent sessions are live; the rest have idled out
//! and are still in the store, not yet swept: on Redis their records are
//! gone but their user-index members stay, on the SQL stores their rows
//! stay until a sweep, in memory their entries stay until their shard is
//! swept. That is what a user who signs in often, or a script signing in
//! as them, leaves behind. The per-user limit keeps the *live* sessions at
//! 100 (the default), so the dead ones are what could make a login slow.
//!
//! The login is a whole request through the layer (load nothing, create
//! the session, apply the per-user limit); the count and the listing go
//! through `SessionAdmin`. Each figure is criterion's, and one line per
//! store and operation gives the mean time over every call criterion made
//! (warm-up included) for both sizes, and their ratio; `first_count` is
//! the single first count after the store was filled, before anything
//! pruned the dead sessions:
//!
//! `RESULT store=S op=O n10_us= n10000_us= ratio=`
//!
//! Run with: `cargo bench --all-features --bench per_user`
//! (PostgreSQL from `DATABASE_URL`, Redis from `REDIS_URL`, or throwaway
//! servers started the way the tests start them).

/// The server starters of the tests (`tests/support/`).
#[path = "../tests/support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod postgres;
    pub(crate) mod redis_server;
    pub(crate) mod sqlite;
}

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tower::{service_fn, Layer as _, ServiceExt as _};

use cloakroom::store::SessionRecord;
use cloakroom::{
    id::SessionId, store::RedisConnection, store::RedisStore, store::SessionStore, Key,
    MemoryStore, Session, SessionAdmin, SessionLayer,
};

/// The user's sessions that are live.
const LIVE: usize = 10;
/// The two sizes of a user's history.
const SIZES: [usize; 2] = [10, 10_000];
/// Sessions written at once while filling the store.
const FILL_BATCH: usize = 200;

/// Mean times in µs: `(store, op) -> size -> µs`.
type Means = BTreeMap<(String, &'static str), BTreeMap<usize, f64>>;

/// Stores `n` sessions of `user`: the `LIVE` most recent live, the rest
/// idled out two hours ago.
async fn fill<S: SessionStore>(store: &S, user: &str, n: usize) {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let idle = Duration::from_secs(30 * 60);
    let absolute = Duration::from_secs(12 * 3600);
    let records: Vec<SessionRecord> = (0..n)
        .map(|i| {
            let live = i >= n.saturating_sub(LIVE);
            let start = if live {
                now - time::Duration::seconds((n - i) as i64)
            } else {
                now - time::Duration::hours(2) - time::Duration::seconds((n - i) as i64)
            };
            let mut record = SessionRecord::new(start, idle, absolute);
            record.user_id = Some(user.to_owned());
            record
        })
        .collect();
    for batch in records.chunks(FILL_BATCH) {
        let writes = batch.iter().map(|record| async move {
            let key = SessionId::generate().expect("id").store_key();
            assert!(store.create(&key, record, now).await.expect("create"));
        });
        futures_join(writes).await;
    }
}

/// Runs the writes of a batch one after another: one task, as a request
/// sees the store.
async fn futures_join<F: std::future::Future<Output = ()>>(writes: impl Iterator<Item = F>) {
    for write in writes {
        write.await;
    }
}

/// Benchmarks `call` under `id`, and records the mean time of every call
/// criterion made (warm-up included) in `means`.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: String,
    mean: &mut f64,
    mut call: impl FnMut(),
) {
    let (mut total, mut calls) = (Duration::ZERO, 0u64);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                call();
            }
            let elapsed = started.elapsed();
            total += elapsed;
            calls += iters;
            elapsed
        })
    });
    *mean = total.as_secs_f64() * 1e6 / calls.max(1) as f64;
}

/// Benchmarks one store: for each size, a user with that history, then
/// the count, the listing and a login of that user.
fn bench_store<S: SessionStore + Clone>(
    c: &mut Criterion,
    runtime: &Runtime,
    name: &str,
    store: S,
    means: &mut Means,
) {
    let admin = SessionAdmin::new(store.clone());
    let layer = SessionLayer::builder(store.clone())
        .key(Key::generate().expect("key"))
        .build()
        .expect("layer");
    let mut group = c.benchmark_group(format!("per_user/{name}"));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let tag = SessionId::generate().expect("id").store_key().to_hex();
        let user = format!("user-{n}-{}", &tag[..8]);
        let started = Instant::now();
        runtime.block_on(fill(&store, &user, n));
        eprintln!(
            "{name}: {n} sessions of one user stored in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // The first call after the dead sessions piled up, on its own: a
        // store that prunes them as it reads pays for them here once.
        let started = Instant::now();
        runtime
            .block_on(admin.count_sessions(&user))
            .expect("count");
        let first = started.elapsed().as_secs_f64() * 1e6;
        record(means, name, "first count", n, first);
        let mut mean = 0.0;
        measure(&mut group, format!("count/{n}"), &mut mean, || {
            let live = runtime
                .block_on(admin.count_sessions(&user))
                .expect("count");
            assert!(live >= LIVE as u64, "{live}");
        });
        record(means, name, "count", n, mean);
        measure(&mut group, format!("list/{n}"), &mut mean, || {
            let listed = runtime.block_on(admin.list_sessions(&user)).expect("list");
            assert!(listed.len() >= LIVE, "{}", listed.len());
        });
        record(means, name, "list", n, mean);
        let login_user = user.clone();
        let service = layer.layer(service_fn(move |request: Request<String>| {
            let user = login_user.clone();
            async move {
                let session = request
                    .extensions()
                    .get::<Session>()
                    .cloned()
                    .expect("the layer's session");
                session.login(user).await.expect("login");
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }));
        measure(&mut group, format!("login/{n}"), &mut mean, || {
            let response = runtime
                .block_on(service.clone().oneshot(Request::new(String::new())))
                .expect("infallible");
            assert_eq!(response.status(), 200);
        });
        record(means, name, "login", n, mean);
    }
    group.finish();
    for ((store, op), by_size) in means.iter().filter(|((store, _), _)| store == name) {
        let (small, large) = (by_size[&SIZES[0]], by_size[&SIZES[1]]);
        let op = op.replace(' ', "_");
        println!(
            "RESULT store={store} op={op} n10_us={small:.1} n10000_us={large:.1} ratio={:.2}",
            large / small
        );
    }
}

fn record(means: &mut Means, store: &str, op: &'static str, n: usize, mean: f64) {
    means
        .entry((store.to_owned(), op))
        .or_default()
        .insert(n, mean);
}

fn per_user(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut means = Means::new();

    bench_store(c, &runtime, "memory", MemoryStore::new(), &mut means);

    let sqlite = runtime
        .block_on(support::sqlite::store())
        .expect("SQLite is built in");
    bench_store(c, &runtime, "sqlite", sqlite, &mut means);

    match runtime.block_on(support::postgres::store()) {
        Some(postgres) => bench_store(c, &runtime, "postgres", postgres, &mut means),
        None => eprintln!("no PostgreSQL: skipped"),
    }

    let (url, _server) = support::redis_server::url_or_start()
        .expect("redis-server (apt-get install redis-server) or REDIS_URL");
    let connection = runtime
        .block_on(RedisConnection::connect(&url))
        .expect("connect");
    let redis = RedisStore::builder(connection)
        .key_prefix("bench-user:")
        .build()
        .expect("prefix");
    bench_store(c, &runtime, "redis", redis, &mut means);
}

criterion_group!(benches, per_user);
criterion_main!(benches);
