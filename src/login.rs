//! Routes that need a user: the [`LoggedIn`] extractor (the user id), the
//! [`CurrentUser`] extractor (the app's own user type, loaded once per
//! request through [`LoadUser`], with sessions bound to the user's
//! credential), [`Reauthenticated`] for sensitive actions, [`RequireLogin`]
//! to guard a whole router, what they answer without a user
//! ([`LoginRequired`]), [`OutageTolerant`] for public pages that should
//! stay up while the session store is down, and [`safe_redirect_path`] for the `next`
//! parameter a login form carries back.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::{login::CurrentUser, login::LoadUser, login::LoggedIn};
//!
//! async fn settings(LoggedIn(user_id): LoggedIn) -> String {
//!     format!("settings of {user_id}")
//! }
//!
//! #[derive(Clone)]
//! struct User {
//!     name: String,
//! }
//!
//! #[derive(Clone)]
//! struct AppState; // the app's database pool, say
//!
//! impl LoadUser<AppState> for User {
//!     type Rejection = std::convert::Infallible;
//!
//!     async fn load_user(user_id: &str, _state: &AppState) -> Result<Option<Self>, Self::Rejection> {
//!         // Look the user up; `None` when the account is gone.
//!         Ok(Some(User { name: user_id.to_owned() }))
//!     }
//! }
//!
//! async fn profile(CurrentUser(user): CurrentUser<User>) -> String {
//!     format!("hello, {}", user.name)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/settings", get(settings))
//!     .route("/profile", get(profile))
//!     .with_state(AppState);
//! ```
//!
//! # Without a user
//!
//! A route that takes [`LoggedIn`] or [`CurrentUser`] answers for itself
//! when nobody is logged in. A page load (a browser navigating:
//! `Sec-Fetch-Mode: navigate`, or no script markers and an `Accept` that
//! allows `text/html` or anything) gets `303` to the login URL
//! ([`SessionLayerBuilder::login_url`](crate::SessionLayerBuilder::login_url),
//! `/login` by default) with `?next=` and the page asked for; a script
//! (`fetch`, XHR) or an API client sending `Accept: application/json` gets
//! `401`. [`LoginRequired`] has the exact rule. `Option<LoggedIn>` and
//! `Option<CurrentUser<U>>` are `None` for an anonymous visitor instead.
//! Both answers are empty or short text unless the app renders its own
//! with
//! [`SessionLayerBuilder::login_required_response`](crate::SessionLayerBuilder::login_required_response)
//! (the status and `Location` stay).
//!
//! [`CurrentUser`] calls the app's [`LoadUser`] at most once per request,
//! however many extractors ask. A session whose account is gone
//! (`Ok(None)`) is ended in the store, and the request goes on as "not
//! logged in".
//!
//! # During a store outage
//!
//! Every extractor here fails closed when the session store is down: the
//! route answers `503` (`Option<LoggedIn>` and `Option<CurrentUser<U>>`
//! too), never "logged in" and never "logged out". A public page that
//! only shows who is signed in can opt in to being served as to an
//! anonymous visitor instead, by taking [`OutageTolerant`]:
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::login::{CurrentUser, LoadUser, OutageTolerant};
//!
//! #[derive(Clone)]
//! struct User { name: String }
//!
//! impl LoadUser<()> for User {
//!     type Rejection = std::convert::Infallible;
//!
//!     async fn load_user(user_id: &str, _: &()) -> Result<Option<Self>, Self::Rejection> {
//!         Ok(Some(User { name: user_id.to_owned() }))
//!     }
//! }
//!
//! // Served during an outage, as to a visitor who is not signed in.
//! async fn catalogue(OutageTolerant(user): OutageTolerant<CurrentUser<User>>) -> String {
//!     let greeting = user.map_or("Sign in".to_owned(), |CurrentUser(user)| user.name);
//!     format!("{greeting} | today's offers ...")
//! }
//!
//! // Answers 503 during an outage.
//! async fn basket(CurrentUser(user): CurrentUser<User>) -> String {
//!     format!("the basket of {}", user.name)
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(catalogue))
//!     .route("/basket", get(basket));
//! ```
//!
//! Only an unreachable store counts (no answer, or none within the store
//! timeout); such a request writes nothing and leaves the cookie as it is,
//! so the visitor is signed in again once the store is back. A warning is
//! logged at most once every 10 seconds while it lasts.
//!
//! # The login form
//!
//! Check the password, then log in with
//! [`Session::login_keeping`](crate::Session::login_keeping), naming the
//! data keys of the anonymous session you expect to carry over (a cart,
//! say), and call [`Session::remember_me`](crate::Session::remember_me) in
//! the same request if the user asked to be remembered. Send the user on to
//! the `next` the form carried back only through [`safe_redirect_path`],
//! which accepts paths on your site and refuses `//evil.example`,
//! `https://...` and backslash tricks, so that a link to your login page
//! cannot send users on to another site (an open redirect).
//! `examples/login.rs` is a complete login and logout, and
//! `examples/accounts.rs` adds argon2 password checks.
//!
//! A password login also calls [`Session::bind_credential`] (below) and
//! [`Session::password_confirmed`] (for [`Reauthenticated`] routes).
//!
//! # When the user changes: sessions bound to the credential
//!
//! Give [`LoadUser::credential`] a fingerprint of what the user signs in
//! with (the password hash, or a security stamp the app changes with every
//! reset), and bind each session to it at login with
//! [`Session::bind_credential`]. A session whose credential changed since
//! its login is then ended, in the store, at its next request that loads
//! the user: a password changed on another device, an operator's reset, a
//! deleted account (also when the same user id comes back later). The
//! request that changes the password keeps its own session with
//! [`Session::credential_changed`], which ends the others at once (also for
//! routes that take only [`LoggedIn`]). Only a keyed digest of the
//! fingerprint is stored (HMAC-SHA256 under the layer's keys), and key
//! rotation keeps the bindings. Other changes (a disabled account, a
//! demotion) take effect through
//! [`SessionAdmin::logout_everywhere`](crate::SessionAdmin::logout_everywhere).
//!
//! ```no_run
//! use axum::extract::{Form, State};
//! use axum::response::Redirect;
//! use axum::{routing::post, Router};
//! use cloakroom::login::{CurrentUser, LoadUser};
//! use cloakroom::{FlashLevel, Session, SessionError};
//!
//! #[derive(Clone)]
//! struct User { id: String, password_hash: String }
//!
//! #[derive(Clone)]
//! struct App { /* the database pool */ }
//!
//! impl LoadUser<App> for User {
//!     type Rejection = (axum::http::StatusCode, &'static str);
//!
//!     async fn load_user(user_id: &str, app: &App) -> Result<Option<Self>, Self::Rejection> {
//!         // SELECT ... WHERE id = $1; Ok(None) when the account is gone.
//!         # let _ = (user_id, app); Ok(None)
//!     }
//!
//!     // The hash changes with the password: sessions are bound to it.
//!     fn credential(&self) -> &[u8] {
//!         self.password_hash.as_bytes()
//!     }
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Login { user: String, password: String }
//!
//! async fn login(session: Session, Form(form): Form<Login>) -> Result<Redirect, SessionError> {
//!     // Look the user up and verify `form.password` against its hash
//!     // (argon2), then:
//!     # let password_hash = form.password.clone();
//!     session.login_keeping(form.user, &[]).await?;
//!     session.bind_credential(&password_hash).await?;
//!     session.password_confirmed().await?;
//!     Ok(Redirect::to("/account"))
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct PasswordChange { current: String, new: String }
//!
//! /// Changing the password signs out every other device.
//! async fn change_password(
//!     State(app): State<App>,
//!     CurrentUser(user): CurrentUser<User>,
//!     session: Session,
//!     Form(form): Form<PasswordChange>,
//! ) -> Result<Redirect, SessionError> {
//!     // Verify `form.current` against `user.password_hash`, store the hash
//!     // of `form.new` for `user.id`, then bind this session to it:
//!     # let (new_hash, _) = (form.new.clone(), (app, user, form.current));
//!     let ended = session.credential_changed(&new_hash).await?;
//!     session.regenerate().await?; // and a fresh ID for this one
//!     session
//!         .flash(FlashLevel::Success, format!("Password changed; {ended} other devices signed out."))
//!         .await?;
//!     Ok(Redirect::to("/account"))
//! }
//!
//! # fn app(state: App) -> Router {
//! Router::new()
//!     .route("/login", post(login))
//!     .route("/account/password", post(change_password))
//!     .with_state(state)
//! # }
//! ```
//!
//! # Re-authentication for sensitive actions
//!
//! A route that takes [`Reauthenticated`] needs a user who confirmed their
//! password recently: within
//! [`SessionLayerBuilder::reauthentication_window`](crate::SessionLayerBuilder::reauthentication_window)
//! (five minutes by default) of the last [`Session::password_confirmed`].
//! Otherwise a browser is sent to the login page with `next`, as for a
//! route without a user; a login form whose handler confirms the password
//! (as above) and follows `next` brings it back.
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::login::Reauthenticated;
//!
//! async fn security_settings(Reauthenticated(user_id): Reauthenticated) -> String {
//!     format!("security settings of {user_id}")
//! }
//!
//! let app: Router = Router::new().route("/account/security", get(security_settings));
//! ```
//!
//! # Logins through an identity provider
//!
//! When users sign in through an OpenID Connect provider, the session
//! should end no later than the provider's session does (ASVS 5.0 7.6.1).
//! In the request that finishes the login, after
//! [`Session::login_keeping`](crate::Session::login_keeping):
//!
//! - [`Session::expire_login_at`](crate::Session::expire_login_at) gives
//!   the session its own absolute deadline (the ID token's `exp`, or the
//!   provider's session lifetime) when it is earlier than the layer's;
//!   remember-me and regenerate never lengthen it.
//! - [`Session::link_external_session`](crate::Session::link_external_session)
//!   records the provider's session ID (the ID token's `sid`), so that a
//!   back-channel logout from the provider ends this session through
//!   [`SessionAdmin::end_external_session`](crate::SessionAdmin::end_external_session),
//!   on every store and every instance of the app.
//!
//! The logout token's `sub` is the user id the app logged in with (map it
//! the same way the login mapped the ID token's `sub`). A token with a
//! `sid` and no `sub` needs the app's own record of which user that `sid`
//! logged in: sessions are indexed by user only. Verifying the tokens
//! (signature, issuer, audience, `nonce`, the logout token's `events`
//! claim) is the job of the app's OpenID Connect library; cloakroom never
//! sees them. The back-channel endpoint is called by the provider, server
//! to server, without a cookie: exempt it from CSRF protection.
//!
//! ```
//! use axum::extract::{Form, State};
//! use axum::http::StatusCode;
//! use axum::{routing::post, Router};
//! use cloakroom::{Session, SessionAdmin, SessionError};
//! use time::OffsetDateTime;
//!
//! /// What the app's OIDC library gives for a verified ID token.
//! struct IdToken { sub: String, sid: String, exp: OffsetDateTime }
//!
//! /// Called by the app's callback handler once the ID token is verified.
//! async fn finish_login(session: &Session, token: IdToken) -> Result<(), SessionError> {
//!     session.login_keeping(token.sub, &[]).await?;
//!     session.expire_login_at(token.exp).await?;
//!     session.link_external_session(&token.sid).await
//! }
//!
//! /// The claims of a logout token the app's OIDC library verified.
//! struct LogoutToken { sub: String, sid: Option<String> }
//!
//! fn verify_logout_token(token: &str) -> Option<LogoutToken> {
//!     // The app's OIDC library: signature, issuer, audience, `events`.
//!     # let _ = token;
//!     None
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct BackChannelLogout { logout_token: String }
//!
//! async fn back_channel_logout(
//!     State(admin): State<SessionAdmin>,
//!     Form(form): Form<BackChannelLogout>,
//! ) -> StatusCode {
//!     let Some(token) = verify_logout_token(&form.logout_token) else {
//!         return StatusCode::BAD_REQUEST;
//!     };
//!     let ended = match token.sid {
//!         Some(sid) => admin.end_external_session(&token.sub, &sid).await,
//!         // Every session of the user at the provider ended.
//!         None => admin.logout_everywhere(&token.sub).await,
//!     };
//!     match ended {
//!         Ok(_) => StatusCode::OK,
//!         Err(_) => StatusCode::SERVICE_UNAVAILABLE,
//!     }
//! }
//!
//! # fn app(admin: SessionAdmin) -> Router {
//! Router::new()
//!     .route("/oidc/back-channel-logout", post(back_channel_logout))
//!     .with_state(admin) // from `SessionLayer::admin`
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};

