//! The layer's `tracing` events, one function each.
//!
//! Security events have target `cloakroom::security` and a stable `event`
//! field, listed in [`SECURITY_EVENTS`]; the crate docs and the README list
//! the same names, which a unit test below checks. Sessions appear only as
//! the first 8 hex characters of their store key, never as an ID. Other
//! events (store failures, sweeps) have target `cloakroom`.

use std::fmt;
#[cfg(feature = "axum")]
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::id::StoreKey;
use crate::store::StoreError;

/// Every security event's name, in the order the docs list them.
#[cfg(test)]
pub(crate) const SECURITY_EVENTS: [&str; 13] = [
    "session_created",
    "session_rotated",
    "session_forwarded",
    "session_invalidated",
    "logged_out_everywhere",
    "all_sessions_ended",
    "sessions_evicted",
    "session_orphaned",
    "cookie_rejected",
    "session_vanished",
    "id_collision",
    "csrf_rejected",
    "session_not_found",
];

/// Why a session was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// A logout (or logout-everywhere) from the request.
    Logout,
    /// The application, through `SessionAdmin`.
    Admin,
    /// The user, ending one of their other sessions ("sign out this
    /// device").
    Device,
    /// The identity provider's session ended (a back-channel logout,
    /// through `SessionAdmin::end_external_session`).
    ExternalLogout,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "invalidate",
            Self::Admin => "admin",
            Self::Device => "device",
            Self::ExternalLogout => "external_logout",
        }
    }
}

/// When a session turned out to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vanished {
    /// Its changes were to be saved.
    BeforeSave,
    /// It had moved to a new ID; its changes were to be saved.
    MovedBeforeSave,
    /// It was to be moved to a new ID.
    BeforeMove,
    /// It was to be ended.
    BeforeEnd(EndReason),
    /// Its move was to be taken back (so its old ID ends again too).
    BeforeTakeBack,
}

impl Vanished {
    fn as_str(self) -> &'static str {
        match self {
            Self::BeforeSave => "save",
            Self::MovedBeforeSave => "save_after_move",
            Self::BeforeMove => "move",
            Self::BeforeEnd(reason) => reason.as_str(),
            Self::BeforeTakeBack => "take_back",
        }
    }
}

/// Why a new record that nobody holds a cookie for is left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orphan {
    /// Deleting it again after a failure failed too.
    Failed,
    /// Deleting it after the old session ended failed.
    Ended,
    /// Deleting it after the request was dropped failed.
    Abandoned,
    /// Whether the old record was retired is unknown, so it is kept.
    RetireUnknown,
}

impl Orphan {
    fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Ended => "ended",
            Self::Abandoned => "abandoned",
            Self::RetireUnknown => "retire_unknown",
        }
    }
}

/// Why session cookies of a request were turned down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieReason {
    /// Not of the form the layer writes.
    Malformed,
    /// Well-formed, but no key of the ring made the tag.
    BadSignature,
    /// More well-formed candidates than the layer checks.
    TooMany,
}

impl CookieReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::TooMany => "too_many",
        }
    }
}

#[cfg(feature = "csrf")]
/// Why [`CsrfLayer`](crate::csrf::CsrfLayer) refused a request.
///
/// New reasons may be added; match with a wildcard arm. The
/// `csrf_rejected` security event names it in `snake_case`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsrfFailureReason {
    /// The browser marked the request `cross-site` or `same-site` in
    /// `Sec-Fetch-Site`, and its `Origin` is not trusted.
    CrossSite,
    /// The `Origin` header names neither this host nor a trusted origin.
    OriginNotAllowed,
    /// Neither the header nor the form field carried a token.
    MissingToken,
    /// The token is malformed, forged, from another session or expired.
    InvalidToken,
    /// A urlencoded form without the header was larger than
    /// [`max_form_bytes`](crate::csrf::CsrfLayerBuilder::max_form_bytes), so its
    /// token field was not looked for.
    FormTooLarge,
    /// The request body could not be read to find the token field.
    UnreadableBody,
    /// A `multipart/form-data` body without the header had no token field
    /// within its first
    /// [`max_form_bytes`](crate::csrf::CsrfLayerBuilder::max_form_bytes):
    /// the field came after a large part (a file), or the body had none.
    /// Forms should send the token field first.
    TokenBeyondLimit,
    /// A `multipart/form-data` body without the header was not valid
    /// multipart (no boundary in `Content-Type`, broken framing), so its
    /// token field could not be found.
    MalformedMultipart,
}

