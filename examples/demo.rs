//! Run with: `cargo run --example demo`
//!
//! The demo app (its contract is the tables in docs/demo.md): a login page,
//! an account page behind login, the user's devices with a sign-out button
//! each, flash messages, and a small JSON API, on top of cloakroom sessions.
//! Any password is accepted: the demo shows sessions, not accounts (see
//! `examples/accounts.rs` for real password checks).
//!
//! Environment:
//! - `DEMO_ADDR`: listen address, default `127.0.0.1:3000`
//! - `SESSION_STORE`: `memory` (default), `redis` (`REDIS_URL`, or
//!   `REDIS_CLUSTER_URLS` for a cluster; needs `--features redis`),
//!   `postgres` (`DATABASE_URL`; needs `--features postgres`) or `sqlite`
//!   (`DATABASE_URL=sqlite://PATH`, the file created if missing; needs
//!   `--features sqlite`)
//! - `SESSION_IDLE_SECS` (default 1800), `SESSION_ABSOLUTE_SECS` (default 43200)
//! - `SESSION_KEY`: 64 hex characters; a random key (with a warning) when unset
//! - `SESSION_REAUTH_SECS` (default 300): how recent a password must be for
//!   `/account/security`
//! - `DEMO_ADMIN_TOKEN`: when set, the admin routes under `/api/admin/`
//!   exist and want it in `x-admin-token`
//! - `SESSION_REDIS_CACHE=N`: with `SESSION_STORE=redis`, the store's local
//!   cache, holding up to `N` sessions
//!
//! Cargo features: cloakroom's defaults (it uses `memory`, `axum`, `csrf`,
//! and `device-labels` to name the devices); `redis`, `postgres` or
//! `sqlite` add those stores. To build this file in a project of your own,
//! copy it to `src/main.rs` with these Cargo.toml lines (the three
//! features are this file's own, and switch cloakroom's on):
//!
//! ```toml
//! [dependencies]
//! cloakroom = "0.1"
//! axum = { version = "0.8", features = ["multipart"] }
//! cookie = "0.18"
//! html-escape = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! time = { version = "0.3", features = ["formatting"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! tokio-stream = "0.1"
//! tracing = "0.1"
//! tracing-subscriber = { version = "0.3", features = ["env-filter"] }
//! sqlx = { version = "0.8", default-features = false, features = ["runtime-tokio"], optional = true }
//!
//! [features]
//! redis = ["cloakroom/redis"]
//! postgres = ["cloakroom/postgres", "dep:sqlx", "sqlx/postgres"]
//! sqlite = ["cloakroom/sqlite", "dep:sqlx", "sqlx/sqlite"]
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
#[cfg(feature = "postgres")]
use cloakroom::store::PostgresStore;
#[cfg(feature = "sqlite")]
use cloakroom::store::SqliteStore;
use cloakroom::{
    csrf::CsrfLayer,
    csrf::CsrfToken,
    device::ClientIp,
    device::SessionHandle,
    login::safe_redirect_path,
    login::CurrentUser,
    login::LoadUser,
    login::LoggedIn,
    login::Reauthenticated,
    store::time::{format_description::well_known::Rfc3339, OffsetDateTime},
    store::SessionInfo,
    Flash, FlashLevel, Key, MemoryStore, Session, SessionAdmin, SessionError, SessionLayer,
    SessionLayerBuilder,
};
#[cfg(feature = "redis")]
use cloakroom::{store::RedisConnection, store::RedisStore};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::StreamExt as _;

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
    let reauth = Duration::from_secs(env_secs("SESSION_REAUTH_SECS", 300)?);
    let admin_token = std::env::var("DEMO_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
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
        "sqlite" => sqlite_store().await?,
        other => {
            return Err(format!(
                "SESSION_STORE={other}: expected memory, redis, postgres or sqlite"
            )
            .into())
        }
    };
    let sessions = builder
        .key(key)
        .idle_timeout(idle)
        .absolute_timeout(absolute)
        .reauthentication_window(reauth)
        // Each session records the address it logged in from, as the TCP
        // peer: the demo runs behind no proxy.
        .client_ip(ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>())
        .build()?;

    // CSRF checks run inside the session layer. The admin routes are for
    // operators' tools, which carry a token instead of a cookie.
    let csrf = CsrfLayer::builder().exempt_prefix("/api/admin/").build()?;
    let admin = admin_token.map(|token| AdminToken(Arc::from(token), sessions.admin()));
    let app = app(Users::default(), admin).layer(sessions.with_csrf(csrf));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("demo listening on http://{addr} with the {store} store");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// `REDIS_URL` names one server (default `redis://127.0.0.1:6379/`);
