//! Run with: `cargo run --example sqlite --features sqlite`
//!
//! Sessions in a SQLite file, on the application's own pool, with no
//! server to run: sessions survive a restart (set `SESSION_KEY` to keep
//! the cookies valid across it). The app opens one sqlx `SqlitePool`, in
//! WAL mode so that reads never wait for the writer and with a busy
//! timeout shorter than the layer's 3 s store timeout, hands a clone to
//! `SqliteStore`, and keeps using it for its own queries (here, counting
//! the live rows of the session table). `SqliteStore::migrate` creates the
//! table at start-up; a background task deletes expired rows. The file is
//! `DATABASE_URL` (default `sqlite://sessions.db`), created if missing.
//! Try it with `curl -c jar -b jar http://127.0.0.1:3004/`.
//!
//! Cargo features: `sqlite` (with the default `memory` and `axum`).
//! Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = { version = "0.1", features = ["sqlite"] }
//! axum = "0.8"
//! sqlx = { version = "0.8", default-features = false, features = ["runtime-tokio", "sqlite"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use std::str::FromStr as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::{store::SqliteStore, Key, Session, SessionError, SessionLayer};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

const ADDR: &str = "127.0.0.1:3004";

/// The app's state: its pool, and the session table's name for its own
/// query.
#[derive(Clone)]
struct App {
    pool: SqlitePool,
    table: String,
}

async fn count(State(app): State<App>, session: Session) -> Result<Response, SessionError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    // The app's own query, on the same pool. (A session this request
    // creates is written after the handler, when the response goes out.)
    let sql = format!(
        "SELECT count(*) FROM {} WHERE successor IS NULL AND expires_at > unixepoch()",
        app.table
    );
    let Ok(rows) = sqlx::query_scalar::<_, i64>(&sql)
        .fetch_one(&app.pool)
        .await
    else {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response());
    };
    Ok(format!("visit number {visits}; live sessions in the file: {rows}\n").into_response())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://sessions.db".into());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(2));
    // The pool the rest of the application uses too.
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await?;
    // The table `cloakroom_sessions`; `SqliteStore::builder(pool)` picks
    // another.
    let store = SqliteStore::new(pool.clone());
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
    println!("sqlite example listening on http://{ADDR} with {url}");
    axum::serve(listener, router).await?;
    Ok(())
}
