//! [`RequestContext`]: what the session layer knows of one request, built
//! once in `SessionService::call`, and the one door through which the
//! service, the CSRF layer and the login extractors reach the layer's
//! settings.
//!
//! It travels inside the request's session (one allocation per request
//! for both), but other modules see only this type: `Session::core` is
//! private to `session/`, and `tests/architecture.rs` keeps it so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::SessionConfig;
use crate::core::Core;
use crate::device::RequestOrigin;

/// One request as the session layer saw it.
pub(crate) struct RequestContext {
    core: Arc<Core>,
    origin: RequestOrigin,
    plain_http: bool,
    /// `METHOD /path` of an unsafe request from a browser, while the app
    /// has not said it needs no CSRF checks: such a request should meet a
    /// CSRF layer before the app.
    unsafe_from_browser: Option<Box<str>>,
    /// A CSRF layer saw the request (checked it, or found it safe or
    /// exempt).
    csrf_seen: AtomicBool,
    /// The request's head, kept only while the app renders some of this
    /// crate's answers itself (`respond.rs`), for its renderers. Boxed: it
    /// is rare and large, and the context is moved into every request's
    /// session allocation.
    #[cfg(feature = "axum")]
    head: Option<Box<http::request::Parts>>,
}

impl RequestContext {
    pub(crate) fn new(core: Arc<Core>, origin: RequestOrigin, plain_http: bool) -> Self {
        Self {
            core,
            origin,
            plain_http,
            unsafe_from_browser: None,
            csrf_seen: AtomicBool::new(false),
            #[cfg(feature = "axum")]
            head: None,
        }
    }

    /// The context, noting an unsafe request from a browser (as
    /// `METHOD /path`) that a CSRF layer should see.
    pub(crate) fn with_unsafe_from_browser(mut self, request: Option<Box<str>>) -> Self {
        self.unsafe_from_browser = request;
        self
    }

    /// Records that a CSRF layer saw the request.
    #[cfg_attr(not(feature = "csrf"), allow(dead_code))]
    pub(crate) fn csrf_seen(&self) {
        self.csrf_seen.store(true, Ordering::Relaxed);
    }

    /// Whether a CSRF layer saw the request (after the session layer).
    #[cfg_attr(not(all(feature = "csrf", feature = "axum")), allow(dead_code))]
    pub(crate) fn was_csrf_seen(&self) -> bool {
        self.csrf_seen.load(Ordering::Relaxed)
    }

    /// The unsafe request from a browser (`METHOD /path`) that reached the
    /// app with no CSRF layer in its way, if this was one.
    pub(crate) fn unchecked_unsafe_request(&self) -> Option<&str> {
        self.unsafe_from_browser
            .as_deref()
            .filter(|_| !self.csrf_seen.load(Ordering::Relaxed))
    }

    /// The context, keeping the request's head for the app's renderers.
    #[cfg(feature = "axum")]
    pub(crate) fn with_head(mut self, head: Option<http::request::Parts>) -> Self {
        self.head = head.map(Box::new);
        self
    }

    /// The request's head, if the layer kept it (only while the app gave a
    /// renderer of its own).
    #[cfg(feature = "axum")]
    pub(crate) fn head(&self) -> Option<&http::request::Parts> {
        self.head.as_deref()
    }

    /// The layer's validated settings (keys, cookie, timeouts, login URL).
    #[cfg_attr(not(any(feature = "axum", feature = "csrf")), allow(dead_code))]
    pub(crate) fn settings(&self) -> &SessionConfig {
        &self.core.config
    }

    /// The layer clock's time in whole seconds.
    #[cfg_attr(not(any(feature = "axum", feature = "csrf")), allow(dead_code))]
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.core.now()
    }

    /// Reports a page served as anonymous during a store outage: one log
    /// line per interval per layer, not one per page.
    #[cfg(feature = "axum")]
    pub(crate) fn served_anonymous_during_outage(&self) {
        if let Some(count) = self.core.outage_log.occurred(self.now().unix_timestamp()) {
            crate::events::served_anonymous_during_outage(count);
        }
    }

    /// What the layer shares with its sessions: the store and settings.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Where the request came from (the device a login records).
    pub(crate) fn origin(&self) -> &RequestOrigin {
        &self.origin
    }

    /// The path and query of a `GET` or `HEAD` request, as the layer saw
    /// it (before a nested router stripped a prefix).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn page(&self) -> Option<&str> {
        self.origin.page()
    }

    /// The request showed no sign of https while the cookie is `Secure`
    /// (worth a warning if the response sets it).
    pub(crate) fn plain_http(&self) -> bool {
        self.plain_http
    }
}
