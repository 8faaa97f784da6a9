//! Run with: `cargo run --example accounts`
//!
//! A small accounts site on cloakroom sessions: password login (argon2)
//! with "remember me", pages only signed-in users see, a devices page that
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
//! | `GET /account` | the signed-in user; a browser without a user is sent to `/login?next=/account` (so is every `/account/...` page) |
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
use std::sync::{Arc, Mutex, MutexGuard};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::from_extractor_with_state;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::{
    csrf::CsrfLayer, csrf::CsrfToken, device::SessionHandle, flash::Flashes,
    login::safe_redirect_path, login::CurrentUser, login::LoadUser, login::RequireLogin,
    FlashLevel, Key, MemoryStore, Session, SessionError, SessionLayer, SessionLayerBuilder,
};
// Escaping for HTML element content and double-quoted attribute values.
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
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
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env();
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|_| "info".into()))
        .init();
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
    let app = App::seeded().await?;
    for (name, _, password) in SEED_USERS {
        tracing::info!("user {name:?} has the password {password:?}");
    }

    // The layers, in one place: CSRF checks run inside the session layer
    // (the last `.layer` is the outermost).
    let sessions = store_builder(&store)
        .await?
        .key(key)
        // Where a visitor without a user is sent (the default, spelled out).
        .login_url("/login")
        // A user with more sessions than this has lost track of some; a
        // login beyond it ends their least recently active ones.
        .max_sessions_per_user(Some(20))
        .build()?;
    // Sessions, with CSRF checks on every form inside them.
    let router = routes(app).layer(sessions.with_csrf(CsrfLayer::new()));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("accounts listening on http://{addr} with the {store} store");
    axum::serve(listener, router).await?;
    Ok(())
}

/// The session layer's builder on the store `SESSION_STORE` names.
async fn store_builder(store: &str) -> Result<SessionLayerBuilder, BoxError> {
    Ok(match store {
        "memory" => SessionLayer::builder(MemoryStore::new()),
        #[cfg(feature = "redis")]
        "redis" => {
            let url = env_or("REDIS_URL", "redis://127.0.0.1:6379/");
            let connection = cloakroom::store::RedisConnection::connect(&url).await?;
            let store = cloakroom::store::RedisStore::builder(connection)
                .key_prefix("cloakroom-accounts:")
                .build()?;
            SessionLayer::builder(store)
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = std::env::var("DATABASE_URL").map_err(|_| {
                "SESSION_STORE=postgres needs DATABASE_URL (postgres://user@host/db)"
            })?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(std::time::Duration::from_secs(3))
                .connect(&url)
                .await
                .map_err(|e| format!("DATABASE_URL: {e}"))?;
            let store = cloakroom::store::PostgresStore::new(pool);
            store.migrate().await?;
            SessionLayer::builder(store)
        }
        other => {
            let expected = "memory, redis (`--features redis`) or postgres (`--features postgres`)";
            return Err(format!("SESSION_STORE={other}: expected {expected}").into());
        }
    })
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
    users: Arc<Mutex<HashMap<String, User>>>,
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
            users.insert(user.name.clone(), user);
        }
        // A random password nobody is told.
        let decoy = SaltString::generate(&mut OsRng).to_string();
        Ok(Self {
            users: Arc::new(Mutex::new(users)),
            decoy_hash: hash_password(decoy).await?.into(),
        })
    }

    fn users(&self) -> MutexGuard<'_, HashMap<String, User>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How `CurrentUser<User>` finds the signed-in user: by the name the
/// session was logged in with. Sessions are bound to the password hash:
/// one whose user's password changed since its login (on another device,
/// say), or whose user was removed, is ended on its next page.
impl LoadUser<App> for User {
    type Rejection = Infallible;

    async fn load_user(user_id: &str, app: &App) -> Result<Option<Self>, Self::Rejection> {
        Ok(app.users().get(user_id).cloned())
    }

    fn credential(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

/// Hashes `password` with argon2id (the crate's default parameters) and a
/// fresh random salt. Off the async threads: a hash takes a while on
/// purpose.
async fn hash_password(password: String) -> Result<String, BoxError> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    });
    Ok(hash
        .await?
        .map_err(|e| format!("hashing a password: {e}"))?)
}