/// `REDIS_CLUSTER_URLS` (comma-separated) a Redis Cluster instead.
#[cfg(feature = "redis")]
async fn redis_store() -> Result<SessionLayerBuilder, BoxError> {
    let connection = match std::env::var("REDIS_CLUSTER_URLS") {
        Ok(urls) => RedisConnection::connect_cluster(urls.split(',').map(str::trim)).await?,
        Err(_) => {
            let url = env_or("REDIS_URL", "redis://127.0.0.1:6379/");
            RedisConnection::connect(&url).await?
        }
    };
    let mut store = RedisStore::builder(connection).key_prefix("cloakroom-demo:");
    if let Ok(capacity) = std::env::var("SESSION_REDIS_CACHE") {
        let capacity = capacity
            .parse()
            .map_err(|e| format!("SESSION_REDIS_CACHE={capacity:?}: {e}"))?;
        store = store.local_cache(capacity);
    }
    let store = store.build()?;
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
    let store = PostgresStore::new(pool);
    store.migrate().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        format!(
            "creating the session table: {e}: {}",
            cause.unwrap_or_default()
        )
    })?;
    Ok(SessionLayer::builder(store))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_store() -> Result<SessionLayerBuilder, BoxError> {
    Err(not_built("sqlite"))
}

/// `DATABASE_URL=sqlite://PATH`: a SQLite file, created if missing, so
/// sessions survive a restart with no server to run.
#[cfg(feature = "sqlite")]
async fn sqlite_store() -> Result<SessionLayerBuilder, BoxError> {
    use std::str::FromStr as _;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "SESSION_STORE=sqlite needs DATABASE_URL (sqlite://sessions.db)")?;
    // As the store's docs advise: WAL, so reads never wait for the writer,
    // and a busy timeout shorter than the layer's store timeout (3 s), so
    // a database locked by someone else is a quick 503.
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|e| format!("DATABASE_URL: {e}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(2));
    // An app would share this pool with its own queries.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let store = SqliteStore::new(pool);
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

fn app(users: Users, admin: Option<AdminToken>) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/visit", get(visit))
        .route("/password", post(change_password))
        .route("/account/security", get(security))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/account", get(account))
        .route("/sessions/{handle}/sign-out", post(sign_out_device))
        .route("/api/csrf", get(csrf))
        .route("/api/me", get(me))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{handle}", delete(end_device))
        .route("/upload", post(upload))
        .route("/api/counter", post(counter))
        .route("/api/notes/{key}", get(get_note).put(put_note))
        .route("/api/stream", get(stream));
    if let Some(admin) = admin {
        router = router
            .route("/api/admin/users/{user}/credential", post(admin_reset))
            .route("/api/admin/users/{user}", delete(admin_delete))
            .layer(axum::Extension(admin));
    }
    router.with_state(users)
}

/// The demo's user table: each user's credential (think of it as the
/// password hash). A user the table does not hold has the credential of a
/// first login, `initial:NAME`, so sessions survive a restart of the demo;
/// `/password` and the admin reset give a user a fresh random one, and a
/// deleted user stays deleted (a later login under the name is a new
/// account with a fresh credential). It lives in this process, so the
/// admin routes know the users who logged in since it started: a real app
/// keeps users in its database.
#[derive(Clone, Default)]
struct Users(Arc<Mutex<HashMap<String, Account>>>);

