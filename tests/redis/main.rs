//! Everything that runs on real Redis: the store-generic suite
//! (conformance and end-to-end checks) on a standalone server and on a
//! 3-master Redis Cluster, what is particular to `RedisStore` (outages,
//! round trips, key layout), and the demo binary on both.

#[path = "../support"]
mod support {
    pub(crate) mod app;
    pub(crate) mod backend;
    pub(crate) mod client;
    #[cfg(all(feature = "memory", feature = "csrf"))]
    pub(crate) mod demo;
    pub(crate) mod logs;
    pub(crate) mod proxy;
    pub(crate) mod redis;
    pub(crate) mod redis_server;
    pub(crate) mod reply;
}

#[path = "../checks/mod.rs"]
mod checks;

#[cfg(all(feature = "memory", feature = "csrf"))]
mod demo;
mod server;

/// The suite on a standalone server (one per test binary, a key prefix per
/// test).
mod standalone {
    crate::checks::store_tests!(crate::support::redis::store().await);
}

/// The suite on a Redis Cluster (three masters on loopback ports):
/// sessions, user indexes and logout-everywhere spread over slots on
/// different nodes.
mod cluster {
    crate::checks::store_tests!(crate::support::redis::cluster_store().await);
}