use crate::axum::MissingSessionLayer;
use crate::credential;
use crate::error::SessionError;
use crate::session::Session;

/// The logged-in user's id, for a route that needs a user. Without one
/// the route answers [`LoginRequired`]: a redirect to the login page for a
/// browser asking for a page, `401` for anything else.
///
/// `Option<LoggedIn>` is `None` for an anonymous visitor instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn(pub String);

impl LoggedIn {
    /// The user id given to [`Session::login`].
    pub fn user_id(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LoggedIn {
    type Rejection = LoginRequired;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session(parts)?;
        match session.user_id().await {
            Ok(Some(user_id)) => Ok(Self(user_id)),
            Ok(None) => Err(LoginRequired::for_request(parts, &session)),
            Err(error) => Err(LoginRequired::Session(error)),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for LoggedIn {
    type Rejection = LoginRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let session = session(parts)?;
        match session.user_id().await {
            Ok(user_id) => Ok(user_id.map(Self)),
            Err(error) => Err(LoginRequired::Session(error)),
        }
    }
}

fn session(parts: &Parts) -> Result<Session, LoginRequired> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or(LoginRequired::MissingLayer)
}

/// What a route that needs a user answers without one, or when it cannot
/// tell.
///
/// The rule tells a browser loading a page from a script or an API client,
/// and errs towards the page, as Django's `login_required` and Devise do:
///
/// 1. A request with `Sec-Fetch-Mode` (every current browser sends it) is a
///    page load when the mode is `navigate`; any other mode is a script
///    (`fetch`, XHR).
/// 2. Otherwise `X-Requested-With` marks a script (jQuery and others send
///    it).
/// 3. Otherwise the request is a page load unless its `Accept` header lists
///    only types that are neither `text/html`, `text/*` nor `*/*` (an API
///    client asking for `application/json`). No `Accept` at all, or
///    `*/*` (curl), counts as a page load.
///
/// A page load gets `303 See Other` to the layer's
/// [login URL](crate::SessionLayerBuilder::login_url), with `?next=` and the
/// page asked for when that was a `GET` or `HEAD`; a script gets `401
/// Unauthorized`. So an API client should send `Accept: application/json`.
/// Both carry `Cache-Control: no-store`.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoginRequired {
    /// A browser asked for a page: send it to the login page.
    Redirect {
        /// The `Location`: the login URL, with `next` when there is one.
        location: String,
    },
    /// Anything else: `401`.
    Unauthorized,
    /// The session could not be loaded: answers as [`SessionError`] does.
    Session(SessionError),
    /// The route lacks [`SessionLayer`](crate::SessionLayer): `500`.
    MissingLayer,
}

impl LoginRequired {
    fn for_request(parts: &Parts, session: &Session) -> Self {
        if !wants_page(parts) {
            return Self::Unauthorized;
        }
        let context = session.context();
        let login_url = &context.settings().login_url;
        // The page as the layer saw it: inside a nested router, the URI the
        // extractor sees has lost its prefix.
        let next = (parts.method == Method::GET || parts.method == Method::HEAD)
            .then(|| context.page())
            .flatten()
            .and_then(safe_redirect_path);
        let location = match next {
            Some(next) => {
                let separator = if login_url.contains('?') { '&' } else { '?' };
                let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                format!("{login_url}{separator}next={next}")
            }
            None => login_url.clone(),
        };
        Self::Redirect { location }
    }

    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Redirect { .. } => StatusCode::SEE_OTHER,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Session(error) => error.status(),
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether the request is a browser loading a page (by the rule in
/// [`LoginRequired`]'s docs) rather than a script or an API client.
fn wants_page(parts: &Parts) -> bool {
    let headers = &parts.headers;
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate");
    }
    if headers.contains_key("x-requested-with") {
        return false;
    }
    let mut ranges = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|range| !range.trim().is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    ranges.any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let page = ["text/html", "text/*", "*/*"]
            .iter()
            .any(|page| media.eq_ignore_ascii_case(page));
        page && !params.any(|param| {
            param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

impl fmt::Display for LoginRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redirect { .. } | Self::Unauthorized => f.write_str("login required"),
            Self::Session(error) => write!(f, "{error}"),
            Self::MissingLayer => write!(f, "{MissingSessionLayer}"),
        }
    }
}

impl std::error::Error for LoginRequired {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Session(error) => Some(error),
            _ => None,
        }
    }
}