#[derive(Clone)]
enum Account {
    Credential(String),
    Deleted,
}

impl Users {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Account>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's credential; `None` for a deleted user.
    fn credential(&self, user: &str) -> Option<String> {
        match self.table().get(user) {
            None => Some(initial_credential(user)),
            Some(Account::Credential(credential)) => Some(credential.clone()),
            Some(Account::Deleted) => None,
        }
    }

    /// The credential a login binds to: a deleted user's name signs up
    /// again, as a new account.
    fn credential_of(&self, user: &str) -> String {
        let mut table = self.table();
        match table.get(user) {
            None => {
                let credential = initial_credential(user);
                table.insert(user.to_owned(), Account::Credential(credential.clone()));
                credential
            }
            Some(Account::Credential(credential)) => credential.clone(),
            Some(Account::Deleted) => {
                let credential = fresh_credential();
                table.insert(user.to_owned(), Account::Credential(credential.clone()));
                credential
            }
        }
    }

    /// Gives a user this process knows (one who logged in here and was
    /// not deleted) a fresh credential; `false` for anyone else.
    fn renew(&self, user: &str, credential: String) -> bool {
        match self.table().get_mut(user) {
            Some(Account::Credential(current)) => {
                *current = credential;
                true
            }
            _ => false,
        }
    }
}

fn initial_credential(user: &str) -> String {
    format!("initial:{user}")
}

/// A new credential: what a new password hash would be.
fn fresh_credential() -> String {
    cloakroom::id::SessionId::generate()
        .map(|id| id.store_key().to_hex())
        .unwrap_or_default()
}

/// A user of the table, as [`CurrentUser`] loads it: sessions are bound to
/// the credential, so a changed or deleted one ends them.
#[derive(Clone)]
struct DemoUser {
    name: String,
    credential: String,
}

impl LoadUser<Users> for DemoUser {
    type Rejection = std::convert::Infallible;

    async fn load_user(user_id: &str, users: &Users) -> Result<Option<Self>, Self::Rejection> {
        Ok(users.credential(user_id).map(|credential| DemoUser {
            name: user_id.to_owned(),
            credential,
        }))
    }

    fn credential(&self) -> &[u8] {
        self.credential.as_bytes()
    }
}

/// The admin routes' token, and the handle they end sessions with.
#[derive(Clone)]
struct AdminToken(Arc<str>, SessionAdmin);

/// Whether the request carries the admin token.
fn admin(headers: &HeaderMap, token: &AdminToken) -> bool {
    headers
        .get("x-admin-token")
        .is_some_and(|given| given.as_bytes() == token.0.as_bytes())
}

/// The look of a small settings page.
const STYLE: &str = "\
body{font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}\
main{max-width:44rem;margin:2rem auto;padding:0 1rem}\
header{display:flex;justify-content:space-between;align-items:baseline}\
nav a{margin-left:1rem}\
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}\
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:0}\
label{display:block;margin:.5rem 0}\
input[type=text],input[type=password]{display:block;width:100%;max-width:20rem;padding:.4rem;border:1px solid #d0d7de;border-radius:6px}\
button{padding:.35rem .9rem;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;cursor:pointer}\
button.primary{background:#1f883d;border-color:#1f883d;color:#fff}\
button.danger{color:#cf222e}\
.flash{padding:.6rem 1rem;border-radius:6px;background:#ddf4ff;border:1px solid #54aeff}\
.flash[data-level=success]{background:#dafbe1;border-color:#4ac26b}\
.flash[data-level=warning],.flash[data-level=error]{background:#fff8c5;border-color:#d4a72c}\
ul.devices{list-style:none;padding:0;margin:0}\
ul.devices li{display:flex;justify-content:space-between;align-items:center;padding:.6rem 0;border-top:1px solid #d8dee4}\
ul.devices li:first-child{border-top:0}\
.muted{color:#59636e;font-size:.9rem}\
.badge{font-size:.8rem;border:1px solid #1f883d;color:#1a7f37;border-radius:1rem;padding:0 .5rem}\
.actions{display:flex;gap:.5rem}";

