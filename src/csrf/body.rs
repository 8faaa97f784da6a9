//! [`CsrfBody`]: the request body the inner service of a
//! [`CsrfLayer`](super::CsrfLayer) receives.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The request body behind a [`CsrfLayer`](super::CsrfLayer): the
    /// original body, byte for byte.
    ///
    /// When the layer had to read the body to find the token field (a
    /// urlencoded form, the first parts of a multipart form), it hands on
    /// what it read followed by the rest of the body, unread; otherwise
    /// the body itself. Either way the handler sees the bytes the client
    /// sent, so extractors such as axum's `Form` and `Multipart` work as
    /// without the layer.
    pub struct CsrfBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<B> {
        /// The body as it came: the layer read none of it.
        Untouched {
            #[pin]
            body: B,
        },
        /// The chunks the layer read, then the rest of the body (none when
        /// the layer read it to its end), then its trailers if the layer
        /// met them.
        Replayed {
            read: VecDeque<Bytes>,
            rest: Option<Pin<Box<B>>>,
            trailers: Option<HeaderMap>,
        },
    }
}

impl<B> CsrfBody<B> {
    /// `body`, untouched.
    pub(crate) fn untouched(body: B) -> Self {
        Self {
            kind: Kind::Untouched { body },
        }
    }

    /// The chunks already read from a body, then `rest` (the same body,
    /// where it stopped, or `None` if it ended), then the trailers read.
    pub(crate) fn replayed(
        read: VecDeque<Bytes>,
        rest: Option<Pin<Box<B>>>,
        trailers: Option<HeaderMap>,
    ) -> Self {
        Self {
            kind: Kind::Replayed {
                read,
                rest,
                trailers,
            },
        }
    }
}

impl<B> Body for CsrfBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProjection::Untouched { body } => body.poll_frame(cx).map_err(Into::into),
            KindProjection::Replayed {
                read,
                rest,
                trailers,
            } => {
                if let Some(chunk) = read.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(body) = rest {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame.map_err(Into::into))),
                        // Never polled again once it has ended.
                        None => *rest = None,
                    }
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Untouched { body } => body.is_end_stream(),
            Kind::Replayed {
                read,
                rest,
                trailers,
            } => {
                read.is_empty()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Untouched { body } => body.size_hint(),
            Kind::Replayed { read, rest, .. } => {
                let buffered: u64 = read.iter().map(|chunk| chunk.len() as u64).sum();
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint());
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint.set_lower(rest.lower().saturating_add(buffered));
                hint
            }
        }
    }
}

impl<B> fmt::Debug for CsrfBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Untouched { .. } => f.write_str("CsrfBody::Untouched"),
            Kind::Replayed { read, rest, .. } => f
                .debug_struct("CsrfBody::Replayed")
                .field("buffered_chunks", &read.len())
                .field("rest", &rest.is_some())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Full};

    use super::*;

    fn chunks(list: &[&'static str]) -> VecDeque<Bytes> {
        list.iter()
            .map(|c| Bytes::from_static(c.as_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn a_replayed_body_gives_what_was_read_then_the_rest_then_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let rest = Full::new(Bytes::from_static(b" and the rest"));
        let body = CsrfBody::replayed(
            chunks(&["read", " so far"]),
            Some(Box::pin(rest)),
            Some(trailers.clone()),
        );
        assert_eq!(body.size_hint().exact(), Some(24));
        assert!(!body.is_end_stream());
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "read so far and the rest");
    }

    #[tokio::test]
    async fn a_replayed_body_whose_rest_ended_is_only_what_was_read() {
        let body = CsrfBody::<Full<Bytes>>::replayed(chunks(&["all", " of it"]), None, None);
        assert_eq!(body.size_hint().exact(), Some(9));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "all of it");
        let empty = CsrfBody::<Full<Bytes>>::replayed(VecDeque::new(), None, None);
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn an_untouched_body_is_the_body() {
        let body = CsrfBody::untouched(Full::new(Bytes::from_static(b"as sent")));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "as sent");
    }
}
