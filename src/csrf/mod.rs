//! CSRF protection bound to the session: [`CsrfLayer`] checks every unsafe
//! request, [`CsrfToken`] gives handlers the token to embed.
//!
//! # Example
//!
//! ```
//! use axum::{response::Html, routing::get, Router};
//! use cloakroom::{csrf::CsrfLayer, csrf::CsrfToken, Key, MemoryStore, SessionLayer};
//!
//! async fn page(token: CsrfToken) -> Html<String> {
//!     Html(format!(
//!         r#"<form method="post" action="/"><input type="hidden" name="csrf_token" value="{token}"><button>Go</button></form>"#
//!     ))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sessions = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
//! let csrf = CsrfLayer::builder().exempt_prefix("/webhooks/").build()?;
//! let app: Router = Router::new()
//!     .route("/", get(page).post(|| async { "done" }))
//!     // Sessions, and the CSRF checks inside them, in one call.
//!     .layer(sessions.with_csrf(csrf));
//! # Ok(())
//! # }
//! ```
//!
//! [`SessionLayer::with_csrf`](crate::SessionLayer::with_csrf) installs
//! both layers in the order they need. Adding them one by one also works,
//! the CSRF layer first (axum applies the last `.layer` outermost):
//! `.layer(csrf).layer(sessions)`; in the other order every unsafe
//! request answers `500`, and the log and (in debug builds) the body say
//! why. A session layer without CSRF checks logs a warning at the first
//! unsafe request a browser sends, unless it was built with
//! [`csrf_not_needed`](crate::SessionLayerBuilder::csrf_not_needed).
//!
//! Forms send the token in their `csrf_token` field, urlencoded or
//! `multipart/form-data` (a file upload: put the field first, see
//! [where the token may be](#where-the-token-may-be)); scripts send it in
//! the `x-csrf-token` header. `examples/csrf.rs` shows forms, scripts and
//! a failure page together.
//!
//! # What is checked
//!
//! `SameSite=Lax` on the session cookie already keeps it off cross-site
//! form posts in current browsers, but not off requests from a sibling
//! subdomain (the same *site*), state-changing `GET`s, or old browsers.
//! The layer checks every `POST`, `PUT`, `PATCH` and `DELETE` in two steps,
//! described under [`CsrfLayer`]: first where the browser says the request
//! comes from (`Sec-Fetch-Site`, `Origin`), which costs no session load and
//! no token work; then the token. Never change state on a `GET`: the layer
//! lets safe methods through.
//!
//! [`CsrfLayer::builder`] configures exempt paths and prefixes (in whole
//! path segments: `/api` exempts `/api/hooks`, never `/apiary`), trusted
//! origins, the header and field names, how much of a form is read, and
//! the failure response.
//!
//! # Where the token may be
//!
//! The layer looks in one place per request, by what it carries:
//!
//! - **The `x-csrf-token` header**, whatever the body (any content type,
//!   none at all). The body is not read. Scripts send it here.
//! - **The `csrf_token` field of an `application/x-www-form-urlencoded`
//!   body.** The form is read whole, up to
//!   [`max_form_bytes`](CsrfLayerBuilder::max_form_bytes) (1 MiB by
//!   default); a larger form answers `413`
//!   ([`FormTooLarge`](CsrfFailureReason::FormTooLarge)).
//! - **The `csrf_token` field of a `multipart/form-data` body**, the form
//!   of a file upload. The layer parses the body as it streams in, part by
//!   part, and stops once it has read the token field: a file after the
//!   field is not read by the layer, however large, only by the handler.
//!   The field (with the boundary line that closes it) must end within the
//!   first [`max_form_bytes`](CsrfLayerBuilder::max_form_bytes) of the
//!   body, so **put it first**, before any file input; browsers send
//!   fields in the form's order. A token field after a large file, or a
//!   body larger than the limit without one, answers `403`
//!   ([`TokenBeyondLimit`](CsrfFailureReason::TokenBeyondLimit)); a body
//!   that is not valid multipart (no boundary in `Content-Type`, broken
//!   framing) answers `403`
//!   ([`MalformedMultipart`](CsrfFailureReason::MalformedMultipart)).
//!
//! ```html
//! <form method="post" action="/upload" enctype="multipart/form-data">
//!   <input type="hidden" name="csrf_token" value="..."> <!-- first -->
//!   <input type="file" name="file">
//!   <button>Upload</button>
//! </form>
//! ```
//!
//! The first field of that name counts. Any other body (JSON, a file sent
//! with `PUT`) needs the header; without it the request answers `403`
//! ([`MissingToken`](CsrfFailureReason::MissingToken)). A failing body (a
//! connection reset while the layer reads) answers `400`.
//!
//! The handler gets the body as the client sent it, byte for byte
//! ([`CsrfBody`]): the layer hands on what it read followed by the rest,
//! unread, so axum's `Form` and `Multipart` extractors work as without the
//! layer. What the layer read stays in memory until the handler reads it:
//! at most `max_form_bytes`, plus the rest of the last chunk the server
//! received (the parser itself never sees past the limit).
//!
//! # The token
//!
//! For a visitor with a session, the token's secret is an HMAC of the
//! session ID under the session layer's key, compared in constant time.
//! Nothing is stored, so every request that renders a token agrees on it
//! (two tabs, parallel requests right after a login); it is no data key
//! ([`Session::keys`](crate::Session::keys) does not show it,
//! [`Session::clear`](crate::Session::clear) keeps it); and it changes with
//! the ID on [`Session::login`](crate::Session::login) and
//! [`Session::regenerate`](crate::Session::regenerate). Every rendering is
//! masked afresh, so the same token never looks the same twice on the wire
//! (no BREACH-style compression oracle).
//!
//! A visitor without a session gets a signed token valid for 6 to 12 hours
//! that needs no state, so rendering a form never creates a session or
//! sets a cookie. That token is the same for every visitor without a
//! session, so it is accepted only from requests that have no live
//! session: once a request creates a session, its tokens are bound to it.
//!
//! A [`CsrfToken`] follows its session until it is rendered: each
//! rendering (`Display`, [`CsrfToken::masked`], [`CsrfToken::meta_tag`])
//! binds it to the session as it is at that moment. So a handler that
//! takes the token as an extractor and then creates the session (a cart,
//! a `next`, a flash), logs the user in or regenerates the ID renders a
//! token that verifies on submit; no handler has to choose between two
//! ways of getting it. Only a token rendered *before* the handler's write
//! that creates the session is the anonymous one; and a script whose
//! request created a session fetches a new token.
//!
//! # Tokens for scripts
//!
//! Scripts send the token in the `x-csrf-token` header (or the name given
//! to [`CsrfLayerBuilder::header_name`]). They get it one of two ways.
//!
//! A JSON endpoint, for single-page apps and API clients:
//!
//! ```
//! use axum::{routing::get, Json, Router};
//! use cloakroom::csrf::CsrfToken;
//!
//! async fn csrf(token: CsrfToken) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({ "token": token.masked() }))
//! }
//!
//! let api: Router = Router::new().route("/api/csrf", get(csrf));
//! ```
//!
//! ```js
//! const { token } = await (await fetch('/api/csrf')).json();
//! await fetch('/api/notes/todo', { method: 'PUT', headers: { 'x-csrf-token': token }, body: 'milk' });
//! ```
//!
//! Or a [`CsrfToken::meta_tag`] in the `<head>` of a server-rendered page,
//! for the page's own scripts:
//!
//! ```
//! use axum::response::Html;
//! use cloakroom::csrf::CsrfToken;
//!
//! async fn page(token: CsrfToken) -> Html<String> {
//!     Html(format!(
//!         "<!doctype html><head>{}<script src=\"/app.js\" defer></script></head>",
//!         token.meta_tag()
//!     ))
//! }
//! ```
//!
//! ```js
//! const token = document.querySelector('meta[name=csrf-token]').content;
//! await fetch('/api/counter', { method: 'POST', headers: { 'x-csrf-token': token } });
//! ```
//!
//! A token stops counting when the session behind it changes: once a
//! request of a visitor without a session creates one (a first write, a
//! login), and after every login or regenerate. Fetch a new one then (a
//! reloaded page renders a new tag).
//!
//! # Failure responses
//!
//! A failed check answers a short text by default;
//! [`CsrfLayerBuilder::failure_response`] renders the app's own page
//! instead, from a [`CsrfFailure`].

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;
use http::{Response, Uri};
use tower_layer::Layer;

