//! Run with: `cargo run --example demo`
//!
//! The demo app (its contract is the README's demo table): a login page and a small JSON API on top of
//! cloakroom sessions.
//!
//! Environment:
//! - `DEMO_ADDR`: listen address, default `127.0.0.1:3000`
//! - `SESSION_STORE`: `memory` (default), `redis` (`REDIS_URL`, or
//!   `REDIS_CLUSTER_URLS` for a cluster; needs `--features redis`) or
//!   `postgres` (`DATABASE_URL`; needs `--features postgres`)
//! - `SESSION_IDLE_SECS` (default 1800), `SESSION_ABSOLUTE_SECS` (default 43200)
//! - `SESSION_KEY`: 64 hex characters; a random key (with a warning) when unset

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{
    CsrfLayer, CsrfToken, Key, MemoryStore, Session, SessionError, SessionLayer,
    SessionLayerBuilder,
};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MAX_NAME_CHARS: usize = 64;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(error) = run().await {
        eprintln!("demo: {error}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), BoxError> {
    let addr: SocketAddr = env_or("DEMO_ADDR", "127.0.0.1:3000")
        .parse()
        .map_err(|e| format!("DEMO_ADDR: {e}"))?;
    let idle = Duration::from_secs(env_secs("SESSION_IDLE_SECS", 1800)?);
    let absolute = Duration::from_secs(env_secs("SESSION_ABSOLUTE_SECS", 43_200)?);
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex).map_err(|e| format!("SESSION_KEY: {e}"))?,
        Err(_) => {
            tracing::warn!(
                "SESSION_KEY is not set: using a random key, so sessions end when the demo stops"
            );
            Key::generate()?
        }
    };

    let store = env_or("SESSION_STORE", "memory");
    let builder = match store.as_str() {
        "memory" => SessionLayer::builder(MemoryStore::new()),
        "redis" => redis_store().await?,
        "postgres" => postgres_store().await?,
        other => {
            return Err(format!("SESSION_STORE={other}: expected memory, redis or postgres").into())
        }
    };
    let sessions = builder
        .key(key)
        .idle_timeout(idle)
        .absolute_timeout(absolute)
        .build()?;

    // CSRF checks run inside the session layer.
    let app = app().layer(CsrfLayer::new()).layer(sessions);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("demo listening on http://{addr} with the {store} store");
    axum::serve(listener, app).await?;
    Ok(())
}

/// `REDIS_URL` names one server (default `redis://127.0.0.1:6379/`);
/// `REDIS_CLUSTER_URLS` (comma-separated) a Redis Cluster instead.
#[cfg(feature = "redis")]
async fn redis_store() -> Result<SessionLayerBuilder, BoxError> {
    let connection = match std::env::var("REDIS_CLUSTER_URLS") {
        Ok(urls) => {
            cloakroom::RedisConnection::connect_cluster(urls.split(',').map(str::trim)).await?
        }
        Err(_) => {
            let url = env_or("REDIS_URL", "redis://127.0.0.1:6379/");
            cloakroom::RedisConnection::connect(&url).await?
        }
    };
    let store = cloakroom::RedisStore::builder()
        .key_prefix("cloakroom-demo:")
        .build(connection)?;
    Ok(SessionLayer::builder(store))
}

#[cfg(not(feature = "redis"))]
async fn redis_store() -> Result<SessionLayerBuilder, BoxError> {
    Err(not_built("redis"))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store() -> Result<SessionLayerBuilder, BoxError> {
    Err(not_built("postgres"))
}

#[cfg(feature = "postgres")]
async fn postgres_store() -> Result<SessionLayerBuilder, BoxError> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "SESSION_STORE=postgres needs DATABASE_URL (postgres://user@host/db)")?;
    // An app would share this pool with its own queries. A short acquire
    // timeout makes an outage a quick 503 instead of a hanging request.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect(&url)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let store = cloakroom::PostgresStore::new(pool);
    store.migrate().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        format!(
            "creating the session table: {e}: {}",
            cause.unwrap_or_default()
        )
    })?;
    Ok(SessionLayer::builder(store))
}

