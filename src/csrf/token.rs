//! CSRF tokens: what a form or script sends back, and how it is checked.
//!
//! A token is `base64url(mask ‖ (mask XOR payload))` with a fresh random
//! 32-byte mask each time, so the same payload never looks the same twice on
//! the wire (no BREACH-style compression oracle can recover it). The payload
//! is, for a visitor with a session, an HMAC of the session ID under the
//! layer's key: a secret only the server can compute, bound to the session,
//! that changes whenever the ID does (login, regenerate) and needs no
//! storage, so every request that renders a token agrees on it, even
//! requests racing each other right after a login. For a visitor without a
//! session it is an HMAC of the current time window, which needs no state
//! and so creates no session and sets no cookie; that token is the same for
//! every such visitor, so it is accepted only from requests with no session
//! at all.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use time::OffsetDateTime;

use super::CsrfConfig;
use crate::error::SessionError;
use crate::id::{RandomnessError, SessionId};
use crate::key::KeyRing;
use crate::session::{Session, TokenPurpose};

const PAYLOAD_LEN: usize = 32;
/// Length of an encoded token: base64url of 64 bytes, no padding.
pub(crate) const TOKEN_LEN: usize = 86;
/// Domain separation for tokens of visitors without a session.
const ANONYMOUS_CONTEXT: &[u8] = b"cloakroom/csrf-anonymous/v1\0";
/// Domain separation for tokens bound to a session ID.
const SESSION_CONTEXT: &[u8] = b"cloakroom/csrf-session/v1\0";
/// Tokens of visitors without a session are valid for the window they were
/// issued in and the next one: 6 to 12 hours.
const ANONYMOUS_WINDOW_SECS: i64 = 6 * 3600;

/// A CSRF token for the current visitor, to put into a form (as the
/// `csrf_token` field) or hand to a script (to send as `x-csrf-token`), in
/// a JSON response or a [`meta_tag`](Self::meta_tag).
///
/// Every call to [`CsrfToken::masked`] (and every `Display`) gives a
/// different string; all of them verify. Get one with the axum extractor,
/// or with [`CsrfToken::for_session`] in plain tower code.
///
/// ```
/// use axum::response::Html;
/// use cloakroom::csrf::CsrfToken;
///
/// async fn form(token: CsrfToken) -> Html<String> {
///     Html(format!(
///         r#"<form method="post" action="/transfer">
///              <input type="hidden" name="csrf_token" value="{token}">
///              <button>Send</button>
///            </form>"#
///     ))
/// }
/// ```
#[derive(Clone)]
pub struct CsrfToken {
    /// The payload as of when the token was made.
    payload: [u8; PAYLOAD_LEN],
    /// The session it was made for: each rendering binds the token to the
    /// session as it is *then*, so a token taken before the handler
    /// created, logged in or moved the session still verifies.
    session: Option<Session>,
    /// The settings of the layer the token was extracted under, for the
    /// field name of [`CsrfToken::hidden_field`].
    layer: Option<Arc<CsrfConfig>>,
}

impl CsrfToken {
    /// The token for the visitor behind `session`.
    ///
    /// A visitor with a session gets a token bound to it: to the ID the
    /// browser holds after this response. The token follows the session
    /// until it is rendered: each [`masked`](Self::masked) (and `Display`)
    /// binds it to the session as it is then, so a token taken (or
    /// extracted) before the handler created the session, logged the user
    /// in or regenerated the ID verifies on submit all the same. Nothing is
    /// stored. A visitor without a session gets a token that needs no
    /// state: asking for it creates no session and sets no cookie. Only a
    /// token rendered *before* the handler's first write to a new session
    /// is of the kind that no longer counts once the session exists:
    /// render after writing.
    ///
    /// # Errors
    ///
    /// [`SessionError`] when the session cannot be loaded or no randomness
    /// is available.
    pub async fn for_session(session: &Session) -> Result<Self, SessionError> {
        let binding = session.token_id(TokenPurpose::Render).await?;
        Ok(Self {
            payload: payload_for(session, binding.as_ref()),
            session: Some(session.clone()),
            layer: None,
        })
    }

    /// The token, extracted under the layer with these settings.
    #[cfg(feature = "axum")]
    pub(crate) fn with_layer(mut self, layer: Arc<CsrfConfig>) -> Self {
        self.layer = Some(layer);
        self
    }

    /// An `<input type="hidden">` holding a freshly masked token, under
    /// the form field name the [`CsrfLayer`](super::CsrfLayer) reads
    /// (`csrf_token` unless
    /// [`field_name`](super::CsrfLayerBuilder::field_name) says otherwise;
    /// a token made with [`CsrfToken::for_session`] knows no layer and uses
    /// `csrf_token`), for every form of the page.
    ///
    /// ```
    /// use axum::response::Html;
    /// use cloakroom::csrf::CsrfToken;
    ///
    /// async fn form(token: CsrfToken) -> Html<String> {
    ///     Html(format!(
    ///         r#"<form method="post" action="/transfer">{}<button>Send</button></form>"#,
    ///         token.hidden_field()
    ///     ))
    /// }
    /// ```
    pub fn hidden_field(&self) -> String {
        let field = self
            .layer
            .as_ref()
            .map_or(super::DEFAULT_FIELD, |layer| layer.field.as_str());
        format!(
            r#"<input type="hidden" name="{}" value="{}">"#,
            escape_attribute(field),
            escape_attribute(&self.masked())
        )
    }