pub use self::config_error::ConfigError;

mod body;
mod config_error;
#[cfg(feature = "axum")]
mod extract;
mod failure;
mod multipart;
mod service;
mod token;

pub use self::body::CsrfBody;
#[cfg(feature = "axum")]
pub use self::extract::CsrfTokenRejection;
use self::failure::FailureResponse;
pub use self::failure::{CsrfFailure, CsrfFailureReason};
pub use self::service::CsrfService;
pub use self::token::CsrfToken;

/// What is wrong when the CSRF layer finds no session (it is outside the
/// session layer, or there is none), and the fix.
pub(crate) const CSRF_OUTSIDE_SESSIONS: &str =
    "CsrfLayer found no session: it must be inside SessionLayer. \
axum applies the last .layer outermost, so write .layer(csrf).layer(sessions), or install both \
in one call: .layer(sessions.with_csrf(csrf)). Until then every POST, PUT, PATCH and DELETE \
is refused.\n";

const DEFAULT_HEADER: &str = "x-csrf-token";
const DEFAULT_FIELD: &str = "csrf_token";
const DEFAULT_MAX_FORM_BYTES: usize = 1024 * 1024;

/// Adds CSRF checks to every unsafe request. Needs
/// [`SessionLayer`](crate::SessionLayer) outside it.
///
/// Two lines of defence, in order:
///
/// 1. **Where the request comes from.** Browsers say so in
///    `Sec-Fetch-Site` and `Origin`. A `POST`, `PUT`, `PATCH` or `DELETE`
///    that a browser marks `cross-site` or `same-site` (a sibling
///    subdomain), or whose `Origin` is neither this host nor a trusted
///    origin, is refused at once: no session load, no token work.
/// 2. **A token only the app's own pages know.** The request must carry a
///    token, in the `x-csrf-token` header or the `csrf_token` form field of
///    an `application/x-www-form-urlencoded` or `multipart/form-data` body
///    (see [where the token may be](self#where-the-token-may-be)),
///    matching the visitor's
///    secret (compared in constant time). The secret of a visitor with a
///    session lives in that session and rotates on
///    [`Session::login`](crate::Session::login) and
///    [`Session::regenerate`](crate::Session::regenerate); a visitor
///    without a session gets a signed, time-limited token that needs no
///    state, so asking for a token never creates a session or sets a
///    cookie.
///
/// A failed check answers `403 Forbidden` with a short text naming the
/// reason (`cross-site request`, `origin not allowed`, `missing token`,
/// `invalid or expired token`, a multipart form's token field too far in
/// or a malformed multipart form; `413` for a urlencoded form too large to
/// check) and nothing else, unless [`CsrfLayerBuilder::failure_response`]
/// renders the app's own page.
#[derive(Clone)]
#[must_use]
pub struct CsrfLayer {
    config: Arc<CsrfConfig>,
}

