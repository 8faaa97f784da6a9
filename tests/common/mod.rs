//! Shared harness for the end-to-end tests: a real axum `Router` behind the
//! session layer, a client with a cookie jar, a controllable clock and a
//! store wrapped to count its calls.
#![allow(dead_code, unreachable_pub)]

pub mod backend;
pub mod demo;
pub mod e2e;
pub mod logs;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod proxy;
pub mod races;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cloakroom::test_suite::CountingStore;
use cloakroom::{
    Key, ManualClock, Session, SessionError, SessionLayer, SessionLayerBuilder, SessionStore,
};
use tokio::sync::Barrier;
use tower::ServiceExt;

pub const IDLE: Duration = Duration::from_secs(1800);
pub const ABSOLUTE: Duration = Duration::from_secs(43_200);

pub fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("32-byte key")
}

/// One app under test.
pub struct TestApp<S> {
    pub router: Router,
    pub store: CountingStore<S>,
    pub clock: ManualClock,
    pub layer: SessionLayer,
    /// Requests to `/wait/...` meet here twice (two parties at a time):
    /// after loading the session, and after changing it but before their
    /// commit.
    pub barrier: Arc<Barrier>,
}

impl<S: SessionStore + Clone> TestApp<S> {
    pub fn new(store: S) -> Self {
        Self::with(store, |b| b)
    }

    pub fn with(
        store: S,
        configure: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
    ) -> Self {
        let store = CountingStore::new(store);
        let clock = ManualClock::starting_now();
        let builder = SessionLayer::builder(store.clone())
            .key(key(1))
            .idle_timeout(IDLE)
            .absolute_timeout(ABSOLUTE)
            .clock(clock.clone());
        let layer = configure(builder)
            .build()
            .expect("valid test configuration");
        let barrier = Arc::new(Barrier::new(2));
        let router = routes(barrier.clone()).layer(layer.clone());
        Self {
            router,
            store,
            clock,
            layer,
            barrier,
        }
    }

    pub fn client(&self) -> Client {
        Client {
            router: self.router.clone(),
            cookie_name: self.layer.cookie_name().to_owned(),
            cookie: None,
        }
    }

    /// Store calls made so far.
    pub fn calls(&self) -> cloakroom::test_suite::StoreCalls {
        self.store.calls()
    }
}

fn routes(barrier: Arc<Barrier>) -> Router {
    Router::new()
        .route("/noop", get(|| async { "ok" }))
        .route("/get/{key}", get(get_key))
        .route("/set/{key}", put(set_key).delete(remove_key))
        .route("/keys", get(keys))
        .route("/ensure/{key}", put(ensure_key))
        .route("/incr/{key}", post(incr_key))
        .route("/write-then-read/{key}", put(write_then_read))
        .route("/clear", post(clear))
        .route("/login/{user}", post(login))
        .route("/login-keeping-cart/{user}", post(login_keeping_cart))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/logout-others", post(logout_others))
        .route("/sessions", get(sessions))
        .route("/remember", post(remember))
        .route("/remember-then-login/{user}", post(remember_then_login))
        .route("/regenerate", post(regenerate))
        .route("/cached/{key}", put(cached_set))
        .route("/wait/set/{key}", put(wait_then_set))
        .route("/wait/logout", post(wait_then_logout))
        .route("/wait/regenerate", post(wait_then_regenerate))
        .route("/wait/load-then-logout", post(load_wait_then_logout))
        .route(
            "/wait/load-then-logout-everywhere",
            post(load_wait_then_logout_everywhere),
        )
        .route("/wait/regenerate-then-commit", post(regenerate_then_wait))
        .route("/wait/login-then-commit/{user}", post(login_then_wait))
        .route("/wait/remember-then-commit", post(remember_then_wait))
        .route("/wait/blind-then-read", post(blind_then_wait_then_read))
        .route(
            "/wait/login-then-ignore/{user}",
            post(login_then_ignore_a_failure),
        )
        .route("/public/{key}", put(public_set))
        .with_state(barrier)
}

