//! Reading the session cookie from a request and writing `Set-Cookie`.
//!
//! This module knows nothing of stores: it turns headers into a verified
//! [`SessionId`] (or nothing) and IDs back into headers. Malformed input of
//! any kind ends as "no session" here, before any store is asked.

use cookie::Cookie;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use time::Duration;

use crate::error::ConfigError;
use crate::events::{self, CookieReason};
use crate::id::SessionId;
use crate::key::{parse, KeyRing};

/// At most this many well-formed cookies carrying the session cookie's name
/// have their signature checked per request (an HMAC each, about 170 ns).
/// Malformed ones (wrong length, separator or base64url) cost a length
/// check and a decode and do not count, so no amount of junk hides a valid
/// cookie; the bytes to scan are bounded by the server's header size limit. Browsers send one cookie per (name, domain, path) that
/// matches, which for any real URL stays far below this.
const MAX_VERIFIED: usize = 32;

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only with same-site requests, including top-level navigations
    /// from other sites being excluded.
    Strict,
    /// Sent with same-site requests and top-level `GET` navigations from
    /// other sites. The default: links into the app keep the user logged in,
    /// cross-site form posts do not carry the cookie.
    #[default]
    Lax,
    /// Sent with every request, cross-site included. Requires `Secure`.
    None,
}

/// The session cookie's name and attributes: set by the builder (the
/// defaults are the safe ones), then checked once by [`validated`].
///
/// [`validated`]: CookieSettings::validated
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    /// The name without its `__Host-` or `__Secure-` prefix.
    pub(crate) name: String,
    /// `None`: the prefix whenever the other attributes allow it.
    pub(crate) host_prefix: Option<bool>,
    pub(crate) domain: Option<String>,
    pub(crate) path: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    /// The name the cookie is sent under, prefix included; set by
    /// `validated`.
    pub(crate) full_name: String,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: "id".to_owned(),
            host_prefix: None,
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            full_name: String::new(),
        }
    }
}

impl CookieSettings {
    /// Checks the attributes, settles the name prefix and the name the
    /// cookie is sent under: `__Host-` when asked for or when nothing rules
    /// it out, otherwise `__Secure-` for any `Secure` cookie (so that a
    /// plain-http page cannot set one under the name), no prefix without
    /// `Secure`.
    pub(crate) fn validated(mut self) -> Result<Self, ConfigError> {
        // Checked before the prefix, which would hide an empty name.
        if self.name.is_empty() || !self.name.bytes().all(is_token_byte) {
            return Err(ConfigError::InvalidCookieName);
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() || !domain.bytes().all(is_attribute_byte) {
                return Err(ConfigError::InvalidDomain);
            }
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(is_attribute_byte) {
            return Err(ConfigError::InvalidPath);
        }
        let allowed = self.domain.is_none() && self.secure && self.path == "/";
        let prefixed = match self.host_prefix {
            Some(true) if self.domain.is_some() => return Err(ConfigError::HostPrefixWithDomain),
            Some(true) if !self.secure => return Err(ConfigError::HostPrefixWithoutSecure),
            Some(true) if self.path != "/" => return Err(ConfigError::HostPrefixWithPath),
            Some(asked) => asked,
            None => allowed,
        };
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneWithoutSecure);
        }
        self.full_name = if prefixed {
            format!("__Host-{}", self.name)
        } else if self.secure {
            format!("__Secure-{}", self.name)
        } else {
            self.name.clone()
        };
        Ok(self)
    }

    /// The verified session ID the request carries, if any.
    ///
    /// Every `Cookie` header is read. Cookies with the session cookie's name
    /// are checked in the order the browser sent them (most specific path
    /// first) and the first one whose signature verifies wins; junk ones are
    /// skipped, so a stray or planted junk cookie cannot log anyone out.
    /// Rejections are reported as one `cookie_rejected` security event per
    /// request, however many there were.
    pub(crate) fn find_session_id(&self, headers: &HeaderMap, keys: &KeyRing) -> Option<SessionId> {
        let (found, rejected) = self.search(headers, keys);
        rejected.report(found.is_some());
        found
    }

    /// [`find_session_id`](Self::find_session_id) without the report: the
    /// ID found, and what was turned down on the way.
    fn search(&self, headers: &HeaderMap, keys: &KeyRing) -> (Option<SessionId>, Rejected) {
        let mut rejected = Rejected::default();
        let found = 'search: {
            for header in headers.get_all(COOKIE) {
                // Non-UTF-8 bytes belong to some other cookie (ours is
                // ASCII); replacing them keeps the rest of the header
                // readable. The common all-ASCII header skips the lossy
                // conversion.
                let text = match header.to_str() {
                    Ok(text) => std::borrow::Cow::Borrowed(text),
                    Err(_) => String::from_utf8_lossy(header.as_bytes()),
                };
                for cookie in Cookie::split_parse(text.as_ref()).flatten() {
                    if cookie.name() != self.full_name {
                        continue;
                    }
                    let Some((id, tag)) = parse(cookie.value_trimmed()) else {
                        rejected.malformed += 1;
                        continue;
                    };
                    if rejected.verified == MAX_VERIFIED {
                        rejected.too_many = true;
                        break 'search None;
                    }
                    rejected.verified += 1;
                    match keys.check(id, &tag) {
                        Ok(id) => break 'search Some(id),
                        Err(_) => rejected.bad_signature += 1,
                    }
                }
            }
            None
        };
        (found, rejected)
    }

    fn base(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.full_name.clone(), value))
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
        to_header(&cookie)
    }

    /// `Set-Cookie` that makes the browser drop the session cookie
    /// (`Max-Age=0` and an expiry in the past).
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        to_header(&cookie)
    }
}

