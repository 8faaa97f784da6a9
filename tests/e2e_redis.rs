//! End-to-end tests through a real axum `Router` on a real Redis server.
#![cfg(feature = "redis")]

mod common;

e2e_tests!(common::redis::store().await);
