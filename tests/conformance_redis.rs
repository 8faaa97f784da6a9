//! The store conformance suite against a real standalone Redis.
#![cfg(feature = "redis")]

mod common;

cloakroom::store_conformance_tests!(optional: common::redis::store().await);
