//! Everything that runs on real Redis: the store-generic suite
//! (conformance and end-to-end checks) on a standalone server and on a
//! 3-master Redis Cluster, each with and without a local cache, what is
//! particular to `RedisStore` (outages, round trips, key layout, the cache
//! shared by two instances), and the demo binary on both.
//!
//! On `support::harness`: without Redis, these tests are reported ignored.

#[path = "../support"]
mod support {
    pub(crate) mod app;
    pub(crate) mod backend;
    pub(crate) mod client;
    #[cfg(feature = "csrf")]
    pub(crate) mod csrf;
    #[cfg(all(feature = "memory", feature = "csrf"))]
    pub(crate) mod demo;
    pub(crate) mod harness;
    pub(crate) mod logs;
    pub(crate) mod proxy;
    pub(crate) mod redis;
    pub(crate) mod redis_server;
    pub(crate) mod reply;
}

#[path = "../checks/mod.rs"]
mod checks;

mod cache;
#[cfg(all(feature = "memory", feature = "csrf"))]
mod demo;
mod server;
mod streams;

use std::process::ExitCode;

use support::harness::Backend;

/// The Redis server the tests share: `REDIS_URL`, or one they start.
static REDIS: Backend = Backend {
    name: "Redis",
    missing: support::redis::missing,
};

/// A `redis-server` of a test's own, to stop, freeze or restart.
static REDIS_SERVER: Backend = Backend {
    name: "redis-server",
    missing: support::redis::server_missing,
};

/// The Redis Cluster the tests share: `REDIS_CLUSTER_URLS`, or one they
/// build.
static REDIS_CLUSTER: Backend = Backend {
    name: "Redis Cluster",
    missing: support::redis::cluster_missing,
};

fn main() -> ExitCode {
    let mut tests = standalone::tests();
    tests.extend(cluster::tests());
    tests.extend(cached::tests());
    tests.extend(cached_cluster::tests());
    tests.extend(cache::tests());
    tests.extend(server::tests());
    tests.extend(streams::tests());
    #[cfg(all(feature = "memory", feature = "csrf"))]
    tests.extend(demo::tests());
    support::harness::main(file!(), tests)
}

/// The suite on a standalone server (one per test binary, a key prefix per
/// test).
mod standalone {
    crate::checks::store_tests!(needs &crate::REDIS; crate::support::redis::store().await);
}

/// The suite on a Redis Cluster (three masters on loopback ports):
/// sessions, user indexes and logout-everywhere spread over slots on
/// different nodes.
mod cluster {
    crate::checks::store_tests!(
        needs &crate::REDIS_CLUSTER;
        crate::support::redis::cluster_store().await
    );
}

/// The suite on a standalone server through a store with a local cache.
mod cached {
    crate::checks::store_tests!(needs &crate::REDIS; crate::support::redis::cached_store().await);
}

/// The suite on a Redis Cluster through a store with a local cache.
mod cached_cluster {
    crate::checks::store_tests!(
        needs &crate::REDIS_CLUSTER;
        crate::support::redis::cached_cluster_store().await
    );
}
