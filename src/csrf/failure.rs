//! [`CsrfFailure`]: a failed CSRF check, and the response it gets.

use std::fmt;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};

pub use crate::events::CsrfFailureReason;

/// A failed CSRF check: what an app's own
/// [`failure_response`](super::CsrfLayerBuilder::failure_response) is
/// given to render its page from.
///
/// [`status`](Self::status) and [`body_text`](Self::body_text) are what
/// the default response would send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrfFailure {
    reason: CsrfFailureReason,
}

impl CsrfFailure {
    pub(crate) fn new(reason: CsrfFailureReason) -> Self {
        Self { reason }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> CsrfFailureReason {
        self.reason
    }

    /// The status the default response uses: `413 Payload Too Large` for
    /// [`FormTooLarge`](CsrfFailureReason::FormTooLarge) (a urlencoded form
    /// is read whole), `400 Bad Request` for
    /// [`UnreadableBody`](CsrfFailureReason::UnreadableBody), `403
    /// Forbidden` for the rest, including a multipart form's
    /// [`TokenBeyondLimit`](CsrfFailureReason::TokenBeyondLimit) (the form
    /// may be any size; its token came too late) and
    /// [`MalformedMultipart`](CsrfFailureReason::MalformedMultipart).
    pub fn status(&self) -> StatusCode {
        match self.reason {
            CsrfFailureReason::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CsrfFailureReason::UnreadableBody => StatusCode::BAD_REQUEST,
            CsrfFailureReason::CrossSite
            | CsrfFailureReason::OriginNotAllowed
            | CsrfFailureReason::MissingToken
            | CsrfFailureReason::InvalidToken
            | CsrfFailureReason::TokenBeyondLimit
            | CsrfFailureReason::MalformedMultipart => StatusCode::FORBIDDEN,
        }
    }

    /// The text the default response sends, newline included (e.g.
    /// `CSRF check failed: missing token\n`).
    pub fn body_text(&self) -> &'static str {
        match self.reason {
            CsrfFailureReason::CrossSite => "CSRF check failed: cross-site request\n",
            CsrfFailureReason::OriginNotAllowed => "CSRF check failed: origin not allowed\n",
            CsrfFailureReason::MissingToken => "CSRF check failed: missing token\n",
            CsrfFailureReason::InvalidToken => "CSRF check failed: invalid or expired token\n",
            CsrfFailureReason::FormTooLarge => "CSRF check failed: form too large to check\n",
            CsrfFailureReason::UnreadableBody => "could not read the request body\n",
            CsrfFailureReason::TokenBeyondLimit => {
                "CSRF check failed: no token field near the start of the multipart form (send it before any file)\n"
            }
            CsrfFailureReason::MalformedMultipart => "CSRF check failed: malformed multipart form\n",
        }
    }

    /// The default response: the status and the short text, nothing else.
    pub(crate) fn default_response(self) -> Response<String> {
        let mut response = Response::new(self.body_text().to_owned());
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// The signature of an app's own failure response.
type RenderFn = dyn Fn(&CsrfFailure, &Parts) -> Response<String> + Send + Sync;

/// How a failed check is answered: the default short text, or the app's
/// own page.
#[derive(Default)]
pub(crate) enum FailureResponse {
    #[default]
    Text,
    Custom(Box<RenderFn>),
}

impl FailureResponse {
    /// The response to `failure` of the request `parts`. Whoever renders
    /// it, it is never stored by a cache, unless the app chose a caching
    /// policy itself.
    pub(crate) fn render(&self, failure: CsrfFailure, parts: &Parts) -> Response<String> {
        let mut response = match self {
            Self::Text => failure.default_response(),
            Self::Custom(render) => render(&failure, parts),
        };
        response
            .headers_mut()
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        response
    }
}

impl fmt::Debug for FailureResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text => f.write_str("Text"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CsrfFailureReason; 8] = [
        CsrfFailureReason::CrossSite,
        CsrfFailureReason::OriginNotAllowed,
        CsrfFailureReason::MissingToken,
        CsrfFailureReason::InvalidToken,
        CsrfFailureReason::FormTooLarge,
        CsrfFailureReason::UnreadableBody,
        CsrfFailureReason::TokenBeyondLimit,
        CsrfFailureReason::MalformedMultipart,
    ];

    fn parts() -> Parts {
        http::Request::post("/x").body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_default_response_is_the_status_and_the_text_uncached() {
        for reason in ALL {
            let failure = CsrfFailure::new(reason);
            let response = FailureResponse::Text.render(failure, &parts());
            assert_eq!(response.status(), failure.status(), "{reason:?}");
            assert_eq!(response.body(), failure.body_text(), "{reason:?}");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store", "{reason:?}");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "text/plain; charset=utf-8",
                "{reason:?}"
            );
        }
    }

    #[test]
    fn statuses_and_texts_match_each_reason() {
        struct Test {
            reason: CsrfFailureReason,
            status: StatusCode,
            text: &'static str,
        }
        let tests = [
            Test {
                reason: CsrfFailureReason::CrossSite,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: cross-site request\n",
            },
            Test {
                reason: CsrfFailureReason::OriginNotAllowed,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: origin not allowed\n",
            },
            Test {
                reason: CsrfFailureReason::MissingToken,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: missing token\n",
            },
            Test {
                reason: CsrfFailureReason::InvalidToken,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: invalid or expired token\n",
            },
            Test {
                reason: CsrfFailureReason::FormTooLarge,
                status: StatusCode::PAYLOAD_TOO_LARGE,
                text: "CSRF check failed: form too large to check\n",
            },
            Test {
                reason: CsrfFailureReason::UnreadableBody,
                status: StatusCode::BAD_REQUEST,
                text: "could not read the request body\n",
            },
            Test {
                reason: CsrfFailureReason::TokenBeyondLimit,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: no token field near the start of the multipart form (send it before any file)\n",
            },
            Test {
                reason: CsrfFailureReason::MalformedMultipart,
                status: StatusCode::FORBIDDEN,
                text: "CSRF check failed: malformed multipart form\n",
            },
        ];
        for test in tests {
            let failure = CsrfFailure::new(test.reason);
            assert_eq!(failure.reason(), test.reason);
            assert_eq!(failure.status(), test.status, "{:?}", test.reason);
            assert_eq!(failure.body_text(), test.text, "{:?}", test.reason);
        }
    }

    #[test]
    fn a_custom_response_keeps_its_own_caching_policy_or_gets_no_store() {
        let custom = |cache_control: Option<&'static str>| {
            FailureResponse::Custom(Box::new(move |_: &CsrfFailure, _: &Parts| {
                let mut response = Response::new("page".to_owned());
                if let Some(value) = cache_control {
                    response
                        .headers_mut()
                        .insert(CACHE_CONTROL, HeaderValue::from_static(value));
                }
                response
            }))
        };
        let failure = CsrfFailure::new(CsrfFailureReason::MissingToken);
        let without = custom(None).render(failure, &parts());
        assert_eq!(without.headers()[CACHE_CONTROL], "no-store");
        let with = custom(Some("private, no-cache")).render(failure, &parts());
        assert_eq!(with.headers()[CACHE_CONTROL], "private, no-cache");
        assert_eq!(with.headers().get_all(CACHE_CONTROL).iter().count(), 1);
    }
}