/// A redirect or a `401`, with `Cache-Control: no-store`, as the type's
/// docs say; [`LoginRequired::Session`] answers as [`SessionError`] does.
/// An app renders the redirect and the `401` itself with
/// [`SessionLayerBuilder::login_required_response`](crate::SessionLayerBuilder::login_required_response).
impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        let mut response = match self {
            Self::Redirect { ref location } => match HeaderValue::try_from(location.as_str()) {
                Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
                // The login URL was checked at build and `next` is
                // percent-encoded, so this cannot happen; a 401 is the
                // safe answer if it does.
                Err(_) => (StatusCode::UNAUTHORIZED, "login required\n").into_response(),
            },
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "login required\n").into_response(),
            Self::Session(error) => return error.into_response(),
            Self::MissingLayer => return MissingSessionLayer.into_response(),
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // For the app's own renderer, if it gave one (`respond.rs`).
        response
            .extensions_mut()
            .insert(LoginRequiredAnswer(Arc::new(self)));
        response
    }
}

/// Marks a response as this crate's answer to a route that needs a user
/// (a [`LoginRequired::Redirect`] or [`LoginRequired::Unauthorized`]), for
/// the app's own renderer (`respond.rs`).
#[derive(Clone)]
pub(crate) struct LoginRequiredAnswer(pub(crate) Arc<LoginRequired>);

