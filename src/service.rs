//! [`SessionService`]: attaches a [`Session`] to each request and commits
//! it when the response comes back.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use cloakroom::{Key, MemoryStore, Session, SessionLayer};
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let layer = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
//! let service = layer.layer(service_fn(|req: Request<String>| async move {
//!     // Plain tower/hyper code finds the session in the extensions.
//!     let session = req.extensions().get::<Session>().cloned().expect("layer installed");
//!     session.insert("seen", true).await?;
//!     Ok::<_, cloakroom::SessionError>(Response::new(String::new()))
//! }));
//! let response = service.oneshot(Request::new(String::new())).await?;
//! assert!(response.headers().contains_key(http::header::SET_COOKIE));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, ORIGIN, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::context::RequestContext;
use crate::cookie::{transport, Transport};
use crate::core::Core;
use crate::device::RequestOrigin;
use crate::session::{Abort, CookieAction, Finish, Outcome, Plan, Session};
use crate::store::BoxFuture;

/// The service [`SessionLayer`](crate::SessionLayer) wraps around `inner`.
///
/// For each request it verifies the session cookie (no store call), puts a
/// [`Session`] into the request extensions and calls `inner`. When the
/// response comes back it writes the session's changes and sets or clears
/// the cookie. A request that never used its session makes no store call;
/// one that only read it makes only its load. Both finish synchronously,
/// without boxing a commit.
///
/// A failed commit replaces the response with a `503` (the handler's
/// answer must not reach the client when its session changes were lost),
/// and so does a request whose handler ignored a store failure and still
/// left changes to write: they are dropped whole, never half applied. Every
/// `503` of the layer has the same shape: a short text body,
/// `Retry-After: 5` and `Cache-Control: no-store`. A `503` after a write
/// does not prove that the write was not applied: a store call given up on
/// after the store timeout may still complete in the backend. Data the
/// store refused as such answers `400` instead. Errors of `inner` pass
/// through unchanged.
pub struct SessionService<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, core: Arc<Core>) -> Self {
        Self { inner, core }
    }

    inner_service_accessors!();
}

impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<&'static str> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &self.core.config;
        let cookie_id = config
            .cookie
            .find_session_id(request.headers(), &config.keys);
        let origin = RequestOrigin::of(
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
            config.record_user_agent,
            config.client_ip.as_ref(),
        );
        // Checked only until the one warning has been given or a request
        // has shown that the app is served over https.
        let plain_http = config.cookie.secure
            && !self.core.plain_http_settled.load(Ordering::Relaxed)
            && match transport(request.uri(), request.headers()) {
                Transport::Https => {
                    self.core.plain_http_settled.store(true, Ordering::Relaxed);
                    false
                }
                Transport::Loopback => false,
                Transport::Plain => true,
            };
        let context = RequestContext::new(self.core.clone(), origin, plain_http)
            .with_unsafe_from_browser(
                (!config.csrf_not_needed && !self.core.csrf_missing_warned.load(Ordering::Relaxed))
                    .then(|| unsafe_from_browser(&request))
                    .flatten(),
            );
        // The app renders some answers itself: keep the head for it.
        #[cfg(feature = "axum")]
        let context = context
            .with_head((!config.responses.is_empty()).then(|| crate::respond::head_of(&request)));
        let session = Session::new(context, cookie_id);
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
                session: Some(session),
            },
        }
    }
}

pin_project! {
    /// Response future of [`SessionService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            session: Option<Session>,
        },
        Commit {
            future: BoxFuture<'static, Response<B>>,
        },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<&'static str> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProjection::Inner { future, session } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(session) = session.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    if let Some(request) = session.context().unchecked_unsafe_request() {
                        let core = session.context().core();
                        if !core.csrf_missing_warned.swap(true, Ordering::Relaxed) {
                            crate::events::csrf_missing(request);
                        }
                    }
                    // This crate's answers (login required, session
                    // errors), in the app's own words if it gave some.
                    #[cfg(feature = "axum")]
                    let response = crate::respond::render(response, session.context());
                    let mut response = response;
                    // Most requests (untouched, or only read) need no store
                    // call here: finish them without boxing a commit.
                    let plan = match session.finish() {
                        Finish::Done(outcome) => {
                            decorate(&mut response, outcome, &session);
                            return Poll::Ready(Ok(response));
                        }
                        Finish::Commit(plan) => plan,
                    };
                    let commit = Box::pin(finish(session, plan, response));
                    self.as_mut()
                        .project()
                        .state
                        .set(State::Commit { future: commit });
                }
                StateProjection::Commit { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Commits the session and decorates the response, or replaces it with an
/// error response when the commit failed.
async fn finish<B: From<&'static str>>(
    session: Session,
    plan: Option<Plan>,
    mut response: Response<B>,
) -> Response<B> {
    match session.commit(plan).await {
        Ok(outcome) => {
            decorate(&mut response, outcome, &session);
            response
        }
        // The failure was logged where it happened.
        Err(Abort::Unavailable) => unavailable(),
        Err(Abort::Rejected) => error_response(
            StatusCode::BAD_REQUEST,
            "the session cannot hold the data this request sent\n",
        ),
    }
}

