//! Security events: stable names, and never a session ID in any log line.
//!
//! Alone in its own test binary: tracing caches per-callsite interest
//! globally, so capturing with a thread-local subscriber is only reliable
//! when no other test runs concurrently in the same process.

mod common;

use cloakroom::MemoryStore;

#[tokio::test]
async fn security_events_never_show_the_session_id() {
    common::e2e::security_events_never_show_the_session_id(MemoryStore::new()).await;
}
