//! Run with: `cargo run --example streams`
//!
//! Open connections that end with their session: an event stream
//! (`/events`) and a WebSocket (`/ws`) hold a `SessionWatch`, and close
//! when the session ends (a logout in another tab, logout-everywhere, an
//! operator's revocation, the idle deadline), on whichever instance it
//! happens. Open http://127.0.0.1:3006/ in two tabs, sign in, start the
//! stream in one and sign out in the other.
//!
//! Cargo features: cloakroom's defaults. Dependencies, as Cargo.toml lines:
//!
//! ```toml
//! cloakroom = "0.1"
//! axum = { version = "0.8", features = ["ws"] }
//! futures-core = "0.3"
//! serde = { version = "1", features = ["derive"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
//! tokio-stream = { version = "0.1", features = ["time"] }
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::Form;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::csrf::{CsrfLayer, CsrfToken};
use cloakroom::login::LoggedIn;
use cloakroom::watch::{Ended, SessionWatch};
use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
use serde::Deserialize;
use tokio_stream::wrappers::IntervalStream;
use tokio_stream::StreamExt as _;

const ADDR: &str = "127.0.0.1:3006";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sessions = SessionLayer::builder(MemoryStore::new())
        .key(Key::generate()?)
        // Short, to see a stream end at the idle deadline: leave the tab
        // alone for two minutes.
        .idle_timeout(Duration::from_secs(120))
        .build()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/login", axum::routing::post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/events", get(events))
        .route("/ws", get(socket))
        .layer(sessions.with_csrf(CsrfLayer::new()));
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("listening on http://{ADDR}");
    axum::serve(listener, app).await?;
    Ok(())
}

/// An event a second while the session lives; then one `end` event and
/// the stream closes.
async fn events(
    _user: LoggedIn,
    session: Session,
) -> Result<Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>>, SessionError> {
    let watch = session.watch().await?;
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
        .map(|_| Ok(Event::default().data("tick")));
    let events = watch.until_ended(ticks, |ended| {
        Ok(Event::default().event("end").data(ended.as_str()))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// An echo socket that closes with code 4401 when its session ends.
async fn socket(
    _user: LoggedIn,
    session: Session,
    upgrade: WebSocketUpgrade,
) -> Result<Response, SessionError> {
    // Made before the upgrade: the request's `Session` is done with once
    // the response is out; the watch lives on with the socket. (The
    // default `SameSite=Lax` keeps the cookie off cross-site WebSocket
    // handshakes; with `SameSite=None`, check the `Origin` header here.)
    let watch = session.watch().await?;
    Ok(upgrade.on_upgrade(move |socket| echo(socket, watch)))
}

async fn echo(mut socket: WebSocket, mut watch: SessionWatch) {
    loop {
        tokio::select! {
            ended = watch.ended() => {
                let _ = socket.send(Message::Close(Some(close_frame(ended)))).await;
                return;
            }
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                if let Message::Text(text) = message {
                    // The user typed something: that is activity, and rolls
                    // the idle deadline as a request would. (Never touch on
                    // a timer: an unattended screen must not keep its
                    // session alive.)
                    if !matches!(watch.touch().await, Ok(true)) {
                        continue; // Ended, or the store failed: the watch says which.
                    }
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn close_frame(ended: Ended) -> CloseFrame {
    CloseFrame {
        code: Ended::CLOSE_CODE,
        reason: ended.as_str().into(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Redirect, SessionError> {
    // Any name will do: this example is about streams, not passwords.
    session.login(form.user).await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.invalidate().await?;
    Ok(Redirect::to("/"))
}

async fn page(user: Option<LoggedIn>, token: CsrfToken) -> Response {
    let field = token.hidden_field();
    let Some(user) = user else {
        return Html(format!(
            r#"<form method="post" action="/login">{field}
<input name="user" placeholder="name"> <button>Sign in</button></form>"#
        ))
        .into_response();
    };
    Html(format!(
        r#"<p>Signed in as {name}.</p>
<form method="post" action="/logout">{field}<button>Sign out</button></form>
<pre id="log"></pre>
<script>
const log = (line) => document.getElementById("log").textContent += line + "\n";
const events = new EventSource("/events");
events.onmessage = (e) => log("event: " + e.data);
events.addEventListener("end", (e) => {{ log("stream ended: " + e.data); events.close(); }});
const ws = new WebSocket(`ws://${{location.host}}/ws`);
ws.onopen = () => ws.send("hello");
ws.onmessage = (e) => log("socket: " + e.data);
ws.onclose = (e) => log("socket closed: " + e.code + " " + e.reason);
</script>"#,
        name = html_escape(user.user_id()),
    ))
    .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
