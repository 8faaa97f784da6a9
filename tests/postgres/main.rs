//! Everything that runs on real PostgreSQL (`DATABASE_URL`, or a
//! throwaway cluster; see `support/postgres.rs`): the store-generic suite
//! (conformance and end-to-end checks), what is particular to
//! `PostgresStore` (schema, sweeping, bad rows, outages), and the demo
//! binary on it.
//!
//! On `support::harness`: without PostgreSQL, these tests are reported
//! ignored.

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
    pub(crate) mod postgres;
    pub(crate) mod reply;
}

#[path = "../checks/mod.rs"]
mod checks;

#[cfg(all(feature = "memory", feature = "csrf"))]
mod demo;
mod listen;
mod outage;
mod store;

use std::process::ExitCode;

use support::harness::Backend;

/// The PostgreSQL server the tests share: `DATABASE_URL`, or one they
/// start.
static POSTGRES: Backend = Backend {
    name: "PostgreSQL",
    missing: support::postgres::missing,
};

/// A PostgreSQL server of a test's own, to stop and start again.
static POSTGRES_SERVER: Backend = Backend {
    name: "a PostgreSQL server of the tests' own",
    missing: support::postgres::server_missing,
};

fn main() -> ExitCode {
    let mut all = tests();
    all.extend(store::tests());
    all.extend(outage::tests());
    all.extend(listen::tests());
    #[cfg(all(feature = "memory", feature = "csrf"))]
    all.extend(demo::tests());
    support::harness::main(file!(), all)
}

// A table per test (see `support::postgres::store`): the checks use fixed
// user names ("alice"), so tests running at once must not see each other's
// sessions, and the conformance suite's sweep check sweeps at a time in the
// future, which in a shared table would also delete the live sessions of
// the checks running beside it.
checks::store_tests!(needs &crate::POSTGRES; crate::support::postgres::store().await);