/// `candidate` if it is safe to redirect to after login: a path on this
/// site (`/account`, `/search?q=x`), and `None` for anything that could
/// lead elsewhere: absolute URLs (`https://evil.example`), scheme-relative
/// ones (`//evil.example`), backslashes (`/\evil.example`, which browsers
/// read as `//`), and control characters or spaces.
///
/// Use it on the `next` a login form sends back before redirecting there,
/// so that a link to your login page cannot send users on to a phishing
/// site (an open redirect).
///
/// ```
/// use cloakroom::login::safe_redirect_path;
///
/// assert_eq!(safe_redirect_path("/account?tab=devices"), Some("/account?tab=devices"));
/// assert_eq!(safe_redirect_path("//evil.example"), None);
/// assert_eq!(safe_redirect_path("https://evil.example/"), None);
/// ```
pub fn safe_redirect_path(candidate: &str) -> Option<&str> {
    let local = candidate.starts_with('/') && !candidate.starts_with("//");
    let clean = candidate
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\');
    (local && clean).then_some(candidate)
}

/// The logged-in user, who also confirmed their password within the
/// layer's [re-authentication window](crate::SessionLayerBuilder::reauthentication_window)
/// ([`Session::password_confirmed`]): for sensitive actions (changing the
/// email address, deleting the account), like GitHub's sudo mode.
///
/// Without a user, or without a recent confirmation, the route answers as
/// [`LoggedIn`] does without a user ([`LoginRequired`]): a browser asking
/// for a page is sent to the login URL with `next`, so that confirming the
/// password there (a login form whose handler calls
/// [`Session::password_confirmed`]) brings it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reauthenticated(pub String);