impl CsrfLayer {
    /// A layer with the defaults: header `x-csrf-token`, field
    /// `csrf_token`, no exempt paths, no extra trusted origins, forms read
    /// up to 1 MiB.
    pub fn new() -> Self {
        Self {
            config: Arc::new(CsrfConfig::default()),
        }
    }

    /// Starts configuring a layer.
    pub fn builder() -> CsrfLayerBuilder {
        CsrfLayerBuilder::default()
    }
}

impl Default for CsrfLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::SessionLayer {
    /// The session layer with `csrf`'s checks inside it, in the one order
    /// that works: a single `.layer(...)` installs both (feature `csrf`).
    ///
    /// This is the way to add CSRF protection. Adding the two layers
    /// separately (`.layer(csrf).layer(sessions)`) works too, but puts the
    /// order on the app: a [`CsrfLayer`] outside the session layer refuses
    /// every unsafe request with `500`.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use cloakroom::{csrf::CsrfLayer, Key, MemoryStore, SessionLayer};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sessions = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
    /// let admin = sessions.admin(); // the handle, before the layer is consumed
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }).post(|| async { "checked" }))
    ///     .layer(sessions.with_csrf(CsrfLayer::new()));
    /// # let _ = admin;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_csrf(self, csrf: CsrfLayer) -> SessionAndCsrfLayer {
        SessionAndCsrfLayer {
            sessions: self,
            csrf,
        }
    }
}

/// A [`SessionLayer`](crate::SessionLayer) with a [`CsrfLayer`] inside
/// it, from [`SessionLayer::with_csrf`](crate::SessionLayer::with_csrf):
/// every request gets its session, then every unsafe one is checked,
/// then the app runs.
#[derive(Clone, Debug)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct SessionAndCsrfLayer {
    sessions: crate::SessionLayer,
    csrf: CsrfLayer,
}

