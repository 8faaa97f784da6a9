//! Run with: `cargo run --example accounts`
//!
//! A small accounts site on cloakroom sessions: password login (argon2)
//! with "remember me", a page only signed-in users see, a devices page that
//! lists the user's sessions and signs out any other one, a password change
//! that signs out every other device, logout, and flash messages on the
//! next page. Every form carries a CSRF token.
//!
//! Open <http://127.0.0.1:3001/> and sign in as one of the users below
//! (kept in memory; their passwords are hashed with argon2 at startup and
//! a changed password lasts until the process stops):
//!
//! | user | password |
//! | --- | --- |
//! | `alice` | `correct horse battery staple` |
//! | `bob` | `hunter2 is not a password` |
//!
//! Cargo features: cloakroom's defaults (it uses `memory`, `axum`, `csrf`,
//! and `device-labels` to name the devices); `--features redis` or
//! `--features postgres` adds that store. To build this file in a project
//! of your own, copy it to `src/main.rs` with these Cargo.toml lines (the
//! two features are this file's own, and switch cloakroom's on):
//!
//! ```toml
//! [dependencies]
//! cloakroom = "0.1"
//! argon2 = { version = "0.5", features = ["std"] }
//! axum = "0.8"
//! html-escape = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! time = { version = "0.3", features = ["formatting", "macros"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! tracing = "0.1"
//! tracing-subscriber = { version = "0.3", features = ["env-filter"] }
//! sqlx = { version = "0.8", default-features = false, features = ["runtime-tokio", "postgres"], optional = true }
//!
//! [features]
//! redis = ["cloakroom/redis"]
//! postgres = ["cloakroom/postgres", "dep:sqlx"]
//! ```
//!
//! Environment:
//! - `ACCOUNTS_ADDR`: listen address, default `127.0.0.1:3001`
//! - `SESSION_STORE`: `memory` (default), `redis` (`REDIS_URL`, default
//!   `redis://127.0.0.1:6379/`; needs `--features redis`) or `postgres`
//!   (`DATABASE_URL`; needs `--features postgres`)
//! - `SESSION_KEY`: 64 hex characters; a random key (with a warning) when
//!   unset, so sessions end when the app stops
//! - `RUST_LOG`: the log filter, default `info`
//!
//! | route | what it does |
//! | --- | --- |
//! | `GET /` | `303` to `/account` |
//! | `GET /login?next=PATH` | the login form (already signed in: `303` to `next` or `/account`) |
//! | `POST /login` | `user`, `password`, `remember`, `next`: signs in and `303`s to `next` (a path on this site) or `/account`; a wrong name or password answers `401` with the form again, the same for both |
//! | `POST /logout` | ends the session, `303` to `/login` |
//! | `GET /account` | the signed-in user; a browser without a user is sent to `/login?next=/account` |
//! | `GET /account/devices` | the user's sessions: device, last activity, this device or a sign-out button |
//! | `POST /account/devices/sign-out` | `session` = a handle from the list: ends that session (`404` for one that is not the user's) |
//! | `POST /account/devices/sign-out-others` | ends every other session of the user |
//! | `GET`/`POST /account/password` | `current_password`, `new_password`: changes the password and signs out every other device |
//!
//! The session cookie keeps its defaults (`Secure`, `__Host-` prefix) even
//! on plain http: browsers treat `http://127.0.0.1` and `http://localhost`
//! as secure, so they keep and send it. Served under another name over
//! plain http, browsers would drop it (the layer logs a warning then);
//! serve over https instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
#[cfg(feature = "postgres")]
use cloakroom::store::PostgresStore;
use cloakroom::{
    csrf::CsrfLayer, csrf::CsrfToken, device::SessionHandle, flash::Flashes,
    login::safe_redirect_path, login::CurrentUser, login::LoadUser, store::SessionInfo, Flash,
    FlashLevel, Key, MemoryStore, Session, SessionError, SessionLayer, SessionLayerBuilder,
};
#[cfg(feature = "redis")]
use cloakroom::{store::RedisConnection, store::RedisStore};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The users the app starts with: name, full name, password.
const SEED_USERS: [(&str, &str, &str); 2] = [
    ("alice", "Alice Liddell", "correct horse battery staple"),
    ("bob", "Bob Cratchit", "hunter2 is not a password"),
];

