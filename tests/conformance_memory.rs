//! The store conformance suite against `MemoryStore`.

cloakroom::store_conformance_tests!(cloakroom::MemoryStore::new());
