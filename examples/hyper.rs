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
//! Cargo features: `memory`. Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = { version = "0.1", default-features = false, features = ["memory"] }
//! http = "1"
//! http-body-util = "0.1"
//! hyper = { version = "1", features = ["server", "http1"] }
//! hyper-util = { version = "0.1", features = ["tokio", "service"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! tower = { version = "0.5", features = ["util"] }
//! ```

use std::convert::Infallible;

use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Layer as _};

const ADDR: &str = "127.0.0.1:3005";

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Always there behind `SessionLayer`.
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session layer\n",
        ));
    };
    Ok(match count_visit(&session).await {
        Ok(visits) => text(StatusCode::OK, &format!("visit number {visits}\n")),
        // Store failures fail closed, with no detail for the client.
        Err(error) => text(error.status(), "the session is unavailable\n"),
    })
}

async fn count_visit(session: &Session) -> Result<u64, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(visits)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
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
