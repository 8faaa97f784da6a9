//! Criterion benchmarks of `RedisStore`'s read and write paths against a
//! real Redis: `REDIS_URL` when set, otherwise a throwaway `redis-server`
//! on a free loopback port, started the way the tests start one.
//!
//! After each benchmark it prints the Redis CPU that one call cost, from
//! `INFO commandstats` (reset before the benchmark): every command Redis
//! ran, with its `usec_per_call` and how many it ran per call, and the
//! total `usec` of the commands the store sends itself divided by the
//! number of calls. Redis counts the commands a script runs under their own
//! names too, with their time already inside the script's, so only the
//! commands named as sent add up to the total. That figure is Redis's own
//! time, free of the round trip and of the machine's load, so it is the one
//! to compare.
//!
//! Run with: `cargo bench --features redis --bench redis`

/// The Redis starter of the tests (`tests/support/`).
#[path = "../tests/support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod redis_server;
}

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

use cloakroom::store::{Patch, SessionRecord, Touch};
use cloakroom::{id::SessionId, store::RedisConnection, store::RedisStore, store::SessionStore};

/// A plain connection beside the store's, for `CONFIG RESETSTAT` and
/// `INFO commandstats`; its own commands are left out of the figures.
struct Stats {
    connection: redis::aio::MultiplexedConnection,
}

impl Stats {
    async fn reset(&mut self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.connection)
            .await
            .expect("CONFIG RESETSTAT");
    }

    /// `(command, calls, usec)` for every command run since the reset but
    /// this connection's own.
    async fn commands(&mut self) -> Vec<(String, u64, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection)
            .await
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |wanted: &str| {
                    fields.split(',').find_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        (key == wanted).then(|| value.parse::<u64>().ok())?
                    })
                };
                Some((name.to_uppercase(), field("calls")?, field("usec")?))
            })
            .filter(|(name, _, _)| !name.starts_with("CONFIG") && name != "INFO")
            .collect()
    }
}

/// Runs one benchmark of `call`, which sends the commands in `sends`, then
/// prints what its calls cost Redis.
fn bench<F, Fut>(
    c: &mut Criterion,
    runtime: &Runtime,
    stats: &mut Stats,
    (name, sends): (&str, &[&str]),
    call: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    runtime.block_on(stats.reset());
    let calls = Cell::new(0u64);
    c.bench_function(name, |b| {
        b.to_async(runtime).iter(|| {
            calls.set(calls.get() + 1);
            call()
        })
    });
    let commands = runtime.block_on(stats.commands());
    let calls = calls.get().max(1);
    let sent: u64 = commands
        .iter()
        .filter(|(command, _, _)| sends.contains(&command.as_str()))
        .map(|(_, _, usec)| usec)
        .sum();
    let listed: Vec<String> = commands
        .iter()
        .map(|(command, n, usec)| {
            format!(
                "{command} {:.2} per call ({:.2} calls/op)",
                *usec as f64 / *n as f64,
                *n as f64 / calls as f64
            )
        })
        .collect();
    println!(
        "{name}: Redis CPU {:.2} µs per call ({}) over {calls} calls; {}",
        sent as f64 / calls as f64,
        sends.join(" + "),
        listed.join(", ")
    );
}

fn redis(c: &mut Criterion) {
    let (url, _server) = support::redis_server::url_or_start()
        .expect("redis-server (apt-get install redis-server) or REDIS_URL");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connection = runtime
        .block_on(RedisConnection::connect(&url))
        .expect("connect");
    let store = RedisStore::builder(connection)
        .key_prefix("bench:")
        .build()
        .expect("prefix");
    let mut stats = Stats {
        connection: runtime
            .block_on(
                redis::Client::open(url.as_str())
                    .expect("url")
                    .get_multiplexed_async_connection(),
            )
            .expect("connect"),
    };
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let key = SessionId::generate().expect("id").store_key();
    // An absolute deadline far enough away for the touch benchmark, which
    // moves the time one second per call.
    let mut record = SessionRecord::new(
        now,
        Duration::from_secs(3600),
        Duration::from_secs(365 * 24 * 3600),
    );
    record.user_id = Some("bench-user".into());
    record.data.insert("payload".into(), "x".repeat(100).into());
    runtime
        .block_on(store.create(&key, &record, now))
        .expect("create");

    let never = Touch { now, after: 1.0 };
    bench(
        c,
        &runtime,
        &mut stats,
        ("redis_load", &["HGETALL"]),
        || async {
            store.load(&key, never).await.expect("load");
        },
    );
    // Always due, a second later each time: every load also writes the
    // new `last_seen` and deadline.
    let step = Cell::new(0);
    let store = &store;
    bench(
        c,
        &runtime,
        &mut stats,
        ("redis_load_and_touch", &["HGETALL", "EVALSHA"]),
        || {
            step.set(step.get() + 1);
            let always = Touch {
                now: now + time::Duration::seconds(step.get()),
                after: 0.0,
            };
            async move {
                store.load(&key, always).await.expect("load");
            }
        },
    );
    let mut patch = Patch::default();
    patch.set.insert("counter".into(), 1.into());
    bench(
        c,
        &runtime,
        &mut stats,
        ("redis_save_one_key", &["EVALSHA"]),
        || async {
            store.save(&key, &patch, never).await.expect("save");
        },
    );
}

criterion_group!(benches, redis);
criterion_main!(benches);
