//! The store conformance suite against `PostgresStore` on a real server
//! (`DATABASE_URL`, or a throwaway cluster; see `common/postgres.rs`).
#![cfg(feature = "postgres")]

mod common;

cloakroom::store_conformance_tests!(optional: common::postgres::store().await);
