//! [`SessionId`]: the 128-bit secret the cookie carries, and the errors of
//! drawing and reading one.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};

use super::store_key::StoreKey;

/// Length of a session identifier in bytes (128 bits).
pub const ID_LEN: usize = 16;

/// Length of a base64url-encoded identifier, without padding.
pub(crate) const ENCODED_ID_LEN: usize = 22;

/// An opaque, random session identifier.
///
/// The identifier is the secret that the browser holds. It is generated from
/// the operating system's random number generator, never derived from time,
/// counters or user data. `Debug` and `Display` print `<redacted>`; the only
/// way to see the bytes is [`SessionId::as_bytes`], which exists for codecs
/// and tests.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// Draws a fresh identifier from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] if the operating system cannot supply random
    /// bytes. No identifier is ever produced from a weaker source.
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut bytes = [0u8; ID_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| RandomnessError::new())?;
        Ok(Self(bytes))
    }

    /// Wraps raw bytes as an identifier.
    ///
    /// # Security
    ///
    /// Only for codecs and tests: an identifier that did not come from
    /// [`SessionId::generate`] may be guessable.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw identifier bytes.
    ///
    /// # Security
    ///
    /// These bytes are the session secret; never log them.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The key under which stores keep this session: SHA-256 of the ID.
    ///
    /// A store dump, backup or log line therefore holds nothing that can be
    /// turned back into a working cookie.
    pub fn store_key(&self) -> StoreKey {
        StoreKey::from_bytes(Sha256::digest(self.0).into())
    }

    /// base64url (no padding) of the identifier, as it appears in cookies.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Decodes exactly [`ENCODED_ID_LEN`] base64url characters.
    ///
    /// The base64 engine rejects non-canonical trailing bits, so every
    /// identifier has exactly one accepted encoding.
    pub(crate) fn decode(encoded: impl AsRef<[u8]>) -> Option<Self> {
        let encoded = encoded.as_ref();
        if encoded.len() != ENCODED_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_LEN];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes) {
            Ok(ID_LEN) => Some(Self(bytes)),
            _ => None,
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The operating system's random number generator failed.
///
/// Sessions are never created from a weaker source; the request fails
/// instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomnessError(());

impl RandomnessError {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for RandomnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for RandomnessError {}

/// Why a cookie value names no session ID
/// ([`KeyRing::verify`](crate::KeyRing::verify)). A request with such a
/// cookie simply has no session; this is never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidCookie {
    /// Wrong length, wrong separator, or not base64url.
    Malformed,
    /// Well-formed, but no key in the ring produced the tag: forged,
    /// tampered with, or signed by a key that has left the ring.
    BadSignature,
}

impl InvalidCookie {
    /// A stable, lower-case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
        }
    }
}

impl fmt::Display for InvalidCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for InvalidCookie {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::store_key::{SessionHandle, StoreKey};

    #[test]
    fn generated_ids_are_distinct_and_full_length() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.encode().len(), ENCODED_ID_LEN);
    }

    /// Every one of the 128 bits is drawn: across 256 IDs each bit position
    /// is seen both set and clear. For a true random source the chance of
    /// a false failure is about 2^-248; an ID with fewer random bits (64,
    /// say, the rest fixed) fails at once.
    #[test]
    fn every_bit_of_a_generated_id_varies() {
        let mut seen_set = [0u8; ID_LEN];
        let mut seen_clear = [0u8; ID_LEN];
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..256 {
            let id = SessionId::generate().unwrap();
            for (i, byte) in id.as_bytes().iter().enumerate() {
                seen_set[i] |= byte;
                seen_clear[i] |= !byte;
            }
            distinct.insert(id);
        }
        assert_eq!(distinct.len(), 256, "no ID drawn twice");
        assert_eq!(seen_set, [0xff; ID_LEN], "every bit is sometimes set");
        assert_eq!(seen_clear, [0xff; ID_LEN], "every bit is sometimes clear");
    }

    #[test]
    fn encoding_round_trips() {
        let id = SessionId::generate().unwrap();
        assert_eq!(SessionId::decode(id.encode()), Some(id));
    }

    #[test]
    fn decode_rejects_wrong_lengths_and_alphabets() {
        assert_eq!(SessionId::decode(""), None);
        assert_eq!(SessionId::decode("AAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(SessionId::decode("AAAAAAAAAAAAAAAAAAAAAAA"), None);
        // Standard-alphabet characters are not base64url.
        assert_eq!(SessionId::decode("AAAAAAAAAAAAAAAAAAAA+/"), None);
        // Non-ASCII of the right byte length.
        assert_eq!(SessionId::decode("AAAAAAAAAAAAAAAAAAAAé"), None);
    }

    #[test]
    fn decode_rejects_non_canonical_trailing_bits() {
        let id = SessionId::from_bytes([0; ID_LEN]);
        let encoded = id.encode();
        assert_eq!(encoded, "AAAAAAAAAAAAAAAAAAAAAA");
        // 'B' sets one of the two unused low bits of the last character.
        assert_eq!(SessionId::decode("AAAAAAAAAAAAAAAAAAAAAB"), None);
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let id = SessionId::generate().unwrap();
        let encoded = id.encode();
        for shown in [format!("{id:?}"), format!("{id}"), format!("{id:#?}")] {
            assert!(!shown.contains(&encoded));
            assert!(shown.contains("redacted"));
        }
    }

    #[test]
    fn store_key_is_sha256_of_the_id() {
        let id = SessionId::from_bytes([7; ID_LEN]);
        let expected: [u8; 32] = Sha256::digest([7u8; ID_LEN]).into();
        assert_eq!(id.store_key().as_bytes(), &expected);
    }

    #[test]
    fn store_key_parses_its_own_hex() {
        let key = SessionId::generate().unwrap().store_key();
        assert_eq!(key.to_hex().parse::<StoreKey>(), Ok(key));
        assert!("zz".parse::<StoreKey>().is_err());
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let bad_key = "zz".parse::<StoreKey>().unwrap_err();
        assert_eq!(bad_key.to_string(), "a store key is 64 hex characters");
        assert_eq!(
            RandomnessError::new().to_string(),
            "the operating system's random number generator failed"
        );
    }

    #[test]
    fn store_key_shows_as_64_lowercase_hex_and_debug_shows_only_8() {
        let key = StoreKey::from_bytes(std::array::from_fn(|i| (i * 7 + 0xa0) as u8));
        // Spelled out byte by byte, independently of the hex crate.
        let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.len(), 64);
        assert_eq!(key.to_string(), hex);
        assert_eq!(key.to_hex(), hex);
        assert_eq!(key.short(), hex[..8]);
        assert_eq!(format!("{key:?}"), format!("StoreKey({}…)", &hex[..8]));
    }

    #[test]
    fn handles_are_the_store_key_in_hex_and_parse_back() {
        let id = SessionId::generate().unwrap();
        let handle = SessionHandle::from(id.store_key());
        assert_eq!(handle.to_string(), id.store_key().to_hex());
        assert_ne!(handle.to_string(), id.encode());
        assert_eq!(handle.to_string().parse::<SessionHandle>(), Ok(handle));
        let json = serde_json::to_string(&handle).unwrap();
        assert_eq!(
            serde_json::from_str::<SessionHandle>(&json).unwrap(),
            handle
        );
        assert!(serde_json::from_str::<SessionHandle>("\"nope\"").is_err());
        assert_eq!(
            format!("{handle:?}"),
            format!("SessionHandle({}…)", &id.store_key().to_hex()[..8])
        );
    }
}
