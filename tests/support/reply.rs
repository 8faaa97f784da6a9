//! A response with its body read: what every client of the tests gets
//! back, whether from a `Router` in the same process or from the demo over
//! real HTTP.

use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderName};
use hyper::{HeaderMap, Response, StatusCode};

/// A response with its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// Every `Set-Cookie` header.
    pub(crate) fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ASCII Set-Cookie").to_owned())
            .collect()
    }

    /// The one `Set-Cookie` header, if any.
    ///
    /// # Panics
    ///
    /// When there are several.
    pub(crate) fn set_cookie(&self) -> Option<String> {
        let mut all = self.set_cookies();
        assert!(all.len() <= 1, "at most one Set-Cookie: {all:?}");
        all.pop()
    }

    pub(crate) fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// When it is not JSON of that shape.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads the whole body of `response`.
pub(crate) async fn read<B>(response: Response<B>) -> Reply
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
