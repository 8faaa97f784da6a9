//! The store conformance suite and test doubles, for store authors and for
//! tests of code above the store: [`CountingStore`] counts, fails and
//! holds store calls; [`ManualClock`] is a clock the test moves by hand
//! (give it to [`SessionLayerBuilder::clock`](crate::SessionLayerBuilder::clock)).
//!
//! # Testing a store
//!
//! A store written against [`SessionStore`](crate::store::SessionStore)
//! (see [Writing a store](crate::store#writing-a-store)) proves itself with
//! the conformance suite. Add the feature to the dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! cloakroom = { version = "0.1", features = ["test-suite"] }
//! ```
//!
//! and stamp the checks out, one `#[test]` each, with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```
//! # mod my_crate { pub use cloakroom::MemoryStore as MyStore; }
//! // tests/conformance.rs
//! cloakroom::store_conformance_tests!(my_crate::MyStore::new());
//! ```
//!
//! The expression runs once per check, inside an async block, so it may
//! `.await` a connection. A test target with a harness of its own
//! (`harness = false`) takes the checks as a table of names and functions
//! instead (`store_conformance_tests!(harness: ...)`), and `optional:`
//! skips them when the backend is missing: see the macro. Every check is
//! also a public function of this module, to call on its own.
//!
//! # Testing an app
//!
//! A layer on a [`CountingStore`] and a [`ManualClock`] lets a test count
//! the store calls its requests make, make the store fail or wait, and
//! expire sessions without sleeping:
//!
//! ```
//! use std::time::Duration;
//!
//! use cloakroom::test_suite::{Clock, CountingStore, ManualClock};
//! use cloakroom::{Key, MemoryStore, SessionLayer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = CountingStore::new(MemoryStore::new());
//! let clock = ManualClock::starting_now();
//! let layer = SessionLayer::builder(store.clone())
//!     .key(Key::generate()?)
//!     .clock(clock.clone())
//!     .build()?;
//! let before = clock.now();
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(clock.now() - before, Duration::from_secs(60));
//! assert_eq!(store.calls().total(), 0);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod conformance;
mod counting;

pub use self::conformance::*;
pub use self::counting::{CountingStore, Pause, StoreCalls, StoreOp};
pub use crate::clock::{Clock, ManualClock};
