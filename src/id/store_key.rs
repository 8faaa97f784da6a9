//! [`StoreKey`] (what a store keeps a session under) and [`SessionHandle`]
//! (what a page may show of it).

use std::fmt;
use std::str::FromStr;

/// The key a store keeps a session under: SHA-256 of its [`SessionId`](crate::id::SessionId).
///
/// A store key cannot be turned back into a cookie, so it is safe to keep in
/// the store, to show in an admin page ("sign out this device") and to log.
/// `Display` and [`StoreKey::to_hex`] give the full 64-character hex form;
/// `Debug` and [`StoreKey::short`] give an 8-character prefix, which is what
/// this crate's tracing events use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// Wraps 32 bytes read back from a store.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex of the whole key (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters: enough to tell sessions apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({}…)", self.short())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Parsing a [`StoreKey`] from text failed: it must be 64 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseStoreKeyError(());

impl fmt::Display for ParseStoreKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a store key is 64 hex characters")
    }
}

impl std::error::Error for ParseStoreKeyError {}

impl FromStr for StoreKey {
    type Err = ParseStoreKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseStoreKeyError(()))?;
        Ok(Self(bytes))
    }
}

/// The handle of one session, to show a client in place of anything
/// secret: in a devices page, the value a "sign out this device" form
/// sends back to [`Session::logout_device`](crate::Session::logout_device).
///
/// It is the session's [`StoreKey`] (SHA-256 of the ID) as 64 hex
/// characters, so it cannot be turned into a cookie, and it names nothing
/// outside the store. It changes when the session moves to a new ID (login,
/// regenerate). Serializes as that text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle(StoreKey);

impl SessionHandle {
    /// The store key this handle stands for.
    pub const fn store_key(&self) -> &StoreKey {
        &self.0
    }
}

impl From<StoreKey> for SessionHandle {
    fn from(key: StoreKey) -> Self {
        Self(key)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({}…)", self.0.short())
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for SessionHandle {
    type Err = ParseSessionHandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self).map_err(|_| ParseSessionHandleError(()))
    }
}

/// Text from a client is not a [`SessionHandle`] at all.
///
/// Its message says only that, in the words of the page that sent the
/// handle (`not a session handle`), and nothing of what a handle is made
/// of. A malformed handle names none of the user's sessions, just as a
/// well-formed unknown one does: answer both the same (a `404`), as the
/// [`device`](crate::device#a-devices-page) module shows; converted into a
/// [`SessionError`](crate::SessionError) (`?` in a handler), it is
/// [`SessionError::UnknownSession`](crate::SessionError::UnknownSession).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseSessionHandleError(());

impl fmt::Display for ParseSessionHandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a session handle")
    }
}

impl std::error::Error for ParseSessionHandleError {}

impl serde::Serialize for SessionHandle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionHandle {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