#[allow(dead_code)]
fn not_built(store: &str) -> BoxError {
    format!(
        "SESSION_STORE={store}: this demo was built without the `{store}` feature; \
         run `cargo run --example demo --features {store}`"
    )
    .into()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_secs(name: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => Ok(text.parse().map_err(|e| format!("{name}={text:?}: {e}"))?),
    }
}

fn app() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/api/csrf", get(csrf))
        .route("/api/me", get(me))
        .route("/api/sessions", get(sessions))
        .route("/api/counter", post(counter))
        .route("/api/notes/{key}", get(get_note).put(put_note))
}

/// The hidden form field every form of the demo carries.
fn csrf_field(token: &CsrfToken) -> String {
    format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">")
}

async fn index(session: Session, token: CsrfToken) -> Result<Response, SessionError> {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cloakroom demo</title></head><body>\n<h1>cloakroom demo</h1>\n",
    );
    match session.user_id().await? {
        None => {
            let _ = write!(
                page,
                "<form method=\"post\" action=\"/login\">\n{}\n\
                 <label>Name <input name=\"user\" maxlength=\"64\" required autofocus></label>\n\
                 <button type=\"submit\">Log in</button>\n</form>\n",
                csrf_field(&token)
            );
        }
        Some(user) => {
            let listed = session.list_sessions().await?;
            let _ = write!(
                page,
                "<p>Logged in as <strong id=\"user\">{}</strong>.</p>\n\
                 <h2>Your sessions ({})</h2>\n<table>\n\
                 <tr><th>Created</th><th>Last seen</th><th></th></tr>\n",
                html_escape::encode_text(&user),
                listed.len()
            );
            for s in &listed {
                let _ = writeln!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    rfc3339(s.created_at),
                    rfc3339(s.last_seen),
                    if s.current { "this browser" } else { "" }
                );
            }
            let _ = write!(
                page,
                "</table>\n\
                 <form method=\"post\" action=\"/logout\">{}\
                 <button type=\"submit\">Log out</button></form>\n\
                 <form method=\"post\" action=\"/logout-everywhere\">{}\
                 <button type=\"submit\">Log out everywhere</button></form>\n",
                csrf_field(&token),
                csrf_field(&token)
            );
        }
    }
    page.push_str("</body></html>\n");
    Ok(Html(page).into_response())
}

/// The form also carries `csrf_token`, which `CsrfLayer` checked before
/// this handler runs (serde ignores it here).
#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

async fn login(
    session: Session,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, SessionError> {
    let Ok(Form(LoginForm { user })) = form else {
        return Ok(bad_request("expected a form with a `user` field"));
    };
    let chars = user.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Ok(bad_request("the name must be 1 to 64 characters"));
    }
    session.login(user).await?;
    Ok(Redirect::to("/").into_response())
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.invalidate().await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    session.logout_everywhere().await?;
    Ok(Redirect::to("/"))
}

/// For scripts: the token to send as `x-csrf-token` with `/api` writes.
async fn csrf(token: CsrfToken) -> Json<serde_json::Value> {
    Json(json!({ "token": token.masked() }))
}

async fn me(session: Session) -> Result<Response, SessionError> {
    let Some(user) = session.user_id().await? else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    // A count, not a listing: cheap however many sessions the user has.
    let sessions = session.count_sessions().await?;
    Ok(Json(json!({ "user": user, "sessions": sessions })).into_response())
}

async fn sessions(session: Session) -> Result<Response, SessionError> {
    if session.user_id().await?.is_none() {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    let listed: Vec<_> = session
        .list_sessions()
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "created": rfc3339(s.created_at),
                "last_seen": rfc3339(s.last_seen),
                "current": s.current,
            })
        })
        .collect();
    Ok(Json(listed).into_response())
}

async fn counter(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    let counter = session.get::<u64>("counter").await?.unwrap_or(0) + 1;
    session.insert("counter", counter).await?;
    Ok(Json(json!({ "counter": counter })))
}

/// Notes live under their own prefix so that a note called `counter` does
/// not collide with the counter.
fn note_key(key: &str) -> String {
    format!("note:{key}")
}

async fn put_note(
    session: Session,
    Path(key): Path<String>,
    body: String,
) -> Result<StatusCode, SessionError> {
    session.insert(&note_key(&key), body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_note(session: Session, Path(key): Path<String>) -> Result<Response, SessionError> {
    Ok(match session.get::<String>(&note_key(&key)).await? {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
