//! Run with: `cargo run --example counter`
//!
//! The smallest cloakroom app: an axum router behind a `SessionLayer` on
//! the in-process `MemoryStore`, counting each browser's visits in its
//! session. The first visit creates the session and sets the cookie
//! (`__Host-id`: `Secure`, which browsers and curl accept on
//! `http://127.0.0.1`); every later visit reads and writes the same
//! session. `POST /reset` removes the count and `POST /forget` ends the
//! session. Try it with a cookie jar:
//! `curl -c jar -b jar http://127.0.0.1:3006/` (twice).
//!
//! Cargo features: cloakroom's defaults (it uses `memory` and `axum`).
//! Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = "0.1"
//! axum = "0.8"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use axum::routing::{get, post};
use axum::Router;
use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};

const ADDR: &str = "127.0.0.1:3006";

/// A `SessionError` is a response: `503` when the store fails, `400` for
/// data no store can hold, `500` for bugs. Handlers just use `?`.
async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(format!("visit number {visits}\n"))
}

/// Drops the count, keeping the session (and its cookie).
async fn reset(session: Session) -> Result<&'static str, SessionError> {
    session.remove("visits").await?;
    Ok("the count starts again\n")
}

/// Ends the session: the record is deleted now, the cookie expired.
async fn forget(session: Session) -> Result<&'static str, SessionError> {
    session.invalidate().await?;
    Ok("forgotten\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The key signs the cookies: load it from configuration (64 hex
    // characters) so sessions survive a restart. A random one will do here.
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(MemoryStore::new()).key(key).build()?;

    let app = Router::new()
        .route("/", get(count))
        .route("/reset", post(reset))
        .route("/forget", post(forget))
        .layer(sessions);

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("counter listening on http://{ADDR}");
    axum::serve(listener, app).await?;
    Ok(())
}
