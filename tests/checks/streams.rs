//! Open event streams end with their session: a stream held on one
//! instance (a second layer on the same store) ends when its session is
//! ended through the other, by every kind of ending, and at its deadline;
//! a stream whose session lives on stays open.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::http::{header, Request, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::store::SessionStore;
use cloakroom::Session;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::support::app::{set_password, TestApp, IDLE};
use crate::support::client::{logged_in, Client};

/// When a test gives up waiting for a stream to end. A hang guard, not a
/// measure: ends arrive in milliseconds.
const WITHIN: Duration = Duration::from_secs(10);

/// The second instance's stream route: an SSE stream that says nothing
/// until its session ends, then one `end` event.
pub(crate) fn stream_routes() -> Router {
    Router::new().route("/stream", get(stream))
}

async fn stream(session: Session) -> Response {
    match session.user_id().await {
        Ok(Some(_)) => {}
        Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(error) => return error.into_response(),
    }
    let watch = match session.watch().await {
        Ok(watch) => watch,
        Err(error) => return error.into_response(),
    };
    let events = tokio_stream::pending::<Result<Event, Infallible>>();
    Sse::new(watch.until_ended(events, |ended| {
        Ok(Event::default().event("end").data(ended.as_str()))
    }))
    .into_response()
}

/// Two instances of one app on one store: `a` serves the usual test
/// routes, `b` the stream.
struct Instances<S> {
    a: TestApp<S>,
    b: TestApp<S>,
    streams: Router,
}

fn instances<S: SessionStore + Clone>(store: S) -> Instances<S> {
    let a = TestApp::new(store.clone());
    let b = TestApp::new(store);
    let streams = stream_routes().layer(b.layer.clone());
    Instances { a, b, streams }
}

/// An open event stream's body.
pub(crate) struct Stream {
    body: Body,
}

impl Stream {
    /// Waits for the stream's end; returns its `end` event's data.
    pub(crate) async fn end(mut self) -> String {
        let mut text = String::new();
        let read = async {
            while let Some(frame) = self.body.frame().await {
                let frame = frame.expect("the stream's body");
                if let Some(data) = frame.data_ref() {
                    text.push_str(std::str::from_utf8(data).expect("utf-8 events"));
                }
            }
        };
        tokio::time::timeout(WITHIN, read)
            .await
            .expect("the stream ends when its session does");
        assert!(text.starts_with("event: end\n"), "an end event: {text:?}");
        text.lines()
            .find_map(|line| line.strip_prefix("data: "))
            .expect("the end event has data")
            .to_owned()
    }

    /// Whether anything (the end) is ready to read now.
    pub(crate) fn has_ended(&mut self) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.body).poll_frame(&mut context),
            Poll::Ready(_)
        )
    }
}

pub(crate) async fn open_stream(streams: &Router, client: &Client) -> Stream {
    let cookie = client.cookie.as_deref().expect("a logged-in client");
    let request = Request::get("/stream")
        .header(header::COOKIE, format!("{}={cookie}", client.cookie_name))
        .body(Body::empty())
        .expect("request");
    let response = streams.clone().oneshot(request).await.expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a logged-in stream opens"
    );
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "an event stream"
    );
    Stream {
        body: response.into_body(),
    }
}

/// A unique user name for this test.
fn user(tag: &str) -> String {
    let suffix = cloakroom::id::SessionId::generate()
        .expect("randomness")
        .store_key()
        .short();
    format!("stream-{tag}-{suffix}")
}

pub(crate) async fn a_stream_ends_when_its_session_logs_out_on_another_instance<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let both = instances(store);
    let mut browser = logged_in(&both.a, &user("logout")).await;
    let stream = open_stream(&both.streams, &browser).await;
    assert_eq!(both.b.layer.open_watches(), 1);

    let reply = browser.post("/logout").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(stream.end().await, "session ended");
    assert_eq!(both.b.layer.open_watches(), 0, "the ended watch is gone");
}