#[cfg(feature = "csrf")]
impl CsrfFailureReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::CrossSite => "cross_site",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::FormTooLarge => "form_too_large",
            Self::UnreadableBody => "unreadable_body",
            Self::TokenBeyondLimit => "token_beyond_limit",
            Self::MalformedMultipart => "malformed_multipart",
        }
    }
}

pub(crate) fn session_created(key: &StoreKey, authenticated: bool) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_created",
        session = %key.short(),
        authenticated,
        "session created"
    );
}

pub(crate) fn id_collision(key: &StoreKey) {
    tracing::warn!(
        target: "cloakroom::security",
        event = "id_collision",
        session = %key.short(),
        "a new session ID was already in use; drawing another"
    );
}

pub(crate) fn session_rotated(old: &StoreKey, new: &StoreKey) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_rotated",
        session = %old.short(),
        successor = %new.short(),
        "session moved to a new ID"
    );
}

/// A move whose new cookie never reached the browser was undone: `old`
/// has its session back, and `new` is gone.
pub(crate) fn rotation_taken_back(old: &StoreKey, new: &StoreKey) {
    tracing::info!(
        target: "cloakroom::security",
        event = "rotation_taken_back",
        session = %old.short(),
        successor = %new.short(),
        "a move to a new ID was undone: the response with the new cookie was never sent"
    );
}

/// A session was ended because it no longer matches its user: the user
/// is gone, or their credential changed since the session's login.
#[cfg(feature = "axum")]
pub(crate) fn session_unbound(why: &'static str) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_unbound",
        why,
        "session ended: it no longer matches its user"
    );
}

pub(crate) fn session_forwarded(key: &StoreKey, successor: &StoreKey, reason: EndReason) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_forwarded",
        reason = reason.as_str(),
        session = %key.short(),
        successor = %successor.short(),
        "the session had moved to a new ID; ending it there"
    );
}

pub(crate) fn session_invalidated(key: &StoreKey, reason: EndReason) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_invalidated",
        reason = reason.as_str(),
        session = %key.short(),
        "session ended"
    );
}

pub(crate) fn session_vanished(key: &StoreKey, when: Vanished) {
    tracing::info!(
        target: "cloakroom::security",
        event = "session_vanished",
        when = when.as_str(),
        session = %key.short(),
        "session ended by another request while this one ran; its changes are dropped"
    );
}

/// `kept` is the session that stays ("log out other devices"), if any;
/// `by_app` says whether the application (not a request) asked.
pub(crate) fn logged_out_everywhere(ended: u64, kept: Option<&StoreKey>, by_app: bool) {
    tracing::info!(
        target: "cloakroom::security",
        event = "logged_out_everywhere",
        ended,
        kept_current = kept.is_some(),
        session = kept.map(StoreKey::short),
        by_app,
        "sessions of the user ended"
    );
}

/// Every session in the store ended (`SessionAdmin::end_all_sessions`):
/// `ended` live sessions, in `passes` passes over the store.
pub(crate) fn all_sessions_ended(ended: u64, passes: usize) {
    tracing::warn!(
        target: "cloakroom::security",
        event = "all_sessions_ended",
        ended,
        passes,
        "every session in the store ended, of every user"
    );
}

pub(crate) fn sessions_evicted(ended: u64, limit: usize) {
    tracing::info!(
        target: "cloakroom::security",
        event = "sessions_evicted",
        ended,
        limit,
        "the user's least recently active sessions ended: over the per-user limit"
    );
}

pub(crate) fn session_orphaned(key: &StoreKey, why: Orphan) {
    tracing::warn!(
        target: "cloakroom::security",
        event = "session_orphaned",
        why = why.as_str(),
        session = %key.short(),
        "a new session that nobody holds stays until its idle timeout"
    );
}

