//! Run with: `cargo run --example hyper`
//!
//! cloakroom without axum: a plain hyper 1 server whose service is a tower
//! `service_fn` wrapped in `SessionLayer`. The layer puts a `Session` into
//! every request's extensions; the handler takes it from there, counts the
//! browser's visits in it, and turns a `SessionError` into its status
//! (`SessionError::status`: `503` when the store fails). Nothing of axum
//! is needed: only the `memory` feature (the Cargo.toml line below turns
//! the other default features off). Try it with
//! `curl -c jar -b jar http://127.0.0.1:3005/`.
//!
//! `/stream` shows a [`SessionWatch`](cloakroom::watch::SessionWatch)
//! without axum: a body that sends a line a second for as long as the
//! session lives, then `ended: session ended` and closes. Hold one open
//! with `curl -N -b jar http://127.0.0.1:3005/stream` and end the session
//! from another terminal with `curl -b jar -X POST
//! http://127.0.0.1:3005/logout`.
//!
//! Cargo features: `memory`. Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = { version = "0.1", default-features = false, features = ["memory"] }
//! http = "1"
//! http-body-util = "0.1"
//! hyper = { version = "1", features = ["server", "http1"] }
//! hyper-util = { version = "0.1", features = ["tokio", "service"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! tokio-stream = { version = "0.1", features = ["time"] }
//! tower = { version = "0.5", features = ["util"] }
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_stream::wrappers::IntervalStream;
use tokio_stream::{Stream, StreamExt as _};
use tower::{service_fn, Layer as _};

const ADDR: &str = "127.0.0.1:3005";

/// This server's response body: a whole text, or lines as they come.
/// (`SessionLayer` makes its own short answers, a `503`, from a
/// `&'static str`, so the body type must convert from one.)
enum Body {
    Text(Full<Bytes>),
    Lines(Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>),
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::Text(Full::from(text))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Text(text) => Pin::new(text).poll_frame(cx),
            Body::Lines(lines) => lines.as_mut().poll_next(cx),
        }
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Always there behind `SessionLayer`.
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session layer\n",
        ));
    };
    let answer = match (request.method(), request.uri().path()) {
        (&Method::GET, "/stream") => stream(&session).await,
        (&Method::POST, "/logout") => session
            .invalidate()
            .await
            .map(|()| text(StatusCode::OK, "signed out\n")),
        _ => count_visit(&session)
            .await
            .map(|visits| text(StatusCode::OK, &format!("visit number {visits}\n"))),
    };
    // Store failures fail closed, with no detail for the client.
    Ok(answer.unwrap_or_else(|error| text(error.status(), "the session is unavailable\n")))
}

/// A line a second while the session lives, then the reason it ended.
async fn stream(session: &Session) -> Result<Response<Body>, SessionError> {
    if session.keys().await?.is_empty() {
        return Ok(text(StatusCode::NOT_FOUND, "visit / first\n"));
    }
    let watch = session.watch().await?;
    let lines = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
        .map(|_| Ok(Frame::data(Bytes::from_static(b"still here\n"))));
    let lines = watch.until_ended(lines, |ended| {
        Ok(Frame::data(Bytes::from(format!("ended: {ended}\n"))))
    });
    Ok(Response::new(Body::Lines(Box::pin(lines))))
}

async fn count_visit(session: &Session) -> Result<u64, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(visits)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(Full::new(Bytes::from(body.to_owned()))));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(MemoryStore::new()).key(key).build()?;
    // The layer wraps any tower service; clones share the store.
    let service = sessions.layer(service_fn(handle));

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("hyper example listening on http://{ADDR}");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
    }
}
