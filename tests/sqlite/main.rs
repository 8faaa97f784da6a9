//! Everything that runs on a real SQLite file (SQLite is compiled in, so
//! nothing is skipped): the store-generic suite (conformance and end-to-end
//! checks, races included), what is particular to `SqliteStore` (schema,
//! sweeping, bad rows, hashed keys, a database locked by another
//! connection), and the demo binary on it.

#[path = "../support"]
mod support {
    pub(crate) mod app;
    // Only `free_port` and `scratch_dir`: SQLite has no server to start.
    #[allow(dead_code)]
    pub(crate) mod backend;
    pub(crate) mod client;
    #[cfg(feature = "csrf")]
    pub(crate) mod csrf;
    #[cfg(all(feature = "memory", feature = "csrf"))]
    pub(crate) mod demo;
    pub(crate) mod logs;
    pub(crate) mod reply;
    pub(crate) mod sqlite;
}

#[path = "../checks/mod.rs"]
mod checks;

#[cfg(all(feature = "memory", feature = "csrf"))]
mod demo;
mod outage;
mod store;

// A database file per test (see `support::sqlite::store`).
checks::store_tests!(crate::support::sqlite::store().await);
