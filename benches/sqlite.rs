//! Criterion benchmarks of `SqliteStore`'s hot path on a real SQLite file
//! (WAL, `synchronous = NORMAL`, set up the way the tests and the store's
//! docs set it up), in the system's temporary directory.
//!
//! Run with: `cargo bench --bench sqlite --features sqlite`

/// The SQLite set-up of the tests (`tests/support/`).
#[path = "../tests/support"]
mod support {
    // Only `free_port` and `scratch_dir`: SQLite has no server to start.
    #[allow(dead_code)]
    pub(crate) mod backend;
    pub(crate) mod sqlite;
}

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use time::OffsetDateTime;

use cloakroom::store::{Patch, SessionRecord, Touch};
use cloakroom::{id::SessionId, store::SessionStore, store::StoreKey};

/// Sessions saved at once by the `save_64_sessions_concurrently` bench.
const CONCURRENT: usize = 64;

fn record(now: OffsetDateTime) -> SessionRecord {
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
    record
}

fn store_calls(c: &mut Criterion) {
    // One calling task, as one request's store call sees it: the first
    // figures are latency. The last one is throughput: many requests'
    // saves at once, on a multi-threaded runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime
        .block_on(support::sqlite::store())
        .expect("SQLite is built in");

    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");
    let key: StoreKey = SessionId::generate().expect("id").store_key();
    let keys: Arc<Vec<StoreKey>> = Arc::new(
        (0..CONCURRENT)
            .map(|_| SessionId::generate().expect("id").store_key())
            .collect(),
    );
    runtime.block_on(async {
        assert!(store.create(&key, &record(now), now).await.expect("create"));
        for k in keys.iter() {
            let mut other = record(now);
            other.user_id = None;
            assert!(store.create(k, &other, now).await.expect("create"));
        }
    });

    let mut group = c.benchmark_group("sqlite");
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
    // 64 sessions saved at once, each by its own task: one iteration's
    // time divided by 64 is what one save costs when the writer is busy.
    let patch = Arc::new(patch);
    group.bench_function("save_64_sessions_concurrently", |b| {
        b.to_async(&runtime).iter(|| {
            let store = store.clone();
            let keys = Arc::clone(&keys);
            let patch = Arc::clone(&patch);
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..CONCURRENT {
                    let store = store.clone();
                    let keys = Arc::clone(&keys);
                    let patch = Arc::clone(&patch);
                    tasks.spawn(async move {
                        assert!(store
                            .save(&keys[i], &patch, Touch { now, after: 1.0 })
                            .await
                            .expect("save"));
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    done.expect("save task");
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, store_calls);
criterion_main!(benches);
