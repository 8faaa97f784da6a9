//! Run with: `cargo run --example csrf`
//!
//! Forms and scripts protected by `CsrfLayer`. The layer refuses every
//! `POST`, `PUT`, `PATCH` and `DELETE` that a browser marks cross-site, or
//! that lacks a token matching the visitor's session: in the form field
//! `csrf_token`, or, for scripts, the `x-csrf-token` header. Handlers get
//! the token to embed with the `CsrfToken` extractor: here in a hidden
//! form field, in a `<meta>` tag the page's script reads, and from
//! `GET /api/csrf` for API clients. A visitor without a session gets a
//! token too, and asking for it sets no cookie. A refused request gets the
//! app's own page (`failure_response`); `/webhooks/` is exempt, for callers
//! that authenticate themselves. Open <http://127.0.0.1:3008/>, or see a
//! refusal with `curl -i -X POST http://127.0.0.1:3008/notes -d text=hi`.
//!
//! Cargo features: cloakroom's defaults (it uses `memory`, `axum` and
//! `csrf`). Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = "0.1"
//! axum = "0.8"
//! html-escape = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! ```

use axum::extract::Form;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Response};
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{
    csrf::CsrfFailure, csrf::CsrfLayer, csrf::CsrfToken, Key, MemoryStore, Session, SessionError,
    SessionLayer,
};
use html_escape::encode_text as text;
use serde::Deserialize;
use serde_json::{json, Value};

const ADDR: &str = "127.0.0.1:3008";

/// A page with a form (the token in a hidden field) and a button whose
/// script sends the token from the `<meta>` tag in the header.
async fn page(session: Session, token: CsrfToken) -> Result<Html<String>, SessionError> {
    let notes: Vec<String> = session.get("notes").await?.unwrap_or_default();
    let list: String = notes
        .iter()
        .map(|n| format!("<li>{}</li>", text(n)))
        .collect();
    Ok(Html(format!(
        "<!doctype html><head>{meta}</head><ul>{list}</ul>\n\
         <form method=\"post\" action=\"/notes\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
         <input name=\"text\" required maxlength=\"200\"> <button>Add</button></form>\n\
         <button id=\"clear\">Clear (from a script)</button>\n\
         <script>document.getElementById('clear').onclick = async () => {{\
         const token = document.querySelector('meta[name=csrf-token]').content;\
         await fetch('/notes', {{ method: 'DELETE', headers: {{ 'x-csrf-token': token }} }});\
         location.reload(); }};</script>\n",
        meta = token.meta_tag(),
    )))
}

#[derive(Deserialize)]
struct Note {
    text: String,
}

/// Runs only when the layer found a valid `csrf_token` in the form (which
/// serde ignores here).
async fn add_note(session: Session, Form(note): Form<Note>) -> Result<Redirect, SessionError> {
    let mut notes: Vec<String> = session.get("notes").await?.unwrap_or_default();
    // Bounded, like anything a client can add to its session.
    notes.truncate(19);
    notes.insert(0, note.text.chars().take(200).collect());
    session.insert("notes", notes).await?;
    Ok(Redirect::to("/"))
}

/// Runs only with a valid `x-csrf-token` header.
async fn clear_notes(session: Session) -> Result<Json<Value>, SessionError> {
    session.remove("notes").await?;
    Ok(Json(json!({ "cleared": true })))
}

/// For API clients: the token to send as `x-csrf-token`.
async fn csrf_token(token: CsrfToken) -> Json<Value> {
    Json(json!({ "token": token.masked() }))
}

/// Exempt from the checks: it must not act on the session's authority.
async fn webhook() -> &'static str {
    "received\n"
}

/// What a refused request gets instead of the default short text.
fn refused(failure: &CsrfFailure, _request: &Parts) -> Response<String> {
    let mut page = Response::new(format!(
        "<!doctype html><h1>Refused</h1><p>{}</p><p>Reload the page and try again.</p>\n",
        text(failure.body_text().trim_end()),
    ));
    *page.status_mut() = failure.status();
    let html = HeaderValue::from_static("text/html; charset=utf-8");
    page.headers_mut().insert(CONTENT_TYPE, html);
    page
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = match std::env::var("SESSION_KEY") {
        Ok(hex) => Key::from_hex(&hex)?,
        Err(_) => Key::generate()?,
    };
    let sessions = SessionLayer::builder(MemoryStore::new()).key(key).build()?;
    let csrf = CsrfLayer::builder()
        .exempt_prefix("/webhooks/")
        .failure_response(refused)
        .build()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/notes", post(add_note).delete(clear_notes))
        .route("/api/csrf", get(csrf_token))
        .route("/webhooks/payment", post(webhook))
        // Sessions, with the CSRF checks inside them, in one call.
        .layer(sessions.with_csrf(csrf));
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("csrf example listening on http://{ADDR}");
    axum::serve(listener, app).await?;
    Ok(())
}
