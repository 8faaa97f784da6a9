//! The store conformance suite against `PostgresStore` on a real server
//! (`DATABASE_URL`, or a throwaway cluster; see `common/postgres.rs`).
#![cfg(feature = "postgres")]

mod common;

// A table per check (see `common::postgres::store`): the sweep check sweeps
// at a time in the future, which in a shared table would also delete the
// live sessions of the checks running beside it.
cloakroom::store_conformance_tests!(optional: common::postgres::store().await);