impl Reauthenticated {
    /// The user id given to [`Session::login`].
    pub fn user_id(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Reauthenticated {
    type Rejection = LoginRequired;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = session(parts)?;
        let user_id = session.user_id().await.map_err(LoginRequired::Session)?;
        let confirmed = match &user_id {
            Some(_) => credential::confirmed_recently(&session)
                .await
                .map_err(LoginRequired::Session)?,
            None => false,
        };
        match user_id {
            Some(user_id) if confirmed => Ok(Self(user_id)),
            _ => Err(LoginRequired::for_request(parts, &session)),
        }
    }
}

/// Requires a logged-in user on every route of a router: a browser without
/// one is sent to the login page with `next` and a script gets `401`, by
/// the rule [`LoginRequired`] documents (the one the extractors use), so
/// the handlers behind it need not ask. Optionally, only users for whom a
/// predicate holds get through; the others get `403 Forbidden`.
///
/// Add it with axum's `route_layer`, inside the session layer:
///
/// ```
/// use axum::{routing::get, Router};
/// use cloakroom::login::RequireLogin;
///
/// let account: Router = Router::new()
///     .route("/account", get(|| async { "your account" }))
///     .route("/account/orders", get(|| async { "your orders" }))
///     .route_layer(RequireLogin::new());
///
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "the admin page" }))
///     .route_layer(RequireLogin::allowing(|user_id| user_id.starts_with("admin:")));
/// ```
///
/// It checks the session's user id only: a route that needs the user
/// loaded (bound to its credential, say) takes
/// [`CurrentUser`] as well.
#[derive(Clone, Default)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct RequireLogin {
    allow: Option<Arc<AllowFn>>,
}

/// Which logged-in users [`RequireLogin`] lets through, by user id.
type AllowFn = dyn Fn(&str) -> bool + Send + Sync;