async fn get_key(
    session: Session,
    Path(key): Path<String>,
) -> Result<Response<Body>, SessionError> {
    Ok(match session.get::<String>(&key).await? {
        Some(value) => value.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn set_key(
    session: Session,
    Path(key): Path<String>,
    body: String,
) -> Result<StatusCode, SessionError> {
    session.insert(&key, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads, then writes: the loaded path of `insert`.
async fn ensure_key(
    session: Session,
    Path(key): Path<String>,
    body: String,
) -> Result<StatusCode, SessionError> {
    session.get::<String>(&key).await?;
    session.insert(&key, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Read-modify-write of a counter.
async fn incr_key(session: Session, Path(key): Path<String>) -> Result<String, SessionError> {
    let n = session.get::<u64>(&key).await?.unwrap_or(0) + 1;
    session.insert(&key, n).await?;
    Ok(n.to_string())
}

/// Clears, writes, then reads in one request: the read must see the
/// writes made before the session was loaded.
async fn write_then_read(
    session: Session,
    Path(key): Path<String>,
    body: String,
) -> Result<String, SessionError> {
    session.clear().await?;
    session.insert(&key, body).await?;
    let value = session.get::<String>(&key).await?.unwrap_or_default();
    let keys = session.keys().await?;
    Ok(format!("{value} {keys:?}"))
}

async fn remove_key(session: Session, Path(key): Path<String>) -> Result<StatusCode, SessionError> {
    Ok(if session.remove(&key).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    })
}

async fn keys(session: Session) -> Result<Json<Vec<String>>, SessionError> {
    Ok(Json(session.keys().await?))
}

async fn clear(session: Session) -> Result<StatusCode, SessionError> {
    session.clear().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn login(session: Session, Path(user): Path<String>) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn login_keeping_cart(
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login_keeping(user, &["cart"]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whoami(session: Session) -> Result<Response<Body>, SessionError> {
    Ok(match session.user_id().await? {
        Some(user) => user.into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    })
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.invalidate().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_everywhere(session: Session) -> Result<String, SessionError> {
    Ok(session.logout_everywhere().await?.to_string())
}

async fn logout_others(session: Session) -> Result<String, SessionError> {
    Ok(session.logout_other_devices().await?.to_string())
}

async fn sessions(session: Session) -> Result<Json<Vec<(String, bool)>>, SessionError> {
    let listed = session.list_sessions().await?;
    Ok(Json(
        listed
            .into_iter()
            .map(|s| (s.key.to_hex(), s.current))
            .collect(),
    ))
}

async fn remember_then_login(
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.remember_me().await?;
    session.login(user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remember(session: Session) -> Result<StatusCode, SessionError> {
    session.remember_me().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn regenerate(session: Session) -> Result<StatusCode, SessionError> {
    session.regenerate().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn cached_set(
    session: Session,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, SessionError> {
    session.insert(&key, "x").await?;
    Ok(([(header::CACHE_CONTROL, "private, max-age=60")], "cached"))
}

async fn wait_then_set(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
    Path(key): Path<String>,
) -> Result<StatusCode, SessionError> {
    // Load first, so that both requests hold the session before either
    // commits.
    session.keys().await?;
    barrier.wait().await;
    session.insert(&key, "written").await?;
    // The other party acts before this request commits.
    barrier.wait().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait_then_logout(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    barrier.wait().await;
    session.invalidate().await?;
    barrier.wait().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait_then_regenerate(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    barrier.wait().await;
    barrier.wait().await;
    session.regenerate().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the session, waits twice, then logs out: the other party acts
/// entirely between the load and the logout.
async fn load_wait_then_logout(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    barrier.wait().await;
    barrier.wait().await;
    session.invalidate().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the session, waits twice, then logs out everywhere.
async fn load_wait_then_logout_everywhere(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<String, SessionError> {
    session.keys().await?;
    barrier.wait().await;
    barrier.wait().await;
    Ok(session.logout_everywhere().await?.to_string())
}

/// Regenerates, then waits twice before the commit moves the session.
async fn regenerate_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.regenerate().await?;
    barrier.wait().await;
    barrier.wait().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Logs in, then waits twice before the commit stores the login.
async fn login_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    barrier.wait().await;
    barrier.wait().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks for remember-me, then waits twice before the commit saves it.
async fn remember_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.remember_me().await?;
    barrier.wait().await;
    barrier.wait().await;
    Ok(StatusCode::NO_CONTENT)
}

/// A blind write, then (after the test breaks the store) a read that fails.
async fn blind_then_wait_then_read(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.insert("blind", "x").await?;
    barrier.wait().await;
    barrier.wait().await;
    session.get::<String>("other").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Logs in, then ignores a store failure: the layer must not let the
/// "logged in" answer through without the session behind it.
async fn login_then_ignore_a_failure(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
    Path(user): Path<String>,
) -> StatusCode {
    session.login(user).await.expect("login");
    barrier.wait().await;
    barrier.wait().await;
    let _ignored = session.list_sessions().await;
    StatusCode::NO_CONTENT
}

async fn public_set(
    session: Session,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, SessionError> {
    session.insert(&key, "x").await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        "cacheable?",
    ))
}

/// A browser stand-in: keeps the session cookie the way a browser would.
#[derive(Clone)]
pub struct Client {
    pub router: Router,
    pub cookie_name: String,
    /// The session cookie's value, if the jar holds one.
    pub cookie: Option<String>,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The session cookie's `Set-Cookie` headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ASCII Set-Cookie").to_owned())
            .collect()
    }

    pub fn set_cookie(&self) -> Option<String> {
        let mut all = self.set_cookies();
        assert!(all.len() <= 1, "at most one Set-Cookie: {all:?}");
        all.pop()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

impl Client {
    pub fn request(&self, method: &str, path: &str, body: &str) -> Request<Body> {
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
    pub async fn send(&mut self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let reply = read(response).await;
        self.absorb(&reply);
        reply
    }

    pub fn absorb(&mut self, reply: &Reply) {
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

    pub async fn get(&mut self, path: &str) -> Reply {
        let request = self.request("GET", path, "");
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str) -> Reply {
        let request = self.request("POST", path, "");
        self.send(request).await
    }

    pub async fn put(&mut self, path: &str, body: &str) -> Reply {
        let request = self.request("PUT", path, body);
        self.send(request).await
    }

    pub async fn delete(&mut self, path: &str) -> Reply {
        let request = self.request("DELETE", path, "");
        self.send(request).await
    }

    /// Sends a request with exactly these `Cookie` header values, whatever
    /// the jar holds, and does not update the jar.
    pub async fn get_with_cookie_headers(&self, path: &str, cookies: &[&[u8]]) -> Reply {
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
        read(
            self.router
                .clone()
                .oneshot(request)
                .await
                .expect("infallible"),
        )
        .await
    }
}

/// Sends `method path` to one of the `/wait/...` routes, runs `between`
/// while its handler is paused between its two barrier waits, and returns
/// the reply.
pub async fn with_handler_paused<S: SessionStore + Clone>(
    app: &TestApp<S>,
    client: &Client,
    method: &str,
    path: &str,
    between: impl std::future::Future<Output = ()>,
) -> Reply {
    let request = client.request(method, path, "");
    let pending = tokio::spawn({
        let mut c = client.clone();
        async move { c.send(request).await }
    });
    app.barrier.wait().await;
    between.await;
    app.barrier.wait().await;
    pending.await.expect("request task")
}

pub async fn read(response: Response<Body>) -> Reply {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.expect("body");
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
