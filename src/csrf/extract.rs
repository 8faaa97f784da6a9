//! The [`CsrfToken`] extractor for axum, and its rejection.

use std::fmt;
use std::sync::Arc;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use super::service::CsrfInstalled;
use super::token::CsrfToken;
use crate::error::SessionError;
use crate::session::Session;

/// The [`CsrfToken`](CsrfToken) extractor: the token for the current
/// visitor. Needs [`CsrfLayer`](super::CsrfLayer) inside
/// [`SessionLayer`](crate::SessionLayer) on the route.
impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = CsrfTokenRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(CsrfInstalled(config)) = parts.extensions.get::<CsrfInstalled>() else {
            return Err(CsrfTokenRejection::MissingLayer);
        };
        let config = Arc::clone(config);
        let session = parts
            .extensions
            .get::<Session>()
            .ok_or(CsrfTokenRejection::MissingLayer)?;
        let token = CsrfToken::for_session(session)
            .await
            .map_err(CsrfTokenRejection::Session)?;
        Ok(token.with_layer(config))
    }
}

/// Why the [`CsrfToken`](CsrfToken) extractor failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CsrfTokenRejection {
    /// The route lacks [`CsrfLayer`](super::CsrfLayer) or
    /// [`SessionLayer`](crate::SessionLayer): answers `500`, since a token
    /// nobody checks would protect nothing.
    MissingLayer,
    /// The session could not be loaded: answers as [`SessionError`] does.
    Session(SessionError),
}

impl fmt::Display for CsrfTokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(
                "the CsrfToken extractor needs CsrfLayer inside SessionLayer around the route",
            ),
            Self::Session(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CsrfTokenRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MissingLayer => None,
            Self::Session(e) => Some(e),
        }
    }
}

impl IntoResponse for CsrfTokenRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer => {
                tracing::error!(target: "cloakroom", "{self}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Self::Session(e) => e.into_response(),
        }
    }
}