    /// The payload bound to the session as it is now; the one from when
    /// the token was made when that cannot be told without waiting (the
    /// session busy in another task) or no ID can be drawn.
    fn payload_now(&self) -> [u8; PAYLOAD_LEN] {
        let Some(session) = &self.session else {
            return self.payload;
        };
        match session.render_binding_now() {
            Some(Ok(binding)) => payload_for(session, binding.as_ref()),
            _ => self.payload,
        }
    }

    /// A freshly masked token string (86 URL-safe characters).
    pub fn masked(&self) -> String {
        let mut mask = [0u8; PAYLOAD_LEN];
        // A mask only needs to be unpredictable per response; if the OS
        // generator fails, fall back to a fixed mask rather than fail the
        // page: the token stays valid, it just repeats.
        if OsRng.try_fill_bytes(&mut mask).is_err() {
            tracing::warn!(target: "cloakroom", "{}", RandomnessError::new());
        }
        let payload = self.payload_now();
        let mut bytes = [0u8; 2 * PAYLOAD_LEN];
        bytes[..PAYLOAD_LEN].copy_from_slice(&mask);
        for (i, (m, p)) in mask.iter().zip(&payload).enumerate() {
            bytes[PAYLOAD_LEN + i] = m ^ p;
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A `<meta name="csrf-token" content="...">` tag holding a freshly
    /// masked token, for the page's `<head>`: scripts read it and send it
    /// in the header the layer checks (`x-csrf-token` unless
    /// [`header_name`](crate::csrf::CsrfLayerBuilder::header_name) says
    /// otherwise).
    ///
    /// ```
    /// use axum::response::Html;
    /// use cloakroom::csrf::CsrfToken;
    ///
    /// async fn page(token: CsrfToken) -> Html<String> {
    ///     Html(format!(
    ///         r#"<!doctype html><head>{}</head><body><script>
    ///              const token = document.querySelector('meta[name=csrf-token]').content;
    ///              fetch('/notes', {{ method: 'POST', headers: {{ 'x-csrf-token': token }} }});
    ///            </script></body>"#,
    ///         token.meta_tag()
    ///     ))
    /// }
    /// ```
    pub fn meta_tag(&self) -> String {
        meta_tag_holding(&self.masked())
    }
}

/// The `<meta name="csrf-token">` tag holding `content`, escaped.
fn meta_tag_holding(content: &str) -> String {
    format!(
        r#"<meta name="csrf-token" content="{}">"#,
        escape_attribute(content)
    )
}

/// `text` made safe inside a double-quoted HTML attribute. A masked token
/// is base64url and needs none of this; the escape keeps the tag safe even
/// if the encoding ever changes.
fn escape_attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

impl fmt::Display for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

/// The payload for `session` bound to `binding` (its ID), or the
/// anonymous one.
fn payload_for(session: &Session, binding: Option<&SessionId>) -> [u8; PAYLOAD_LEN] {
    let context = session.context();
    let keys = &context.settings().keys;
    match binding {
        Some(id) => keys.tag(SESSION_CONTEXT, id.as_bytes()),
        None => keys.tag(ANONYMOUS_CONTEXT, &window(context.now()).to_be_bytes()),
    }
}

fn window(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(ANONYMOUS_WINDOW_SECS)
}

/// The payload inside a masked token, if it is well-formed.
fn unmask(token: &str) -> Option<[u8; PAYLOAD_LEN]> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    let mut bytes = [0u8; 2 * PAYLOAD_LEN];
    match URL_SAFE_NO_PAD.decode_slice(token, &mut bytes) {
        Ok(n) if n == bytes.len() => {}
        _ => return None,
    }
    let mut payload = [0u8; PAYLOAD_LEN];
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte = bytes[i] ^ bytes[PAYLOAD_LEN + i];
    }
    Some(payload)
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    /// Malformed, forged, from another session, or expired.
    Invalid,
}

/// Checks `token` against the visitor behind `session`.
///
/// A token bound to the request's cookie is checked without a store call.
/// The anonymous token is accepted only when the request has no live
/// session, so that nobody's public token acts on someone else's session.
pub(crate) async fn check(token: &str, session: &Session) -> Result<TokenCheck, SessionError> {
    let Some(candidate) = unmask(token) else {
        return Ok(TokenCheck::Invalid);
    };
    let context = session.context();
    let keys = &context.settings().keys;
    let cookie = session.token_id(TokenPurpose::Cookie).await?;
    if let Some(id) = &cookie {
        if keys.verifies(SESSION_CONTEXT, id.as_bytes(), &candidate) {
            return Ok(TokenCheck::Valid);
        }
    }
    if !anonymous_valid(keys, context.now(), &candidate) {
        return Ok(TokenCheck::Invalid);
    }
    if cookie.is_some() && session.token_id(TokenPurpose::LiveCookie).await?.is_some() {
        return Ok(TokenCheck::Invalid);
    }
    Ok(TokenCheck::Valid)
}

