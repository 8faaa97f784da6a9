//! Reading the session cookie from a request and writing `Set-Cookie`.
//!
//! This module knows nothing of stores: it turns headers into a verified
//! [`SessionId`] (or nothing) and IDs back into headers. Malformed input of
//! any kind ends as "no session" here, before any store is asked.

use cookie::Cookie;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use time::Duration;

use crate::config::{ConfigError, SameSite};
use crate::id::{SessionId, StoreKey};
use crate::key::KeyRing;

/// At most this many cookies carrying the session cookie's name are checked
/// per request; more are ignored, so a flood of them costs bounded work.
const MAX_CANDIDATES: usize = 8;

/// The session cookie's name and attributes, validated at build time.
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    domain: Option<String>,
    path: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    /// Whether new sessions get a persistent cookie.
    pub(crate) persistent: bool,
}

impl CookieSettings {
    pub(crate) fn new(
        name: String,
        domain: Option<String>,
        path: String,
        secure: bool,
        http_only: bool,
        same_site: SameSite,
        persistent: bool,
    ) -> Result<Self, ConfigError> {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ConfigError::InvalidCookieName);
        }
        if let Some(domain) = &domain {
            if domain.is_empty() || !domain.bytes().all(is_attribute_byte) {
                return Err(ConfigError::InvalidDomain);
            }
        }
        if !path.starts_with('/') || !path.bytes().all(is_attribute_byte) {
            return Err(ConfigError::InvalidPath);
        }
        Ok(Self {
            name,
            domain,
            path,
            secure,
            http_only,
            same_site,
            persistent,
        })
    }

    /// The verified session ID the request carries, if any.
    ///
    /// Every `Cookie` header is read. Cookies with the session cookie's name
    /// are checked in the order the browser sent them (most specific path
    /// first) and the first one whose signature verifies wins; junk ones are
    /// skipped, so a stray or planted junk cookie cannot log anyone out.
    /// Rejections are reported as a `cookie_rejected` security event.
    pub(crate) fn find_session_id(&self, headers: &HeaderMap, keys: &KeyRing) -> Option<SessionId> {
        let mut candidates = 0;
        for header in headers.get_all(COOKIE) {
            // Non-UTF-8 bytes belong to some other cookie (ours is ASCII);
            // replacing them keeps the rest of the header readable. The
            // common all-ASCII header skips the lossy conversion.
            let text = match header.to_str() {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(header.as_bytes()),
            };
            for cookie in Cookie::split_parse(text.as_ref()).flatten() {
                if cookie.name() != self.name {
                    continue;
                }
                candidates += 1;
                if candidates > MAX_CANDIDATES {
                    tracing::info!(
                        target: "cloakroom::security",
                        event = "cookie_rejected",
                        reason = "too_many",
                        "more than {MAX_CANDIDATES} session cookies in one request; the rest are ignored"
                    );
                    return None;
                }
                match keys.verify(cookie.value_trimmed()) {
                    Ok(id) => return Some(id),
                    Err(reason) => tracing::info!(
                        target: "cloakroom::security",
                        event = "cookie_rejected",
                        reason = reason.as_str(),
                        length = cookie.value().len(),
                        "session cookie rejected; the request continues without a session"
                    ),
                }
            }
        }
        None
    }

    fn base(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.name.clone(), value))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(match self.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            })
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    /// `Set-Cookie` for a session: signed ID, and `Max-Age` when persistent.
    pub(crate) fn set_cookie(
        &self,
        keys: &KeyRing,
        id: &SessionId,
        max_age: Option<Duration>,
    ) -> Option<HeaderValue> {
        let mut cookie = self.base(keys.sign(id));
        if let Some(max_age) = max_age {
            cookie.set_max_age(max_age.max(Duration::ZERO));
        }
        to_header(&cookie, Some(&id.store_key()))
    }

    /// `Set-Cookie` that makes the browser drop the session cookie
    /// (`Max-Age=0` and an expiry in the past).
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        to_header(&cookie, None)
    }
}

