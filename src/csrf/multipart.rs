//! The token field of a `multipart/form-data` body, read as the body
//! streams in: the parts up to and including the token field, within
//! [`max_form_bytes`](super::CsrfLayerBuilder::max_form_bytes), and not a
//! byte more than the parser needs. What was read is handed on with the
//! rest of the body ([`CsrfBody::replayed`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyDataStream;

use super::body::CsrfBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What reading a multipart form's token field found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The first field named as the token field, complete (not UTF-8:
    /// lossily decoded, and so no valid token).
    Token(String),
    /// The form ended without the field.
    Missing,
    /// No field within the limit: it comes later, or not at all.
    BeyondLimit,
    /// Not multipart: no boundary, or broken framing.
    Malformed,
    /// The body itself failed (a reset connection).
    Unreadable,
}

/// Whether `content_type` is `multipart/form-data` (with or without
/// parameters; a missing boundary is [`Outcome::Malformed`] later).
pub(crate) fn is_multipart_form(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Reads `body`, a `multipart/form-data` body of type `content_type`,
/// until the field named `field` has been read whole, at most `limit`
/// bytes into the body. Gives back what it found and the body to hand on,
/// which yields every byte of the original.
pub(crate) async fn read_token<B>(
    content_type: &str,
    body: B,
    field: &str,
    limit: usize,
) -> (Outcome, CsrfBody<B>)
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return (Outcome::Malformed, CsrfBody::untouched(body));
    };
    let mut tape = Tape::new(body, limit);
    let control = Control::default();
    let found = {
        let feed = Feed {
            tape: &mut tape,
            control: &control,
        };
        let mut form = multer::Multipart::new(BodyDataStream::new(feed), boundary);
        control.lazily(token_field(&mut form, field)).await
    };
    let outcome = match found {
        Ok(Some(token)) => Outcome::Token(String::from_utf8_lossy(&token).into_owned()),
        Ok(None) => Outcome::Missing,
        Err(_) => match tape.end {
            End::Failed => Outcome::Unreadable,
            End::Limit => Outcome::BeyondLimit,
            End::Open | End::Finished => Outcome::Malformed,
        },
    };
    (outcome, tape.into_body())
}

/// The value of the first field named `field`, read whole.
async fn token_field(
    form: &mut multer::Multipart<'_>,
    field: &str,
) -> multer::Result<Option<Bytes>> {
    while let Some(part) = form.next_field().await? {
        // Only the field's closing boundary ends it: a field cut short by
        // the limit or the body's end is an error, never a token.
        if part.name() == Some(field) {
            return part.bytes().await.map(Some);
        }
        // Dropping a part lets the parser skip the rest of it.
    }
    Ok(None)
}

/// Hands the parser a chunk only when it cannot go on without one.
///
/// The parser polls its stream each time it is polled, and takes every
/// chunk that is ready: it would read a fast body up to the limit even
/// when the token came first. So the stream answers `Pending` (noting
/// that it was asked) until [`Control::lazily`] sees the parser stuck,
/// and then gives it one chunk.
#[derive(Debug, Default)]
struct Control {
    /// The parser may have one more chunk.
    more: AtomicBool,
    /// The parser asked for a chunk and got none.
    asked: AtomicBool,
    /// The body has no chunk ready; it wakes the task when it does.
    waiting: AtomicBool,
}

impl Control {
    /// Runs `search`, the parser's work, giving it a chunk each time it
    /// is stuck without one.
    async fn lazily<F: Future>(&self, search: F) -> F::Output {
        let mut search = pin!(search);
        std::future::poll_fn(|cx| loop {
            self.asked.store(false, Relaxed);
            self.waiting.store(false, Relaxed);
            if let Poll::Ready(output) = search.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            if self.waiting.load(Relaxed) {
                return Poll::Pending;
            }
            if !self.asked.load(Relaxed) {
                // Stuck on something other than the stream (the parser
                // does not do this): poll again later rather than never.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.more.store(true, Relaxed);
        })
        .await
    }
}

/// How far [`Tape`] got with the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// More may come.
    Open,
    /// The body ended.
    Finished,
    /// `limit` bytes were fed to the parser; it gets no more.
    Limit,
    /// The body failed.
    Failed,
}

