//! Criterion benchmarks of `RedisStore`'s read and write paths against a
//! real Redis: `REDIS_URL` when set, otherwise a throwaway `redis-server`
//! on a free loopback port, started the way the tests start one.
//!
//! Run with: `cargo bench --features redis --bench redis`

/// The Redis starter of the tests (`tests/support/`).
#[path = "../tests/support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod redis_server;
}

use criterion::{criterion_group, criterion_main, Criterion};
use time::OffsetDateTime;

use cloakroom::store::{Patch, SessionRecord, Touch};
use cloakroom::{RedisConnection, RedisStore, SessionId, SessionStore};

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
    let store = RedisStore::builder()
        .key_prefix("bench:")
        .build(connection)
        .expect("prefix");
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let key = SessionId::generate().expect("id").store_key();
    let mut record = SessionRecord::new(now, time::Duration::hours(1), time::Duration::hours(12));
    record.user_id = Some("bench-user".into());
    record.data.insert("payload".into(), "x".repeat(100).into());
    runtime
        .block_on(store.create(&key, &record, now))
        .expect("create");

    let never = Touch { now, after: 1.0 };
    c.bench_function("redis_load", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.load(&key, never).await.expect("load") })
    });
    // Always due: every load also writes the new deadline, in the same trip.
    let always = Touch { now, after: 0.0 };
    c.bench_function("redis_load_and_touch", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.load(&key, always).await.expect("load") })
    });
    let mut patch = Patch::default();
    patch.set.insert("counter".into(), 1.into());
    c.bench_function("redis_save_one_key", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.save(&key, &patch, never).await.expect("save") })
    });
}

criterion_group!(benches, redis);
criterion_main!(benches);
