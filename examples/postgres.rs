//! Run with: `cargo run --example postgres --features postgres`
//!
//! Sessions in PostgreSQL, on the application's own pool: the app opens
//! one sqlx `PgPool`, hands a clone to `PostgresStore`, and keeps using it
//! for its own queries (here, counting the live rows of the session
//! table). `PostgresStore::migrate` creates the table and its indexes at
//! start-up; it is idempotent and safe from several processes at once
//! (`migration_sql` gives the same SQL for a migration tool of your own).
//! A background task deletes expired rows every five minutes. A database
//! outage answers `503`: the short acquire timeout makes it a quick one.
//! The database is `DATABASE_URL` (default `postgres://localhost/postgres`,
//! as the current user). Try it with
//! `curl -c jar -b jar http://127.0.0.1:3003/`.
//!
//! Cargo features: `postgres` (with the default `memory` and `axum`).
//! Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = { version = "0.1", features = ["postgres"] }
//! axum = "0.8"
//! sqlx = { version = "0.8", default-features = false, features = ["runtime-tokio", "postgres"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::{store::PostgresStore, Key, Session, SessionError, SessionLayer};
use sqlx::postgres::{PgPool, PgPoolOptions};

const ADDR: &str = "127.0.0.1:3003";

/// The app's state: its pool, and the session table's name for its own
/// query.
#[derive(Clone)]
struct App {
    pool: PgPool,
    table: String,
}

async fn count(State(app): State<App>, session: Session) -> Result<Response, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    // The app's own query, on the same pool. (A session this request
    // creates is written after the handler, when the response goes out.)
    let sql = format!(
        "SELECT count(*) FROM {} WHERE successor IS NULL AND expires_at > now()",
        app.table
    );
    let Ok(rows) = sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(&app.pool)
        .await
    else {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response());
    };
    Ok(format!("visit number {visits}; live sessions in the table: {rows}\n").into_response())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://localhost/postgres".into());
    // The pool the rest of the application uses too.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // `public.cloakroom_sessions`; `PostgresStore::builder(pool)` picks
    // another schema or table.
    let store = PostgresStore::new(pool.clone());
    store.migrate().await?;
    let app = App {
        table: store.quoted_table().to_owned(),
        pool,
    };

    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(store).key(key).build()?;
    // Expired rows stay until swept (they never load as sessions).
    let _sweeper = sessions.admin().spawn_sweeper(Duration::from_secs(300));

    let router = Router::new()
        .route("/", get(count))
        .with_state(app)
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("postgres example listening on http://{ADDR}");
    axum::serve(listener, router).await?;
    Ok(())
}