/// New passwords: at least this many characters...
const MIN_PASSWORD_CHARS: usize = 12;
/// ...and at most this many (so that nobody hashes a megabyte).
const MAX_PASSWORD_CHARS: usize = 256;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(error) = run().await {
        eprintln!("accounts: {error}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), BoxError> {
    let addr: SocketAddr = env_or("ACCOUNTS_ADDR", "127.0.0.1:3001")
        .parse()
        .map_err(|e| format!("ACCOUNTS_ADDR: {e}"))?;
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex).map_err(|e| format!("SESSION_KEY: {e}"))?,
        Err(_) => {
            tracing::warn!(
                "SESSION_KEY is not set: using a random key, so sessions end when the app stops"
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
        // Where `CurrentUser` sends a browser without a user (the default,
        // spelled out).
        .login_url("/login")
        // A user with more sessions than this has lost track of some; a
        // login beyond it ends their least recently active ones.
        .max_sessions_per_user(Some(20))
        .build()?;

    let app = App::seeded().await?;
    for (name, _, password) in SEED_USERS {
        tracing::info!("user {name:?} has the password {password:?}");
    }
    // CSRF checks run inside the session layer (the last `.layer` is the
    // outermost).
    let router = routes()
        .with_state(app)
        .layer(CsrfLayer::new())
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("accounts listening on http://{addr} with the {store} store");
    axum::serve(listener, router).await?;
    Ok(())
}

#[cfg(feature = "redis")]
async fn redis_store() -> Result<SessionLayerBuilder, BoxError> {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379/");
    let connection = RedisConnection::connect(&url).await?;
    let store = RedisStore::builder(connection)
        .key_prefix("cloakroom-accounts:")
        .build()?;
    Ok(SessionLayer::builder(store))
}

#[cfg(not(feature = "redis"))]
async fn redis_store() -> Result<SessionLayerBuilder, BoxError> {
    Err(not_built("redis"))
}

#[cfg(feature = "postgres")]
async fn postgres_store() -> Result<SessionLayerBuilder, BoxError> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "SESSION_STORE=postgres needs DATABASE_URL (postgres://user@host/db)")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect(&url)
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let store = PostgresStore::new(pool);
    store
        .migrate()
        .await
        .map_err(|e| format!("creating the session table: {e}"))?;
    Ok(SessionLayer::builder(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store() -> Result<SessionLayerBuilder, BoxError> {
    Err(not_built("postgres"))
}

#[allow(dead_code)]
fn not_built(store: &str) -> BoxError {
    format!(
        "SESSION_STORE={store}: this example was built without the `{store}` feature; \
         run `cargo run --example accounts --features {store}`"
    )
    .into()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

// ---------------------------------------------------------------------------
// Users and passwords

/// The app's state: the user table. A real app keeps its users in a
/// database; the session only holds the user's name.
#[derive(Clone)]
struct App {
    users: Arc<RwLock<HashMap<String, User>>>,
    /// The hash of a password nobody has. A login under an unknown name is
    /// checked against it, so that it takes as long as a wrong password
    /// and the answer does not tell which names exist.
    decoy_hash: Arc<str>,
}

#[derive(Clone)]
struct User {
    /// The login name, which is also the session's user id.
    name: String,
    full_name: String,
    /// An argon2 hash in PHC form (`$argon2id$v=19$...`), salt included.
    password_hash: String,
}

impl App {
    async fn seeded() -> Result<Self, BoxError> {
        let mut users = HashMap::new();
        for (name, full_name, password) in SEED_USERS {
            let user = User {
                name: name.to_owned(),
                full_name: full_name.to_owned(),
                password_hash: hash_password(password.to_owned()).await?,
            };
            users.insert(name.to_owned(), user);
        }
        // A random password nobody is told.
        let decoy = SaltString::generate(&mut OsRng).to_string();
        Ok(Self {
            users: Arc::new(RwLock::new(users)),
            decoy_hash: hash_password(decoy).await?.into(),
        })
    }

    fn user(&self, name: &str) -> Option<User> {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    fn set_password_hash(&self, name: &str, password_hash: String) {
        let mut users = self
            .users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(user) = users.get_mut(name) {
            user.password_hash = password_hash;
        }
    }
}

/// How `CurrentUser<User>` finds the signed-in user: by the name the
/// session was logged in with. Sessions are bound to the password hash:
/// one whose user's password changed since its login (on another device,
/// say), or whose user was removed, is ended on its next page.
impl LoadUser<App> for User {
    type Rejection = Infallible;

    async fn load_user(user_id: &str, app: &App) -> Result<Option<Self>, Self::Rejection> {
        Ok(app.user(user_id))
    }

    fn credential(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

/// Hashes `password` with argon2id (the crate's default parameters) and a
/// fresh random salt. Off the async threads: a hash takes a while on
/// purpose.
async fn hash_password(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AppError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| AppError::Internal(format!("the hashing task failed: {e}")))?
}

/// Whether `password` matches `hash` (in constant time, inside argon2).
async fn verify_password(password: String, hash: Arc<str>) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Routes

fn routes() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/account", get(account))
        .route("/account/devices", get(devices))
        .route("/account/devices/sign-out", post(sign_out_device))
        .route("/account/devices/sign-out-others", post(sign_out_others))
        .route(
            "/account/password",
            get(password_page).post(change_password),
        )
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `next` if it is a path on this site, else nothing: a link to the login
/// page must not be able to send the user on to another site.
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.and_then(safe_redirect_path)
}

async fn login_page(
    session: Session,
    token: CsrfToken,
    user: Option<CurrentUser<User>>,
    Query(query): Query<NextQuery>,
) -> Result<Response, AppError> {
    let next = safe_next(query.next.as_deref());
    if user.is_some() {
        return Ok(Redirect::to(next.unwrap_or("/account")).into_response());
    }
    let flashes = session.take_flashes().await?;
    Ok(login_form(StatusCode::OK, &flashes, None, "", next, &token))
}

fn login_form(
    status: StatusCode,
    flashes: &[Flash],
    error: Option<&str>,
    user: &str,
    next: Option<&str>,
    token: &CsrfToken,
) -> Response {
    let mut body = String::new();
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            text(error)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\">\n{}{}\
         <label>User <input name=\"user\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <label><input name=\"remember\" type=\"checkbox\"> Remember me on this device</label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n",
        csrf_field(token),
        next.map(|next| hidden("next", next)).unwrap_or_default(),
        attr(user),
    );
    page(status, "Sign in", flashes, &body)
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    /// The checkbox: sent (as `on`) only when ticked.
    remember: Option<String>,
    next: Option<String>,
}

async fn login(
    State(app): State<App>,
    session: Session,
    token: CsrfToken,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let next = safe_next(form.next.as_deref());
    let name = form.user.trim();
    let user = app.user(name);
    // Unknown names are checked against the decoy hash: the same work, the
    // same answer, so the form does not tell which names exist.
    let hash = user.as_ref().map_or_else(
        || app.decoy_hash.clone(),
        |user| user.password_hash.as_str().into(),
    );
    let password_ok = form.password.chars().count() <= MAX_PASSWORD_CHARS
        && verify_password(form.password, hash).await;
    let Some(user) = user.filter(|_| password_ok) else {
        tracing::info!(user = name, "failed login");
        return Ok(login_form(
            StatusCode::UNAUTHORIZED,
            &[],
            Some("Wrong user name or password."),
            name,
            next,
            &token,
        ));
    };
    if form.remember.is_some() {
        // Before the login, which keeps it: a persistent cookie, and a
        // session that may idle for a week.
        session.remember_me().await?;
    }
    // A fresh session ID, and nothing carried over from the anonymous
    // session (which someone else may have planted).
    session.login_keeping(user.name.as_str(), &[]).await?;
    // Bound to this password: changing it elsewhere ends this session.
    session.bind_credential(&user.password_hash).await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Signed in as {}.", user.full_name),
        )
        .await?;
    Ok(Redirect::to(next.unwrap_or("/account")).into_response())
}

async fn logout(session: Session) -> Result<Redirect, AppError> {
    let signed_in = session.user_id().await?.is_some();
    session.invalidate().await?;
    if signed_in {
        // Lands in a new, anonymous session: the old one is gone.
        session
            .flash(FlashLevel::Info, "You are signed out.")
            .await?;
    }
    Ok(Redirect::to("/login"))
}

async fn account(
    CurrentUser(user): CurrentUser<User>,
    Flashes(flashes): Flashes,
    session: Session,
    token: CsrfToken,
) -> Result<Response, AppError> {
    let devices = session.count_sessions().await?;
    let body = format!(
        "<p>Signed in as <strong id=\"user\">{}</strong> ({}).</p>\n\
         <ul>\n<li><a href=\"/account/devices\">Your devices</a> (signed in on {devices})</li>\n\
         <li><a href=\"/account/password\">Change your password</a></li>\n</ul>\n\
         <form method=\"post\" action=\"/logout\">{}<button type=\"submit\">Sign out</button></form>\n",
        text(&user.full_name),
        text(&user.name),
        csrf_field(&token),
    );
    Ok(page(StatusCode::OK, "Your account", &flashes, &body))
}

async fn devices(
    CurrentUser(_user): CurrentUser<User>,
    Flashes(flashes): Flashes,
    session: Session,
    token: CsrfToken,
) -> Result<Response, AppError> {
    let sessions = session.list_sessions().await?;
    let mut body = String::from(
        "<table id=\"devices\">\n<tr><th>Device</th><th>Last activity</th>\
         <th>Signed in</th><th></th></tr>\n",
    );
    for info in &sessions {
        let action = if info.current {
            "<strong>This device</strong>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/account/devices/sign-out\">{}{}\
                 <button type=\"submit\">Sign out</button></form>",
                csrf_field(&token),
                hidden("session", &info.handle().to_string()),
            )
        };
        let _ = writeln!(
            body,
            "<tr class=\"device\"><td>{}{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            text(&device_label(info)),
            if info.persistent { " (remembered)" } else { "" },
            timestamp(info.last_seen),
            timestamp(info.created_at),
        );
    }
    body.push_str("</table>\n");
    if sessions.iter().any(|info| !info.current) {
        let _ = writeln!(
            body,
            "<form method=\"post\" action=\"/account/devices/sign-out-others\">{}\
             <button type=\"submit\">Sign out every other device</button></form>",
            csrf_field(&token),
        );
    }
    body.push_str("<p><a href=\"/account\">Back to your account</a></p>\n");
    Ok(page(StatusCode::OK, "Your devices", &flashes, &body))
}

fn device_label(info: &SessionInfo) -> String {
    info.device
        .label()
        .unwrap_or_else(|| "Unknown device".to_owned())
}

#[derive(Deserialize)]
struct SignOutForm {
    /// A handle from the devices page. It comes from the client, so
    /// `logout_device` checks that it names one of this user's sessions.
    session: String,
}

async fn sign_out_device(
    CurrentUser(_user): CurrentUser<User>,
    session: Session,
    Form(form): Form<SignOutForm>,
) -> Result<Response, AppError> {
    let ended = match form.session.parse::<SessionHandle>() {
        Ok(handle) => session.logout_device(&handle).await,
        Err(_) => Err(SessionError::UnknownSession),
    };
    match ended {
        Ok(()) if session.user_id().await?.is_none() => {
            // The handle was this device's own: that is a logout.
            session
                .flash(FlashLevel::Info, "You are signed out.")
                .await?;
            Ok(Redirect::to("/login").into_response())
        }
        Ok(()) => {
            session
                .flash(FlashLevel::Success, "The device was signed out.")
                .await?;
            Ok(Redirect::to("/account/devices").into_response())
        }
        // Another user's session, an ended one or a made-up handle: all
        // answered alike.
        Err(SessionError::UnknownSession) => Ok(page(
            StatusCode::NOT_FOUND,
            "No such device",
            &[],
            "<p>That is not one of your devices (it may be signed out already).</p>\n\
             <p><a href=\"/account/devices\">Your devices</a></p>\n",
        )),
        Err(error) => Err(error.into()),
    }
}

async fn sign_out_others(
    CurrentUser(_user): CurrentUser<User>,
    session: Session,
) -> Result<Redirect, AppError> {
    let ended = session.logout_other_devices().await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Signed out {}.", other_devices(ended)),
        )
        .await?;
    Ok(Redirect::to("/account/devices"))
}

fn other_devices(n: u64) -> String {
    match n {
        1 => "1 other device".to_owned(),
        n => format!("{n} other devices"),
    }
}

async fn password_page(
    CurrentUser(_user): CurrentUser<User>,
    Flashes(flashes): Flashes,
    token: CsrfToken,
) -> Result<Response, AppError> {
    Ok(password_form(StatusCode::OK, &flashes, None, &token))
}

fn password_form(
    status: StatusCode,
    flashes: &[Flash],
    error: Option<&str>,
    token: &CsrfToken,
) -> Response {
    let mut body = String::new();
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            text(error)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/account/password\">\n{}\
         <label>Current password <input name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <label>New password <input name=\"new_password\" type=\"password\" autocomplete=\"new-password\" minlength=\"{MIN_PASSWORD_CHARS}\" maxlength=\"{MAX_PASSWORD_CHARS}\" required></label>\n\
         <button type=\"submit\">Change password</button>\n</form>\n\
         <p>Changing it signs out every other device.</p>\n\
         <p><a href=\"/account\">Back to your account</a></p>\n",
        csrf_field(token),
    );
    page(status, "Change your password", flashes, &body)
}

