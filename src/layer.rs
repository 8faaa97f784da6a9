//! [`SessionLayer`]: the `tower::Layer` that gives every request a
//! [`Session`](crate::Session), and [`SessionLayerBuilder`], which configures
//! it and reports settings that contradict each other.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cloakroom::{ConfigError, Key, MemoryStore, SameSite, SessionLayer};
//!
//! let layer = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::from_hex(&"ab".repeat(32))?)
//!     .host_prefix(true)
//!     .same_site(SameSite::Strict)
//!     .idle_timeout(Duration::from_secs(15 * 60))
//!     .absolute_timeout(Duration::from_secs(8 * 3600))
//!     .build()?;
//!
//! // Contradictions are reported, never silently fixed.
//! let err = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::generate()?)
//!     .host_prefix(true)
//!     .domain("example.com")
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err, ConfigError::HostPrefixWithDomain);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_layer::Layer;

use crate::admin::SessionAdmin;
#[cfg(feature = "test-suite")]
use crate::clock::Clock;
use crate::config::Settings;
use crate::cookie::SameSite;
use crate::core::Core;
use crate::device::ClientIp;
use crate::error::ConfigError;
use crate::key::{Key, KeyRing};
use crate::service::SessionService;
use crate::store::{Bounded, DynStore, SessionStore};

/// Builds a [`SessionLayer`]; start with [`SessionLayer::builder`].
///
/// Every default is the safe one: an `HttpOnly`, `Secure`, `SameSite=Lax`
/// cookie named `__Host-id` (the `__Host-` prefix is used whenever the
/// settings allow it) on `Path=/` with no `Domain`, a browser-session
/// cookie (no `Max-Age`), a 30-minute idle timeout, a 12-hour absolute
/// timeout, an idle deadline that is extended once a tenth of the idle
/// window has passed, at most 100 sessions per user, and a 3-second limit
/// on every store call. Only a signing key must be given.
///
/// The builder does nothing until [`build`](Self::build) is called: a
/// router given the builder itself instead of the built layer fails to
/// compile with an error about `Layer<Route>` not being implemented.
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SessionLayerBuilder {
    store: MakeStore,
    settings: Settings,
}

/// Wraps the store with the layer's store timeout once it is known.
type MakeStore = Box<dyn FnOnce(Duration) -> Arc<dyn DynStore> + Send + Sync>;

impl SessionLayerBuilder {
    pub(crate) fn new<S: SessionStore>(store: S) -> Self {
        Self {
            store: Box::new(move |timeout| Arc::new(Bounded { store, timeout })),
            settings: Settings::default(),
        }
    }

    /// The key that signs new cookies (and verifies them). Calling it
    /// again replaces the key: the earlier one no longer verifies anything.
    /// To keep an old key verifying during a rotation, pass it to
    /// [`previous_key`](Self::previous_key).
    pub fn key(mut self, key: Key) -> Self {
        self.settings.key = Some(key);
        self
    }

    /// A retired key that still verifies cookies but signs none. Add the
    /// previous key here when rotating; remove it later to log out everyone
    /// who still holds a cookie it signed.
    pub fn previous_key(mut self, key: Key) -> Self {
        self.settings.previous_keys.push(key);
        self
    }