pub(crate) async fn a_stream_ends_on_logout_everywhere_from_another_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let both = instances(store);
    let name = user("everywhere");
    let phone = logged_in(&both.a, &name).await;
    let mut laptop = logged_in(&both.a, &name).await;
    let stream = open_stream(&both.streams, &phone).await;

    let reply = laptop.post("/logout-everywhere").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn a_stream_ends_when_another_device_signs_it_out<S: SessionStore + Clone>(
    store: S,
) {
    let both = instances(store);
    let name = user("device");
    let phone = logged_in(&both.a, &name).await;
    let mut laptop = logged_in(&both.a, &name).await;
    let stream = open_stream(&both.streams, &phone).await;

    // "Sign out my other devices" from the laptop.
    let reply = laptop.post("/logout-others").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn a_stream_ends_when_an_operator_ends_its_session<S: SessionStore + Clone>(
    store: S,
) {
    let both = instances(store);
    let name = user("admin");
    let phone = logged_in(&both.a, &name).await;
    let stream = open_stream(&both.streams, &phone).await;

    let admin = both.a.layer.admin();
    let sessions = admin.list_sessions(&name).await.expect("listing");
    assert_eq!(sessions.len(), 1);
    assert!(admin.end_session(&sessions[0].key).await.expect("ending"));
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn a_stream_ends_when_its_session_moves_to_a_new_id<S: SessionStore + Clone>(
    store: S,
) {
    let both = instances(store);
    let mut browser = logged_in(&both.a, &user("moved")).await;
    let stream = open_stream(&both.streams, &browser).await;

    // The browser's cookie changes; the stream's was the old one.
    let reply = browser.post("/regenerate").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn a_stream_ends_at_its_idle_deadline_and_is_no_activity<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let both = instances(store);
    let browser = logged_in(&both.a, &user("idle")).await;
    let mut stream = open_stream(&both.streams, &browser).await;

    // Most of the idle window passes on the stream's instance: still open.
    both.b.clock.advance(IDLE - Duration::from_secs(60));
    sentinel(&both).await;
    assert!(!stream.has_ended(), "live until the deadline");
    // The deadline passes with no request: the open stream did not count
    // as activity.
    both.b.clock.advance(Duration::from_secs(60));
    assert_eq!(stream.end().await, "session expired");
}

pub(crate) async fn a_stream_whose_session_lives_on_stays_open<S: SessionStore + Clone>(store: S) {
    let both = instances(store);
    let name = user("lives");
    let mut browser = logged_in(&both.a, &name).await;
    let mut stream = open_stream(&both.streams, &browser).await;

    // Writes to the session, another user's logout-everywhere, another
    // session of the same user ending: none of them ends this one.
    let reply = browser.put("/set/cart", "\"3 apples\"").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    let mut stranger = logged_in(&both.a, &user("stranger")).await;
    stranger.post("/logout-everywhere").await;
    let mut sibling = logged_in(&both.a, &name).await;
    sibling.post("/logout").await;
    sentinel(&both).await;
    assert!(!stream.has_ended(), "the stream stays open");
    assert_eq!(both.b.layer.open_watches(), 1);

    // Dropping the stream closes its watch.
    drop(stream);
    assert_eq!(
        both.b.layer.open_watches(),
        0,
        "a dropped stream's watch closes"
    );
}

pub(crate) async fn a_thousand_streams_of_one_user_all_end_on_logout_everywhere<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let both = instances(store);
    let name = user("thousand");
    let browser = logged_in(&both.a, &name).await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(open_stream(&both.streams, &browser).await);
    }
    assert_eq!(both.b.layer.open_watches(), 1000);
    let admin = both.a.layer.admin();
    assert_eq!(admin.logout_everywhere(&name).await.expect("ending"), 1);
    for stream in streams {
        assert_eq!(stream.end().await, "session ended");
    }
    assert_eq!(both.b.layer.open_watches(), 0);
}

