//! End-to-end tests through a real axum `Router` on `PostgresStore`,
//! against a real server (`DATABASE_URL`, or a throwaway cluster; see
//! `common/postgres.rs`).
#![cfg(feature = "postgres")]

mod common;

// A table per test: these checks use fixed user names ("alice"), so tests
// running at once must not see each other's sessions.
e2e_tests!(common::postgres::store().await);