/// The body being read, and a record of every byte taken from it.
struct Tape<B> {
    body: Pin<Box<B>>,
    /// What was taken from the body, in order.
    read: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Bytes fed to the parser: all of `read` but what lies beyond the
    /// limit in the last chunk.
    fed: usize,
    limit: usize,
    end: End,
}

impl<B> Tape<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn new(body: B, limit: usize) -> Self {
        Self {
            body: Box::pin(body),
            read: VecDeque::new(),
            trailers: None,
            fed: 0,
            limit,
            end: End::Open,
        }
    }

    /// The next chunk for the parser, at most up to the limit, if
    /// `control` lets it have one.
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        control: &Control,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        if self.end != End::Open {
            return Poll::Ready(None);
        }
        if self.fed >= self.limit {
            self.end = End::Limit;
            return Poll::Ready(None);
        }
        if !control.more.load(Relaxed) {
            control.asked.store(true, Relaxed);
            return Poll::Pending;
        }
        loop {
            let frame = match self.body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    control.waiting.store(true, Relaxed);
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    self.end = End::Finished;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.end = End::Failed;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    self.read.push_back(chunk.clone());
                    // The parser never sees past the limit; what lies
                    // beyond it stays in `read` for the handler.
                    let fed = chunk.slice(..chunk.len().min(self.limit - self.fed));
                    self.fed += fed.len();
                    control.more.store(false, Relaxed);
                    return Poll::Ready(Some(Ok(fed)));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers
                            .get_or_insert_with(HeaderMap::new)
                            .extend(trailers);
                    }
                }
            }
        }
    }

    /// What was read, then the rest of the body.
    fn into_body(self) -> CsrfBody<B> {
        // A body that has ended is not polled again.
        let rest = (self.end != End::Finished).then_some(self.body);
        CsrfBody::replayed(self.read, rest, self.trailers)
    }
}

/// The tape as a body of data frames, for the parser's stream.
struct Feed<'a, B> {
    tape: &'a mut Tape<B>,
    control: &'a Control,
}