pub(crate) async fn a_stream_ends_when_its_credential_changes_elsewhere<S: SessionStore + Clone>(
    store: S,
) {
    let both = instances(store);
    let name = user("credential");
    set_password(&name, "old password");
    let mut phone = both.a.client();
    let request = phone.request("POST", &format!("/password-login/{name}"), "old password");
    assert_eq!(phone.send(request).await.status, StatusCode::NO_CONTENT);
    let mut laptop = both.a.client();
    let request = laptop.request("POST", &format!("/password-login/{name}"), "old password");
    assert_eq!(laptop.send(request).await.status, StatusCode::NO_CONTENT);
    let stream = open_stream(&both.streams, &phone).await;

    // The password changes on the laptop: every other session ends.
    let request = laptop.request("POST", "/password", "new password");
    assert_eq!(laptop.send(request).await.status, StatusCode::OK);
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn activity_the_app_reports_on_a_watch_keeps_its_session_alive<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let both = instances(store);
    let name = user("touch");
    let browser = logged_in(&both.a, &name).await;
    // A watch held directly, as a WebSocket handler holds it.
    let (watches, mut handed) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new()
        .route(
            "/watch",
            get(move |session: Session| {
                let watches = watches.clone();
                async move {
                    let watch = session.watch().await.expect("a watch");
                    let _ = watches.send(watch);
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .layer(both.b.layer.clone());
    let cookie = browser.cookie.as_deref().expect("logged in");
    let request = Request::get("/watch")
        .header(header::COOKIE, format!("{}={cookie}", browser.cookie_name))
        .body(Body::empty())
        .expect("request");
    router.oneshot(request).await.expect("infallible");
    let mut watch = handed.recv().await.expect("the watch");

    // Most of the idle window passes (on both instances' clocks); the user
    // types into the socket.
    let advance = |by: Duration| {
        both.a.clock.advance(by);
        both.b.clock.advance(by);
    };
    advance(IDLE - Duration::from_secs(60));
    assert!(
        watch.touch().await.expect("the store answers"),
        "still live"
    );
    let listed = both
        .a
        .layer
        .admin()
        .list_sessions(&name)
        .await
        .expect("listing");
    assert!(
        listed[0].last_seen > listed[0].created_at,
        "the touch reached the store"
    );
    // The first deadline passes: the touch moved it.
    advance(Duration::from_secs(120));
    sentinel(&both).await;
    assert_eq!(watch.try_ended(), None, "activity kept the session alive");
    // With no more activity, the moved deadline passes too.
    advance(IDLE);
    let ended = tokio::time::timeout(WITHIN, watch.ended())
        .await
        .expect("the watch resolves at the new deadline");
    assert_eq!(ended, cloakroom::watch::Ended::Expired);
}

pub(crate) async fn two_streams_of_one_session_close_apart<S: SessionStore + Clone>(store: S) {
    let both = instances(store);
    let mut browser = logged_in(&both.a, &user("two")).await;
    let first = open_stream(&both.streams, &browser).await;
    let second = open_stream(&both.streams, &browser).await;
    assert_eq!(both.b.layer.open_watches(), 2);
    // One tab closes its stream: the other's watch stays.
    drop(first);
    assert_eq!(both.b.layer.open_watches(), 1);
    let reply = browser.post("/logout").await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(second.end().await, "session ended");
}

pub(crate) async fn a_stream_ends_when_every_session_is_ended<S: SessionStore + Clone>(store: S) {
    let both = instances(store);
    let browser = logged_in(&both.a, &user("breach")).await;
    let stream = open_stream(&both.streams, &browser).await;
    // After a breach: every session of every user.
    both.a
        .layer
        .admin()
        .end_all_sessions()
        .await
        .expect("ending all");
    assert_eq!(stream.end().await, "session ended");
}

pub(crate) async fn a_visitor_without_a_login_gets_no_stream<S: SessionStore + Clone>(store: S) {
    let both = instances(store);
    let request = Request::get("/stream")
        .body(Body::empty())
        .expect("request");
    let response = both
        .streams
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(both.b.layer.open_watches(), 0);
}

/// Waits until the stream instance has dealt with everything announced
/// before this call: a sentinel session is watched there and ended here;
/// the instance hears announcements in order, so once the sentinel's
/// stream has ended, every earlier one has been acted on.
async fn sentinel<S: SessionStore + Clone>(both: &Instances<S>) {
    let mut sentinel = logged_in(&both.a, &user("sentinel")).await;
    let stream = open_stream(&both.streams, &sentinel).await;
    sentinel.post("/logout").await;
    stream.end().await;
}
