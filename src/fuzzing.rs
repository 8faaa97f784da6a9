//! Entry points for the fuzz targets in `fuzz/`. Compiled only under
//! `cargo fuzz` (which sets `cfg(fuzzing)`); not part of the API.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::cookie::CookieSettings;
use crate::id::SessionId;
use crate::key::KeyRing;

/// Reads the session cookie named `id` out of these `Cookie` header values
/// exactly as the layer does (values that are not valid header bytes are
/// skipped, as a server would never see them).
pub fn session_id_from_cookie_headers(values: &[&[u8]], keys: &KeyRing) -> Option<SessionId> {
    let mut headers = HeaderMap::new();
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(COOKIE, value);
        }
    }
    let settings = CookieSettings {
        host_prefix: Some(false),
        ..CookieSettings::default()
    }
    .validated()
    .ok()?;
    settings.find_session_id(&headers, keys)
}

/// Decodes a Redis session hash given as a flat field/value list.
#[cfg(feature = "redis")]
pub fn decode_redis_record(
    flat: &[Vec<u8>],
) -> Result<crate::store::SessionRecord, crate::store::StoreError> {
    crate::store::redis::decode_record(flat)
}
