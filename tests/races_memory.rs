//! Races on the memory store: concurrent writers, logout against in-flight
//! writes, logout-everywhere against logins.

mod common;

race_tests!(Some(cloakroom::MemoryStore::new()));
