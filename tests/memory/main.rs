//! Everything that runs on the in-process `MemoryStore` alone: the
//! store-generic suite (conformance and end-to-end checks), what is
//! particular to `MemoryStore` and the layer, the CSRF layer's rules that
//! no store changes, and property tests of the cookie codec.

#[path = "../support"]
mod support {
    pub(crate) mod app;
    pub(crate) mod client;
    pub(crate) mod csrf;
    pub(crate) mod logs;
    pub(crate) mod reply;
}

#[path = "../checks/mod.rs"]
mod checks;

// Beside the `csrf` topic of the store-generic checks: the layer's rules
// that no store changes.
#[path = "csrf.rs"]
mod csrf_layer;
mod layer_order;
mod properties;
mod store;
mod warnings;

checks::store_tests!(Some(cloakroom::MemoryStore::new()));