    /// A whole key ring at once; replaces keys given by
    /// [`key`](Self::key) and [`previous_key`](Self::previous_key).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.settings.key = None;
        self.settings.previous_keys.clear();
        self.settings.key_ring = Some(ring);
        self
    }

    /// The cookie name, `id` by default, sent with a prefix: `__Host-id`
    /// while the `__Host-` prefix applies, `__Secure-id` for any other
    /// `Secure` cookie. Generic names reveal nothing about the stack.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.settings.cookie.name = name.into();
        self
    }

    /// Whether the cookie name carries the `__Host-` prefix.
    ///
    /// By default the prefix is used whenever the other settings allow it:
    /// `Secure`, no `Domain` and `Path=/`. Browsers then accept the cookie
    /// only with exactly those attributes, so a sibling subdomain cannot
    /// plant or overwrite it. Settings that rule it out
    /// ([`domain`](Self::domain), [`path`](Self::path) other than `/`,
    /// [`secure(false)`](Self::secure)) turn it off unless it was asked for
    /// with `host_prefix(true)`, which then makes [`build`](Self::build)
    /// fail with the contradiction. A `Secure` cookie without the `__Host-`
    /// prefix gets the `__Secure-` prefix instead, which browsers accept
    /// only from https pages and with `Secure`.
    ///
    /// # Security
    ///
    /// `host_prefix(false)` lets any subdomain of the site (or whoever
    /// controls one) set a cookie under the session cookie's name, for
    /// example to plant a session of their own; `__Secure-` still keeps
    /// plain-http pages from doing so.
    pub fn host_prefix(mut self, enabled: bool) -> Self {
        self.settings.cookie.host_prefix = Some(enabled);
        self
    }

    /// Sets the cookie's `Domain` attribute; none by default. A domain
    /// rules out the `__Host-` prefix (see
    /// [`host_prefix`](Self::host_prefix)).
    ///
    /// # Security
    ///
    /// With a domain the cookie is also sent to every subdomain of it, so
    /// any of them (and anyone who takes one over) receives the session
    /// cookie. Without one, the cookie goes only to the host that set it.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.cookie.domain = Some(domain.into());
        self
    }

    /// Sets the cookie's `Path`, `/` by default. Another path rules out the
    /// `__Host-` prefix (see [`host_prefix`](Self::host_prefix)).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.settings.cookie.path = path.into();
        self
    }

    /// Sets `SameSite`, `Lax` by default.
    ///
    /// # Security
    ///
    /// `None` sends the cookie on cross-site requests, so cross-site forms
    /// and scripts act as the user; only use it with CSRF protection, for
    /// apps embedded in other sites.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.settings.cookie.same_site = same_site;
        self
    }

    /// Whether the cookie carries `Secure`; on by default. `secure(false)`
    /// is a development setting (a LAN name over plain http): building such
    /// a layer logs a warning saying so (event `cookie_without_secure`).
    ///
    /// # Security
    ///
    /// Without `Secure` the browser also sends the cookie over plain HTTP,
    /// where anyone on the network path can read it and take over the
    /// session, and neither the `__Host-` nor the `__Secure-` prefix can be
    /// used. Browsers treat `http://localhost` as secure, so local
    /// development does not need this.
    pub fn secure(mut self, secure: bool) -> Self {
        self.settings.cookie.secure = secure;
        self
    }

    /// Whether the cookie carries `HttpOnly`; on by default.
    ///
    /// # Security
    ///
    /// Without `HttpOnly`, scripts on the page (including any injected by
    /// an XSS flaw) can read the session cookie and send it elsewhere.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.settings.cookie.http_only = http_only;
        self
    }

    /// Gives every new session a persistent cookie (`Max-Age` set to the
    /// time left before the session expires); off by default, so cookies
    /// last until the browser closes. A single session can opt in with
    /// [`Session::remember_me`](crate::Session::remember_me).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.settings.persistent = persistent;
        self
    }

    /// How long a session may go unused before it expires; 30 minutes by
    /// default.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// How long a session may live however active it is, counted from its
    /// creation (or login); 12 hours by default. Must not be shorter than
    /// the idle timeout.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.settings.absolute_timeout = timeout;
        self
    }

    /// How long a remembered session (see
    /// [`Session::remember_me`](crate::Session::remember_me)) may go unused
    /// before it expires; 7 days by default. It rolls like the ordinary
    /// idle timeout.
    pub fn remember_me_idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.remember_idle_timeout = timeout;
        self
    }

    /// How long a remembered session may live however active it is,
    /// counted from its creation (or login); 30 days by default. Calling
    /// `remember_me` again never extends it. Must not be shorter than the
    /// remember-me idle timeout.
    pub fn remember_me_absolute_timeout(mut self, timeout: Duration) -> Self {
        self.settings.remember_absolute_timeout = timeout;
        self
    }

    /// The fraction of the idle window (0.0 up to 0.5) that must pass
    /// before a request records activity again, extending the idle
    /// deadline; 0.1 by default.
    ///
    /// Rolling expiry then costs a store write at most once per
    /// `touch_after × idle_timeout` per session instead of on every request,
    /// at the price of the effective idle timeout lying between
    /// `(1 − touch_after) × idle_timeout` and `idle_timeout`. 0.0 extends on
    /// every request. It is capped at 0.5: beyond that, the effective idle
    /// timeout shrinks so far that steadily active users are logged out.
    pub fn touch_after(mut self, fraction: f64) -> Self {
        self.settings.touch_after = fraction;
        self
    }

    /// The most sessions one user may have at once; 100 by default, `None`
    /// for no limit. A login beyond it ends the user's least recently
    /// active sessions (ties to the second go by store key, the same for
    /// every login). Once a burst of logins has answered, the user has at
    /// most this many; while logins run, at most this many plus one for
    /// each login that has stored its session and not finished its check.
    /// A login outranked by others active in the same second ends without
    /// a session.
    ///
    /// Most apps are well served by 10 to 20: a user with more live
    /// sessions than devices has usually lost track of some (ASVS 7.1.2
    /// asks for a documented limit).
    pub fn max_sessions_per_user(mut self, limit: Option<usize>) -> Self {
        self.settings.max_sessions_per_user = limit;
        self
    }

    /// How long a single store call may take before the request gives up
    /// on it and answers `503`; 3 seconds by default. Calls of in-process
    /// stores ([`SessionStore::IN_PROCESS`]) are not limited.
    ///
    /// A call given up on may still take effect in the backend later (a
    /// write held up by a lock, a paused server): a `503` on a write does
    /// not prove that the write was not applied.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout;
        self
    }

    /// Whether a login keeps the request's `User-Agent` with the session
    /// (cut to [`MAX_USER_AGENT_LEN`](crate::device::MAX_USER_AGENT_LEN) bytes), for
    /// [`SessionInfo::device`](crate::store::SessionInfo::device) and its label;
    /// on by default. Nothing else of it is used.
    pub fn record_user_agent(mut self, record: bool) -> Self {
        self.settings.record_user_agent = record;
        self
    }

    /// Keeps each login's client address with the session, found by
    /// `rule` (the peer address, or behind trusted proxies the address they
    /// report); off by default. See [`ClientIp`].
    ///
    /// # Security
    ///
    /// An IP address is personal data in many jurisdictions: keep it only
    /// if you show it to the user or need it, and say so in your privacy
    /// notice.
    pub fn client_ip(mut self, rule: ClientIp) -> Self {
        self.settings.client_ip = Some(rule);
        self
    }

    /// Where [`LoggedIn`](crate::login::LoggedIn) sends a browser that asked for
    /// a page needing a user and has none: `/login` by default. A path on
    /// this site; the page asked for is passed along as `?next=...`.
    pub fn login_url(mut self, path: impl Into<String>) -> Self {
        self.settings.login_url = path.into();
        self
    }

    /// How recently the user must have confirmed their password
    /// ([`Session::password_confirmed`](crate::Session::password_confirmed))
    /// for a route that takes [`Reauthenticated`](crate::login::Reauthenticated):
    /// five minutes by default. Between one second and ten years.
    pub fn reauthentication_window(mut self, window: Duration) -> Self {
        self.settings.reauthentication_window = window;
        self
    }

    /// Answers a route that needs a user, and has none, with the app's own
    /// response (a page in the site's look, JSON for an API) instead of the
    /// default empty redirect or the `401` of short text (feature `axum`).
    ///
    /// `render` gets the [`LoginRequired`](crate::login::LoginRequired) that
    /// [`LoggedIn`](crate::login::LoggedIn),
    /// [`CurrentUser`](crate::login::CurrentUser) or
    /// [`Reauthenticated`](crate::login::Reauthenticated) answered (a
    /// [`Redirect`](crate::login::LoginRequired::Redirect) or
    /// [`Unauthorized`](crate::login::LoginRequired::Unauthorized)), and the
    /// request's head: its method, URI (as the layer saw it, before a
    /// nested router stripped a prefix), version and headers, without its
    /// extensions. It runs in the request's task, so it should be quick; it
    /// cannot await.
    ///
    /// What makes the answer stays the crate's, whatever `render` returns:
    /// the status (`303` or `401`), the redirect's `Location` (the login URL,
    /// with `next`), and `Cache-Control: no-store`, since the answer depends
    /// on the session. `render` chooses the body and the other headers. A
    /// store failure while finding the user is a session error, which
    /// [`session_error_response`](Self::session_error_response) renders.
    ///
    /// The extractors answer as always, and the layer renders the answer
    /// again on its way out, so it works where the layer wraps an axum
    /// router (`router.layer(sessions)`); behind a service whose response
    /// body is not axum's, the default answer stays. While a renderer is
    /// set, the layer keeps a copy of each request's head for it: a few
    /// small allocations per request.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::request::Parts;
    /// use axum::response::{Html, IntoResponse, Json, Response};
    /// use cloakroom::{login::LoginRequired, Key, MemoryStore, SessionLayer};
    ///
    /// fn login_required(rejection: &LoginRequired, _request: &Parts) -> Response {
    ///     match rejection {
    ///         // A browser follows the redirect at once; the page is for the rest.
    ///         LoginRequired::Redirect { .. } => {
    ///             Html("<!doctype html><title>Sign in</title><p>Please sign in.</p>")
    ///                 .into_response()
    ///         }
    ///         _ => Json(serde_json::json!({ "error": "login required" })).into_response(),
    ///     }
    /// }
    ///
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .key(Key::generate()?)
    ///     .login_required_response(login_required)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "axum")]
    pub fn login_required_response<F>(mut self, render: F) -> Self
    where
        F: Fn(&crate::login::LoginRequired, &http::request::Parts) -> axum_core::response::Response
            + Send
            + Sync
            + 'static,
    {
        self.settings.responses.login_required = Some(Box::new(render));
        self
    }

    /// Answers a [`SessionError`](crate::SessionError) with the app's own
    /// response instead of the default short text (feature `axum`): the
    /// errors handlers return (`Result<_, SessionError>`), and those of this
    /// crate's extractors ([`Flashes`](crate::flash::Flashes), and the
    /// login extractors when the store fails).
    ///
    /// `render` gets the error and the request's head, as for
    /// [`login_required_response`](Self::login_required_response), and runs
    /// the same way: quickly, in the request's task, after the error was
    /// logged. What makes the answer stays the crate's: the status
    /// ([`SessionError::status`](crate::SessionError::status): `503` when
    /// the store failed, `400`, `401`, `404` or `500`), `Retry-After: 5` on
    /// a `503` (unless `render` sets its own), and `Cache-Control:
    /// no-store`. The same conditions and cost apply.
    ///
    /// Two answers stay the layer's own plain text: the `503` (or `400`)
    /// that replaces a response when writing the session after the handler
    /// fails (no handler saw an error then), and the `500` of a route the
    /// layer does not wrap.
    ///
    /// # Security
    ///
    /// Show the user the status, not the error's text: a store's failure
    /// can name its backend.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::http::{header, request::Parts, StatusCode};
    /// use axum::response::{Html, IntoResponse, Json, Response};
    /// use cloakroom::{Key, MemoryStore, SessionError, SessionLayer};
    ///
    /// fn session_error(error: &SessionError, request: &Parts) -> Response {
    ///     let api = request
    ///         .headers
    ///         .get(header::ACCEPT)
    ///         .is_some_and(|accept| accept.as_bytes().starts_with(b"application/json"));
    ///     let status = error.status();
    ///     let text = match status {
    ///         StatusCode::SERVICE_UNAVAILABLE => "We could not reach your session. Try again shortly.",
    ///         StatusCode::NOT_FOUND => "There is no such device.",
    ///         _ => "Something went wrong.",
    ///     };
    ///     if api {
    ///         Json(serde_json::json!({ "status": status.as_u16(), "error": text })).into_response()
    ///     } else {
    ///         Html(format!("<!doctype html><title>{status}</title><p>{text}</p>")).into_response()
    ///     }
    /// }
    ///
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .key(Key::generate()?)
    ///     .session_error_response(session_error)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "axum")]
    pub fn session_error_response<F>(mut self, render: F) -> Self
    where
        F: Fn(&crate::SessionError, &http::request::Parts) -> axum_core::response::Response
            + Send
            + Sync
            + 'static,
    {
        self.settings.responses.session_error = Some(Box::new(render));
        self
    }

    /// Says that the app needs no CSRF checks: no route acts on the
    /// session cookie's authority for an unsafe request (`POST`, `PUT`,
    /// `PATCH`, `DELETE`), as in an API whose clients authenticate with
    /// bearer tokens and use the session only for, say, a preference.
    ///
    /// Without it (and without the checks), the first unsafe request a
    /// browser sends that no [`CsrfLayer`](crate::csrf::CsrfLayer) has seen
    /// logs a warning (event `csrf_missing`), once per layer. The checks
    /// are installed with [`SessionLayer::with_csrf`] (feature `csrf`).
    ///
    /// # Security
    ///
    /// Cross-site request forgery: without the checks, any site a
    /// signed-in user visits can make their browser send unsafe requests
    /// to the app with the session cookie (`SameSite=Lax` stops cross-site
    /// form posts in current browsers, but not a sibling subdomain nor old
    /// browsers).
    pub fn csrf_not_needed(mut self) -> Self {
        self.settings.csrf_not_needed = true;
        self
    }

    /// The clock the layer reads; the system clock by default. Tests pass a
    /// [`ManualClock`](crate::test_suite::ManualClock) to exercise expiry
    /// without sleeping (feature `test-suite`).
    #[cfg(feature = "test-suite")]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.settings.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and builds the layer, which starts the
    /// background sweep the store asks for
    /// ([`SessionStore::background_sweep`]).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that cannot work: no key,
    /// an invalid cookie name, domain or path, a `__Host-` prefix asked for
    /// with a domain, another path or without `Secure`, `SameSite=None`
    /// without `Secure`, a timeout out of range, an absolute timeout
    /// shorter than its idle timeout, `touch_after` outside 0.0 up to 0.5,
    /// a zero session limit, a store timeout outside 1 ms to 10 minutes, a
    /// trusted proxy that is no address or network, or a login URL that is
    /// not a path on this site.
    pub fn build(self) -> Result<SessionLayer, ConfigError> {
        let (config, store_timeout) = self.settings.validate()?;
        if !config.cookie.secure {
            crate::events::cookie_without_secure();
        }
        Ok(SessionLayer::from_core(Core::new(
            (self.store)(store_timeout),
            config,
        )))
    }
}

