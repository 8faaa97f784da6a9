//! Run with: `DATABASE_URL=postgres://user@localhost/db cargo run --example postgres --features postgres`
//!
//! A visit counter whose sessions live in PostgreSQL, on the application's
//! own pool, with a background task that sweeps expired rows. Serves on
//! `127.0.0.1:3003`.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use cloakroom::{store::PostgresStore, Key, Session, SessionError, SessionLayer};
use sqlx::postgres::PgPoolOptions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(format!("visit number {visits}\n"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The pool the rest of the application would use too.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect(&std::env::var("DATABASE_URL")?)
        .await?;
    let store = PostgresStore::new(pool);
    store.migrate().await?;
    let sessions = SessionLayer::builder(store).key(Key::generate()?).build()?;
    let _sweeper = sessions.admin().spawn_sweeper(Duration::from_secs(300));
    let app = Router::new().route("/", get(count)).layer(sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3003").await?;
    println!("listening on http://127.0.0.1:3003");
    axum::serve(listener, app).await?;
    Ok(())
}
