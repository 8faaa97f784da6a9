//! [`CsrfService`]: the checks [`CsrfLayer`](super::CsrfLayer) runs on each
//! unsafe request.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use tower_service::Service;

use super::body::CsrfBody;
use super::failure::{CsrfFailure, CsrfFailureReason};
use super::multipart::{self, Outcome};
use super::token::{check, TokenCheck};
use super::{normalize_origin, CsrfConfig, CSRF_OUTSIDE_SESSIONS};
use crate::session::Session;
use crate::store::BoxFuture;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service [`CsrfLayer`](super::CsrfLayer) wraps around `inner`.
///
/// Safe requests (`GET`, `HEAD`, `OPTIONS`, `TRACE`) and exempt paths pass
/// straight through; every other request is checked first. The inner
/// service's errors pass through unchanged; failed checks are responses.
pub struct CsrfService<S> {
    inner: S,
    config: Arc<CsrfConfig>,
}

impl<S> CsrfService<S> {
    pub(crate) fn new(inner: S, config: Arc<CsrfConfig>) -> Self {
        Self { inner, config }
    }

    inner_service_accessors!();
}

impl<S: Clone> Clone for CsrfService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for CsrfService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

/// Marks a request as passing through a [`CsrfLayer`](super::CsrfLayer),
/// so that the [`CsrfToken`](super::CsrfToken) extractor can refuse to hand
/// out tokens nobody would check.
/// It carries the layer's settings, so that the token extractor renders
/// hidden fields under the field name the layer reads.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct CsrfInstalled(pub(crate) Arc<CsrfConfig>);

/// Why a request was refused: a failed check (a security event, answered
/// as the app chose), or the layer could not check at all (answered the
/// same way as everywhere else in the crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Check(CsrfFailureReason),
    NoSessionLayer,
    StoreFailed,
}

impl Refusal {
    fn response(self, config: &CsrfConfig, parts: &Parts) -> Response<String> {
        match self {
            Self::Check(reason) => {
                let failure = CsrfFailure::new(reason);
                // Logged before the app's renderer runs, so that every
                // refusal is logged whatever renders it.
                crate::events::csrf_rejected(failure.reason(), &parts.method, parts.uri.path());
                config.failure_response.render(failure, parts)
            }
            // The same 503 as everywhere else in the layer; the store
            // failure was logged by the session.
            Self::StoreFailed => crate::service::unavailable(),
            Self::NoSessionLayer => {
                if !config.missing_session_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(target: "cloakroom", "{}", CSRF_OUTSIDE_SESSIONS.trim_end());
                }
                crate::service::wiring_error(CSRF_OUTSIDE_SESSIONS)
            }
        }
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The first line: what the browser says about where the request comes
/// from. Requests without either header (non-browser clients, very old
/// browsers) go on to the token check.
fn check_origin(parts: &Parts, config: &CsrfConfig) -> Result<(), Refusal> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header(ORIGIN.as_str());
    let trusted = origin
        .and_then(normalize_origin)
        .is_some_and(|o| config.trusted_origins.contains(&o));
    if let Some(site) = header("sec-fetch-site") {
        // `none`: the user typed the URL or used a bookmark.
        if !matches!(site, "same-origin" | "none") && !trusted {
            return Err(Refusal::Check(CsrfFailureReason::CrossSite));
        }
    }
    if let Some(origin) = origin {
        if !trusted && !same_origin(origin, parts) {
            return Err(Refusal::Check(CsrfFailureReason::OriginNotAllowed));
        }
    }
    Ok(())
}

/// Whether `origin` names the host this request was sent to.
fn same_origin(origin: &str, parts: &Parts) -> bool {
    let Ok(origin) = origin.parse::<Uri>() else {
        return false; // includes the opaque origin "null"
    };
    let Some(origin_authority) = origin.authority() else {
        return false;
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    host.is_some_and(|host| host.eq_ignore_ascii_case(origin_authority.as_str()))
}

fn content_type(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn is_urlencoded_form(parts: &Parts) -> bool {
    content_type(parts)
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads a urlencoded form whole, up to `config.max_form_bytes`, for its
/// token field.
async fn urlencoded_token<B>(
    body: B,
    config: &CsrfConfig,
) -> Result<(Option<String>, CsrfBody<B>), Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let collected = match Limited::new(body, config.max_form_bytes).collect().await {
        Ok(collected) => collected,
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Err(Refusal::Check(if too_large {
                CsrfFailureReason::FormTooLarge
            } else {
                CsrfFailureReason::UnreadableBody
            }));
        }
    };
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let token = form_urlencoded::parse(&bytes)
        .find(|(name, _)| *name == config.field)
        .map(|(_, value)| value.into_owned());
    let body = CsrfBody::replayed([bytes].into(), None, trailers);
    Ok((token, body))
}

/// Reads a multipart form up to its token field (see
/// [`multipart::read_token`]).
async fn multipart_token<B>(
    content_type: &str,
    body: B,
    config: &CsrfConfig,
) -> Result<(Option<String>, CsrfBody<B>), Refusal>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let (outcome, body) =
        multipart::read_token(content_type, body, &config.field, config.max_form_bytes).await;
    let reason = match outcome {
        Outcome::Token(token) => return Ok((Some(token), body)),
        Outcome::Missing => return Ok((None, body)),
        Outcome::BeyondLimit => CsrfFailureReason::TokenBeyondLimit,
        Outcome::Malformed => CsrfFailureReason::MalformedMultipart,
        Outcome::Unreadable => CsrfFailureReason::UnreadableBody,
    };
    Err(Refusal::Check(reason))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<CsrfBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        if let Some(session) = parts.extensions.get::<Session>() {
            session.context().csrf_seen();
        }
        parts
            .extensions
            .insert(CsrfInstalled(Arc::clone(&self.config)));
        if is_safe(&parts.method) || self.config.is_exempt(parts.uri.path()) {
            let request = Request::from_parts(parts, CsrfBody::untouched(body));
            return Box::pin(self.inner.call(request));
        }
        // The clone goes into the future; the instance that was polled
        // ready serves this request (tower's usual readiness hand-over).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(checked(inner, config, parts, body))
    }
}

