//! Run with: `cargo run --example devices`
//!
//! A "your devices" page. `Session::list_sessions` lists the signed-in
//! user's live sessions, most recently active first, each with its device
//! (a label such as "Firefox on Linux" from the User-Agent kept at login,
//! and the address), whether it is this one, and a handle that names it
//! but is no cookie. The sign-out button of each other session sends its
//! handle to `Session::logout_device`, which ends only the user's own
//! sessions (the store checks as it deletes): another user's handle, an
//! ended one or junk answer `404` alike. Sign in under one name in two
//! browsers at <http://127.0.0.1:3009/>, then sign one out from the other.
//! Any name signs in (see `examples/login.rs`); forms carry CSRF tokens.
//!
//! Cargo features: cloakroom's defaults (it uses `memory`, `axum`, `csrf`,
//! and `device-labels` for the labels). Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = "0.1"
//! axum = "0.8"
//! html-escape = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::{
    csrf::CsrfLayer, csrf::CsrfToken, device::ClientIp, device::SessionHandle, login::LoggedIn,
    store::time::OffsetDateTime, Key, MemoryStore, Session, SessionError, SessionLayer,
};
use html_escape::encode_text as text;
use serde::Deserialize;

const ADDR: &str = "127.0.0.1:3009";

/// The sign-in form, or the user's devices with a button for each other one.
async fn home(
    user: Option<LoggedIn>,
    session: Session,
    token: CsrfToken,
) -> Result<Html<String>, SessionError> {
    let csrf = format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">");
    let Some(LoggedIn(user)) = user else {
        return Ok(Html(format!(
            "<!doctype html><form method=\"post\" action=\"/login\">{csrf}\
             <label>Name <input name=\"user\" required maxlength=\"64\"></label> \
             <button>Sign in</button></form>\n"
        )));
    };
    let mut html = format!(
        "<!doctype html><p>Signed in as <b>{}</b>.</p>\n<ul>\n",
        text(&user)
    );
    let now = OffsetDateTime::now_utc();
    for info in session.list_sessions().await? {
        let label = info.device.label().unwrap_or("Unknown device".into());
        let action = if info.current {
            "(this browser)".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/sign-out\">{csrf}<input type=\"hidden\" \
                 name=\"handle\" value=\"{}\"><button>Sign out</button></form>",
                info.handle()
            )
        };
        html += &format!(
            "<li>{} from {}: signed in {} s ago, active {} s ago {action}</li>\n",
            text(&label),
            info.device.ip.map_or("?".to_owned(), |ip| ip.to_string()),
            (now - info.created_at).whole_seconds(),
            (now - info.last_seen).whole_seconds(),
        );
    }
    Ok(Html(html + "</ul>\n"))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response, SessionError> {
    let user = form.user.trim();
    if user.is_empty() || user.chars().count() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "a name of 1 to 64 characters\n").into_response());
    }
    // A real app checks the password here. The login records this
    // request's User-Agent (and address, with `client_ip`) as the device.
    session.login_keeping(user, &[]).await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct SignOutForm {
    handle: String,
}

/// Ends one of the user's sessions by the handle the page showed.
async fn sign_out(
    LoggedIn(_user): LoggedIn,
    session: Session,
    Form(form): Form<SignOutForm>,
) -> Result<Response, SessionError> {
    // The handle comes from the client: junk is answered like a handle of
    // someone else's session.
    let Ok(handle) = form.handle.parse::<SessionHandle>() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    match session.logout_device(&handle).await {
        // This browser's own handle is a logout, and the page then shows
        // the sign-in form.
        Ok(()) => Ok(Redirect::to("/").into_response()),
        Err(SessionError::UnknownSession) => Ok(StatusCode::NOT_FOUND.into_response()),
        Err(error) => Err(error),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(MemoryStore::new())
        .key(key)
        // Keep each login's address (the TCP peer: no proxy in front).
        .client_ip(ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>())
        // A user with more sessions has lost track of some: a login beyond
        // this ends their least recently active ones.
        .max_sessions_per_user(Some(10))
        .build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/sign-out", post(sign_out))
        .layer(CsrfLayer::new())
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("devices example listening on http://{ADDR}");
    // With connect info, axum puts the peer address into every request.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}