impl RequireLogin {
    /// Any logged-in user gets through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only logged-in users for whom `allow` holds (given the user id) get
    /// through; others get `403 Forbidden`.
    pub fn allowing(allow: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self {
            allow: Some(Arc::new(allow)),
        }
    }
}

impl fmt::Debug for RequireLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLogin")
            .field("allow", &self.allow.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl<S> tower_layer::Layer<S> for RequireLogin {
    type Service = RequireLoginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireLoginService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of [`RequireLogin`].
#[derive(Clone, Debug)]
pub struct RequireLoginService<S> {
    inner: S,
    guard: RequireLogin,
}

impl<S, B> tower_service::Service<http::Request<B>> for RequireLoginService<S>
where
    S: tower_service::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = crate::store::BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is the one that waits; the ready one answers this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let allow = self.guard.allow.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let Some(session) = parts.extensions.get::<Session>().cloned() else {
                return Ok(LoginRequired::MissingLayer.into_response());
            };
            match session.user_id().await {
                Err(error) => Ok(LoginRequired::Session(error).into_response()),
                Ok(None) => Ok(LoginRequired::for_request(&parts, &session).into_response()),
                Ok(Some(user_id)) if allow.as_ref().is_some_and(|allow| !allow(&user_id)) => Ok(
                    crate::service::error_response(StatusCode::FORBIDDEN, "forbidden\n"),
                ),
                Ok(Some(_)) => inner.call(http::Request::from_parts(parts, body)).await,
            }
        })
    }
}

/// The user of a public page, or `None`: like `Option<LoggedIn>` and
/// `Option<CurrentUser<U>>`, but a session store outage counts as
/// anonymous instead of answering `503`. An opt-in per route, for pages
/// that only show who is signed in (a home page, a product list).
///
/// `T` is [`LoggedIn`] or [`CurrentUser<U>`](CurrentUser). When the store
/// is unavailable ([`StoreError::is_unavailable`](crate::store::StoreError::is_unavailable):
/// it could not be reached or did not answer within the store timeout),
/// the page gets `None` and is served as to an anonymous visitor, and a
/// warning (event `served_anonymous_during_outage`) is logged at most once
/// every 10 seconds per layer, with the number of pages served so. Other
/// failures answer as `Option<T>` does: a store that answered with an
/// error or a corrupt record (`503`), the app's [`LoadUser`] failing (its
/// own answer).
///
/// A request served so never writes its session and never sets or clears
/// its cookie: the browser keeps its session for when the store is back,
/// and the next request finds the user again. If the handler writes to the
/// session anyway, the request answers `503` as any request does whose
/// changes could not be written. Routes that need a user ([`LoggedIn`],
/// [`CurrentUser`], [`Reauthenticated`], [`RequireLogin`]) still fail
/// closed with `503`: an outage never passes for a login.
///
/// ```
/// use axum::{routing::get, Router};
/// use cloakroom::login::{LoggedIn, OutageTolerant};
///
/// async fn home(OutageTolerant(user): OutageTolerant<LoggedIn>) -> String {
///     match user {
///         Some(LoggedIn(user_id)) => format!("Welcome back, {user_id}"),
///         None => "Welcome! Sign in to see your orders.".to_owned(),
///     }
/// }
///
/// async fn orders(LoggedIn(user_id): LoggedIn) -> String {
///     format!("the orders of {user_id}") // 503 while the store is down
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(home))
///     .route("/orders", get(orders));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageTolerant<T>(pub Option<T>);

impl<S: Send + Sync> FromRequestParts<S> for OutageTolerant<LoggedIn> {
    type Rejection = LoginRequired;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <LoggedIn as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(user) => Ok(Self(user)),
            Err(LoginRequired::Session(error)) if is_outage(&error) => {
                served_anonymous(parts);
                Ok(Self(None))
            }
            Err(rejection) => Err(rejection),
        }
    }
}

impl<U, S> FromRequestParts<S> for OutageTolerant<CurrentUser<U>>
where
    U: LoadUser<S>,
    S: Send + Sync,
{
    type Rejection = CurrentUserRejection<U::Rejection>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match load::<U, S>(parts, state).await {
            Ok(user) => Ok(Self(user.map(CurrentUser))),
            Err(CurrentUserRejection::Login(LoginRequired::Session(error)))
                if is_outage(&error) =>
            {
                served_anonymous(parts);
                Ok(Self(None))
            }
            Err(rejection) => Err(rejection),
        }
    }
}

