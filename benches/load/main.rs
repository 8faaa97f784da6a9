//! Side-by-side load benchmark: the same axum app with no session layer,
//! with cloakroom, and with tower-sessions (in two save policies, see
//! `impls_for`), on a memory store and on Redis, under three scenarios.
//!
//! Run with: `cargo bench --features redis,test-suite --bench load` (needs
//! `redis-server` for the Redis rows, like the tests; add `sqlite` to the
//! features for SQLite rows, cloakroom against the baseline on a fresh
//! SQLite file per cell; `LOAD_SECS` sets the seconds per cell, default 10;
//! `LOAD_CONNECTIONS` the concurrent connections, default 64; `LOAD_STORES`
//! and `LOAD_SCENARIOS` limit the stores and scenarios, e.g. `memory` or
//! `read,write,invalidation`).
//!
//! After the Redis rows (among them `cloakroom-cached`, with the store's
//! local cache), `invalidation.rs` measures how long a revocation on one
//! cached instance takes to reach another (`LOAD_INVALIDATION_TRIALS`,
//! default 2,000) and what a cached session costs in heap, and prints
//! `RESULT store=redis scenario=invalidation impl=cloakroom-cached p50_us=N
//! p99_us=N`.
//!
//! The server runs in a child process pinned to core 0 (one tokio thread);
//! this process is the load generator, pinned to core 1, with one HTTP/1.1
//! keep-alive connection per virtual client. The server counts its own heap
//! allocations (a counting global allocator) and store calls (a counting
//! wrapper around each store) and reports them per request. The load
//! generator also measures, over the measured window only, the server
//! process's CPU time (`/proc/<pid>/stat`) and, on Redis, the Redis CPU
//! time of the commands the server sent (`INFO commandstats`), both per
//! request.
//!
//! Last, `streams.rs` measures how long a logout on one instance takes to
//! close a stream held on another (memory, Redis, a 3-master Redis
//! Cluster, and PostgreSQL when built with `postgres`; `LOAD_STREAM_TRIALS`,
//! default 500), the same with the notification channel cut just before
//! the logout, and the heap an open watch holds, and prints
//! `RESULT store=S scenario=stream-revocation impl=cloakroom p50_us=N
//! p99_us=N` lines (`LOAD_SCENARIOS=stream` runs only these).
//!
//! `server.rs` is the app under load, `driver.rs` the load generator,
//! `cpu.rs` the two CPU measurements, `invalidation.rs` the cache's
//! invalidation delay, `streams.rs` the stream closes, `report.rs` the
//! table and the `RESULT` lines.

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// The Redis starter of the tests (`tests/support/`), for the Redis rows.
#[path = "../../tests/support"]
#[allow(dead_code)]
mod support {
    pub(crate) mod backend;
    #[cfg(feature = "postgres")]
    pub(crate) mod postgres;
    pub(crate) mod proxy;
    pub(crate) mod redis;
    pub(crate) mod redis_server;
}

mod cpu;
mod driver;
mod invalidation;
mod report;
mod server;
mod streams;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The implementations measured on a store, in the order of the table.
///
/// `tower-sessions` is configured for the same behaviour as cloakroom: an
/// idle timeout that every request rolls (`always_save`, since with
/// `Expiry::OnInactivity` alone "reading a session is not considered
/// activity"). `tower-sessions-default` is its default save policy, which
/// saves only a modified session, so reads never extend it: cheaper, and
/// shown for reference. tower-sessions has no SQLite store among the
/// dev-dependencies, so the SQLite rows compare cloakroom with the
/// baseline only. On Redis, `cloakroom-cached` is cloakroom with the
/// store's local cache.
fn impls_for(store: &str) -> &'static [&'static str] {
    match store {
        "sqlite" => &["baseline", "cloakroom"],
        "redis" => &[
            "baseline",
            "cloakroom",
            "cloakroom-cached",
            "tower-sessions",
            "tower-sessions-default",
        ],
        _ => &[
            "baseline",
            "cloakroom",
            "tower-sessions",
            "tower-sessions-default",
        ],
    }
}

const SCENARIOS: [&str; 3] = ["anonymous", "read", "write"];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    if std::env::var("LOAD_ROLE").as_deref() == Ok("server") {
        server::server_main();
    } else {
        driver::driver_main();
    }
}