impl SessionAndCsrfLayer {
    /// The session cookie's name, prefix included (`__Host-id` by
    /// default).
    pub fn cookie_name(&self) -> &str {
        self.sessions.cookie_name()
    }

    /// A handle for session management outside requests, as
    /// [`SessionLayer::admin`](crate::SessionLayer::admin) gives.
    pub fn admin(&self) -> crate::SessionAdmin {
        self.sessions.admin()
    }
}

impl<S> Layer<S> for SessionAndCsrfLayer {
    type Service = crate::SessionService<CsrfService<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        self.sessions.layer(self.csrf.layer(inner))
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService::new(inner, self.config.clone())
    }
}

impl fmt::Debug for CsrfLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfLayer")
            .field("config", &self.config)
            .finish()
    }
}

/// The checked settings of one [`CsrfLayer`].
#[derive(Debug)]
pub(crate) struct CsrfConfig {
    pub(crate) header: HeaderName,
    pub(crate) field: String,
    pub(crate) exempt_paths: Vec<String>,
    pub(crate) exempt_prefixes: Vec<String>,
    /// Normalised `scheme://authority`, lower case.
    pub(crate) trusted_origins: Vec<String>,
    pub(crate) max_form_bytes: usize,
    pub(crate) failure_response: FailureResponse,
    /// The error about a missing session layer was logged (once per
    /// layer: it repeats on every unsafe request until the app is fixed).
    pub(crate) missing_session_logged: std::sync::atomic::AtomicBool,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            header: HeaderName::from_static(DEFAULT_HEADER),
            field: DEFAULT_FIELD.to_owned(),
            exempt_paths: Vec::new(),
            exempt_prefixes: Vec::new(),
            trusted_origins: Vec::new(),
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
            failure_response: FailureResponse::Text,
            missing_session_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl CsrfConfig {
    pub(crate) fn is_exempt(&self, path: &str) -> bool {
        self.exempt_paths.iter().any(|p| p == path)
            || self
                .exempt_prefixes
                .iter()
                .any(|prefix| under_prefix(path, prefix))
    }
}

/// Whether `path` is `prefix` or lies below it, in whole path segments:
/// `/api` covers `/api` and `/api/x`, never `/apiary` or `/api-admin`.
fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `scheme://authority` in lower case, if `text` is an origin (no path
/// beyond `/`, no query).
pub(crate) fn normalize_origin(text: &str) -> Option<String> {
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    bare.then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// Builds a [`CsrfLayer`]; start with [`CsrfLayer::builder`]. Setters only
/// record what they are given; [`build`](Self::build) checks it all.
#[must_use = "a builder does nothing until `.build()` is called"]
#[derive(Debug)]
pub struct CsrfLayerBuilder {
    header: String,
    field: String,
    exempt_paths: Vec<String>,
    exempt_prefixes: Vec<String>,
    trusted_origins: Vec<String>,
    max_form_bytes: usize,
    failure_response: FailureResponse,
}

impl Default for CsrfLayerBuilder {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            field: DEFAULT_FIELD.to_owned(),
            exempt_paths: Vec::new(),
            exempt_prefixes: Vec::new(),
            trusted_origins: Vec::new(),
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
            failure_response: FailureResponse::Text,
        }
    }
}

impl CsrfLayerBuilder {
    /// The header scripts send the token in; `x-csrf-token` by default.
    pub fn header_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.header);
        self
    }

    /// The form field forms send the token in; `csrf_token` by default.
    pub fn field_name(mut self, name: impl Into<String>) -> Self {
        self.field = name.into();
        self
    }

    /// Skips the checks for requests to exactly `path` (e.g. a webhook
    /// that authenticates itself).
    ///
    /// # Security
    ///
    /// An exempt route must not act on the session's authority: anything
    /// it does, any site can make a logged-in browser do.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exempt_paths.push(path.into());
        self
    }

    /// Skips the checks for `prefix` and every path below it, in whole
    /// path segments: `/api` (or `/api/`) covers `/api` and `/api/hooks`,
    /// not `/apiary` or `/api-admin`.
    ///
    /// # Security
    ///
    /// As for [`exempt_path`](Self::exempt_path), for a whole subtree.
    pub fn exempt_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.exempt_prefixes.push(prefix.into());
        self
    }

    /// Accepts unsafe requests whose `Origin` is `origin` (e.g.
    /// `https://admin.example.com`), even when the browser calls them
    /// cross-site or same-site. They still need a valid token.
    ///
    /// # Security
    ///
    /// Every page of a trusted origin can make requests with the user's
    /// session; trust only origins you control.
    pub fn trusted_origin(mut self, origin: &str) -> Self {
        self.trusted_origins.push(origin.to_owned());
        self
    }

    /// How much of a form body the layer reads to find the token field;
    /// 1 MiB by default. Requests with the token in the header are never
    /// read.
    ///
    /// A urlencoded form is read whole: a larger one answers `413`
    /// ([`FormTooLarge`](CsrfFailureReason::FormTooLarge)). A
    /// `multipart/form-data` body is read only up to its token field, which
    /// must end within this many bytes of the body's start: a field after
    /// a larger file, or none in a larger body, answers `403`
    /// ([`TokenBeyondLimit`](CsrfFailureReason::TokenBeyondLimit)); the
    /// rest of the body, however large, is left to the handler. See
    /// [where the token may be](self#where-the-token-may-be).
    pub fn max_form_bytes(mut self, bytes: usize) -> Self {
        self.max_form_bytes = bytes;
        self
    }

    /// Answers failed checks with the app's own response (a page in the
    /// site's look, JSON for an API) instead of the default short text.
    ///
    /// `render` gets the [`CsrfFailure`] (its
    /// [`reason`](CsrfFailure::reason), and the
    /// [`status`](CsrfFailure::status) and
    /// [`body_text`](CsrfFailure::body_text) the default would send) and
    /// the refused request's head, to choose by path or `Accept`. It runs
    /// in the request's task, so it should be quick; it cannot await.
    ///
    /// Two answers stay the layer's own, since they are no CSRF failure:
    /// `503` when the session store fails during the check, and `500`
    /// when [`SessionLayer`](crate::SessionLayer) is missing outside the
    /// CSRF layer.
    ///
    /// The service turns the `Response<String>` into its own body type with
    /// `From<String>`, which axum's `Body`, `http_body_util::Full<Bytes>`
    /// and `String` have.
    ///
    /// # Security
    ///
    /// Whatever `render` returns, the request was refused: the inner
    /// service never sees it, and the `csrf_rejected` security event is
    /// logged before `render` runs. A response without `Cache-Control`
    /// gets `Cache-Control: no-store`; a policy `render` sets is kept.
    /// Escape anything taken from the request before putting it into HTML.
    ///
    /// # Example
    ///
    /// ```
    /// use cloakroom::{csrf::CsrfFailure, csrf::CsrfFailureReason, csrf::CsrfLayer};
    /// use http::header::{HeaderValue, CONTENT_TYPE};
    /// use http::request::Parts;
    /// use http::Response;
    ///
    /// # fn main() -> Result<(), cloakroom::csrf::ConfigError> {
    /// let csrf = CsrfLayer::builder()
    ///     .failure_response(|failure: &CsrfFailure, _request: &Parts| {
    ///         let advice = match failure.reason() {
    ///             CsrfFailureReason::MissingToken | CsrfFailureReason::InvalidToken => {
    ///                 "This form has expired. Go back, reload the page and try again."
    ///             }
    ///             _ => "This request was refused.",
    ///         };
    ///         let mut page = Response::new(format!(
    ///             "<!doctype html><title>Refused</title><h1>Refused</h1><p>{advice}</p>"
    ///         ));
    ///         *page.status_mut() = failure.status();
    ///         page.headers_mut().insert(
    ///             CONTENT_TYPE,
    ///             HeaderValue::from_static("text/html; charset=utf-8"),
    ///         );
    ///         page
    ///     })
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn failure_response<F>(mut self, render: F) -> Self
    where
        F: Fn(&CsrfFailure, &Parts) -> Response<String> + Send + Sync + 'static,
    {
        self.failure_response = FailureResponse::Custom(Box::new(render));
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// The first invalid setting, with the value given: a header name that
    /// is not a valid header ([`ConfigError::InvalidHeaderName`]), an empty
    /// field name ([`ConfigError::EmptyFieldName`]), an exempt path or
    /// prefix not starting with `/` ([`ConfigError::InvalidExemptPath`],
    /// [`ConfigError::InvalidExemptPrefix`]), or a trusted origin that is
    /// not `scheme://host[:port]` ([`ConfigError::InvalidTrustedOrigin`]).
    pub fn build(self) -> Result<CsrfLayer, ConfigError> {
        let header = HeaderName::try_from(self.header.as_str())
            .map_err(|_| ConfigError::InvalidHeaderName(self.header.clone()))?;
        if self.field.is_empty() {
            return Err(ConfigError::EmptyFieldName);
        }
        if let Some(path) = self.exempt_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::InvalidExemptPath(path.clone()));
        }
        if let Some(prefix) = self.exempt_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::InvalidExemptPrefix(prefix.clone()));
        }
        let trusted_origins = self
            .trusted_origins
            .iter()
            .map(|origin| {
                normalize_origin(origin)
                    .ok_or_else(|| ConfigError::InvalidTrustedOrigin(origin.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(CsrfLayer {
            config: Arc::new(CsrfConfig {
                header,
                field: self.field,
                exempt_paths: self.exempt_paths,
                exempt_prefixes: self.exempt_prefixes,
                trusted_origins,
                max_form_bytes: self.max_form_bytes,
                failure_response: self.failure_response,
                missing_session_logged: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_must_be_bare() {
        assert_eq!(
            normalize_origin("HTTPS://App.Example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:3000/").as_deref(),
            Some("http://localhost:3000")
        );
        for bad in [
            "example.com",
            "https://a.com/path",
            "https://a.com/?q",
            "null",
            "",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_settings_are_refused_at_build() {
        let err = |b: CsrfLayerBuilder| b.build().expect_err("refused");
        assert_eq!(
            err(CsrfLayer::builder().header_name("bad header")),
            ConfigError::InvalidHeaderName("bad header".into())
        );
        assert_eq!(
            err(CsrfLayer::builder().field_name("")),
            ConfigError::EmptyFieldName
        );
        assert_eq!(
            err(CsrfLayer::builder().exempt_path("hooks")),
            ConfigError::InvalidExemptPath("hooks".into())
        );
        assert_eq!(
            err(CsrfLayer::builder().trusted_origin("https://a.com/x")),
            ConfigError::InvalidTrustedOrigin("https://a.com/x".into())
        );
        assert_eq!(
            err(CsrfLayer::builder().exempt_prefix("api")),
            ConfigError::InvalidExemptPrefix("api".into())
        );
        assert!(CsrfLayer::builder()
            .header_name("x-token")
            .field_name("t")
            .exempt_path("/hook")
            .exempt_prefix("/api/public/")
            .trusted_origin("https://admin.example.com")
            .build()
            .is_ok());
    }

    #[test]
    fn exemptions_match_exact_paths_and_whole_segments() {
        struct Test {
            name: &'static str,
            path: &'static str,
            exempt: bool,
        }
        let layer = CsrfLayer::builder()
            .exempt_path("/hook")
            .exempt_prefix("/public/")
            .exempt_prefix("/api")
            .build()
            .unwrap();
        let tests = [
            Test {
                name: "exact path",
                path: "/hook",
                exempt: true,
            },
            Test {
                name: "below an exact path",
                path: "/hook/x",
                exempt: false,
            },
            Test {
                name: "below a prefix with a slash",
                path: "/public/a",
                exempt: true,
            },
            Test {
                name: "a prefix with a slash itself",
                path: "/public",
                exempt: true,
            },
            Test {
                name: "a longer word",
                path: "/publicity",
                exempt: false,
            },
            Test {
                name: "a prefix itself",
                path: "/api",
                exempt: true,
            },
            Test {
                name: "below a prefix",
                path: "/api/hooks/1",
                exempt: true,
            },
            Test {
                name: "a prefix as part of a word",
                path: "/apiary",
                exempt: false,
            },
            Test {
                name: "a prefix and a dash",
                path: "/api-admin",
                exempt: false,
            },
            Test {
                name: "elsewhere",
                path: "/",
                exempt: false,
            },
        ];
        for test in tests {
            assert_eq!(
                layer.config.is_exempt(test.path),
                test.exempt,
                "{}",
                test.name
            );
        }
        let everything = CsrfLayer::builder().exempt_prefix("/").build().unwrap();
        assert!(everything.config.is_exempt("/anything"));
    }
}
