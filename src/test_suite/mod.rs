//! The store conformance suite and test doubles, for store authors and for
//! tests of code above the store: [`CountingStore`] counts, fails and
//! holds store calls; [`ManualClock`] is a clock the test moves by hand
//! (give it to [`SessionLayerBuilder::clock`](crate::SessionLayerBuilder::clock)).
//!
//! # Example
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
