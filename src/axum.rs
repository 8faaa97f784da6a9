//! axum integration: [`Session`] as an extractor, and error responses.
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

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::CACHE_CONTROL;
use http::request::Parts;
use http::{HeaderValue, StatusCode};

use crate::error::SessionError;
use crate::session::Session;

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

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!(target: "cloakroom", "{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
    }
}

/// Answers [`SessionError::status`]: `400` for data a store cannot hold,
/// `401` and `404` for the user's own mistakes, `503` when the store failed (the same response the layer gives when a
/// commit fails: a short text, `Retry-After` and `Cache-Control:
/// no-store`), `500` for the rest. The bodies are fixed strings that leak
/// nothing, and the error itself is logged.
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
            StatusCode::SERVICE_UNAVAILABLE => return crate::service::unavailable(),
            StatusCode::BAD_REQUEST => (status, "invalid session data\n").into_response(),
            StatusCode::UNAUTHORIZED => (status, "login required\n").into_response(),
            StatusCode::NOT_FOUND => (status, "not found\n").into_response(),
            _ => (status, "internal server error\n").into_response(),
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
