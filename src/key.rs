//! Signing keys: HMAC-SHA256 over the session ID, with a ring of previous
//! keys so that keys can rotate without logging anyone out.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Key, KeyRing, id::SessionId};
//!
//! let old = Key::from_hex(&"11".repeat(32))?;
//! let new = Key::from_hex(&"22".repeat(32))?;
//!
//! let id = SessionId::generate()?;
//! let cookie = KeyRing::new(old.clone()).sign(&id);
//!
//! // After rotation the old key still verifies...
//! let ring = KeyRing::new(new.clone()).with_previous(old);
//! assert_eq!(ring.verify(&cookie), Ok(id));
//! // ...until it leaves the ring.
//! assert!(KeyRing::new(new).verify(&cookie).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use sha2::Sha256;

use crate::error::ConfigError;
use crate::id::{InvalidCookie, RandomnessError, SessionId, ENCODED_ID_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted, in bytes (256 bits): [`Key::MIN_LEN`].
const MIN_KEY_LEN: usize = 32;

/// Domain separation: a tag made for a session cookie means nothing anywhere
/// else the same key might be used.
const SESSION_TAG_CONTEXT: &[u8] = b"cloakroom/session-id/v1\0";

/// Length of the HMAC-SHA256 tag in bytes; the full output is kept.
const TAG_LEN: usize = 32;
/// base64url length of the tag, without padding.
const ENCODED_TAG_LEN: usize = 43;
/// Length of a well-formed cookie value: `<id>.<tag>`.
pub(crate) const COOKIE_VALUE_LEN: usize = ENCODED_ID_LEN + 1 + ENCODED_TAG_LEN;

/// A secret HMAC-SHA256 signing key of at least [`Key::MIN_LEN`] bytes.
///
/// The key is held as a pre-keyed HMAC state, so signing and verifying cost
/// two SHA-256 compressions each. `Debug` never shows key material.
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
    /// The key itself, for [`Key::to_hex`] only.
    bytes: Arc<[u8]>,
}

impl Key {
    /// The shortest key accepted, in bytes (256 bits).
    pub const MIN_LEN: usize = MIN_KEY_LEN;