/// The message a logout leaves for the next page. Every other message
/// waits in the session (`Session::flash`, `Session::take_flashes`), but a
/// logout's answer expires the session cookie and leaves the browser with
/// none (the demo's contract): a `Session::flash` after the logout would
/// start a new session and set a new cookie. So this one waits in a cookie
/// of its own for a minute, holding a code rather than text.
const FLASH_COOKIE: &str = "demo_flash";

/// The hidden form field every form of the demo carries.
fn csrf_field(token: &CsrfToken) -> String {
    format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">")
}

fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_safe(text)
}

/// A whole page: the messages waiting for it (flashes in the session, or
/// the logout message in its cookie), then `body`.
struct Page {
    title: &'static str,
    flashes: Vec<Flash>,
    /// Whether the logout message's cookie must be removed.
    clear_flash_cookie: bool,
    body: String,
}

impl Page {
    async fn new(
        title: &'static str,
        session: &Session,
        headers: &HeaderMap,
    ) -> Result<Self, SessionError> {
        let mut flashes = session.take_flashes().await?;
        let logout_message = logout_message(headers);
        if let Some(message) = logout_message {
            flashes.insert(
                0,
                Flash {
                    level: FlashLevel::Info,
                    message: message.to_owned(),
                },
            );
        }
        Ok(Self {
            title,
            flashes,
            clear_flash_cookie: logout_message.is_some(),
            body: String::new(),
        })
    }

    fn into_response(self) -> Response {
        let mut page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{} · cloakroom demo</title><style>{STYLE}</style></head><body><main>\n\
             <header><h1>cloakroom demo</h1><nav><a href=\"/\">Home</a>\
             <a href=\"/account\">Account</a></nav></header>\n",
            self.title
        );
        for flash in &self.flashes {
            let _ = writeln!(
                page,
                "<p class=\"flash\" data-level=\"{}\" role=\"status\">{}</p>",
                flash.level.as_str(),
                escape(&flash.message)
            );
        }
        page.push_str(&self.body);
        page.push_str("</main></body></html>\n");
        let mut response = Html(page).into_response();
        if self.clear_flash_cookie {
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("demo_flash=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
            );
        }
        response
    }
}

/// The logout message named by the request's flash cookie, if any. The
/// cookie holds a code, never text, so it cannot inject anything.
fn logout_message(headers: &HeaderMap) -> Option<&'static str> {
    let code = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| cookie::Cookie::split_parse(value).flatten())
        .find(|cookie| cookie.name() == FLASH_COOKIE)?;
    match code.value() {
        "signed-out" => Some("You have signed out."),
        "signed-out-everywhere" => Some("You have signed out on every device."),
        _ => None,
    }
}