/// Whether `password` (of an acceptable length) matches `hash`, in
/// constant time inside argon2.
async fn verify_password(password: String, hash: Arc<str>) -> bool {
    password.chars().count() <= MAX_PASSWORD_CHARS
        && tokio::task::spawn_blocking(move || {
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

fn routes(app: App) -> Router {
    // Every page under /account needs a signed-in user: `RequireLogin`
    // sends a browser without one to the login page (a script gets `401`)
    // before anything is loaded. Loading the user on each of these routes
    // then ends a session whose password changed since its login; the
    // handlers that show the user take `CurrentUser` too and share that
    // one load.
    let account = Router::new()
        .route("/account", get(account))
        .route("/account/devices", get(devices))
        .route("/account/devices/sign-out", post(sign_out_device))
        .route("/account/devices/sign-out-others", post(sign_out_others))
        .route(
            "/account/password",
            get(password_page).post(change_password),
        )
        .route_layer(from_extractor_with_state::<CurrentUser<User>, _>(
            app.clone(),
        ))
        .route_layer(RequireLogin::new());
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .merge(account)
        .with_state(app)
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    layout: Layout,
    user: Option<CurrentUser<User>>,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = query.next.as_deref().and_then(safe_redirect_path);
    match user {
        Some(_) => Redirect::to(next.unwrap_or("/account")).into_response(),
        None => login_form(layout, StatusCode::OK, None, "", next),
    }
}

fn login_form(
    layout: Layout,
    status: StatusCode,
    error: Option<&str>,
    user: &str,
    next: Option<&str>,
) -> Response {
    let body = format!(
        "{}<form method=\"post\" action=\"/login\">\n{}{}\
         <label>User <input name=\"user\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <label><input name=\"remember\" type=\"checkbox\"> Remember me on this device</label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n",
        error_line(error),
        layout.token.hidden_field(),
        next.map(|next| hidden("next", next)).unwrap_or_default(),
        attr(user),
    );
    layout.page(status, "Sign in", &body)
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
    layout: Layout,
    Form(form): Form<LoginForm>,
) -> Result<Response, SessionError> {
    let next = form.next.as_deref().and_then(safe_redirect_path);
    let name = form.user.trim();
    let user = app.users().get(name).cloned();
    // Unknown names are checked against the decoy hash: the same work, the
    // same answer, so the form does not tell which names exist.
    let hash = user.as_ref().map_or_else(
        || app.decoy_hash.clone(),
        |user| user.password_hash.as_str().into(),
    );
    let password_ok = verify_password(form.password, hash).await;
    let Some(user) = user.filter(|_| password_ok) else {
        tracing::info!(user = name, "failed login");
        let error = Some("Wrong user name or password.");
        return Ok(login_form(
            layout,
            StatusCode::UNAUTHORIZED,
            error,
            name,
            next,
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
    let signed_in = format!("Signed in as {}.", user.full_name);
    session.flash(FlashLevel::Success, signed_in).await?;
    Ok(Redirect::to(next.unwrap_or("/account")).into_response())
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
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
    session: Session,
    layout: Layout,
) -> Result<Response, SessionError> {
    let devices = session.count_sessions().await?;
    let body = format!(
        "<p>Signed in as <strong id=\"user\">{}</strong> ({}).</p>\n\
         <ul>\n<li><a href=\"/account/devices\">Your devices</a> (signed in on {devices})</li>\n\
         <li><a href=\"/account/password\">Change your password</a></li>\n</ul>\n\
         <form method=\"post\" action=\"/logout\">{}<button type=\"submit\">Sign out</button></form>\n",
        text(&user.full_name),
        text(&user.name),
        layout.token.hidden_field(),
    );
    Ok(layout.page(StatusCode::OK, "Your account", &body))
}

async fn devices(session: Session, layout: Layout) -> Result<Response, SessionError> {
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
                layout.token.hidden_field(),
                hidden("session", &info.handle().to_string()),
            )
        };
        let _ = writeln!(
            body,
            "<tr class=\"device\"><td>{}{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            text(
                &info
                    .device
                    .label()
                    .unwrap_or_else(|| "Unknown device".into())
            ),
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
            layout.token.hidden_field(),
        );
    }
    body.push_str("<p><a href=\"/account\">Back to your account</a></p>\n");
    Ok(layout.page(StatusCode::OK, "Your devices", &body))
}

#[derive(Deserialize)]
struct SignOutForm {
    /// A handle from the devices page. It comes from the client, so
    /// `logout_device` checks that it names one of this user's sessions.
    session: String,
}

async fn sign_out_device(
    session: Session,
    layout: Layout,
    Form(form): Form<SignOutForm>,
) -> Result<Response, SessionError> {
    // Another user's session, an ended one or a made-up handle: all
    // answered alike.
    let not_found = || {
        let body = "<p>That is not one of your devices (it may be signed out already).</p>\n\
                    <p><a href=\"/account/devices\">Your devices</a></p>\n";
        Ok(layout.page(StatusCode::NOT_FOUND, "No such device", body))
    };
    let Ok(handle) = form.session.parse::<SessionHandle>() else {
        return not_found();
    };
    match session.logout_device(&handle).await {
        Err(SessionError::UnknownSession) => not_found(),
        Err(error) => Err(error),
        // The handle was this device's own: that is a logout.
        Ok(()) if session.user_id().await?.is_none() => {
            session
                .flash(FlashLevel::Info, "You are signed out.")
                .await?;
            Ok(Redirect::to("/login").into_response())
        }
        Ok(()) => {
            let signed_out = "The device was signed out.";
            session.flash(FlashLevel::Success, signed_out).await?;
            Ok(Redirect::to("/account/devices").into_response())
        }
    }
}

async fn sign_out_others(session: Session) -> Result<Redirect, SessionError> {
    let ended = session.logout_other_devices().await?;
    let signed_out = format!("Signed out {}.", other_devices(ended));
    session.flash(FlashLevel::Success, signed_out).await?;
    Ok(Redirect::to("/account/devices"))
}

fn other_devices(n: u64) -> String {
    format!("{n} other device{}", if n == 1 { "" } else { "s" })
}

async fn password_page(layout: Layout) -> Response {
    password_form(layout, StatusCode::OK, None)
}

fn password_form(layout: Layout, status: StatusCode, error: Option<&str>) -> Response {
    let body = format!(
        "{}<form method=\"post\" action=\"/account/password\">\n{}\
         <label>Current password <input name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <label>New password <input name=\"new_password\" type=\"password\" autocomplete=\"new-password\" minlength=\"{MIN_PASSWORD_CHARS}\" maxlength=\"{MAX_PASSWORD_CHARS}\" required></label>\n\
         <button type=\"submit\">Change password</button>\n</form>\n\
         <p>Changing it signs out every other device.</p>\n\
         <p><a href=\"/account\">Back to your account</a></p>\n",
        error_line(error),
        layout.token.hidden_field(),
    );
    layout.page(status, "Change your password", &body)
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
    layout: Layout,
    Form(form): Form<PasswordForm>,
) -> Result<Response, SessionError> {
    let current = user.password_hash.as_str().into();
    if !verify_password(form.current_password, current).await {
        let error = Some("The current password is wrong.");
        return Ok(password_form(layout, StatusCode::UNAUTHORIZED, error));
    }
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&form.new_password.chars().count()) {
        let error = format!(
            "The new password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
        );
        return Ok(password_form(layout, StatusCode::BAD_REQUEST, Some(&error)));
    }
    let hash = match hash_password(form.new_password).await {
        Ok(hash) => hash,
        Err(error) => {
            tracing::error!("{error}");
            return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    };
    if let Some(user) = app.users().get_mut(&user.name) {
        user.password_hash = hash.clone();
    }
    // Whoever knew the old password may be signed in elsewhere: bind this
    // session to the new hash, which ends every other session of the user,
    // and move this one to a fresh ID.
    let ended = session.credential_changed(&hash).await?;
    session.regenerate().await?;
    let changed = format!("Password changed; signed out {}.", other_devices(ended));
    session.flash(FlashLevel::Success, changed).await?;
    Ok(Redirect::to("/account").into_response())
}

// ---------------------------------------------------------------------------
// HTML

/// What every page's layout needs, in one extractor: the flash messages
/// waiting for it (taken, so the next page does not show them again) and
/// the CSRF token for its forms.
struct Layout {
    flashes: Flashes,
    token: CsrfToken,
}

impl<S: Send + Sync> FromRequestParts<S> for Layout {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let flashes = Flashes::from_request_parts(parts, state).await;
        Ok(Self {
            flashes: flashes.map_err(IntoResponse::into_response)?,
            token: CsrfToken::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?,
        })
    }
}

impl Layout {
    /// A whole page. Pages show personal data, so they are never cached,
    /// and a strict Content-Security-Policy keeps other sites from framing
    /// them.
    fn page(self, status: StatusCode, title: &str, body: &str) -> Response {
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
        if !self.flashes.is_empty() {
            html.push_str("<ul class=\"flashes\">\n");
            for flash in self.flashes {
                let (level, message) = (flash.level.as_str(), text(&flash.message));
                let _ = writeln!(
                    html,
                    "<li class=\"flash {level}\" role=\"status\">{message}</li>"
                );
            }
            html.push_str("</ul>\n");
        }
        html.push_str(body);
        html.push_str("</body></html>\n");
        let csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
        let mut response = (status, Html(html)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
        response
    }
}

/// A form's error message, or nothing.
fn error_line(error: Option<&str>) -> String {
    error.map_or_else(String::new, |error| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", text(error))
    })
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
        attr(name),
        attr(value)
    )
}

fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let shown = at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ));
    let machine = at.format(&Rfc3339).unwrap_or_default();
    format!(
        "<time datetime=\"{machine}\">{}</time>",
        shown.unwrap_or_default()
    )
}