    /// A key from raw bytes.
    ///
    /// # Errors
    ///
    /// [`ConfigError::KeyTooShort`] when `bytes` is shorter than
    /// [`Key::MIN_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(ConfigError::KeyTooShort { len: bytes.len() });
        }
        let mac = HmacSha256::new_from_slice(bytes)
            .map_err(|_| ConfigError::KeyTooShort { len: bytes.len() })?;
        Ok(Self {
            mac,
            bytes: Arc::from(bytes),
        })
    }

    /// The key as lower-case hex text, the form [`Key::from_hex`] reads:
    /// for saving a key made with [`Key::generate`] into the app's
    /// configuration (`SESSION_KEY=...`).
    ///
    /// ```
    /// use cloakroom::Key;
    ///
    /// let key = Key::generate()?;
    /// let text = key.to_hex();
    /// assert_eq!(text.len(), 64);
    /// let again = Key::from_hex(&text)?;
    /// # assert_eq!(again.to_hex(), text);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Security
    ///
    /// This is the secret that signs every cookie: anyone who reads it can
    /// forge session cookies. Print it only to put it in a secret store.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// A key from hex text, e.g. 64 hex characters for 32 bytes.
    ///
    /// # Errors
    ///
    /// [`ConfigError::KeyNotHex`] when `hex_text` is not hex, and
    /// [`ConfigError::KeyTooShort`] when it decodes to fewer than
    /// [`Key::MIN_LEN`] bytes.
    pub fn from_hex(hex_text: &str) -> Result<Self, ConfigError> {
        let bytes = hex::decode(hex_text.trim()).map_err(|_| ConfigError::KeyNotHex)?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random 256-bit key from the operating system's CSPRNG.
    ///
    /// Handy for development and tests. A random key lives only as long as
    /// the process: every restart logs everyone out, and several instances
    /// behind a load balancer reject each other's cookies. Production
    /// deployments load a key from configuration instead.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] if the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut bytes = [0u8; MIN_KEY_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| RandomnessError::new())?;
        // 32 bytes always satisfy the length check.
        Self::from_bytes(&bytes).map_err(|_| RandomnessError::new())
    }

    fn tag(&self, id: &SessionId) -> HmacSha256 {
        self.tag_bytes(SESSION_TAG_CONTEXT, id.as_bytes())
    }

    /// HMAC over `context || payload`; `context` keeps tags made for one
    /// purpose from verifying for another.
    fn tag_bytes(&self, context: &[u8], payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(context);
        mac.update(payload);
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The current signing key plus older keys that still verify.
///
/// New cookies are always signed with the current key. Verification tries
/// every key in the ring, so rotating works in two steps: put the new key in
/// front and keep the old one as previous (nobody is logged out); later drop
/// the old key (everyone still holding a cookie signed with it is logged
/// out).
#[derive(Clone)]
pub struct KeyRing {
    /// Never empty; `keys[0]` is the current key.
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring holding only `current`.
    pub fn new(current: Key) -> Self {
        Self {
            keys: vec![current],
        }
    }

    /// A ring from a list whose first key is the current one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EmptyKeyRing`] when `keys` is empty.
    pub fn from_keys(keys: impl IntoIterator<Item = Key>) -> Result<Self, ConfigError> {
        let keys: Vec<Key> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(ConfigError::EmptyKeyRing);
        }
        Ok(Self { keys })
    }

    /// Adds a key that still verifies cookies but no longer signs them.
    #[must_use]
    pub fn with_previous(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// How many keys the ring holds (current plus previous).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a ring holds at least its current key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The cookie value for `id`: base64url(ID) `.` base64url(tag), where the
    /// tag is HMAC-SHA256 with the current key (256 bits, not truncated).
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = self.keys[0].tag(id).finalize().into_bytes();
        let mut value = String::with_capacity(COOKIE_VALUE_LEN);
        value.push_str(&id.encode());
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut value);
        value
    }

    /// Checks a cookie value and returns the session ID it carries.
    ///
    /// Every key in the ring is tried; each comparison is constant-time.
    ///
    /// # Errors
    ///
    /// [`InvalidCookie::Malformed`] when the value is not of the form this
    /// ring produces, and [`InvalidCookie::BadSignature`] when the form is
    /// right but no key in the ring made the tag.
    pub fn verify(&self, value: &str) -> Result<SessionId, InvalidCookie> {
        let (id, tag) = parse(value).ok_or(InvalidCookie::Malformed)?;
        self.check(id, &tag)
    }

    /// Checks the tag of a parsed cookie value (see [`parse`]).
    pub(crate) fn check(
        &self,
        id: SessionId,
        tag: &[u8; TAG_LEN],
    ) -> Result<SessionId, InvalidCookie> {
        for key in &self.keys {
            // `verify_slice` compares in constant time.
            if key.tag(&id).verify_slice(tag).is_ok() {
                return Ok(id);
            }
        }
        Err(InvalidCookie::BadSignature)
    }
}

/// The ID and tag of a cookie value of the form a ring produces, without
/// checking the tag: a length check first, so that junk of any other length
/// costs nothing, then the separator and both base64url parts.
pub(crate) fn parse(value: &str) -> Option<(SessionId, [u8; TAG_LEN])> {
    // Working on bytes: a string of the right byte length may hold
    // multi-byte characters, and splitting it as `str` could panic.
    let bytes = value.as_bytes();
    if bytes.len() != COOKIE_VALUE_LEN || bytes[ENCODED_ID_LEN] != b'.' {
        return None;
    }
    let (encoded_id, encoded_tag) = (&bytes[..ENCODED_ID_LEN], &bytes[ENCODED_ID_LEN + 1..]);
    let id = SessionId::decode(encoded_id)?;
    let mut tag = [0u8; TAG_LEN];
    match URL_SAFE_NO_PAD.decode_slice(encoded_tag, &mut tag) {
        Ok(TAG_LEN) => Some((id, tag)),
        _ => None,
    }
}