/// Whether `error` is the store being out of reach (an outage that passes
/// by itself), rather than data or a backend refusing.
fn is_outage(error: &SessionError) -> bool {
    matches!(error, SessionError::Store(error) if error.is_unavailable())
}

/// Logs, rate-limited per layer, that a page was served as anonymous. The
/// failed store call left the session poisoned, so that the request
/// writes nothing back and keeps the cookie as it is.
fn served_anonymous(parts: &Parts) {
    if let Some(session) = parts.extensions.get::<Session>() {
        session.context().served_anonymous_during_outage();
    }
}

/// How the app loads its own user type from a session's user id, for the
/// [`CurrentUser`] extractor. Implement it once, on the user type, for the
/// app's router state `S`.
///
/// Loading happens at most once per request, whatever number of
/// extractors ask. A session whose user no longer exists (`Ok(None)`) is
/// ended, in the store, and the request goes on as logged out: an old
/// browser never shows "signed in" as a later account that reuses the id.
///
/// Give [`LoadUser::credential`] a fingerprint of the user's credential to
/// bind sessions to it: see the [module docs](self#when-the-user-changes-sessions-bound-to-the-credential).
pub trait LoadUser<S>: Clone + Send + Sync + Sized + 'static {
    /// What a failed load answers (a database error, say).
    type Rejection: IntoResponse;

    /// The user with `user_id`, or `None` when there is none (any more).
    fn load_user(
        user_id: &str,
        state: &S,
    ) -> impl Future<Output = Result<Option<Self>, Self::Rejection>> + Send;

    /// A fingerprint of the user's credential, which changes whenever the
    /// credential does (see the trait docs); empty, the default, binds no
    /// session to it. Only a keyed digest of it is stored.
    fn credential(&self) -> &[u8] {
        &[]
    }
}

/// The logged-in user, loaded by the app's [`LoadUser`]. Without one the
/// route answers as [`LoggedIn`] does ([`LoginRequired`]).
///
/// `Option<CurrentUser<U>>` is `None` for an anonymous visitor (or a user
/// that no longer exists) instead.
#[derive(Debug, Clone)]
pub struct CurrentUser<U>(pub U);

/// A user loaded earlier in the same request (`None`: none to load).
#[derive(Clone)]
struct Loaded<U>(Arc<Option<U>>);

impl<U, S> FromRequestParts<S> for CurrentUser<U>
where
    U: LoadUser<S>,
    S: Send + Sync,
{
    type Rejection = CurrentUserRejection<U::Rejection>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match load::<U, S>(parts, state).await? {
            Some(user) => Ok(Self(user)),
            None => {
                let session = session(parts)?;
                Err(LoginRequired::for_request(parts, &session).into())
            }
        }
    }
}

impl<U, S> OptionalFromRequestParts<S> for CurrentUser<U>
where
    U: LoadUser<S>,
    S: Send + Sync,
{
    type Rejection = CurrentUserRejection<U::Rejection>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(load::<U, S>(parts, state).await?.map(Self))
    }
}

async fn load<U, S>(
    parts: &mut Parts,
    state: &S,
) -> Result<Option<U>, CurrentUserRejection<U::Rejection>>
where
    U: LoadUser<S>,
    S: Send + Sync,
{
    if let Some(Loaded(user)) = parts.extensions.get::<Loaded<U>>() {
        return Ok(user.as_ref().clone());
    }
    let session = session(parts)?;
    let user_id = session
        .user_id()
        .await
        .map_err(|error| CurrentUserRejection::Login(LoginRequired::Session(error)))?;
    let login = |error| CurrentUserRejection::Login(LoginRequired::Session(error));
    let user = match user_id {
        Some(user_id) => {
            let user = U::load_user(&user_id, state)
                .await
                .map_err(CurrentUserRejection::Load)?;
            let ended = match &user {
                None => Some("user_gone"),
                Some(user)
                    if !credential::bound_to(&session, user.credential())
                        .await
                        .map_err(login)? =>
                {
                    Some("credential_changed")
                }
                Some(_) => None,
            };
            match ended {
                Some(why) => {
                    // Ended in the store, not only for this request: the
                    // session must not come back when the user does.
                    session.invalidate().await.map_err(login)?;
                    crate::events::session_unbound(why);
                    None
                }
                None => user,
            }
        }
        None => None,
    };
    parts.extensions.insert(Loaded(Arc::new(user.clone())));
    Ok(user)
}

