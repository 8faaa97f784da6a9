//! Session identifiers: 128 bits from the operating system's CSPRNG, never
//! shown in full, and never used as a store key directly (stores see only
//! its SHA-256, a [`crate::store::StoreKey`]).
//!
//! You rarely need this module: the layer draws, signs and reads IDs. It is
//! here for tests and tools that sign or read a cookie with a
//! [`KeyRing`](crate::KeyRing). What the IDs and their signatures defend
//! against, and the tests that show it, is in the crate's
//! [security model](crate#security-model).
//!
//! # Example
//!
//! ```
//! use cloakroom::id::SessionId;
//!
//! let id = SessionId::generate()?;
//! // Debug output never reveals the identifier.
//! assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
//! // Stores only ever see the SHA-256 of the identifier.
//! let key = id.store_key();
//! assert_eq!(key.as_bytes().len(), 32);
//! # Ok::<(), cloakroom::id::RandomnessError>(())
//! ```

mod session_id;
pub(crate) mod store_key;

pub(crate) use self::session_id::ENCODED_ID_LEN;
pub use self::session_id::{InvalidCookie, RandomnessError, SessionId, ID_LEN};
pub(crate) use self::store_key::{ParseSessionHandleError, SessionHandle, StoreKey};