#[derive(Deserialize)]
struct PasswordForm {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(app): State<App>,
    CurrentUser(user): CurrentUser<User>,
    session: Session,
    token: CsrfToken,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let current_ok = form.current_password.chars().count() <= MAX_PASSWORD_CHARS
        && verify_password(form.current_password, user.password_hash.as_str().into()).await;
    if !current_ok {
        let error = "The current password is wrong.";
        return Ok(password_form(
            StatusCode::UNAUTHORIZED,
            &[],
            Some(error),
            &token,
        ));
    }
    let chars = form.new_password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        let error = format!(
            "The new password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
        );
        return Ok(password_form(
            StatusCode::BAD_REQUEST,
            &[],
            Some(&error),
            &token,
        ));
    }
    let hash = hash_password(form.new_password).await?;
    app.set_password_hash(&user.name, hash.clone());
    // Whoever knew the old password may be signed in elsewhere: bind this
    // session to the new hash, which ends every other session of the user,
    // and move this one to a fresh ID.
    let ended = session.credential_changed(&hash).await?;
    session.regenerate().await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Password changed; signed out {}.", other_devices(ended)),
        )
        .await?;
    Ok(Redirect::to("/account").into_response())
}

// ---------------------------------------------------------------------------
// HTML

/// A whole page. Pages show personal data, so they are never cached, and a
/// strict Content-Security-Policy keeps other sites from framing them.
fn page(status: StatusCode, title: &str, flashes: &[Flash], body: &str) -> Response {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} - cloakroom accounts</title>\
         <style>body{{font-family:sans-serif;max-width:42rem;margin:2rem auto}}\
         label{{display:block;margin:.5rem 0}}td,th{{padding:.25rem .75rem;text-align:left}}\
         .flash,.error{{padding:.5rem;border-radius:.25rem;background:#eef}}\
         .success{{background:#efe}}.error{{background:#fee}}</style></head><body>\n<h1>{}</h1>\n",
        text(title),
        text(title),
    );
    if !flashes.is_empty() {
        html.push_str("<ul class=\"flashes\">\n");
        for flash in flashes {
            let _ = writeln!(
                html,
                "<li class=\"flash {}\" role=\"status\">{}</li>",
                flash.level.as_str(),
                text(&flash.message)
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str(body);
    html.push_str("</body></html>\n");
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// Text for HTML element content, escaped.
fn text(raw: &str) -> String {
    html_escape::encode_text(raw).into_owned()
}

/// Text for a double-quoted attribute value, escaped.
fn attr(raw: &str) -> String {
    html_escape::encode_double_quoted_attribute(raw).into_owned()
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
        attr(name),
        attr(value)
    )
}

/// The hidden field `CsrfLayer` looks for in every form it checks.
fn csrf_field(token: &CsrfToken) -> String {
    token.hidden_field()
}

fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let shown = at
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    let machine = at.format(&Rfc3339).unwrap_or_default();
    format!("<time datetime=\"{machine}\">{shown}</time>")
}

// ---------------------------------------------------------------------------
// Errors

/// What a handler can fail with: a session error answers as cloakroom
/// says (`503` for a store outage, ...), anything else `500`.
enum AppError {
    Session(SessionError),
    Internal(String),
}

impl From<SessionError> for AppError {
    fn from(error: SessionError) -> Self {
        Self::Session(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::Session(error) => error.into_response(),
            Self::Internal(error) => {
                tracing::error!("{error}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n").into_response()
            }
        }
    }
}

impl From<AppError> for BoxError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Session(error) => error.into(),
            AppError::Internal(error) => error.into(),
        }
    }
}