impl<B> Body for Feed<'_, B>
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
        let feed = self.get_mut();
        feed.tape.poll_chunk(cx, feed.control).map_ok(Frame::data)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt as _, Full};

    use super::*;

    const TYPE: &str = "multipart/form-data; boundary=XyZ";

    /// A form of `(name, filename, value)` parts, framed with the
    /// boundary `XyZ` as a browser does.
    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, value) in parts {
            out.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\"");
            if let Some(filename) = filename {
                out.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
                out.extend_from_slice(b"\r\nContent-Type: application/octet-stream");
            }
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    /// A body of the given chunks that counts the frames taken from it,
    /// fails at `fail_at` if set, and with `stall` is not ready before
    /// each frame, as a network body waiting for packets.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        taken: Arc<AtomicUsize>,
        fail_at: Option<usize>,
        stall: bool,
        stalled: bool,
    }

    impl Chunks {
        fn new(bytes: &[u8], chunk_len: usize) -> (Self, Arc<AtomicUsize>) {
            let taken = Arc::new(AtomicUsize::new(0));
            let body = Self {
                chunks: bytes
                    .chunks(chunk_len)
                    .map(Bytes::copy_from_slice)
                    .collect(),
                taken: taken.clone(),
                fail_at: None,
                stall: false,
                stalled: false,
            };
            (body, taken)
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if self.stall && !self.stalled {
                self.stalled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.stalled = false;
            let taken = self.taken.fetch_add(1, Ordering::SeqCst);
            if self.fail_at == Some(taken) {
                return Poll::Ready(Some(Err(io::Error::other("connection reset"))));
            }
            Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    async fn read(
        body: impl Body<Data = Bytes, Error = io::Error> + Send,
        limit: usize,
    ) -> (Outcome, Bytes) {
        let (outcome, body) = read_token(TYPE, body, "csrf_token", limit).await;
        let bytes = body.collect().await.expect("the body replays").to_bytes();
        (outcome, bytes)
    }

    #[tokio::test]
    async fn the_token_field_is_found_among_other_fields_and_the_body_is_handed_on_whole() {
        let sent = form(&[
            ("title", None, b"holiday"),
            ("csrf_token", None, b"tok-123"),
            (
                "file",
                Some("a.bin"),
                &[0, 1, 2, 255, b'\r', b'\n', b'-', b'-'],
            ),
        ]);
        for (chunk_len, stall) in [(1, false), (7, true), (64, false), (sent.len(), true)] {
            let name = format!("chunks of {chunk_len}, stalling: {stall}");
            let (mut body, _) = Chunks::new(&sent, chunk_len);
            body.stall = stall;
            let (outcome, bytes) = read(body, 1024).await;
            assert_eq!(outcome, Outcome::Token("tok-123".into()), "{name}");
            assert_eq!(bytes, sent, "{name}");
        }
    }

    #[tokio::test]
    async fn only_the_chunks_up_to_the_token_field_are_read() {
        let file = vec![b'x'; 64 * 1024];
        let sent = form(&[("csrf_token", None, b"tok"), ("file", Some("big"), &file)]);
        // The parser knows the field has ended at the boundary after it.
        let field_end = sent.windows(10).position(|w| w == b"tok\r\n--XyZ").unwrap() + 10;
        for (chunk_len, stall) in [(1, false), (10, true), (100, false), (4096, true)] {
            let (mut body, taken) = Chunks::new(&sent, chunk_len);
            body.stall = stall;
            let (outcome, rest) = read_token(TYPE, body, "csrf_token", 1024 * 1024).await;
            assert_eq!(outcome, Outcome::Token("tok".into()));
            assert_eq!(
                taken.load(Ordering::SeqCst),
                field_end.div_ceil(chunk_len),
                "frames of {chunk_len} bytes taken by the layer"
            );
            let bytes = rest.collect().await.unwrap().to_bytes();
            assert_eq!(bytes, sent);
        }
    }

    #[tokio::test]
    async fn a_token_field_after_the_limit_is_beyond_it_and_nothing_past_it_is_read() {
        let file = vec![b'x'; 10_000];
        let sent = form(&[("file", Some("big"), &file), ("csrf_token", None, b"tok")]);
        for chunk_len in [100, 4096, sent.len()] {
            let (mut body, taken) = Chunks::new(&sent, chunk_len);
            // A chunk wholly past the limit would fail the test.
            let needed = 4096_usize.div_ceil(chunk_len);
            body.fail_at = Some(needed);
            let (outcome, _) = read_token(TYPE, body, "csrf_token", 4096).await;
            assert_eq!(outcome, Outcome::BeyondLimit, "chunks of {chunk_len}");
            assert_eq!(
                taken.load(Ordering::SeqCst),
                needed,
                "chunks of {chunk_len}"
            );
        }
        // Within the limit, the same form passes.
        let (body, _) = Chunks::new(&sent, 100);
        assert_eq!(read(body, 20_000).await.0, Outcome::Token("tok".into()));
    }

    #[tokio::test]
    async fn a_token_cut_by_the_limit_is_no_token() {
        let sent = form(&[("csrf_token", None, b"0123456789")]);
        let end_of_value = sent.windows(10).position(|w| w == b"0123456789").unwrap() + 10;
        for limit in [end_of_value - 5, end_of_value, end_of_value + 3] {
            let (body, _) = Chunks::new(&sent, 1);
            assert_eq!(
                read(body, limit).await.0,
                Outcome::BeyondLimit,
                "limit {limit}"
            );
        }
        let (body, _) = Chunks::new(&sent, 1);
        assert_eq!(
            read(body, sent.len()).await.0,
            Outcome::Token("0123456789".into())
        );
    }

    #[tokio::test]
    async fn a_form_without_the_field_is_missing_it() {
        let sent = form(&[("title", None, b"x"), ("file", Some("f"), b"data")]);
        let (body, _) = Chunks::new(&sent, 5);
        assert_eq!(
            read(body, 1024).await,
            (Outcome::Missing, Bytes::from(sent))
        );
        let (body, _) = Chunks::new(&form(&[]), 5);
        assert_eq!(read(body, 1024).await.0, Outcome::Missing);
    }

    #[tokio::test]
    async fn malformed_forms_are_malformed() {
        struct Test {
            name: &'static str,
            content_type: &'static str,
            body: &'static [u8],
        }
        let tests = [
            Test {
                name: "no boundary",
                content_type: "multipart/form-data",
                body: b"--XyZ\r\n",
            },
            Test {
                name: "an unparsable content type",
                content_type: "multipart/form-data; boundary=\"",
                body: b"",
            },
            Test {
                name: "empty",
                content_type: TYPE,
                body: b"",
            },
            Test {
                name: "not multipart at all",
                content_type: TYPE,
                body: b"csrf_token=tok",
            },
            Test {
                name: "another boundary",
                content_type: TYPE,
                body: b"--Other\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\ntok\r\n--Other--\r\n",
            },
            Test {
                name: "a part without headers' end",
                content_type: TYPE,
                body: b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\ntok\r\n--XyZ--\r\n",
            },
            Test {
                name: "no closing boundary after the token",
                content_type: TYPE,
                body: b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\ntok",
            },
            Test {
                name: "garbage after a boundary",
                content_type: TYPE,
                body: b"--XyZ\x00\x01\r\n\r\n",
            },
        ];
        for test in tests {
            let body = Full::new(Bytes::from_static(test.body));
            let (outcome, body) = read_token(test.content_type, body, "csrf_token", 1024).await;
            assert_eq!(outcome, Outcome::Malformed, "{}", test.name);
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes, test.body, "{}: handed on as sent", test.name);
        }
    }

    #[tokio::test]
    async fn a_failing_body_is_unreadable() {
        let sent = form(&[
            ("file", Some("f"), &[b'x'; 500]),
            ("csrf_token", None, b"tok"),
        ]);
        let (mut body, _) = Chunks::new(&sent, 100);
        body.fail_at = Some(2);
        let (outcome, _) = read_token(TYPE, body, "csrf_token", 1024).await;
        assert_eq!(outcome, Outcome::Unreadable);
    }

    #[tokio::test]
    async fn the_first_field_of_the_name_counts_and_its_value_may_be_any_bytes() {
        let sent = form(&[
            ("csrf_token", None, b"first"),
            ("csrf_token", None, b"second"),
        ]);
        let (body, _) = Chunks::new(&sent, 3);
        assert_eq!(read(body, 1024).await.0, Outcome::Token("first".into()));
        let sent = form(&[("csrf_token", None, &[0xff, b'a'])]);
        let (body, _) = Chunks::new(&sent, 3);
        assert_eq!(read(body, 1024).await.0, Outcome::Token("\u{fffd}a".into()));
    }

    #[test]
    fn only_multipart_form_data_is_read_as_multipart() {
        assert!(is_multipart_form("multipart/form-data; boundary=x"));
        assert!(is_multipart_form("Multipart/Form-Data ;boundary=x"));
        assert!(is_multipart_form("multipart/form-data"));
        assert!(!is_multipart_form("multipart/mixed; boundary=x"));
        assert!(!is_multipart_form("application/x-www-form-urlencoded"));
    }
}
