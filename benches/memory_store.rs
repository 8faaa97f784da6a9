//! `MemoryStore` at scale: one million live sessions with a 100-byte
//! payload. Reports the heap bytes each live session takes (from a counting
//! global allocator), then benchmarks load and commit against that store.
//!
//! Run with: `cargo bench --bench memory_store` (`MEMORY_SESSIONS` changes
//! the number of sessions).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use time::OffsetDateTime;

use cloakroom::store::{Patch, SessionRecord, Touch};
use cloakroom::{id::SessionId, store::SessionStore, store::StoreKey, MemoryStore};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn sessions() -> usize {
    std::env::var("MEMORY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Fills `store` with `n` sessions, each with a 100-byte payload, the
/// logged-in ones indexed under one of `n / 10` users; returns their keys
/// and the heap bytes the store grew by.
fn fill(
    runtime: &tokio::runtime::Runtime,
    store: &MemoryStore,
    n: usize,
    logged_in: bool,
    now: OffsetDateTime,
) -> (Vec<StoreKey>, usize) {
    let keys: Vec<StoreKey> = (0..n)
        .map(|_| SessionId::generate().expect("id").store_key())
        .collect();
    let payload = "x".repeat(100);
    let region = Region::new(ALLOCATOR);
    runtime.block_on(async {
        for (i, key) in keys.iter().enumerate() {
            let mut record = SessionRecord::new(
                now,
                Duration::from_secs(3600),
                Duration::from_secs(12 * 3600),
            );
            record.data.insert("payload".into(), json!(payload));
            if logged_in {
                record.user_id = Some(format!("user-{}", i % (n / 10).max(1)));
            }
            assert!(store.create(key, &record, now).await.expect("create"));
        }
    });
    let change = region.change();
    let grown = change.bytes_allocated + change.bytes_reallocated.max(0) as usize
        - change.bytes_deallocated;
    (keys, grown)
}

fn memory_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let n = sessions();
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("now");

    let anonymous = MemoryStore::new();
    let (_, bytes) = fill(&runtime, &anonymous, n, false, now);
    println!(
        "MemoryStore: {n} live sessions with a 100-byte payload take {:.1} MB, {} bytes each",
        bytes as f64 / 1e6,
        bytes / n
    );
    drop(anonymous);

    let store = MemoryStore::new();
    let (keys, bytes) = fill(&runtime, &store, n, true, now);
    println!(
        "MemoryStore: {n} logged-in sessions (10 per user) with a 100-byte payload take {:.1} MB, \
         {} bytes each, user index included",
        bytes as f64 / 1e6,
        bytes / n
    );

    let never = Touch { now, after: 1.0 };
    let mut i = 0usize;
    c.bench_function("memory_store_1m_load", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 7919) % keys.len();
            let key = &keys[i];
            let store = &store;
            async move { black_box(store.load(key, never).await.expect("load")) }
        })
    });
    let mut patch = Patch::default();
    patch.set.insert("counter".into(), json!(1));
    c.bench_function("memory_store_1m_load_and_commit", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 7919) % keys.len();
            let key = &keys[i];
            let (store, patch) = (&store, &patch);
            async move {
                black_box(store.load(key, never).await.expect("load"));
                assert!(store.save(key, patch, never).await.expect("save"));
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = memory_store
}
criterion_main!(benches);