/// How a request reached the app, as far as its head tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// An `https` scheme in its URI, or `X-Forwarded-Proto: https` or
    /// `Forwarded: proto=https` from a proxy.
    Https,
    /// No sign of https, but a loopback host, where browsers keep `Secure`
    /// cookies all the same (they treat `localhost` as secure).
    Loopback,
    /// Neither: a `Secure` cookie set in answer is dropped by the browser,
    /// the classic first-hour mystery ("login bounces back to the login
    /// form"). An app that terminates TLS itself looks like this too, so
    /// this only ever feeds a warning.
    Plain,
}

/// How the request with this URI and these headers came in.
pub(crate) fn transport(uri: &http::Uri, headers: &HeaderMap) -> Transport {
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        return Transport::Https;
    }
    // Header names as constants: looking a `&str` up parses it first, and
    // this runs on every request until the question is settled.
    const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
    let said_https = |name: &http::HeaderName, check: fn(&str) -> bool| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(check)
    };
    if said_https(&X_FORWARDED_PROTO, |value| {
        value
            .split(',')
            .any(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }) || said_https(&http::header::FORWARDED, |value| {
        value
            .split([',', ';'])
            .filter_map(|pair| pair.split_once('='))
            .any(|(name, proto)| {
                name.trim().eq_ignore_ascii_case("proto")
                    && proto.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
    }) {
        return Transport::Https;
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| uri.host());
    if host.is_some_and(is_loopback_host) {
        Transport::Loopback
    } else {
        Transport::Plain
    }
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a
/// port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name
            .get(name.len().saturating_sub(10)..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn to_header(cookie: &Cookie<'_>) -> Option<HeaderValue> {
    match HeaderValue::try_from(cookie.to_string()) {
        Ok(value) => Some(value),
        // Unreachable with settings checked by `CookieSettings::validated`;
        // reported rather than unwrapped so that nothing can panic here.
        Err(_) => {
            tracing::error!(
                target: "cloakroom",
                "could not encode the session cookie as a header"
            );
            None
        }
    }
}

/// What the search for the session cookie turned down.
#[derive(Debug, Default)]
struct Rejected {
    malformed: usize,
    bad_signature: usize,
    /// Signatures checked, the valid one included.
    verified: usize,
    too_many: bool,
}

impl Rejected {
    /// The reason the security event gives: the gravest rejection seen,
    /// or `None` when nothing was turned down.
    fn reason(&self) -> Option<CookieReason> {
        if self.too_many {
            Some(CookieReason::TooMany)
        } else if self.bad_signature > 0 {
            Some(CookieReason::BadSignature)
        } else if self.malformed > 0 {
            Some(CookieReason::Malformed)
        } else {
            None
        }
    }

    fn report(&self, found: bool) {
        if let Some(reason) = self.reason() {
            events::cookie_rejected(reason, self.malformed, self.bad_signature, found);
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

    /// Settings whose cookie is named plainly `id` (no prefix is possible
    /// without `Secure`).
    fn settings() -> CookieSettings {
        CookieSettings {
            secure: false,
            ..CookieSettings::default()
        }
        .validated()
        .unwrap()
    }

    /// Secure settings without the `__Host-` prefix: the cookie is sent
    /// as `__Secure-id`.
    fn secure_settings() -> CookieSettings {
        CookieSettings {
            host_prefix: Some(false),
            ..CookieSettings::default()
        }
        .validated()
        .unwrap()
    }

    #[test]
    fn a_secure_cookie_gets_the_strongest_prefix_its_attributes_allow() {
        struct Case {
            name: &'static str,
            settings: CookieSettings,
            sent_as: &'static str,
        }
        let base = CookieSettings::default;
        let cases = [
            Case {
                name: "the defaults",
                settings: base(),
                sent_as: "__Host-id",
            },
            Case {
                name: "a domain",
                settings: CookieSettings {
                    domain: Some("example.test".into()),
                    ..base()
                },
                sent_as: "__Secure-id",
            },
            Case {
                name: "a path",
                settings: CookieSettings {
                    path: "/app".into(),
                    ..base()
                },
                sent_as: "__Secure-id",
            },
            Case {
                name: "host_prefix(false)",
                settings: CookieSettings {
                    host_prefix: Some(false),
                    ..base()
                },
                sent_as: "__Secure-id",
            },
            Case {
                name: "no Secure",
                settings: CookieSettings {
                    secure: false,
                    ..base()
                },
                sent_as: "id",
            },
        ];
        for case in cases {
            let settled = case.settings.validated().unwrap();
            assert_eq!(settled.full_name, case.sent_as, "{}", case.name);
        }
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
    fn no_amount_of_junk_hides_a_valid_cookie() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        for junk in [8, 50, 500] {
            let mut header = "id=x; id=; id=\"\"; ".repeat(junk / 2);
            header.push_str(&format!("id={value}; "));
            header.push_str(&"id=junk; ".repeat(junk - junk / 2));
            assert_eq!(
                settings().find_session_id(&headers(&[header.as_bytes()]), &ring()),
                Some(id.clone()),
                "{junk} junk cookies"
            );
        }
    }

    #[test]
    fn junk_of_the_right_length_does_not_count_against_the_cap() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let same_length = "!".repeat(value.len());
        let no_separator = "A".repeat(value.len());
        let mut header = String::new();
        for _ in 0..MAX_VERIFIED {
            header.push_str(&format!("id={same_length}; id={no_separator}; "));
        }
        header.push_str(&format!("id={value}"));
        assert_eq!(
            settings().find_session_id(&headers(&[header.as_bytes()]), &ring()),
            Some(id)
        );
    }

    /// A well-formed cookie with a wrong signature, like one a sibling
    /// subdomain could plant.
    fn forged() -> String {
        KeyRing::new(Key::from_bytes(&[4; 32]).unwrap()).sign(&SessionId::generate().unwrap())
    }

    #[test]
    fn signatures_are_checked_for_at_most_the_cap_of_well_formed_cookies() {
        let id = SessionId::generate().unwrap();
        let value = ring().sign(&id);
        let with_forged = |n: usize| {
            let mut header: String = (0..n).map(|_| format!("id={}; ", forged())).collect();
            header.push_str(&format!("id={value}"));
            settings().find_session_id(&headers(&[header.as_bytes()]), &ring())
        };
        assert_eq!(
            with_forged(MAX_VERIFIED - 1),
            Some(id),
            "the cap's last check"
        );
        assert_eq!(with_forged(MAX_VERIFIED), None, "no check beyond the cap");
    }

    #[test]
    fn what_the_search_turned_down_is_counted_for_the_security_event() {
        struct Test {
            name: &'static str,
            cookies: Vec<String>,
            found: bool,
            // malformed, bad signature, signatures checked
            counts: (usize, usize, usize),
            reason: Option<CookieReason>,
        }
        let id = SessionId::generate().unwrap();
        let valid = ring().sign(&id);
        let junk = || "junk".to_owned();
        let tests = [
            Test {
                name: "the valid cookie alone",
                cookies: vec![valid.clone()],
                found: true,
                counts: (0, 0, 1),
                reason: None,
            },
            Test {
                name: "junk twice, then the valid cookie",
                cookies: vec![junk(), junk(), valid.clone()],
                found: true,
                counts: (2, 0, 1),
                reason: Some(CookieReason::Malformed),
            },
            Test {
                name: "forged twice and junk: a bad signature outranks junk",
                cookies: vec![forged(), junk(), forged()],
                found: false,
                counts: (1, 2, 2),
                reason: Some(CookieReason::BadSignature),
            },
            Test {
                name: "past the cap",
                cookies: (0..=MAX_VERIFIED).map(|_| forged()).collect(),
                found: false,
                counts: (0, MAX_VERIFIED, MAX_VERIFIED),
                reason: Some(CookieReason::TooMany),
            },
        ];
        for test in tests {
            let header: Vec<String> = test.cookies.iter().map(|c| format!("id={c}")).collect();
            let header = header.join("; ");
            let (found, rejected) = settings().search(&headers(&[header.as_bytes()]), &ring());
            assert_eq!(found.is_some(), test.found, "{}", test.name);
            assert_eq!(
                (
                    rejected.malformed,
                    rejected.bad_signature,
                    rejected.verified
                ),
                test.counts,
                "{}",
                test.name
            );
            assert_eq!(rejected.reason(), test.reason, "{}", test.name);
        }
    }

    #[test]
    fn set_cookie_has_the_safe_attributes() {
        let id = SessionId::generate().unwrap();
        let header = secure_settings().set_cookie(&ring(), &id, None).unwrap();
        let text = header.to_str().unwrap();
        assert!(text.starts_with(&format!("__Secure-id={}", ring().sign(&id))));
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
        let text = secure_settings()
            .removal()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(text.starts_with("__Secure-id=;"), "{text}");
        assert!(text.contains("Max-Age=0"));
        assert!(text.contains("Path=/"));
        assert!(text.contains("Secure"));
    }

    #[test]
    fn https_loopback_and_plain_http_are_told_apart() {
        struct Test {
            name: &'static str,
            uri: &'static str,
            headers: &'static [(&'static str, &'static str)],
            expected: Transport,
        }
        let tests = [
            Test {
                name: "LAN name over http",
                uri: "/",
                headers: &[("host", "devbox.lan:3000")],
                expected: Transport::Plain,
            },
            Test {
                name: "LAN address",
                uri: "/",
                headers: &[("host", "192.168.1.20:3000")],
                expected: Transport::Plain,
            },
            Test {
                name: "no host at all",
                uri: "/",
                headers: &[],
                expected: Transport::Plain,
            },
            Test {
                name: "localhost",
                uri: "/",
                headers: &[("host", "localhost:3000")],
                expected: Transport::Loopback,
            },
            Test {
                name: "a .localhost name",
                uri: "/",
                headers: &[("host", "app.localhost")],
                expected: Transport::Loopback,
            },
            Test {
                name: "127.0.0.1",
                uri: "/",
                headers: &[("host", "127.0.0.1:3000")],
                expected: Transport::Loopback,
            },
            Test {
                name: "[::1]",
                uri: "/",
                headers: &[("host", "[::1]:3000")],
                expected: Transport::Loopback,
            },
            Test {
                name: "https URI (HTTP/2)",
                uri: "https://example.com/",
                headers: &[],
                expected: Transport::Https,
            },
            Test {
                name: "http URI",
                uri: "http://example.com/",
                headers: &[],
                expected: Transport::Plain,
            },
            Test {
                name: "X-Forwarded-Proto",
                uri: "/",
                headers: &[("host", "example.com"), ("x-forwarded-proto", "https")],
                expected: Transport::Https,
            },
            Test {
                name: "X-Forwarded-Proto http",
                uri: "/",
                headers: &[("host", "example.com"), ("x-forwarded-proto", "http")],
                expected: Transport::Plain,
            },
            Test {
                name: "Forwarded",
                uri: "/",
                headers: &[
                    ("host", "example.com"),
                    ("forwarded", "for=192.0.2.1;proto=\"https\""),
                ],
                expected: Transport::Https,
            },
            Test {
                name: "Forwarded proto=http",
                uri: "/",
                headers: &[("host", "example.com"), ("forwarded", "proto=http")],
                expected: Transport::Plain,
            },
            Test {
                name: "Forwarded with https as another parameter's value",
                uri: "/",
                headers: &[
                    ("host", "example.com"),
                    ("forwarded", "by=https;proto=http"),
                ],
                expected: Transport::Plain,
            },
            Test {
                name: "a lookalike of localhost",
                uri: "/",
                headers: &[("host", "localhost.example.com")],
                expected: Transport::Plain,
            },
        ];
        for test in tests {
            let mut headers = HeaderMap::new();
            for (name, value) in test.headers {
                headers.append(*name, HeaderValue::from_static(value));
            }
            let uri: http::Uri = test.uri.parse().unwrap();
            assert_eq!(transport(&uri, &headers), test.expected, "{}", test.name);
        }
    }
}