impl KeyRing {
    /// HMAC-SHA256 of `context || payload` under the current key, for
    /// values other than session cookies (CSRF tokens, credential
    /// digests). `context` keeps each use apart.
    pub(crate) fn tag(&self, context: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        self.keys[0]
            .tag_bytes(context, payload)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether any key of the ring made `tag` for `context || payload`;
    /// each comparison is constant-time.
    pub(crate) fn verifies(&self, context: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|key| key.tag_bytes(context, payload).verify_slice(tag).is_ok())
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_key_error_names_the_minimum() {
        let shown = ConfigError::KeyTooShort { len: 3 }.to_string();
        assert!(
            shown.contains(&format!("at least {MIN_KEY_LEN} bytes")),
            "{shown}"
        );
    }

    fn key(byte: u8) -> Key {
        Key::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn signed_value_verifies_under_the_same_key() {
        let ring = KeyRing::new(key(1));
        let id = SessionId::generate().unwrap();
        let value = ring.sign(&id);
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(ring.verify(&value), Ok(id));
    }

    #[test]
    fn keys_shorter_than_32_bytes_are_refused() {
        assert_eq!(
            Key::from_bytes(&[0; 31]).unwrap_err(),
            ConfigError::KeyTooShort { len: 31 }
        );
        assert_eq!(
            Key::from_hex("abcd").unwrap_err(),
            ConfigError::KeyTooShort { len: 2 }
        );
        assert_eq!(Key::from_hex("xyz").unwrap_err(), ConfigError::KeyNotHex);
        assert!(Key::from_hex(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn empty_key_list_is_refused() {
        assert_eq!(
            KeyRing::from_keys(Vec::new()).unwrap_err(),
            ConfigError::EmptyKeyRing
        );
    }

    #[test]
    fn a_key_spells_out_as_the_hex_it_was_read_from() {
        let text = "00ff10ab".repeat(8);
        assert_eq!(Key::from_hex(&text).unwrap().to_hex(), text);
        let key = Key::generate().unwrap();
        let again = Key::from_hex(&key.to_hex()).unwrap();
        let id = SessionId::from_bytes([3; 16]);
        assert_eq!(KeyRing::new(again).sign(&id), KeyRing::new(key).sign(&id));
    }

    #[test]
    fn rejections_have_stable_names() {
        for (rejection, name) in [
            (InvalidCookie::Malformed, "malformed"),
            (InvalidCookie::BadSignature, "bad_signature"),
        ] {
            assert_eq!(rejection.as_str(), name);
            assert_eq!(rejection.to_string(), name);
        }
    }

    #[test]
    fn a_ring_counts_its_current_and_previous_keys() {
        let ring = KeyRing::new(key(1));
        assert_eq!((ring.len(), ring.is_empty()), (1, false));
        let ring = ring.with_previous(key(2)).with_previous(key(3));
        assert_eq!((ring.len(), ring.is_empty()), (3, false));
        let ring = KeyRing::from_keys([key(4), key(5)]).unwrap();
        assert_eq!((ring.len(), ring.is_empty()), (2, false));
    }

    /// A generated key is random: it signs unlike the all-zero key, unlike
    /// any fixed key and unlike every other generated key.
    #[test]
    fn generated_keys_are_random() {
        let id = SessionId::from_bytes([9; 16]);
        let tag = |key: Key| KeyRing::new(key).sign(&id);
        let mut tags = std::collections::HashSet::new();
        tags.insert(tag(key(0)));
        tags.insert(tag(key(0xff)));
        for _ in 0..64 {
            assert!(tags.insert(tag(Key::generate().unwrap())), "a repeated key");
        }
    }

    #[test]
    fn a_tag_from_another_key_is_a_bad_signature() {
        let id = SessionId::generate().unwrap();
        let value = KeyRing::new(key(1)).sign(&id);
        assert_eq!(
            KeyRing::new(key(2)).verify(&value),
            Err(InvalidCookie::BadSignature)
        );
    }

    #[test]
    fn previous_keys_verify_but_do_not_sign() {
        let id = SessionId::generate().unwrap();
        let old_cookie = KeyRing::new(key(1)).sign(&id);
        let ring = KeyRing::new(key(2)).with_previous(key(1));
        assert_eq!(ring.verify(&old_cookie), Ok(id.clone()));
        let new_cookie = ring.sign(&id);
        assert_ne!(new_cookie, old_cookie);
        assert_eq!(KeyRing::new(key(2)).verify(&new_cookie), Ok(id));
    }

    #[test]
    fn tampering_with_any_character_is_rejected() {
        let ring = KeyRing::new(key(1));
        let value = ring.sign(&SessionId::generate().unwrap());
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(ring.verify(&tampered).is_err(), "position {i}");
        }
    }

    #[test]
    fn multi_byte_characters_at_the_split_points_are_malformed_not_a_panic() {
        let ring = KeyRing::new(key(1));
        // 66 bytes with a 3-byte character straddling byte 22.
        let value = format!("{}ക{}", "A".repeat(21), "B".repeat(42));
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(ring.verify(&value), Err(InvalidCookie::Malformed));
        let value = format!("{}.{}é", "A".repeat(22), "B".repeat(41));
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(ring.verify(&value), Err(InvalidCookie::Malformed));
    }

    #[test]
    fn junk_is_malformed() {
        let ring = KeyRing::new(key(1));
        let good = ring.sign(&SessionId::generate().unwrap());
        let no_dot = good.replace('.', "x");
        for junk in [
            "",
            ".",
            "abc",
            &"a".repeat(8192),
            &"é".repeat(33),
            no_dot.as_str(),
            &good[..good.len() - 1],
            &format!("{good}="),
        ] {
            assert_eq!(ring.verify(junk), Err(InvalidCookie::Malformed), "{junk:?}");
        }
    }

    #[cfg(feature = "csrf")]
    #[test]
    fn tags_verify_only_under_their_context_payload_and_ring() {
        let ring = KeyRing::new(key(1)).with_previous(key(2));
        let tag = ring.tag(b"ctx", b"payload");
        assert!(ring.verifies(b"ctx", b"payload", &tag));
        assert!(!ring.verifies(b"other", b"payload", &tag));
        assert!(!ring.verifies(b"ctx", b"other", &tag));
        assert!(!KeyRing::new(key(3)).verifies(b"ctx", b"payload", &tag));
        let by_previous = KeyRing::new(key(2)).tag(b"ctx", b"payload");
        assert!(ring.verifies(b"ctx", b"payload", &by_previous));
        assert!(!ring.verifies(b"ctx", b"payload", &tag[..31]));
    }

    #[cfg(feature = "csrf")]
    #[test]
    fn a_session_cookie_tag_is_not_a_tag_of_the_id_in_another_context() {
        let ring = KeyRing::new(key(1));
        let id = SessionId::generate().unwrap();
        let cookie = ring.sign(&id);
        let tag = URL_SAFE_NO_PAD
            .decode(&cookie[ENCODED_ID_LEN + 1..])
            .unwrap();
        assert!(ring.verifies(SESSION_TAG_CONTEXT, id.as_bytes(), &tag));
        assert!(!ring.verifies(b"cloakroom/csrf", id.as_bytes(), &tag));
    }

    #[test]
    fn debug_output_hides_key_material() {
        assert_eq!(format!("{:?}", key(1)), "Key(<redacted>)");
        assert_eq!(format!("{:?}", KeyRing::new(key(1))), "KeyRing { keys: 1 }");
    }
}