fn anonymous_valid(keys: &KeyRing, now: OffsetDateTime, candidate: &[u8]) -> bool {
    let current = window(now);
    [current, current - 1]
        .iter()
        .any(|w| keys.verifies(ANONYMOUS_CONTEXT, &w.to_be_bytes(), candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn token(payload: [u8; 32]) -> CsrfToken {
        CsrfToken {
            payload,
            session: None,
            layer: None,
        }
    }

    #[test]
    fn masked_tokens_differ_and_unmask_to_the_payload() {
        let t = token([9; 32]);
        let (a, b) = (t.masked(), t.masked());
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(unmask(&a), Some([9; 32]));
        assert_eq!(unmask(&b), Some([9; 32]));
    }

    #[test]
    fn malformed_tokens_unmask_to_nothing() {
        let good = token([1; 32]).masked();
        for bad in [
            "",
            "x",
            &good[1..],
            &format!("{good}A"),
            &good.replace(|_| true, "!"),
        ] {
            assert_eq!(unmask(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn anonymous_tokens_expire_after_two_windows() {
        let keys = KeyRing::new(Key::from_bytes(&[4; 32]).unwrap());
        let issued = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let payload = keys.tag(ANONYMOUS_CONTEXT, &window(issued).to_be_bytes());
        let later = |secs| issued + time::Duration::seconds(secs);
        assert!(anonymous_valid(&keys, issued, &payload));
        assert!(anonymous_valid(
            &keys,
            later(ANONYMOUS_WINDOW_SECS),
            &payload
        ));
        assert!(!anonymous_valid(
            &keys,
            later(2 * ANONYMOUS_WINDOW_SECS),
            &payload
        ));
        let other_keys = KeyRing::new(Key::from_bytes(&[5; 32]).unwrap());
        assert!(!anonymous_valid(&other_keys, issued, &payload));
    }

    #[test]
    fn session_tokens_are_bound_to_the_id_and_the_key() {
        let keys = KeyRing::new(Key::from_bytes(&[4; 32]).unwrap());
        let id = crate::id::SessionId::generate().unwrap();
        let other = crate::id::SessionId::generate().unwrap();
        let payload = keys.tag(SESSION_CONTEXT, id.as_bytes());
        assert!(keys.verifies(SESSION_CONTEXT, id.as_bytes(), &payload));
        assert!(!keys.verifies(SESSION_CONTEXT, other.as_bytes(), &payload));
        assert!(!keys.verifies(ANONYMOUS_CONTEXT, id.as_bytes(), &payload));
        let rotated = KeyRing::new(Key::from_bytes(&[5; 32]).unwrap())
            .with_previous(Key::from_bytes(&[4; 32]).unwrap());
        assert!(
            rotated.verifies(SESSION_CONTEXT, id.as_bytes(), &payload),
            "a previous key still verifies tokens it made"
        );
    }

    #[test]
    fn the_meta_tag_holds_a_masked_token_of_the_same_payload() {
        let tag = token([7; 32]).meta_tag();
        let content = tag
            .strip_prefix(r#"<meta name="csrf-token" content=""#)
            .and_then(|rest| rest.strip_suffix(r#"">"#))
            .expect("the tag's shape");
        assert_eq!(unmask(content), Some([7; 32]));
    }

    #[test]
    fn the_meta_tag_escapes_its_content() {
        assert_eq!(
            meta_tag_holding(r#""><script>alert('x')</script>&"#),
            r#"<meta name="csrf-token" content="&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;">"#
        );
    }

    #[test]
    fn masked_tokens_need_no_escaping_in_an_attribute() {
        for payload in [[0; 32], [0xff; 32], [0xfb; 32], [0x3e; 32]] {
            let masked = token(payload).masked();
            assert!(
                masked
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{masked}"
            );
            assert_eq!(escape_attribute(&masked), masked);
        }
    }

    #[test]
    fn attribute_escaping_covers_quotes_angle_brackets_and_ampersands() {
        struct Test {
            name: &'static str,
            input: &'static str,
            expected: &'static str,
        }
        let tests = [
            Test {
                name: "double quote ends the attribute",
                input: r#"a"b"#,
                expected: "a&quot;b",
            },
            Test {
                name: "single quote",
                input: "a'b",
                expected: "a&#39;b",
            },
            Test {
                name: "angle brackets",
                input: "<script>",
                expected: "&lt;script&gt;",
            },
            Test {
                name: "ampersand first, so entities are not doubled wrongly",
                input: "&quot;",
                expected: "&amp;quot;",
            },
            Test {
                name: "base64url passes unchanged",
                input: "aZ09-_",
                expected: "aZ09-_",
            },
        ];
        for test in tests {
            assert_eq!(escape_attribute(test.input), test.expected, "{}", test.name);
        }
    }

    #[test]
    fn debug_hides_the_token() {
        assert_eq!(format!("{:?}", token([1; 32])), "CsrfToken(<redacted>)");
    }
}
