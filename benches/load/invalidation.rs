//! How fast a revocation on one instance reaches another instance's local
//! cache, and what a cached session costs in memory.
//!
//! Two `RedisStore`s with a local cache stand for two instances of an app:
//! each has its own connections and its own subscription. For each trial,
//! A creates a session and B reads it until B's cache holds it; then the
//! clock starts, A deletes the session (a logout), and B reads it in a
//! loop until B refuses it. The time measured runs from the start of A's
//! delete (so it includes A's own round trip) to B's first refusal.

use std::time::{Duration, Instant};

use cloakroom::store::{SessionRecord, Touch};
use cloakroom::{
    id::SessionId, store::RedisConnection, store::RedisStore, store::SessionStore, store::StoreKey,
};
use hdrhistogram::Histogram;
use time::OffsetDateTime;

use crate::ALLOCATOR;

/// Trials unless `LOAD_INVALIDATION_TRIALS` says otherwise.
const TRIALS: u64 = 2_000;

/// The invalidation delay's median and 99th percentile, in microseconds.
pub(crate) struct Invalidation {
    pub(crate) trials: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    /// Heap bytes held per cached session (a record with one small value).
    pub(crate) bytes_per_session: u64,
}

async fn cached_store(url: &str, prefix: &str) -> RedisStore {
    let connection = RedisConnection::connect(url).await.expect("connect");
    RedisStore::builder(connection)
        .key_prefix(prefix)
        .local_cache(100_000)
        .build()
        .expect("a valid store")
}

fn record(now: OffsetDateTime) -> SessionRecord {
    let mut record = SessionRecord::new(
        now,
        Duration::from_secs(30 * 60),
        Duration::from_secs(12 * 3600),
    );
    record
        .data
        .insert("counter".to_owned(), serde_json::json!(1));
    record
}

fn touch() -> Touch {
    Touch {
        now: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        after: 0.1,
    }
}

/// A session created through `store`, under a fresh key.
async fn new_session(store: &RedisStore) -> StoreKey {
    let key = SessionId::generate().unwrap().store_key();
    let now = touch().now;
    assert!(store.create(&key, &record(now), now).await.unwrap());
    key
}

/// Reads `key` through `store` until its cache holds one more session.
async fn until_cached(store: &RedisStore, key: &StoreKey, before: usize) {
    let start = Instant::now();
    while store.cached_sessions() == Some(before) {
        assert!(
            store.load(key, touch()).await.unwrap().is_some(),
            "the session is there"
        );
        if store.cached_sessions() == Some(before) {
            assert!(start.elapsed() < Duration::from_secs(10), "never cached");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

pub(crate) async fn measure(url: &str) -> Invalidation {
    let trials = std::env::var("LOAD_INVALIDATION_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRIALS);
    let prefix = format!("load-invalidation-{}:", std::process::id());
    let a = cached_store(url, &prefix).await;
    let b = cached_store(url, &prefix).await;
    let mut delays = Histogram::<u64>::new(3).unwrap();
    for _ in 0..trials {
        let key = new_session(&a).await;
        until_cached(&b, &key, 0).await;
        let start = Instant::now();
        a.delete(&key, touch().now).await.unwrap();
        while b.load(&key, touch()).await.unwrap().is_some() {
            // The subscriber runs on this thread too: let it. Redis runs on
            // this core as well (the bench pins both to it), so also give
            // the core up, or Redis would wait for this loop's time slice
            // to end before it could deliver the message.
            tokio::task::yield_now().await;
            std::thread::yield_now();
        }
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        delays.record(micros.max(1)).unwrap();
    }

    // Memory: the heap B holds after caching many sessions, less what it
    // held before, per session.
    let sessions = 10_000usize;
    let mut keys = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        keys.push(new_session(&a).await);
    }
    let held = || {
        let stats = ALLOCATOR.stats();
        stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
    };
    let before = held();
    for (i, key) in keys.iter().enumerate() {
        until_cached(&b, key, i).await;
    }
    let bytes_per_session = u64::try_from((held() - before) / sessions as i64).unwrap_or(0);
    for key in &keys {
        a.delete(key, touch().now).await.unwrap();
    }
    Invalidation {
        trials,
        p50_us: delays.value_at_quantile(0.5),
        p99_us: delays.value_at_quantile(0.99),
        max_us: delays.max(),
        bytes_per_session,
    }
}
