//! A browser stand-in for a [`TestApp`]: a one-cookie jar and the requests
//! the tests send, plus the few steps nearly every test takes (logging in,
//! asking who is logged in, holding a request in its handler).

use std::future::Future;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::Router;
use cloakroom::store::SessionStore;
use cloakroom::test_suite::Pause;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

use super::app::TestApp;
use super::reply::{read, Reply};

/// A browser stand-in: keeps the session cookie the way a browser would.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) router: Router,
    pub(crate) cookie_name: String,
    /// The session cookie's value, if the jar holds one.
    pub(crate) cookie: Option<String>,
}

impl Client {
    /// A request carrying the jar's cookie.
    pub(crate) fn request(&self, method: &str, path: &str, body: &str) -> Request<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_owned()))
            .expect("request");
        if let Some(value) = &self.cookie {
            request.headers_mut().insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{}={value}", self.cookie_name)).expect("cookie"),
            );
        }
        request
    }

    /// Sends a request and updates the jar from the response.
    pub(crate) async fn send(&mut self, request: Request<Body>) -> Reply {
        let reply = self.send_alone(request).await;
        self.absorb(&reply);
        reply
    }

    /// Sends a request and leaves the jar alone.
    pub(crate) async fn send_alone(&self, request: Request<Body>) -> Reply {
        read(
            self.router
                .clone()
                .oneshot(request)
                .await
                .expect("infallible"),
        )
        .await
    }

    /// Sends `method path` with the jar's cookie, and leaves the jar alone:
    /// for requests from other tabs, or that left before the jar changed.
    pub(crate) async fn call(&self, method: &str, path: &str, body: &str) -> Reply {
        self.send_alone(self.request(method, path, body)).await
    }

    /// [`Client::call`] in a task of its own, to be awaited later.
    pub(crate) fn spawn(&self, method: &str, path: &str, body: &str) -> JoinHandle<Reply> {
        let request = self.request(method, path, body);
        let client = self.clone();
        tokio::spawn(async move { client.send_alone(request).await })
    }

    /// `POST path` from this browser in a task of its own, to be awaited
    /// later: the task gives back the browser, its jar updated from the
    /// reply, and the reply.
    pub(crate) fn spawn_post(&self, path: &str) -> JoinHandle<(Client, Reply)> {
        let mut client = self.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            let reply = client.post(&path).await;
            (client, reply)
        })
    }

    /// Updates the jar from a response's `Set-Cookie` headers.
    pub(crate) fn absorb(&mut self, reply: &Reply) {
        for set_cookie in reply.set_cookies() {
            let cookie = cookie::Cookie::parse(set_cookie).expect("valid Set-Cookie");
            if cookie.name() != self.cookie_name {
                continue;
            }
            let expired = cookie
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative());
            self.cookie = if expired || cookie.value().is_empty() {
                None
            } else {
                Some(cookie.value().to_owned())
            };
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Reply {
        let request = self.request("GET", path, "");
        self.send(request).await
    }

    pub(crate) async fn post(&mut self, path: &str) -> Reply {
        let request = self.request("POST", path, "");
        self.send(request).await
    }

    pub(crate) async fn put(&mut self, path: &str, body: &str) -> Reply {
        let request = self.request("PUT", path, body);
        self.send(request).await
    }

    pub(crate) async fn delete(&mut self, path: &str) -> Reply {
        let request = self.request("DELETE", path, "");
        self.send(request).await
    }

    /// Sends a request with exactly these `Cookie` header values, whatever
    /// the jar holds, and does not update the jar.
    pub(crate) async fn get_with_cookie_headers(&self, path: &str, cookies: &[&[u8]]) -> Reply {
        let mut request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        for value in cookies {
            request.headers_mut().append(
                header::COOKIE,
                HeaderValue::from_bytes(value).expect("header bytes"),
            );
        }
        self.send_alone(request).await
    }
}

/// A new browser, logged in as `user`.
pub(crate) async fn logged_in<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> Client {
    let mut client = app.client();
    let reply = client.post(&format!("/login/{user}")).await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "login: {}",
        reply.body
    );
    assert!(client.cookie.is_some(), "login sets the session cookie");
    client
}

/// Who the client's cookie is logged in as (`GET /whoami`), leaving the jar
/// alone.
pub(crate) async fn whoami(client: &Client) -> Option<String> {
    let reply = client.call("GET", "/whoami", "").await;
    match reply.status {
        StatusCode::OK => Some(reply.body),
        StatusCode::UNAUTHORIZED => None,
        other => panic!("unexpected status {other}"),
    }
}

/// Sends `method path` to one of the `/wait/...` routes, runs `between`
/// while its handler is paused between its two barrier waits, and returns
/// the reply.
pub(crate) async fn with_handler_paused<S: SessionStore + Clone>(
    app: &TestApp<S>,
    client: &Client,
    method: &str,
    path: &str,
    between: impl Future<Output = ()>,
) -> Reply {
    let mut pending = client.spawn(method, path, "");
    // A handler that answers before its pause (an error, say) fails the
    // test here instead of leaving it waiting at the barrier for ever.
    tokio::select! {
        _ = app.barrier.wait() => {}
        reply = &mut pending => {
            let reply = reply.expect("request task");
            panic!(
                "{method} {path} answered {} before reaching its pause: {}",
                reply.status, reply.body
            );
        }
    }
    between.await;
    app.barrier.wait().await;
    pending.await.expect("request task")
}

/// Checks that `reply` is the layer's 503: every one has this shape,
/// whether the handler's error or a failed commit produced it, and none
/// logs anybody in or out.
pub(crate) fn assert_unavailable(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(
        reply.body, "session store unavailable, try again shortly\n",
        "{what}"
    );
    assert_eq!(reply.header(header::RETRY_AFTER), Some("5"), "{what}");
    assert_eq!(
        reply.header(header::CACHE_CONTROL),
        Some("no-store"),
        "{what}"
    );
    assert!(
        reply.set_cookies().is_empty(),
        "{what}: never logged out or in by an outage"
    );
}

/// Waits until `pending` makes the store call `pause` holds. A request
/// that answers first (it failed before that call, say) fails the test
/// here, instead of leaving it waiting for a call that never comes.
pub(crate) async fn until_paused(pause: &mut Pause, pending: &mut JoinHandle<Reply>) {
    tokio::select! {
        _ = pause.reached() => {}
        reply = pending => {
            let reply = reply.expect("request task");
            panic!(
                "the request answered {} before the paused store call: {}",
                reply.status, reply.body
            );
        }
    }
}