/// Adds what the session's outcome asks of the response.
fn decorate<B>(response: &mut Response<B>, outcome: Outcome, session: &Session) {
    let context = session.context();
    let core = context.core();
    let headers = response.headers_mut();
    if outcome.vary {
        add_vary_cookie(headers);
    }
    if context.plain_http()
        && matches!(outcome.cookie, CookieAction::Set { .. })
        && !core.plain_http_settled.swap(true, Ordering::Relaxed)
    {
        crate::events::secure_cookie_over_plain_http();
    }
    if let Some(cookie) = set_cookie(core, outcome.cookie) {
        headers.append(SET_COOKIE, cookie);
        // A shared cache must never hand one user's cookie to another. A
        // policy the handler chose is kept, unless it lets shared caches
        // store the response.
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        } else if shared_caches_may_store(headers) {
            tracing::warn!(
                target: "cloakroom",
                "a response setting the session cookie was marked cacheable by shared caches; \
                 sending Cache-Control: no-store instead"
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

/// The `Set-Cookie` header a cookie action needs, if any: the session said
/// what the cookie must become, the cookie module writes it.
fn set_cookie(core: &Core, action: CookieAction) -> Option<HeaderValue> {
    let (cookie, keys) = (&core.config.cookie, &core.config.keys);
    match action {
        CookieAction::Keep => None,
        CookieAction::Set { id, max_age } => cookie.set_cookie(keys, &id, max_age),
        CookieAction::Remove => cookie.removal(),
    }
}

/// The one shape of every `503` the layer answers (the axum integration's
/// too): a short text, `Retry-After`, and no caching.
pub(crate) const UNAVAILABLE_BODY: &str = "session store unavailable, try again shortly\n";
/// Seconds a client is asked to wait after a `503`.
pub(crate) const RETRY_AFTER_SECS: &str = "5";

pub(crate) fn unavailable<B: From<&'static str>>() -> Response<B> {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_BODY);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// A short text answer of the layer's own: `status`, `body`, no caching.
pub(crate) fn error_response<B: From<&'static str>>(
    status: StatusCode,
    body: &'static str,
) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `METHOD /path` if the request is a `POST`, `PUT`, `PATCH` or `DELETE`
/// (any method but the safe ones) that a browser sent: browsers mark
/// theirs with `Origin` or `Sec-Fetch-Site`; other clients rarely do.
fn unsafe_from_browser<B>(request: &Request<B>) -> Option<Box<str>> {
    let method = request.method();
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if safe {
        return None;
    }
    // A constant name: looking a `&str` up parses it first, on every
    // request while the question is open.
    const SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");
    let headers = request.headers();
    let browser = headers.contains_key(ORIGIN) || headers.contains_key(SEC_FETCH_SITE);
    browser.then(|| format!("{method} {}", request.uri().path()).into_boxed_str())
}

/// The answer to a wiring mistake in the app (a layer missing or in the
/// wrong order): `500`, whose body says what is wrong and how to fix it
/// in debug builds, and only "internal server error" in release builds.
/// The caller logs the explanation once.
#[cfg(any(feature = "axum", feature = "csrf"))]
pub(crate) fn wiring_error<B: From<&'static str>>(explanation: &'static str) -> Response<B> {
    let body = if cfg!(debug_assertions) {
        explanation
    } else {
        "internal server error\n"
    };
    error_response(StatusCode::INTERNAL_SERVER_ERROR, body)
}

/// Whether `Cache-Control` allows shared caches to store the response
/// (`public` or `s-maxage`).
fn shared_caches_may_store(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',').map(str::trim).any(|directive| {
                directive.eq_ignore_ascii_case("public")
                    || directive
                        .get(..8)
                        .is_some_and(|name| name.eq_ignore_ascii_case("s-maxage"))
            })
        })
    })
}

/// Appends `Cookie` to `Vary` unless it is already listed (or `*`).
fn add_vary_cookie(headers: &mut HeaderMap) {
    let listed = headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|token| token == "*" || token.eq_ignore_ascii_case("cookie"))
        })
    });
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_cookie_is_added_once() {
        let mut headers = HeaderMap::new();
        add_vary_cookie(&mut headers);
        add_vary_cookie(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().count(), 1);
    }

    #[test]
    fn vary_keeps_other_values() {
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_cookie(&mut headers);
        let values: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(values, ["Accept-Encoding", "Cookie"]);

        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("accept, COOKIE"));
        add_vary_cookie(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().count(), 1);
    }

    #[test]
    fn public_policies_are_recognised() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
            shared_caches_may_store(&headers)
        };
        assert!(with("public, max-age=60"));
        assert!(with("max-age=60, S-MAXAGE=600"));
        assert!(!with("private, max-age=60"));
        assert!(!with("no-store"));
    }

    #[test]
    fn unavailable_is_an_uncacheable_503_with_a_body_and_retry_after() {
        let response: Response<String> = unavailable();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(response.body(), UNAVAILABLE_BODY);
    }
}
