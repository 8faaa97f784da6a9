//! Run with: `cargo run --example hyper`
//!
//! cloakroom without axum: a plain hyper 1 server whose service is a tower
//! `service_fn` wrapped in `SessionLayer`. Serves a visit counter on
//! `HYPER_ADDR` (default `127.0.0.1:3001`).

use std::convert::Infallible;
use std::net::SocketAddr;

use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Layer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer puts the session into the request extensions.
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session layer".into(),
        ));
    };
    Ok(match count_visit(&session).await {
        Ok(visits) => text(StatusCode::OK, format!("visit number {visits}\n")),
        // Store failures fail closed.
        Err(SessionError::Store(_)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "try again later\n".into())
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into()),
    })
}

async fn count_visit(session: &Session) -> Result<u64, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(visits)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr: SocketAddr = std::env::var("HYPER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".into())
        .parse()?;
    let sessions = SessionLayer::builder(MemoryStore::new())
        .key(Key::generate()?)
        .build()?;
    let service = sessions.layer(service_fn(handle));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("hyper example listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
