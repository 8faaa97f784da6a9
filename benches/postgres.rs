//! Criterion benchmarks of `PostgresStore`'s hot path against a real
//! server: `DATABASE_URL` when set, otherwise a throwaway cluster started
//! the way the tests start one.
//!
//! Run with: `cargo bench --bench postgres --features postgres`

/// The PostgreSQL starter of the tests (`tests/support/`).
#[path = "../tests/support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod postgres;
}

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use time::OffsetDateTime;

use cloakroom::store::{Patch, SessionRecord, Touch};
use cloakroom::{id::SessionId, store::SessionStore, store::StoreKey};

fn store_calls(c: &mut Criterion) {
    // One connection thread, as one request's store call sees it: these
    // figures are round-trip latency, not throughput.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A table of its own on the shared server.
    let Some(store) = runtime.block_on(support::postgres::store()) else {
        eprintln!("no PostgreSQL: nothing to benchmark");
        return;
    };

    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let key: StoreKey = SessionId::generate().expect("id").store_key();
    let mut record = SessionRecord::new(
        now,
        Duration::from_secs(30 * 60),
        Duration::from_secs(12 * 3600),
    );
    record.user_id = Some("user-42".into());
    record
        .data
        .insert("cart".into(), json!({"items": [1, 2, 3]}));
    record.data.insert("theme".into(), json!("dark"));
    runtime.block_on(async {
        assert!(store.create(&key, &record, now).await.expect("create"));
    });

    let mut group = c.benchmark_group("postgres");
    // `after: 1.0`: never due while the session is live, so a plain read.
    group.bench_function("load", |b| {
        b.to_async(&runtime).iter(|| async {
            let loaded = store
                .load(black_box(&key), Touch { now, after: 1.0 })
                .await
                .expect("load");
            black_box(loaded.expect("live"))
        })
    });
    // `after: 0.0`: due on every load, so each one also writes the touch.
    group.bench_function("load_with_touch", |b| {
        b.to_async(&runtime).iter(|| async {
            let loaded = store
                .load(black_box(&key), Touch { now, after: 0.0 })
                .await
                .expect("load");
            black_box(loaded.expect("live"))
        })
    });
    let mut patch = Patch::default();
    patch.set.insert("counter".into(), json!(7));
    group.bench_function("save_one_key", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(store
                .save(black_box(&key), &patch, Touch { now, after: 1.0 })
                .await
                .expect("save"));
        })
    });
    // What an "N active sessions" display and a session list cost: one
    // index lookup each, for a user with one session.
    group.bench_function("count_user", |b| {
        b.to_async(&runtime).iter(|| async {
            let count = store
                .count_user(black_box("user-42"), now)
                .await
                .expect("count_user");
            assert_eq!(count, 1);
        })
    });
    group.bench_function("list_user", |b| {
        b.to_async(&runtime).iter(|| async {
            let listed = store
                .list_user(black_box("user-42"), now, 100)
                .await
                .expect("list_user");
            black_box(listed)
        })
    });
    group.finish();
}

criterion_group!(benches, store_calls);
criterion_main!(benches);