pub(crate) fn cookie_rejected(
    reason: CookieReason,
    malformed: usize,
    bad_signature: usize,
    valid_found: bool,
) {
    tracing::info!(
        target: "cloakroom::security",
        event = "cookie_rejected",
        reason = reason.as_str(),
        malformed,
        bad_signature,
        valid_found,
        "session cookies rejected; the request goes on with the valid one, or without a session"
    );
}

#[cfg(feature = "csrf")]
pub(crate) fn csrf_rejected(reason: CsrfFailureReason, method: &http::Method, path: &str) {
    tracing::info!(
        target: "cloakroom::security",
        event = "csrf_rejected",
        reason = reason.as_str(),
        method = %method,
        path,
        "unsafe request refused by the CSRF check"
    );
}

pub(crate) fn session_not_found(key: &StoreKey) {
    tracing::debug!(
        target: "cloakroom::security",
        event = "session_not_found",
        session = %key.short(),
        "the cookie names no live session (expired or ended); continuing without one"
    );
}

/// A store call failed. Logged with the error's class and the `Display` of
/// its source, which stores keep free of session data (never `Debug`,
/// which for some backends carries a query's parameters).
pub(crate) fn store_error(operation: &'static str, error: &StoreError) {
    tracing::error!(
        target: "cloakroom",
        event = "store_error",
        operation,
        error = %error,
        cause = %Cause(error),
        "session store failed; this request's session changes are dropped"
    );
}

/// Session watches could not read their sessions back; they keep
/// re-checking on a timer until the store answers.
pub(crate) fn watch_recheck_failed(error: &StoreError) {
    tracing::warn!(
        target: "cloakroom",
        event = "watch_recheck_failed",
        error = %error,
        cause = %Cause(error),
        "session watches could not re-check their sessions; retrying every second"
    );
}

/// A `PostgresStore` listens for ended sessions, for session watches.
#[cfg(feature = "postgres")]
pub(crate) fn watch_feed_listening() {
    tracing::debug!(
        target: "cloakroom",
        event = "watch_feed_listening",
        "PostgresStore: listening for ended sessions"
    );
}

/// A `PostgresStore` lost its `LISTEN` connection, or stopped hearing its
/// heartbeat: session watches re-check on a timer until it is back.
#[cfg(feature = "postgres")]
pub(crate) fn watch_feed_lost() {
    tracing::warn!(
        target: "cloakroom",
        event = "watch_feed_lost",
        "PostgresStore: lost the notification channel; session watches re-check every second until it is back"
    );
}

/// A `PostgresStore` could not listen for ended sessions; it tries again
/// shortly.
#[cfg(feature = "postgres")]
pub(crate) fn watch_feed_failed(error: &str) {
    tracing::warn!(
        target: "cloakroom",
        event = "watch_feed_failed",
        error,
        "PostgresStore: could not listen for ended sessions; retrying"
    );
}

/// A sweep of expired sessions, done or failed.
pub(crate) fn sweep(result: Result<u64, StoreError>) {
    match result {
        Ok(removed) => tracing::debug!(
            target: "cloakroom",
            event = "sessions_swept",
            removed,
            "expired sessions swept"
        ),
        Err(error) => store_error("sweep_expired", &error),
    }
}

/// A store's user index could not be updated after the session itself
/// was; the entry left behind is pruned later.
#[cfg(feature = "redis")]
pub(crate) fn store_index_stale(error: &StoreError) {
    tracing::warn!(
        target: "cloakroom",
        event = "store_index_stale",
        error = %error,
        cause = %Cause(error),
        "the user index was not updated (a retired session's entry stays, or a moved deadline \
         is not yet in it) until the user's sessions are next counted or listed"
    );
}

/// A cached `RedisStore` subscribed to its invalidation channel: its local
/// cache starts serving (from empty).
#[cfg(feature = "redis")]
pub(crate) fn cache_subscribed() {
    tracing::debug!(
        target: "cloakroom",
        event = "cache_subscribed",
        "RedisStore local cache: subscribed to the invalidation channel"
    );
}

