//! End-to-end tests through a real axum `Router` on a real Redis Cluster
//! (three masters on loopback ports): sessions, user indexes and
//! logout-everywhere spread over slots on different nodes.
#![cfg(feature = "redis")]

mod common;

e2e_tests!(common::redis::cluster_store().await);