impl fmt::Debug for SessionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Adds server-side sessions to a tower service.
///
/// Build one at startup with [`SessionLayer::builder`], then wrap an axum
/// `Router` (`.layer(...)`) or any tower service with it. Cloning is cheap;
/// clones share the store and settings.
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    core: Arc<Core>,
}

impl SessionLayer {
    /// Starts configuring a layer that keeps sessions in `store`.
    pub fn builder<S: SessionStore>(store: S) -> SessionLayerBuilder {
        SessionLayerBuilder::new(store)
    }

    pub(crate) fn from_core(core: Core) -> Self {
        let core = Arc::new(core);
        start_background_sweep(&core);
        Self { core }
    }

    #[cfg(all(test, feature = "memory"))]
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The session cookie's name, prefix included (`__Host-id` by
    /// default).
    pub fn cookie_name(&self) -> &str {
        &self.core.config.cookie.full_name
    }

    /// A handle for session management outside requests: logging a user
    /// out everywhere, listing their sessions, sweeping expired ones.
    pub fn admin(&self) -> SessionAdmin {
        SessionAdmin::from_parts(self.core.store.clone(), self.core.config.clock.clone())
    }

    /// How many [session watches](crate::watch) made through this layer
    /// are open, for metrics and tests.
    pub fn open_watches(&self) -> usize {
        self.core.open_watches()
    }
}