/// A cached `RedisStore` lost its invalidation channel (the connection
/// ended, or a ping went unanswered): its cache is flushed and serves
/// nothing until it has subscribed again.
#[cfg(feature = "redis")]
pub(crate) fn cache_subscription_lost() {
    tracing::warn!(
        target: "cloakroom",
        event = "cache_subscription_lost",
        "RedisStore local cache: lost the invalidation channel; flushed, reads go to Redis until it is back"
    );
}

/// A cached `RedisStore` could not subscribe to its invalidation channel;
/// it tries again shortly, reading from Redis meanwhile.
#[cfg(feature = "redis")]
pub(crate) fn cache_subscribe_failed(error: &redis::RedisError) {
    tracing::warn!(
        target: "cloakroom",
        event = "cache_subscribe_failed",
        error = %error,
        "RedisStore local cache: could not subscribe to the invalidation channel; retrying"
    );
}

/// A `Secure` session cookie was set in answer to a request that showed no
/// sign of https: a browser on plain http drops it. Given once per layer.
pub(crate) fn secure_cookie_over_plain_http() {
    tracing::warn!(
        target: "cloakroom",
        event = "secure_cookie_over_plain_http",
        "set a Secure session cookie on a request with no sign of https (no https scheme, \
         no X-Forwarded-Proto: https, host not localhost): a browser on plain http drops \
         it, so logins seem to do nothing. Serve over https (behind a proxy, have it send \
         X-Forwarded-Proto), develop on http://localhost, or for a LAN name in development \
         only, build the layer with .secure(false)"
    );
}

/// A request reached a [`ClientIp`](crate::device::ClientIp) rule that
/// reads the peer from a request extension (`extension`, a type name), and
/// the request had none: no client address is recorded. Given once per
/// layer; usually the server was wired without it (axum served without
/// `into_make_service_with_connect_info`, or `from_socket_addr` under
/// axum).
pub(crate) fn client_ip_unknown(extension: &str) {
    tracing::warn!(
        target: "cloakroom",
        event = "client_ip_unknown",
        extension,
        "a request came without the {extension} extension the ClientIp rule reads the peer \
         address from, so logins record no client address. Under axum, use \
         ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>() and serve the app with \
         into_make_service_with_connect_info::<SocketAddr>(); a hyper server must insert \
         the connection's SocketAddr for ClientIp::from_socket_addr()"
    );
}

/// A public page ([`OutageTolerant`](crate::login::OutageTolerant)) was
/// served as anonymous because the session store is unavailable. At most
/// one line per [`OUTAGE_LOG_INTERVAL_SECS`] per layer; `since_last` counts
/// the pages served so since the previous line (this one included).
#[cfg(feature = "axum")]
pub(crate) fn served_anonymous_during_outage(since_last: u64) {
    tracing::warn!(
        target: "cloakroom",
        event = "served_anonymous_during_outage",
        since_last,
        "session store unavailable: public pages are served as anonymous \
         (OutageTolerant); pages that need a user answer 503"
    );
}

/// The shortest time between two lines of a rate-limited event.
#[cfg(feature = "axum")]
pub(crate) const OUTAGE_LOG_INTERVAL_SECS: i64 = 10;

/// Lets one line of a frequent event through per interval, and counts
/// the occurrences in between so that the next line can say how many.
#[cfg(feature = "axum")]
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// The layer clock's second of the last line (`i64::MIN`: none yet).
    last: AtomicI64,
    /// Occurrences since the last line.
    unlogged: AtomicU64,
}

#[cfg(feature = "axum")]
impl RateLimit {
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicI64::new(i64::MIN),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Records one occurrence at `now` (unix seconds); `Some(count)` when
    /// it is to be logged, with the occurrences since the last line.
    pub(crate) fn occurred(&self, now: i64) -> Option<u64> {
        let count = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == i64::MIN || now.saturating_sub(last) >= OUTAGE_LOG_INTERVAL_SECS;
        // One of several requests at once wins the line.
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unlogged.fetch_sub(count, Ordering::Relaxed);
            return Some(count);
        }
        None
    }
}

