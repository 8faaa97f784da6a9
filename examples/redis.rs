//! Run with: `cargo run --example redis --features redis`
//!
//! Sessions in Redis with a local cache: a visit counter behind a
//! `RedisStore` built with `RedisStore::builder(connection).local_cache(..)`, which
//! keeps recently read sessions in this process and serves repeat reads
//! without a round trip. Every write by any instance of the app on the
//! same Redis and key prefix announces the session on a channel, and every
//! cached instance evicts it, so a logout on one instance holds on all of
//! them; a cache that loses its subscription serves nothing until it is
//! back. The page shows how many sessions this process has cached. Needs
//! Redis 7 or later at `REDIS_URL` (default `redis://127.0.0.1:6379/`), or
//! a Redis Cluster given as `REDIS_CLUSTER_URLS` (comma-separated node
//! URLs). Try it with `curl -c jar -b jar http://127.0.0.1:3002/`.
//!
//! Cargo features: `redis` (with the default `memory` and `axum`).
//! Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = { version = "0.1", features = ["redis"] }
//! axum = "0.8"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use cloakroom::{
    store::RedisConnection, store::RedisStore, Key, Session, SessionError, SessionLayer,
};

const ADDR: &str = "127.0.0.1:3002";

async fn count(State(store): State<RedisStore>, session: Session) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    let cached = store.cached_sessions().unwrap_or(0);
    Ok(format!(
        "visit number {visits}; sessions in this process's cache: {cached}\n"
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Short timeouts (1 s to connect, 2 s per command) and reconnection
    // built in. The local cache subscribes through these URLs.
    let connection = match std::env::var("REDIS_CLUSTER_URLS") {
        // Any subset of the cluster's nodes; the client learns the rest.
        Ok(urls) => RedisConnection::connect_cluster(urls.split(',').map(str::trim)).await?,
        Err(_) => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
            RedisConnection::connect(&url).await?
        }
    };
    // One prefix per application sharing the Redis (no `{` or `}`).
    let store = RedisStore::builder(connection)
        .key_prefix("example:session:")
        // Up to 10,000 sessions in this process...
        .local_cache(10_000)
        // ...each served from it for at most 30 s without a fresh read: a
        // safety net for changes made around cloakroom (`redis-cli DEL`).
        .local_cache_max_age(Duration::from_secs(30))
        .build()?;

    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    // Clones of the store share its connection and cache.
    let sessions = SessionLayer::builder(store.clone()).key(key).build()?;
    let app = Router::new()
        .route("/", get(count))
        .with_state(store)
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("redis example listening on http://{ADDR}");
    axum::serve(listener, app).await?;
    Ok(())
}