fn to_header(cookie: &Cookie<'_>, key: Option<&StoreKey>) -> Option<HeaderValue> {
    match HeaderValue::try_from(cookie.to_string()) {
        Ok(value) => Some(value),
        // Unreachable with settings validated by `CookieSettings::new`;
        // reported rather than unwrapped so that nothing can panic here.
        Err(_) => {
            tracing::error!(
                target: "cloakroom",
                session = key.map(StoreKey::short),
                "could not encode the session cookie as a header"
            );
            None
        }
    }
}

/// RFC 6265 `token` characters: visible ASCII except separators.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// Characters allowed in `Domain` and `Path` values.
fn is_attribute_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b';'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn settings() -> CookieSettings {
        CookieSettings::new(
            "id".into(),
            None,
            "/".into(),
            true,
            true,
            SameSite::Lax,
            false,
        )
        .unwrap()
    }

    fn ring() -> KeyRing {
        KeyRing::new(Key::from_bytes(&[3; 32]).unwrap())
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let h = headers(&[format!("a=1; id={value}; b=2").as_bytes()]);
        assert_eq!(settings().find_session_id(&h, &ring()), Some(id));
    }

    #[test]
    fn reads_every_cookie_header() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let h = headers(&[b"a=1", b"b=2", format!("id={value}").as_bytes()]);
        assert_eq!(settings().find_session_id(&h, &ring()), Some(id));
    }

    #[test]
    fn junk_duplicates_do_not_hide_a_valid_cookie() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let h = headers(&[format!("id=junk; id=; id={value}").as_bytes()]);
        assert_eq!(settings().find_session_id(&h, &ring()), Some(id));
    }

    #[test]
    fn quoted_values_are_accepted() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let h = headers(&[format!("id=\"{value}\"").as_bytes()]);
        assert_eq!(settings().find_session_id(&h, &ring()), Some(id));
    }

    #[test]
    fn non_utf8_bytes_elsewhere_in_the_header_are_tolerated() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let mut raw = b"x=\xff\xfe; ".to_vec();
        raw.extend_from_slice(format!("id={value}").as_bytes());
        let h = headers(&[&raw]);
        assert_eq!(settings().find_session_id(&h, &ring()), Some(id));
    }

    #[test]
    fn the_name_must_match_exactly() {
        let value = ring().sign(&SessionId::generate().unwrap());
        let h = headers(&[format!("ID={value}; xid={value}; id_={value}").as_bytes()]);
        assert_eq!(settings().find_session_id(&h, &ring()), None);
    }

    #[test]
    fn a_flood_of_same_name_cookies_is_cut_off() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let mut header = "id=x; ".repeat(MAX_CANDIDATES);
        header.push_str(&format!("id={value}"));
        assert_eq!(
            settings().find_session_id(&headers(&[header.as_bytes()]), &ring()),
            None
        );
    }

    #[test]
    fn set_cookie_has_the_safe_attributes() {
        let id = SessionId::generate().unwrap();
        let header = settings().set_cookie(&ring(), &id, None).unwrap();
        let text = header.to_str().unwrap();
        assert!(text.starts_with(&format!("id={}", ring().sign(&id))));
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(text.contains(attr), "{text}");
        }
        assert!(!text.contains("Domain"));
        assert!(!text.contains("Max-Age"));
    }

    #[test]
    fn persistent_cookie_has_max_age() {
        let id = SessionId::generate().unwrap();
        let header = settings()
            .set_cookie(&ring(), &id, Some(Duration::seconds(90)))
            .unwrap();
        assert!(header.to_str().unwrap().contains("Max-Age=90"));
    }

    #[test]
    fn removal_expires_the_cookie_with_the_same_attributes() {
        let text = settings().removal().unwrap().to_str().unwrap().to_owned();
        assert!(text.starts_with("id=;"), "{text}");
        assert!(text.contains("Max-Age=0"));
        assert!(text.contains("Path=/"));
        assert!(text.contains("Secure"));
    }
}
