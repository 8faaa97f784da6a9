//! The store conformance suite against a real Redis Cluster (three masters
//! on loopback ports).
#![cfg(feature = "redis")]

mod common;

cloakroom::store_conformance_tests!(optional: common::redis::cluster_store().await);
