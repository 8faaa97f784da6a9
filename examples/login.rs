//! Run with: `cargo run --example login`
//!
//! Logging in and out. `POST /login` moves the session to a fresh ID
//! (`Session::login_keeping`), so an ID planted before the login is
//! worthless after it; `POST /logout` ends this session and
//! `POST /logout-everywhere` every session of the user, each leaving a
//! message (`Session::flash` after the logout, so that it waits in the new
//! anonymous session the browser keeps). `/private` is behind `LoggedIn`:
//! a browser without a user gets `LoginRequired`'s `303` to
//! `/login?next=%2Fprivate` (an API client asking for JSON gets `401`),
//! and the form carries `next` back, checked by `safe_redirect_path`. Any
//! name logs in: check the password where the comment says
//! (`examples/accounts.rs` does). Forms carry CSRF tokens (see
//! `examples/csrf.rs`). Open <http://127.0.0.1:3007/>.
//!
//! Cargo features: cloakroom's defaults (it uses `memory`, `axum` and
//! `csrf`). Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = "0.1"
//! axum = "0.8"
//! html-escape = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use axum::extract::{Form, Query};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::{
    csrf::CsrfLayer, csrf::CsrfToken, login::safe_redirect_path, login::LoggedIn, FlashLevel, Key,
    MemoryStore, Session, SessionError, SessionLayer,
};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde::Deserialize;

const ADDR: &str = "127.0.0.1:3007";

/// A form posting to `action` with the CSRF token and one button.
fn button(token: &CsrfToken, action: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" \
         name=\"csrf_token\" value=\"{token}\"><button>{label}</button></form>\n"
    )
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// `/` and `/login`: the user and the logout buttons, or the login form,
/// which carries `next` along when it is a path on this site.
async fn home(
    session: Session,
    token: CsrfToken,
    Query(query): Query<Next>,
) -> Result<Html<String>, SessionError> {
    let body = match session.user_id().await? {
        Some(user) => format!(
            "<p>Signed in as <b>{}</b>. <a href=\"/private\">Private page</a></p>\n{}{}",
            text(&user),
            button(&token, "/logout", "Sign out"),
            button(&token, "/logout-everywhere", "Sign out everywhere"),
        ),
        None => format!(
            "<form method=\"post\" action=\"/login\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <label>Name <input name=\"user\" required maxlength=\"64\"></label> \
             <button>Sign in</button></form> <a href=\"/private\">Private page</a>\n",
            attr(
                query
                    .next
                    .as_deref()
                    .and_then(safe_redirect_path)
                    .unwrap_or_default()
            ),
        ),
    };
    // The messages left for this page, shown once.
    let mut html = String::from("<!doctype html>\n");
    for flash in session.take_flashes().await? {
        html += &format!("<p class=\"flash\">{}</p>\n", text(&flash.message));
    }
    Ok(Html(html + &body))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    next: Option<String>,
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response, SessionError> {
    let user = form.user.trim();
    if user.is_empty() || user.chars().count() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "a name of 1 to 64 characters\n").into_response());
    }
    // A real app checks the password here. Then a fresh ID, and nothing
    // carried over from the anonymous session (someone may have planted it).
    session.login_keeping(user, &[]).await?;
    // `next` came from the client: only a path on this site is followed.
    let next = form.next.as_deref().and_then(safe_redirect_path);
    Ok(Redirect::to(next.unwrap_or("/")).into_response())
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.invalidate().await?;
    // After the logout: the message lands in the new, anonymous session.
    session
        .flash(FlashLevel::Info, "You are signed out.")
        .await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    let ended = session.logout_everywhere().await?;
    let message = format!("Signed out of {ended} session(s).");
    session.flash(FlashLevel::Info, message).await?;
    Ok(Redirect::to("/"))
}

/// Needs a user: without one, `LoggedIn` answers `LoginRequired`.
async fn private(LoggedIn(user): LoggedIn) -> Html<String> {
    Html(format!(
        "<p>Only {} sees this.</p><a href=\"/\">Home</a>",
        text(&user)
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(MemoryStore::new()).key(key).build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(home).post(login))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/private", get(private))
        // Sessions, with the CSRF checks inside them, in one call.
        .layer(sessions.with_csrf(CsrfLayer::new()));
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("login example listening on http://{ADDR}");
    axum::serve(listener, app).await?;
    Ok(())
}
