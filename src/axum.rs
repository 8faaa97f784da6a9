//! axum integration: [`Session`] and [`Flashes`] as extractors, and error
//! responses.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::{Session, SessionError};
//!
//! async fn required(session: Session) -> Result<String, SessionError> {
//!     Ok(format!("{:?}", session.user_id().await?))
//! }
//!
//! // `Option<Session>` is `None` instead of a 500 when the layer is absent.
//! async fn optional(session: Option<Session>) -> &'static str {
//!     if session.is_some() { "with sessions" } else { "without" }
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(required))
//!     .route("/maybe", get(optional));
//! ```

use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::CACHE_CONTROL;
use http::request::Parts;
use http::{HeaderValue, StatusCode};

use crate::error::SessionError;
use crate::session::{Flash, Session};

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// The flash messages waiting for this page, oldest first, taken from the
/// session as [`Session::take_flashes`] takes them: the next page does not
/// see them again. An extractor, so that a layout handler gets them in one
/// argument; it is at [`cloakroom::flash::Flashes`](crate::flash::Flashes).
///
/// A visitor without a session costs no store call, and a session with
/// nothing waiting writes nothing. A second `Flashes` in the same request
/// finds none (the first took them). Without
/// [`SessionLayer`](crate::SessionLayer) around the route it answers `500`
/// ([`MissingSessionLayer`]); when the store fails, as [`SessionError`]
/// does (`503`).
///
/// ```
/// use axum::{response::Html, routing::get, Router};
/// use cloakroom::flash::Flashes;
///
/// async fn page(Flashes(messages): Flashes) -> Html<String> {
///     let notices: String = messages
///         .iter()
///         .map(|flash| {
///             // Escape the text before it goes into HTML.
///             format!("<p class=\"{}\">{}</p>", flash.level.as_str(), flash.message)
///         })
///         .collect();
///     Html(format!("<!doctype html><main>{notices}</main>"))
/// }
///
/// // It derefs to `[Flash]` and iterates, too.
/// async fn count(flashes: Flashes) -> String {
///     let waiting = flashes.len();
///     let texts: Vec<String> = flashes.into_iter().map(|flash| flash.message).collect();
///     format!("{waiting}: {}", texts.join(", "))
/// }
///
/// let app: Router = Router::new().route("/", get(page)).route("/count", get(count));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flashes(pub Vec<Flash>);

impl<S: Send + Sync> FromRequestParts<S> for Flashes {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| MissingSessionLayer.into_response())?;
        match session.take_flashes().await {
            Ok(messages) => Ok(Self(messages)),
            Err(error) => Err(error.into_response()),
        }
    }
}

impl Deref for Flashes {
    type Target = [Flash];

    fn deref(&self) -> &[Flash] {
        &self.0
    }
}

impl IntoIterator for Flashes {
    type Item = Flash;
    type IntoIter = std::vec::IntoIter<Flash>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Flashes {
    type Item = &'a Flash;
    type IntoIter = std::slice::Iter<'a, Flash>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The `Session` extractor was used on a route that the
/// [`SessionLayer`](crate::SessionLayer) does not wrap. Answers `500`: it is
/// a wiring mistake in the app, not a client error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSessionLayer;

impl fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Session extractor needs cloakroom's SessionLayer around the route")
    }
}

impl std::error::Error for MissingSessionLayer {}

/// What is wrong when an extractor finds no session, and the fix.
const NO_SESSION_LAYER: &str = "this route takes a session extractor (Session, Flashes, LoggedIn, \
CurrentUser, CsrfToken, RequireLogin, ...) and no SessionLayer wraps it. Add .layer(sessions) \
to the router after the routes that need it (axum applies a .layer to the routes added before \
it), or with CSRF checks .layer(sessions.with_csrf(csrf)).\n";

/// A `500` whose body, in debug builds, says what is wrong and how to fix
/// it ("internal server error" in release builds). The explanation is
/// logged once per process: the extractor has no layer to keep a flag in,
/// and the mistake repeats on every request.
impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::error!(target: "cloakroom", "{}", NO_SESSION_LAYER.trim_end());
        }
        crate::service::wiring_error::<axum_core::body::Body>(NO_SESSION_LAYER).into_response()
    }
}

/// Answers [`SessionError::status`]: `400` for data a store cannot hold,
/// `401` and `404` for the user's own mistakes, `503` when the store failed (the same response the layer gives when a
/// commit fails: a short text, `Retry-After` and `Cache-Control:
/// no-store`), `500` for the rest. The bodies are fixed strings that leak
/// nothing, and the error itself is logged.
///
/// An app renders these answers itself with
/// [`SessionLayerBuilder::session_error_response`](crate::SessionLayerBuilder::session_error_response).
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        tracing::warn!(
            target: "cloakroom",
            error = %self,
            status = status.as_u16(),
            "session error answered as an error response"
        );
        let mut response = match status {
            StatusCode::SERVICE_UNAVAILABLE => crate::service::unavailable(),
            StatusCode::BAD_REQUEST => (status, "invalid session data\n").into_response(),
            StatusCode::UNAUTHORIZED => (status, "login required\n").into_response(),
            StatusCode::NOT_FOUND => (status, "not found\n").into_response(),
            _ => (status, "internal server error\n").into_response(),
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // For the app's own renderer, if it gave one (`respond.rs`).
        response
            .extensions_mut()
            .insert(SessionErrorAnswer(Arc::new(self)));
        response
    }
}

/// Marks a response as this crate's answer to a [`SessionError`], for the
/// app's own renderer (`respond.rs`).
#[derive(Clone)]
pub(crate) struct SessionErrorAnswer(pub(crate) Arc<SessionError>);