/// Why [`CurrentUser`] could not give a user.
#[derive(Debug)]
#[non_exhaustive]
pub enum CurrentUserRejection<E> {
    /// No user (or the session could not tell): as [`LoggedIn`] answers.
    Login(LoginRequired),
    /// The app's [`LoadUser`] failed: its own answer.
    Load(E),
}

impl<E> From<LoginRequired> for CurrentUserRejection<E> {
    fn from(rejection: LoginRequired) -> Self {
        Self::Login(rejection)
    }
}

impl<E: IntoResponse> IntoResponse for CurrentUserRejection<E> {
    fn into_response(self) -> Response {
        match self {
            Self::Login(rejection) => rejection.into_response(),
            Self::Load(rejection) => rejection.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_store_counts_as_an_outage() {
        use crate::store::StoreError;
        let store = |error| SessionError::Store(error);
        assert!(is_outage(&store(StoreError::unavailable("timed out"))));
        for error in [
            store(StoreError::backend("syntax error")),
            store(StoreError::corrupt("bad record")),
            store(StoreError::rejected("NUL")),
            SessionError::Finished,
            SessionError::IdCollision,
        ] {
            assert!(!is_outage(&error), "{error:?}");
        }
    }

    #[test]
    fn only_paths_on_this_site_are_safe_to_redirect_to() {
        let tests = [
            ("/", true),
            ("/account", true),
            ("/search?q=a%20b&page=2", true),
            ("/a/b#frag", true),
            ("", false),
            ("account", false),
            ("//evil.example", false),
            ("//evil.example/path", false),
            ("/\\evil.example", false),
            ("/a\\b", false),
            ("https://evil.example/", false),
            ("javascript:alert(1)", false),
            ("/a b", false),
            ("/a\tb", false),
            ("/a\nLocation: x", false),
            ("/caf\u{e9}", false),
        ];
        for (candidate, safe) in tests {
            assert_eq!(
                safe_redirect_path(candidate).is_some(),
                safe,
                "{candidate:?}"
            );
        }
    }

    fn parts(headers: &[(&'static str, &'static str)]) -> Parts {
        let mut request = http::Request::builder().uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn page_loads_are_told_from_scripts_and_api_clients() {
        struct Test {
            name: &'static str,
            headers: &'static [(&'static str, &'static str)],
            page: bool,
        }
        const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";
        let tests = [
            Test {
                name: "a browser navigating",
                headers: &[("accept", BROWSER), ("sec-fetch-mode", "navigate")],
                page: true,
            },
            Test {
                name: "fetch from a page",
                headers: &[("accept", "*/*"), ("sec-fetch-mode", "cors")],
                page: false,
            },
            Test {
                name: "same-origin fetch asking for html",
                headers: &[("accept", "text/html"), ("sec-fetch-mode", "same-origin")],
                page: false,
            },
            Test {
                name: "mode in capitals",
                headers: &[("sec-fetch-mode", "NAVIGATE")],
                page: true,
            },
            Test {
                name: "jquery",
                headers: &[
                    ("accept", "application/json, text/javascript, */*; q=0.01"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
                page: false,
            },
            Test {
                name: "an old browser",
                headers: &[("accept", BROWSER)],
                page: true,
            },
            Test {
                name: "html in capitals",
                headers: &[("accept", "TEXT/HTML")],
                page: true,
            },
            Test {
                name: "any text",
                headers: &[("accept", "text/*")],
                page: true,
            },
            Test {
                name: "curl",
                headers: &[("accept", "*/*")],
                page: true,
            },
            Test {
                name: "no accept",
                headers: &[],
                page: true,
            },
            Test {
                name: "an empty accept",
                headers: &[("accept", " ")],
                page: true,
            },
            Test {
                name: "an api client",
                headers: &[("accept", "application/json")],
                page: false,
            },
            Test {
                name: "html refused",
                headers: &[("accept", "text/html;q=0")],
                page: false,
            },
            Test {
                name: "anything refused",
                headers: &[("accept", "application/json, */*;Q=0")],
                page: false,
            },
            Test {
                name: "html among others",
                headers: &[("accept", "application/json, text/html;q=0.5")],
                page: true,
            },
            Test {
                name: "two accept headers",
                headers: &[("accept", "application/json"), ("accept", "text/html")],
                page: true,
            },
        ];
        for test in tests {
            assert_eq!(wants_page(&parts(test.headers)), test.page, "{}", test.name);
        }
    }
}