async fn checked<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<CsrfConfig>,
    parts: Parts,
    body: ReqBody,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<CsrfBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<String>,
{
    let refuse = |refusal: Refusal| Ok(refusal.response(&config, &parts).map(ResBody::from));
    if let Err(refusal) = check_origin(&parts, &config) {
        return refuse(refusal);
    }
    let Some(session) = parts.extensions.get::<Session>().cloned() else {
        return refuse(Refusal::NoSessionLayer);
    };
    let header_token = parts
        .headers
        .get(&config.header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let read = match header_token {
        Some(token) => Ok((Some(token), CsrfBody::untouched(body))),
        None if is_urlencoded_form(&parts) => urlencoded_token(body, &config).await,
        None => match content_type(&parts).filter(|ct| multipart::is_multipart_form(ct)) {
            Some(content_type) => multipart_token(content_type, body, &config).await,
            None => Ok((None, CsrfBody::untouched(body))),
        },
    };
    let (token, body) = match read {
        Ok(read) => read,
        Err(refusal) => return refuse(refusal),
    };
    let Some(token) = token else {
        return refuse(Refusal::Check(CsrfFailureReason::MissingToken));
    };
    match check(&token, &session).await {
        Ok(TokenCheck::Valid) => {}
        Ok(TokenCheck::Invalid) => return refuse(Refusal::Check(CsrfFailureReason::InvalidToken)),
        // Already logged by the session; fail closed.
        Err(_) => return refuse(Refusal::StoreFailed),
    }
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::post("/x").header(HOST, "app.example.test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn config() -> CsrfConfig {
        CsrfConfig {
            trusted_origins: vec!["https://admin.example.test".into()],
            ..CsrfConfig::default()
        }
    }

    #[test]
    fn fetch_metadata_refuses_cross_site_and_same_site() {
        for site in ["cross-site", "same-site", "something-new"] {
            assert_eq!(
                check_origin(&parts(&[("sec-fetch-site", site)]), &config()),
                Err(Refusal::Check(CsrfFailureReason::CrossSite)),
                "{site}"
            );
        }
        for site in ["same-origin", "none"] {
            assert_eq!(
                check_origin(&parts(&[("sec-fetch-site", site)]), &config()),
                Ok(())
            );
        }
    }

    #[test]
    fn origin_must_be_this_host_or_trusted() {
        let ok = |origin| check_origin(&parts(&[("origin", origin)]), &config());
        assert_eq!(ok("http://app.example.test"), Ok(()));
        assert_eq!(ok("https://APP.example.test"), Ok(()));
        assert_eq!(ok("https://admin.example.test"), Ok(()));
        assert_eq!(
            ok("http://evil.example.test"),
            Err(Refusal::Check(CsrfFailureReason::OriginNotAllowed))
        );
        assert_eq!(
            ok("http://app.example.test:8080"),
            Err(Refusal::Check(CsrfFailureReason::OriginNotAllowed))
        );
        assert_eq!(
            ok("null"),
            Err(Refusal::Check(CsrfFailureReason::OriginNotAllowed))
        );
    }

    #[test]
    fn a_trusted_origin_passes_fetch_metadata() {
        let p = parts(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://admin.example.test"),
        ]);
        assert_eq!(check_origin(&p, &config()), Ok(()));
    }

    #[test]
    fn requests_without_either_header_go_on_to_the_token() {
        assert_eq!(check_origin(&parts(&[]), &config()), Ok(()));
    }

    #[test]
    fn only_urlencoded_forms_are_read() {
        assert!(is_urlencoded_form(&parts(&[(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8"
        )])));
        assert!(!is_urlencoded_form(&parts(&[(
            "content-type",
            "multipart/form-data; boundary=x"
        )])));
        assert!(!is_urlencoded_form(&parts(&[])));
    }
}