/// Sweeps the store every period it asks for, with the layer's clock, until
/// the layer and everything made from it are gone.
///
/// An in-process store's sweep completes without waiting, so it runs on a
/// plain thread: no tokio timer is needed. Other stores are swept from a
/// task on the tokio runtime the layer is built in, if any.
fn start_background_sweep(core: &Arc<Core>) {
    let Some(period) = core.store.sweeps_in_background() else {
        return;
    };
    let period = period.max(std::time::Duration::from_secs(1));
    let weak = Arc::downgrade(core);
    if core.store.in_process() {
        let spawned = std::thread::Builder::new()
            .name("cloakroom-sweep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(core) = weak.upgrade() else { return };
                let mut sweep = core.store.sweep_expired(core.now());
                let mut context = Context::from_waker(Waker::noop());
                if let Poll::Ready(result) = sweep.as_mut().poll(&mut context) {
                    crate::events::sweep(result);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(target: "cloakroom", %error, "could not start the background sweep");
        }
    } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(core) = weak.upgrade() else { return };
                crate::events::sweep(core.store.sweep_expired(core.now()).await);
            }
        });
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.core.clone())
    }
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.core.config)
            .finish()
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn builder() -> SessionLayerBuilder {
        SessionLayer::builder(MemoryStore::new()).key(Key::from_bytes(&[9; 32]).unwrap())
    }

    fn err(b: SessionLayerBuilder) -> ConfigError {
        b.build().expect_err("settings should be refused")
    }

    #[test]
    fn defaults_build() {
        assert!(builder().build().is_ok());
    }

    #[test]
    fn a_key_is_required() {
        assert_eq!(
            err(SessionLayer::builder(MemoryStore::new())),
            ConfigError::MissingKey
        );
    }

    fn cookie_name(b: SessionLayerBuilder) -> String {
        b.build().expect("valid settings").cookie_name().to_owned()
    }

    #[test]
    fn the_host_prefix_is_used_whenever_the_settings_allow_it_and_secure_otherwise() {
        assert_eq!(cookie_name(builder()), "__Host-id");
        assert_eq!(cookie_name(builder().cookie_name("sid")), "__Host-sid");
        assert_eq!(cookie_name(builder().domain("example.com")), "__Secure-id");
        assert_eq!(cookie_name(builder().path("/app")), "__Secure-id");
        assert_eq!(cookie_name(builder().secure(false)), "id");
        assert_eq!(cookie_name(builder().host_prefix(false)), "__Secure-id");
        assert_eq!(cookie_name(builder().host_prefix(true)), "__Host-id");
    }

    #[test]
    fn a_second_key_replaces_the_first_instead_of_keeping_it_as_a_verifier() {
        let (leaked, fresh, old) = (
            Key::from_bytes(&[1; 32]).unwrap(),
            Key::from_bytes(&[2; 32]).unwrap(),
            Key::from_bytes(&[3; 32]).unwrap(),
        );
        let id = crate::id::SessionId::generate().unwrap();
        let signed_by = |key: &Key| KeyRing::new(key.clone()).sign(&id);
        let layer = SessionLayer::builder(MemoryStore::new())
            .key(leaked.clone())
            .key(fresh.clone())
            .previous_key(old.clone())
            .build()
            .unwrap();
        let keys = &layer.core().config.keys;
        assert_eq!(keys.len(), 2);
        assert!(keys.verify(&signed_by(&leaked)).is_err(), "replaced key");
        assert_eq!(keys.verify(&signed_by(&fresh)), Ok(id.clone()));
        assert_eq!(keys.verify(&signed_by(&old)), Ok(id.clone()));
        assert_eq!(keys.sign(&id), signed_by(&fresh), "the last key() signs");
    }

    #[test]
    fn host_prefix_contradictions_are_refused() {
        let b = || builder().host_prefix(true);
        assert_eq!(
            err(b().domain("example.com")),
            ConfigError::HostPrefixWithDomain
        );
        assert_eq!(err(b().secure(false)), ConfigError::HostPrefixWithoutSecure);
        assert_eq!(err(b().path("/app")), ConfigError::HostPrefixWithPath);
        assert!(b().build().is_ok());
    }

    #[test]
    fn same_site_none_needs_secure() {
        assert_eq!(
            err(builder().same_site(SameSite::None).secure(false)),
            ConfigError::SameSiteNoneWithoutSecure
        );
        assert!(builder().same_site(SameSite::None).build().is_ok());
    }

    #[test]
    fn absolute_shorter_than_idle_is_refused() {
        assert_eq!(
            err(builder()
                .idle_timeout(Duration::from_secs(600))
                .absolute_timeout(Duration::from_secs(599))),
            ConfigError::AbsoluteShorterThanIdle {
                setting: "absolute_timeout",
                absolute: Duration::from_secs(599),
                absolute_is_default: false,
                idle: Duration::from_secs(600),
            }
        );
        // The default absolute timeout is 12 hours, and the error says so.
        assert_eq!(
            err(builder().idle_timeout(Duration::from_secs(24 * 3600))),
            ConfigError::AbsoluteShorterThanIdle {
                setting: "absolute_timeout",
                absolute: Duration::from_secs(12 * 3600),
                absolute_is_default: true,
                idle: Duration::from_secs(24 * 3600),
            }
        );
    }

    #[test]
    fn timeouts_out_of_range_are_refused() {
        assert_eq!(
            err(builder().idle_timeout(Duration::from_millis(500))),
            ConfigError::TimeoutOutOfRange {
                setting: "idle_timeout",
                value: Duration::from_millis(500)
            }
        );
        assert_eq!(
            err(builder().absolute_timeout(Duration::from_secs(u64::MAX))),
            ConfigError::TimeoutOutOfRange {
                setting: "absolute_timeout",
                value: Duration::from_secs(u64::MAX)
            }
        );
    }

    #[test]
    fn touch_after_must_be_at_most_half_the_idle_window() {
        for bad in [-0.1, 0.51, 0.99, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                err(builder().touch_after(bad)),
                ConfigError::TouchAfterOutOfRange
            );
        }
        assert!(builder().touch_after(0.0).build().is_ok());
        assert!(builder().touch_after(0.5).build().is_ok());
        assert_eq!(
            err(builder().touch_after(1.0)),
            ConfigError::TouchAfterOutOfRange,
            "1.0 would never roll the idle deadline"
        );
    }

    #[test]
    fn session_limits_and_store_timeouts_are_checked() {
        assert_eq!(
            err(builder().max_sessions_per_user(Some(0))),
            ConfigError::ZeroSessionsPerUser
        );
        assert!(builder().max_sessions_per_user(None).build().is_ok());
        assert_eq!(
            err(builder().store_timeout(Duration::ZERO)),
            ConfigError::StoreTimeoutOutOfRange
        );
        assert_eq!(
            err(builder().store_timeout(Duration::from_secs(601))),
            ConfigError::StoreTimeoutOutOfRange
        );
        assert_eq!(
            err(builder()
                .remember_me_idle_timeout(Duration::from_secs(3600))
                .remember_me_absolute_timeout(Duration::from_secs(3599))),
            ConfigError::AbsoluteShorterThanIdle {
                setting: "remember_me_absolute_timeout",
                absolute: Duration::from_secs(3599),
                absolute_is_default: false,
                idle: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn invalid_cookie_attributes_are_refused() {
        assert_eq!(
            err(builder().cookie_name("")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(
            err(builder().cookie_name("a b")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(
            err(builder().cookie_name("a=b")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(err(builder().domain("a;b")), ConfigError::InvalidDomain);
        assert_eq!(err(builder().domain("")), ConfigError::InvalidDomain);
        assert_eq!(err(builder().path("app")), ConfigError::InvalidPath);
        assert_eq!(err(builder().path("/a;b")), ConfigError::InvalidPath);
    }

    #[test]
    fn key_ring_replaces_single_keys() {
        let ring = KeyRing::new(Key::from_bytes(&[1; 32]).unwrap());
        assert!(SessionLayer::builder(MemoryStore::new())
            .key_ring(ring)
            .build()
            .is_ok());
    }

    #[test]
    fn builder_debug_hides_keys() {
        let material = b"SECRET-KEY-MATERIAL-0123456789AB";
        let builder = SessionLayer::builder(MemoryStore::new())
            .key(Key::from_bytes(material).unwrap())
            .previous_key(Key::from_bytes(material).unwrap());
        let shown = format!("{builder:?} {builder:#?}");
        assert!(shown.contains("keys: 2"), "{shown}");
        // The key in every form a derived or careless Debug would show.
        let forms = [
            String::from_utf8(material.to_vec()).unwrap(),
            hex::encode(material),
            hex::encode_upper(material),
            format!("{:?}", &material[..4])
                .trim_end_matches(']')
                .to_owned(),
            "83, 69, 67, 82".to_owned(),
        ];
        for form in forms {
            assert!(!shown.contains(&form), "{form} in {shown}");
        }
    }
}
