//! Races on a real PostgreSQL server: concurrent writers, logout against
//! in-flight writes, logout-everywhere against logins.
#![cfg(feature = "postgres")]

mod common;

race_tests!(common::postgres::store().await);
