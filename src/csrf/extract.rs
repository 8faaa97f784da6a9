//! The [`CsrfToken`] extractor for axum, and its rejection.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

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
        let Some(session) = parts.extensions.get::<Session>() else {
            return Err(CsrfTokenRejection::MissingSessionLayer);
        };
        let Some(CsrfInstalled(config)) = parts.extensions.get::<CsrfInstalled>() else {
            return Err(CsrfTokenRejection::MissingLayer);
        };
        // A CSRF layer that ran before the session existed is outside the
        // session layer: it would refuse every form this token goes into.
        if !session.context().was_csrf_seen() {
            return Err(CsrfTokenRejection::Misordered);
        }
        let config = Arc::clone(config);
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
    /// The route has no [`SessionLayer`](crate::SessionLayer): answers
    /// as [`MissingSessionLayer`](crate::MissingSessionLayer) does (`500`).
    MissingSessionLayer,
    /// The route's [`CsrfLayer`](super::CsrfLayer) is outside its
    /// [`SessionLayer`](crate::SessionLayer) instead of inside: answers
    /// `500`, since every form the token went into would be refused.
    Misordered,
}

impl fmt::Display for CsrfTokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(
                "the CsrfToken extractor needs CsrfLayer inside SessionLayer around the route",
            ),
            Self::Session(e) => write!(f, "{e}"),
            Self::MissingSessionLayer => write!(f, "{}", crate::axum::MissingSessionLayer),
            Self::Misordered => f.write_str(super::CSRF_OUTSIDE_SESSIONS.trim_end()),
        }
    }
}

/// What is wrong when a `CsrfToken` extractor finds no CSRF layer, and
/// the fix.
const NO_CSRF_LAYER: &str = "the CsrfToken extractor found no CSRF checks around the route: a \
token nobody checks protects nothing. Install them with the session layer: \
.layer(sessions.with_csrf(CsrfLayer::new())).\n";

impl std::error::Error for CsrfTokenRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MissingLayer | Self::MissingSessionLayer | Self::Misordered => None,
            Self::Session(e) => Some(e),
        }
    }
}

impl IntoResponse for CsrfTokenRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer => {
                // Once per process: the extractor has no layer to keep a
                // flag in, and the mistake repeats on every request.
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::error!(target: "cloakroom", "{}", NO_CSRF_LAYER.trim_end());
                }
                crate::service::wiring_error::<axum_core::body::Body>(NO_CSRF_LAYER).into_response()
            }
            Self::Session(e) => e.into_response(),
            Self::MissingSessionLayer => crate::axum::MissingSessionLayer.into_response(),
            Self::Misordered => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::error!(target: "cloakroom", "{self}");
                }
                crate::service::wiring_error::<axum_core::body::Body>(super::CSRF_OUTSIDE_SESSIONS)
                    .into_response()
            }
        }
    }
}
