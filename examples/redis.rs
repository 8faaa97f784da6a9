//! Run with: `REDIS_URL=redis://127.0.0.1:6379/ cargo run --example redis --features redis`
//!
//! A visit counter whose sessions live in Redis. Set `REDIS_CLUSTER_URLS`
//! (comma-separated node URLs) instead of `REDIS_URL` for a Redis Cluster.
//! Serves on `127.0.0.1:3002`.

use axum::routing::get;
use axum::Router;
use cloakroom::{
    store::RedisConnection, store::RedisStore, Key, Session, SessionError, SessionLayer,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(format!("visit number {visits}\n"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let connection = match std::env::var("REDIS_CLUSTER_URLS") {
        // Any subset of the cluster's nodes; the client learns the rest.
        Ok(urls) => RedisConnection::connect_cluster(urls.split(',').map(str::trim)).await?,
        Err(_) => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
            RedisConnection::connect(&url).await?
        }
    };
    // One prefix per application sharing the Redis; no `{` or `}` (hash
    // tags). The local cache serves repeat reads from memory; a change made
    // by any instance of the app evicts the session from every cache.
    let store = RedisStore::builder(connection)
        .key_prefix("example:session:")
        .local_cache(10_000)
        .build()?;
    let sessions = SessionLayer::builder(store).key(Key::generate()?).build()?;
    let app = Router::new().route("/", get(count)).layer(sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    println!("listening on http://127.0.0.1:3002");
    axum::serve(listener, app).await?;
    Ok(())
}