/// A `303` to `/` that leaves the logout message `code` for the next page.
fn redirect_with_logout_message(code: &'static str) -> Response {
    let mut response = Redirect::to("/").into_response();
    let cookie = format!("{FLASH_COOKIE}={code}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The counter, shown on every page, with a button that counts through the
/// JSON API as a page's script would: a fresh token from `/api/csrf` for
/// each write (a visitor's first write starts a session, which the
/// anonymous token does not cover).
fn counter_section(counter: u64) -> String {
    format!(
        "<section><h2>Counter</h2><p>This browser has counted to \
         <strong id=\"counter\">{counter}</strong>. \
         <button type=\"button\" id=\"count\">Count</button></p>\
         <p class=\"muted\">Kept in the session, logged in or not.</p>\
         <script>\
         document.getElementById('count').addEventListener('click', async () => {{\
         const {{ token }} = await (await fetch('/api/csrf')).json();\
         const reply = await fetch('/api/counter', {{ method: 'POST', headers: {{ 'x-csrf-token': token }} }});\
         if (reply.ok) document.getElementById('counter').textContent = (await reply.json()).counter;\
         }});\
         </script></section>\n"
    )
}

/// The sign-in form; `next` (a path on this site, or empty) rides along
/// in a hidden field.
fn login_form(token: &CsrfToken, next: Option<&str>) -> String {
    let next = format!(
        "<input type=\"hidden\" name=\"next\" value=\"{}\">",
        html_escape::encode_double_quoted_attribute(next.unwrap_or_default())
    );
    format!(
        "<section><h2>Sign in</h2>\
         <form method=\"post\" action=\"/login\">\n{}{next}\n\
         <label>Name <input type=\"text\" name=\"user\" maxlength=\"64\" required autofocus \
         autocomplete=\"username\"></label>\n\
         <label>Password <input type=\"password\" name=\"password\" \
         autocomplete=\"current-password\"></label>\n\
         <label><input type=\"checkbox\" name=\"remember\" value=\"on\"> Remember me on this \
         device</label>\n\
         <button type=\"submit\" class=\"primary\">Sign in</button>\n</form>\
         <p class=\"muted\">A demo: any password is accepted.</p></section>\n",
        csrf_field(token)
    )
}

/// How long ago `then` was, in words.
fn ago(now: OffsetDateTime, then: OffsetDateTime) -> String {
    let seconds = (now - then).whole_seconds().max(0);
    match seconds {
        0..=59 => "just now".to_owned(),
        60..=119 => "1 minute ago".to_owned(),
        120..=3599 => format!("{} minutes ago", seconds / 60),
        3600..=7199 => "1 hour ago".to_owned(),
        7200..=86_399 => format!("{} hours ago", seconds / 3600),
        _ => rfc3339(then),
    }
}

fn device_label(info: &SessionInfo) -> String {
    info.device
        .label()
        .unwrap_or_else(|| "Unknown device".to_owned())
}

/// The user's sessions, newest activity first, each with a sign-out
/// button but this one.
fn devices_section(listed: &[SessionInfo], token: &CsrfToken, back: &str) -> String {
    let now = OffsetDateTime::now_utc();
    let mut section = format!(
        "<section><h2>Your devices ({})</h2><ul class=\"devices\">\n",
        listed.len()
    );
    for info in listed {
        let from = info
            .device
            .ip
            .map(|ip| format!(" · from {ip}"))
            .unwrap_or_default();
        let action = if info.current {
            "<span class=\"badge\">this browser</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/sessions/{}/sign-out\">{}\
                 <input type=\"hidden\" name=\"next\" value=\"{back}\">\
                 <button type=\"submit\" class=\"danger\">Sign out</button></form>",
                info.handle(),
                csrf_field(token)
            )
        };
        let _ = writeln!(
            section,
            "<li><div><strong>{}</strong><br><span class=\"muted\">\
             active <time datetime=\"{}\">{}</time> · signed in {}{from}{}</span></div>{action}</li>",
            escape(&device_label(info)),
            rfc3339(info.last_seen),
            ago(now, info.last_seen),
            ago(now, info.created_at),
            if info.persistent { " · remembered" } else { "" },
        );
    }
    section.push_str("</ul></section>\n");
    section
}

/// The logged-in part of a page: who, their devices, the two logouts.
async fn signed_in_sections(
    user: &str,
    session: &Session,
    token: &CsrfToken,
    back: &str,
) -> Result<String, SessionError> {
    let listed = session.list_sessions().await?;
    let mut body = format!(
        "<section><h2>Signed in</h2><p>Signed in as <strong id=\"user\">{}</strong>.</p>\
         <div class=\"actions\">\
         <form method=\"post\" action=\"/logout\">{}<button type=\"submit\">Sign out</button></form>\
         <form method=\"post\" action=\"/logout-everywhere\">{}\
         <button type=\"submit\" class=\"danger\">Sign out everywhere</button></form>\
         </div></section>\n",
        escape(user),
        csrf_field(token),
        csrf_field(token)
    );
    body.push_str(&devices_section(&listed, token, back));
    Ok(body)
}

async fn index(
    session: Session,
    token: CsrfToken,
    headers: HeaderMap,
) -> Result<Response, SessionError> {
    let mut page = Page::new("Home", &session, &headers).await?;
    match session.user_id().await? {
        None => page.body.push_str(&login_form(&token, None)),
        Some(user) => {
            let sections = signed_in_sections(&user, &session, &token, "/").await?;
            page.body.push_str(&sections);
        }
    }
    let counter = session.get::<u64>("counter").await?.unwrap_or(0);
    page.body.push_str(&counter_section(counter));
    Ok(page.into_response())
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    session: Session,
    token: CsrfToken,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Result<Response, SessionError> {
    let mut page = Page::new("Sign in", &session, &headers).await?;
    if let Some(user) = session.user_id().await? {
        let _ = writeln!(
            page.body,
            "<p>You are signed in as <strong id=\"user\">{}</strong>; signing in again \
             switches the user.</p>",
            escape(&user)
        );
    }
    // Only a path on this site is carried on; anything else is dropped.
    let next = query.next.as_deref().and_then(safe_redirect_path);
    page.body.push_str(&login_form(&token, next));
    Ok(page.into_response())
}

/// The form also carries `csrf_token`, which `CsrfLayer` checked before
/// this handler runs (serde ignores it here).
#[derive(Deserialize)]
struct LoginForm {
    user: String,
    /// Any password is accepted: this demo has no accounts.
    #[serde(default)]
    #[allow(dead_code)]
    password: String,
    remember: Option<String>,
    next: Option<String>,
}

async fn login(
    State(users): State<Users>,
    session: Session,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, SessionError> {
    let Ok(Form(form)) = form else {
        return Ok(bad_request("expected a form with a `user` field"));
    };
    let chars = form.user.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Ok(bad_request("the name must be 1 to 64 characters"));
    }
    if matches!(form.remember.as_deref(), Some("on" | "true" | "1")) {
        // Before the login, which keeps it.
        session.remember_me().await?;
    }
    // A fresh ID, carrying over only the visitor's counter: the anonymous
    // session may have been planted by someone else, so its other keys
    // (notes, say) do not follow the user into their account.
    session
        .login_keeping(form.user.as_str(), &["counter"])
        .await?;
    // Bound to the credential this login saw: a password change or an
    // operator's reset ends the session. And a password just entered, for
    // `/account/security`.
    session
        .bind_credential(users.credential_of(&form.user))
        .await?;
    session.password_confirmed().await?;
    session
        .flash(FlashLevel::Success, format!("Signed in as {}.", form.user))
        .await?;
    // Only to a path on this site: a link to the login page must not be
    // able to send the user on to another one.
    let next = form
        .next
        .as_deref()
        .and_then(safe_redirect_path)
        .unwrap_or("/");
    Ok(Redirect::to(next).into_response())
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn logout(session: Session) -> Result<Response, SessionError> {
    session.invalidate().await?;
    Ok(redirect_with_logout_message("signed-out"))
}

async fn logout_everywhere(session: Session) -> Result<Response, SessionError> {
    session.logout_everywhere().await?;
    Ok(redirect_with_logout_message("signed-out-everywhere"))
}

/// Behind login: anonymous visitors are sent to `/login?next=%2Faccount`.
/// It loads the user, so a session whose credential changed ends here.
async fn account(
    CurrentUser(DemoUser { name: user, .. }): CurrentUser<DemoUser>,
    session: Session,
    token: CsrfToken,
    headers: HeaderMap,
) -> Result<Response, SessionError> {
    let mut page = Page::new("Account", &session, &headers).await?;
    let sections = signed_in_sections(&user, &session, &token, "/account").await?;
    page.body.push_str(&sections);
    let _ = write!(
        page.body,
        "<section><h2>Password</h2><form method=\"post\" action=\"/password\">{}\
         <input type=\"password\" name=\"password\" placeholder=\"new password\" required> \
         <button>Change</button></form><p><a href=\"/account/security\">Security settings</a> \
         (asks for your password again after a while)</p></section>",
        csrf_field(&token)
    );
    let counter = session.get::<u64>("counter").await?.unwrap_or(0);
    page.body.push_str(&counter_section(counter));
    Ok(page.into_response())
}

/// Ends one of the user's own sessions and leaves a message naming it.
/// `Ok(false)`: not one of theirs (or no such handle).
async fn end_own_session(session: &Session, handle: &str) -> Result<bool, SessionError> {
    let Ok(handle) = handle.parse::<SessionHandle>() else {
        return Ok(false);
    };
    let label = session
        .list_sessions()
        .await?
        .iter()
        .find(|info| info.handle() == handle)
        .map(device_label);
    match session.logout_device(&handle).await {
        Ok(()) => {}
        Err(SessionError::UnknownSession) => return Ok(false),
        Err(error) => return Err(error),
    }
    let message = match label {
        Some(label) => format!("Signed out {label}."),
        None => "Signed out that device.".to_owned(),
    };
    session.flash(FlashLevel::Success, message).await?;
    Ok(true)
}

#[derive(Deserialize)]
struct SignOutForm {
    next: Option<String>,
}

/// The devices list's sign-out button.
async fn sign_out_device(
    LoggedIn(_): LoggedIn,
    session: Session,
    Path(handle): Path<String>,
    Form(form): Form<SignOutForm>,
) -> Result<Response, SessionError> {
    if !end_own_session(&session, &handle).await? {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    let back = form
        .next
        .as_deref()
        .and_then(safe_redirect_path)
        .unwrap_or("/");
    Ok(Redirect::to(back).into_response())
}

/// `DELETE /api/sessions/{handle}`: `204`, `404` for a handle that is not
/// one of the user's sessions, `401` when anonymous.
async fn end_device(
    session: Session,
    Path(handle): Path<String>,
) -> Result<Response, SessionError> {
    if session.user_id().await?.is_none() {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    Ok(if end_own_session(&session, &handle).await? {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    })
}

/// For scripts: the token to send as `x-csrf-token` with `/api` writes.
async fn csrf(token: CsrfToken) -> Json<serde_json::Value> {
    Json(json!({ "token": token.masked() }))
}

/// Loads the user (`CurrentUser`), so a session whose credential changed
/// since its login, or whose user was deleted, ends here.
async fn me(
    session: Session,
    user: Option<CurrentUser<DemoUser>>,
) -> Result<Response, SessionError> {
    let Some(CurrentUser(DemoUser { name: user, .. })) = user else {
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
        .iter()
        .map(|s| {
            json!({
                "created": rfc3339(s.created_at),
                "last_seen": rfc3339(s.last_seen),
                "current": s.current,
                "handle": s.handle().to_string(),
                "label": device_label(s),
            })
        })
        .collect();
    Ok(Json(listed).into_response())
}

/// A file upload, as a form without JavaScript sends it:
/// `multipart/form-data` with `csrf_token` first and then `file`.
/// `CsrfLayer` read the form up to its token field and checked it before
/// this handler runs; the handler gets the whole form and counts the
/// file's bytes as they stream in, holding none of them.
async fn upload(mut form: Multipart) -> Response {
    let mut size = None;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return (error.status(), error.body_text()).into_response(),
        };
        if field.name() != Some("file") {
            continue;
        }
        let mut bytes = 0_usize;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => bytes += chunk.len(),
                Ok(None) => break,
                Err(error) => return (error.status(), error.body_text()).into_response(),
            }
        }
        size = Some(bytes);
    }
    match size {
        Some(bytes) => Json(json!({ "bytes": bytes })).into_response(),
        None => bad_request("expected a form with a `file` field"),
    }
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

/// Creates the session of an anonymous visitor (the write) and renders a
/// form whose token verifies: the token binds itself to the session when
/// it is rendered, after the write.
async fn visit(
    session: Session,
    token: CsrfToken,
    headers: HeaderMap,
) -> Result<Response, SessionError> {
    session.insert("visited", true).await?;
    let mut page = Page::new("Visit", &session, &headers).await?;
    let _ = write!(
        page.body,
        "<p>Your visit is in your session now.</p>\
         <form method=\"post\" action=\"/api/counter\">{}<button>Count</button></form>",
        csrf_field(&token)
    );
    Ok(page.into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

/// Changes the user's credential (any new password is accepted): this
/// session stays logged in, every other session of the user ends.
async fn change_password(
    State(users): State<Users>,
    CurrentUser(user): CurrentUser<DemoUser>,
    session: Session,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Result<Response, SessionError> {
    match form {
        Ok(Form(form)) if !form.password.is_empty() => {}
        _ => return Ok(bad_request("expected a form with a non-empty `password`")),
    }
    let credential = fresh_credential();
    users.renew(&user.name, credential.clone());
    let ended = session.credential_changed(credential).await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Password changed; {ended} other sessions signed out."),
        )
        .await?;
    Ok(Redirect::to("/account").into_response())
}

/// Behind login and a password entered within `SESSION_REAUTH_SECS`;
/// otherwise to the login page, which comes back here.
async fn security(
    Reauthenticated(user): Reauthenticated,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, SessionError> {
    let mut page = Page::new("Security", &session, &headers).await?;
    let _ = write!(
        page.body,
        "<p id=\"security\">Security settings of <strong>{}</strong>: you entered your \
         password a moment ago.</p>",
        escape(&user)
    );
    Ok(page.into_response())
}

/// An operator's password reset: a new credential for `user` in the table,
/// and nothing else (the sessions bound to the old one end by themselves).
async fn admin_reset(
    State(users): State<Users>,
    axum::Extension(token): axum::Extension<AdminToken>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> StatusCode {
    if !admin(&headers, &token) {
        return StatusCode::FORBIDDEN;
    }
    if !users.renew(&user, fresh_credential()) {
        return StatusCode::NOT_FOUND;
    }
    end_sessions_of(&token.1, &user).await
}

/// Ends every session of `user` at once, on every instance: a request
/// would end each (its credential changed, or its user is gone) at its
/// next load of the user, but an open stream makes no more requests.
async fn end_sessions_of(admin: &SessionAdmin, user: &str) -> StatusCode {
    match admin.logout_everywhere(user).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(error) => {
            tracing::error!(%error, "ending the sessions of a changed account");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// Deletes `user` from the table and ends their sessions (which would
/// also end at their next request, even once the name signs up again).
async fn admin_delete(
    State(users): State<Users>,
    axum::Extension(token): axum::Extension<AdminToken>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> StatusCode {
    if !admin(&headers, &token) {
        return StatusCode::FORBIDDEN;
    }
    {
        let mut table = users.table();
        match table.get_mut(&user) {
            Some(account @ Account::Credential(_)) => *account = Account::Deleted,
            _ => return StatusCode::NOT_FOUND,
        }
    }
    end_sessions_of(&token.1, &user).await
}

/// An event a second for as long as the session lives; when it ends, by
/// any means and on any instance, an `end` event and the stream closes.
async fn stream(
    session: Session,
    user: Option<CurrentUser<DemoUser>>,
) -> Result<Response, SessionError> {
    if user.is_none() {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    let watch = session.watch().await?;
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
            .map({
                let mut n = 0u64;
                move |_| {
                    n += 1;
                    Ok::<_, Infallible>(Event::default().data(format!("tick {n}")))
                }
            });
    let events = watch.until_ended(ticks, |ended| {
        Ok(Event::default().event("end").data(ended.as_str()))
    });
    Ok(Sse::new(events).into_response())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}
