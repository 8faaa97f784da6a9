//! Everything that runs on the in-process `MemoryStore` alone: the
//! store-generic suite (conformance and end-to-end checks), what is
//! particular to `MemoryStore` and the layer, CSRF protection, and property
//! tests of the cookie codec.

#[path = "../support"]
mod support {
    pub(crate) mod app;
    pub(crate) mod client;
    pub(crate) mod logs;
    pub(crate) mod reply;
}

#[path = "../checks/mod.rs"]
mod checks;

mod csrf;
mod layer_order;
mod properties;
mod store;
mod warnings;

checks::store_tests!(Some(cloakroom::MemoryStore::new()));
