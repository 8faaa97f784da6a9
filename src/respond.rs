//! The app's own responses for what this crate answers in axum: a route
//! that needs a user ([`LoginRequired`]) and a [`SessionError`], rendered
//! by the closures given to
//! [`SessionLayerBuilder::login_required_response`](crate::SessionLayerBuilder::login_required_response)
//! and
//! [`SessionLayerBuilder::session_error_response`](crate::SessionLayerBuilder::session_error_response)
//! (feature `axum`).
//!
//! An `IntoResponse` impl sees neither the request nor the layer, so it
//! answers as it always does and marks its response with what it answered
//! (`login::LoginRequiredAnswer`, `axum::SessionErrorAnswer`). On its way
//! out through [`SessionService`](crate::SessionService), a marked response
//! is rendered again by the app's closure, from the request head the layer
//! kept for it, and keeps the status and the headers that carry the
//! meaning of the answer.

use std::any::Any;
use std::fmt;

use axum_core::response::Response as AxumResponse;
use http::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderValue, Request, Response};

use crate::axum::SessionErrorAnswer;
use crate::context::RequestContext;
use crate::error::SessionError;
use crate::login::{LoginRequired, LoginRequiredAnswer};

/// The signature of an app's own login-required response.
pub(crate) type LoginRequiredFn = dyn Fn(&LoginRequired, &Parts) -> AxumResponse + Send + Sync;

/// The signature of an app's own session-error response.
pub(crate) type SessionErrorFn = dyn Fn(&SessionError, &Parts) -> AxumResponse + Send + Sync;

/// The app's own renderers, if it gave any.
#[derive(Default)]
pub(crate) struct ResponseHooks {
    pub(crate) login_required: Option<Box<LoginRequiredFn>>,
    pub(crate) session_error: Option<Box<SessionErrorFn>>,
}

impl ResponseHooks {
    /// Whether the app gave no renderer (then no request head is kept).
    pub(crate) fn is_empty(&self) -> bool {
        self.login_required.is_none() && self.session_error.is_none()
    }
}

impl fmt::Debug for ResponseHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseHooks")
            .field("login_required", &self.login_required.is_some())
            .field("session_error", &self.session_error.is_some())
            .finish()
    }
}

/// The head of `request` for a renderer: its method, URI, version and
/// headers (not its extensions, which need not be cloneable cheaply).
pub(crate) fn head_of<B>(request: &Request<B>) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = request.method().clone();
    head.uri = request.uri().clone();
    head.version = request.version();
    head.headers = request.headers().clone();
    head
}

/// `response`, rendered again by the app's renderer when it is one of this
/// crate's answers and the app gave a renderer for it; otherwise as it is.
pub(crate) fn render<B: 'static>(response: Response<B>, context: &RequestContext) -> Response<B> {
    let hooks = &context.settings().responses;
    let Some(head) = context.head() else {
        return response;
    };
    let extensions = response.extensions();
    let rendered = if let Some(SessionErrorAnswer(error)) = extensions.get() {
        hooks
            .session_error
            .as_ref()
            .map(|render| render(error, head))
    } else if let Some(LoginRequiredAnswer(rejection)) = extensions.get() {
        hooks
            .login_required
            .as_ref()
            .map(|render| render(rejection, head))
    } else {
        None
    };
    let Some(mut rendered) = rendered else {
        return response;
    };
    keep_the_meaning(&mut rendered, &response);
    // The layer wraps an axum router, whose body is axum's: the rendered
    // response is of the same type. Behind a service of another body type
    // (which this crate's `IntoResponse` impls cannot have answered), the
    // answer stays as it was.
    match (Box::new(rendered) as Box<dyn Any>).downcast::<Response<B>>() {
        Ok(rendered) => *rendered,
        Err(_) => {
            tracing::debug!(
                target: "cloakroom",
                "the app's response renderer was skipped: the response body is not axum's"
            );
            response
        }
    }
}

/// Gives the app's page what makes it the same answer as the default one:
/// its status, its `Location` (a redirect to the login page) and its
/// `Retry-After` (a `503`, unless the page sets its own), and never lets a
/// cache keep it: it depends on the session.
fn keep_the_meaning<B>(rendered: &mut AxumResponse, default: &Response<B>) {
    *rendered.status_mut() = default.status();
    let headers = rendered.headers_mut();
    if let Some(location) = default.headers().get(LOCATION) {
        headers.insert(LOCATION, location.clone());
    }
    if let Some(retry_after) = default.headers().get(RETRY_AFTER) {
        headers
            .entry(RETRY_AFTER)
            .or_insert_with(|| retry_after.clone());
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