/// An unsafe request from a browser (`request`: `METHOD /path`) reached
/// the app with no CSRF layer in its way, and the app never said it needs
/// none. Given once per layer.
pub(crate) fn csrf_missing(request: &str) {
    tracing::warn!(
        target: "cloakroom",
        event = "csrf_missing",
        request,
        "{request} came from a browser and reached the app with no CSRF check: any site can \
         make a signed-in browser send it. Install the checks with \
         .layer(sessions.with_csrf(CsrfLayer::new())) instead of .layer(sessions) (feature \
         `csrf`), or, if no route acts on the session cookie's authority (an API with \
         bearer tokens, say), build the session layer with .csrf_not_needed()"
    );
}

/// A layer was built with `secure(false)`: its cookies travel over plain
/// http, readable on the network path. Given once, at start-up.
pub(crate) fn cookie_without_secure() {
    tracing::warn!(
        target: "cloakroom",
        event = "cookie_without_secure",
        "the session cookie is set without Secure (.secure(false)): browsers send it over \
         plain http, where anyone on the network path can read it and take the session. \
         This is a development setting; in production serve over https and drop \
         .secure(false)"
    );
}

/// `MemoryStore` was full and made room.
#[cfg(feature = "memory")]
pub(crate) fn session_evicted_for_room(key: &StoreKey) {
    tracing::debug!(
        target: "cloakroom",
        event = "session_evicted",
        session = %key.short(),
        "MemoryStore is full: evicted the least recently active anonymous session"
    );
}

/// The `Display` of an error's source, or nothing.
struct Cause<'a>(&'a StoreError);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(self.0) {
            Some(source) => write!(f, "{source}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "axum")]
    #[test]
    fn a_rate_limited_event_is_logged_once_per_interval_with_the_count_since_the_last_line() {
        let limit = RateLimit::new();
        assert_eq!(
            limit.occurred(100),
            Some(1),
            "the first occurrence is logged"
        );
        assert_eq!(limit.occurred(100), None);
        assert_eq!(limit.occurred(109), None);
        assert_eq!(
            limit.occurred(110),
            Some(3),
            "the next line counts the quiet ones"
        );
        assert_eq!(limit.occurred(115), None);
        assert_eq!(limit.occurred(200), Some(2));
    }

    /// The event names a paragraph lists: every backticked snake_case word
    /// between `start` and the end of the paragraph.
    fn listed(text: &str, start: &str) -> Vec<String> {
        let from = text.find(start).expect("the events paragraph") + start.len();
        let paragraph = text[from..]
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .replace("//!", " ");
        paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| {
                word.contains('_') && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(str::to_owned)
            .collect()
    }

    /// Names that appear in the paragraph as something other than an event.
    const NOT_EVENTS: [&str; 4] = ["bad_signature", "too_many", "store_error", "event"];

    fn documented(text: &str, start: &str) -> Vec<String> {
        let mut names: Vec<String> = listed(text, start)
            .into_iter()
            .filter(|name| !NOT_EVENTS.contains(&name.as_str()))
            .collect();
        names.dedup();
        names
    }

    #[test]
    fn the_crate_docs_list_exactly_the_security_events() {
        let docs = documented(include_str!("lib.rs"), "a\n//! stable `event` field:");
        assert_eq!(docs, SECURITY_EVENTS);
    }

    #[test]
    fn the_readme_lists_exactly_the_security_events() {
        let readme = documented(include_str!("../README.md"), "a\nstable `event` field:");
        assert_eq!(readme, SECURITY_EVENTS);
    }

    #[test]
    fn the_code_emits_every_listed_event_and_no_other() {
        let sources = [include_str!("events.rs")];
        let code = sources.concat();
        let mut emitted: Vec<&str> = code
            .match_indices("event = \"")
            .map(|(at, marker)| {
                let rest = &code[at + marker.len()..];
                &rest[..rest.find('"').unwrap_or(0)]
            })
            .collect();
        emitted.sort_unstable();
        emitted.dedup();
        for name in SECURITY_EVENTS {
            assert!(emitted.contains(&name), "{name} is never emitted");
        }
    }
}
