//! The app under test: a real axum `Router` behind the session layer, with
//! a controllable clock and a store wrapped to count (and fail, and pause)
//! its calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put, Route};
use axum::{Json, Router};
use cloakroom::test_suite::{CountingStore, StoreCalls};
use cloakroom::{
    device::SessionHandle, flash::Flashes, login::CurrentUser, login::LoadUser, login::LoggedIn,
    login::OutageTolerant, login::Reauthenticated, store::SessionStore, test_suite::ManualClock,
    Flash, FlashLevel, Key, Session, SessionError, SessionLayer, SessionLayerBuilder,
};
use tokio::sync::Barrier;
use tower::layer::util::Identity;
use tower::{Layer, Service};

use super::client::Client;

pub(crate) const IDLE: Duration = Duration::from_secs(1800);
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(43_200);

pub(crate) fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("32-byte key")
}

/// One app under test.
pub(crate) struct TestApp<S> {
    pub(crate) router: Router,
    pub(crate) store: CountingStore<S>,
    pub(crate) clock: ManualClock,
    pub(crate) layer: SessionLayer,
    /// Requests to `/wait/...` meet here twice (two parties at a time):
    /// after loading the session, and after changing it but before their
    /// commit.
    pub(crate) barrier: Arc<Barrier>,
}

impl<S: SessionStore + Clone> TestApp<S> {
    pub(crate) fn new(store: S) -> Self {
        Self::with(store, |b| b)
    }

    /// An app whose session layer is configured further by `configure`.
    pub(crate) fn with(
        store: S,
        configure: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
    ) -> Self {
        Self::with_layer(store, configure, Identity::new())
    }

    /// [`TestApp::with`], with `extra` (a `CsrfLayer`, say) between the
    /// session layer and the routes.
    pub(crate) fn with_layer<L>(
        store: S,
        configure: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
        extra: L,
    ) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
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
        let router = routes(barrier.clone()).layer(extra).layer(layer.clone());
        Self {
            router,
            store,
            clock,
            layer,
            barrier,
        }
    }

    /// A new browser, with an empty cookie jar.
    pub(crate) fn client(&self) -> Client {
        Client {
            router: self.router.clone(),
            cookie_name: self.layer.cookie_name().to_owned(),
            cookie: None,
        }
    }

    /// Store calls made so far.
    pub(crate) fn calls(&self) -> StoreCalls {
        self.store.calls()
    }

    /// How many live sessions `user` has, by the store's own count and by
    /// its listing (which must agree).
    pub(crate) async fn sessions_of(&self, user: &str) -> usize {
        let admin = self.layer.admin();
        let counted = admin.count_sessions(user).await.unwrap();
        let listed = admin.list_sessions(user).await.unwrap().len();
        assert_eq!(counted as usize, listed, "count and listing agree");
        listed
    }

    /// Whether the store's count and listing both show `n` live sessions of
    /// `user` now: for waiting on work still landing (a spawned
    /// take-back), where the two reads may fall on either side of it.
    pub(crate) async fn has_sessions(&self, user: &str, n: usize) -> bool {
        let admin = self.layer.admin();
        let counted = admin.count_sessions(user).await.unwrap();
        let listed = admin.list_sessions(user).await.unwrap().len();
        counted as usize == n && listed == n
    }
}

fn routes(barrier: Arc<Barrier>) -> Router {
    Router::new()
        .route("/noop", get(|| async { "ok" }))
        .route("/get/{key}", get(get_key))
        .route("/set/{key}", put(set_key).delete(remove_key))
        .route("/set-two/{a}/{b}", put(set_two))
        .route("/keys", get(keys))
        .route("/debug", get(debug_session))
        .route("/ensure/{key}", put(ensure_key))
        .route("/incr/{key}", post(incr_key))
        .route("/write-then-read/{key}", put(write_then_read))
        .route("/clear", post(clear))
        .route("/read-then-clear", post(read_then_clear))
        .route("/take/{key}", post(take_key))
        .route("/raw/{key}", get(raw_key))
        .route("/expires", get(expires))
        .route("/set-then-expires/{key}", put(set_then_expires))
        .route("/set-then-login/{user}", post(set_then_login))
        .route("/login-then-regenerate/{user}", post(login_then_regenerate))
        .route("/login/{user}", post(login))
        .route("/login-keeping-cart/{user}", post(login_keeping_cart))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/logout-then-everywhere", post(logout_then_everywhere))
        .route("/logout-others", post(logout_others))
        .route("/sessions", get(sessions))
        .route("/sessions/count", get(count_sessions))
        .route("/remember", post(remember))
        .route("/remember-then-login/{user}", post(remember_then_login))
        .route("/regenerate", post(regenerate))
        .route("/cached/{key}", put(cached_set))
        .route("/wait/set/{key}", put(wait_then_set))
        .route("/wait/logout", post(wait_then_logout))
        .route("/wait/regenerate", post(wait_then_regenerate))
        .route("/wait/load-then-logout", post(load_wait_then_logout))
        .route(
            "/wait/load-then-end/{handle}",
            post(load_wait_then_end_session),
        )
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
        .route("/idp-login/{user}/{sid}/{deadline}", post(idp_login))
        .route(
            "/idp-login-remembered/{user}/{deadline}",
            post(idp_login_remembered),
        )
        .route("/idp-login-twice/{user}/{deadline}", post(idp_login_twice))
        .route("/expire-login-at/{deadline}", post(expire_login_at))
        .route("/link/{sid}", post(link_external_session))
        .merge(account_routes())
        .merge(
            Router::new()
                .route("/guarded", get(|| async { "inside" }))
                .route_layer(cloakroom::login::RequireLogin::new()),
        )
        .merge(
            Router::new()
                .route("/admin-only", get(|| async { "admin page" }))
                .route_layer(cloakroom::login::RequireLogin::allowing(|user| {
                    user == "admin"
                })),
        )
        .merge(csrf_routes())
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

/// Two writes in one request, both blind when the session is unread.
async fn set_two(
    session: Session,
    Path((a, b)): Path<(String, String)>,
    body: String,
) -> Result<StatusCode, SessionError> {
    session.insert(&a, body.clone()).await?;
    session.insert(&b, body).await?;
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

/// The handle's `Debug` text, once the session is loaded.
async fn debug_session(session: Session) -> Result<String, SessionError> {
    session.keys().await?;
    Ok(format!("{session:?}"))
}

async fn keys(session: Session) -> Result<Json<Vec<String>>, SessionError> {
    Ok(Json(session.keys().await?))
}

async fn clear(session: Session) -> Result<StatusCode, SessionError> {
    session.clear().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads the session, then clears it: the loaded path of `clear`.
async fn read_then_clear(session: Session) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    session.clear().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn take_key(
    session: Session,
    Path(key): Path<String>,
) -> Result<Response<Body>, SessionError> {
    Ok(match session.take::<String>(&key).await? {
        Some(value) => value.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// The raw JSON under `key`.
async fn raw_key(
    session: Session,
    Path(key): Path<String>,
) -> Result<Response<Body>, SessionError> {
    Ok(match session.get_value(&key).await? {
        Some(value) => Json(value).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// When the session expires, as a Unix timestamp, or `none`.
async fn expires(session: Session) -> Result<String, SessionError> {
    Ok(match session.expires_at().await? {
        Some(at) => at.unix_timestamp().to_string(),
        None => "none".to_owned(),
    })
}

/// Writes, then asks when the session expires, in one request.
async fn set_then_expires(
    session: Session,
    Path(key): Path<String>,
    body: String,
) -> Result<String, SessionError> {
    session.insert(&key, body).await?;
    expires(session).await
}

/// Writes to a session the request has not read, then logs in.
async fn set_then_login(
    session: Session,
    Path(user): Path<String>,
    body: String,
) -> Result<StatusCode, SessionError> {
    session.insert("cart", body).await?;
    session.login(user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Two moves in one request: what a take-back gives the old ID is the
/// session as it was before the first.
async fn login_then_regenerate(
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    session.regenerate().await?;
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

/// Logs out, then out everywhere: the second finds nothing left to end.
async fn logout_then_everywhere(session: Session) -> Result<String, SessionError> {
    session.invalidate().await?;
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

async fn count_sessions(session: Session) -> Result<String, SessionError> {
    Ok(session.count_sessions().await?.to_string())
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

/// A Unix time in whole seconds, from a path.
fn unix_time(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).expect("a representable time")
}

/// A login through an identity provider: the provider's session `sid`
/// ends at `deadline` (Unix seconds).
async fn idp_login(
    session: Session,
    Path((user, sid, deadline)): Path<(String, String, i64)>,
) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    session.expire_login_at(unix_time(deadline)).await?;
    session.link_external_session(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A provider's login with its deadline, then "remember me" asked after
/// it: the remember-me lifetime must not outlast the deadline.
async fn idp_login_remembered(
    session: Session,
    Path((user, deadline)): Path<(String, i64)>,
) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    session.expire_login_at(unix_time(deadline)).await?;
    session.remember_me().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A provider's login with its deadline, then a second login of the same
/// user in the same request: the deadline must hold through it.
async fn idp_login_twice(
    session: Session,
    Path((user, deadline)): Path<(String, i64)>,
) -> Result<StatusCode, SessionError> {
    session.login(user.clone()).await?;
    session.expire_login_at(unix_time(deadline)).await?;
    session.login(user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn expire_login_at(
    session: Session,
    Path(deadline): Path<i64>,
) -> Result<StatusCode, SessionError> {
    session.expire_login_at(unix_time(deadline)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn link_external_session(
    session: Session,
    Path(sid): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.link_external_session(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Meets the test at the barrier twice: the test acts in between (see
/// `with_handler_paused`).
async fn hold(barrier: &Barrier) {
    barrier.wait().await;
    barrier.wait().await;
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
    hold(&barrier).await;
    session.regenerate().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the session, is held, then logs out: the other party acts
/// entirely between the load and the logout.
async fn load_wait_then_logout(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    hold(&barrier).await;
    session.invalidate().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the session, is held, then ends the session `handle` of the
/// same user.
async fn load_wait_then_end_session(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
    Path(handle): Path<SessionHandle>,
) -> Result<StatusCode, SessionError> {
    session.keys().await?;
    hold(&barrier).await;
    session.logout_device(&handle).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the session, is held, then logs out everywhere.
async fn load_wait_then_logout_everywhere(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<String, SessionError> {
    session.keys().await?;
    hold(&barrier).await;
    Ok(session.logout_everywhere().await?.to_string())
}

/// Regenerates, then is held before the commit moves the session.
async fn regenerate_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.regenerate().await?;
    hold(&barrier).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Logs in, then is held before the commit stores the login.
async fn login_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(user).await?;
    hold(&barrier).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Logs the session's user in again with remember-me (the only way to
/// have it), then is held before the commit stores it.
async fn remember_then_wait(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    let user: Option<String> = session.user_id().await?;
    session.remember_me().await?;
    session.login(user.unwrap_or_default()).await?;
    hold(&barrier).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A blind write, then (after the test breaks the store) a read that fails.
async fn blind_then_wait_then_read(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<StatusCode, SessionError> {
    session.insert("blind", "x").await?;
    hold(&barrier).await;
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
    hold(&barrier).await;
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

/// A user of the app, as its own user store would load it: `ghost` is an
/// account that no longer exists, `broken` one whose load fails. Each load
/// draws a fresh `load` number, so a handler can tell whether two
/// extractors shared one load.
///
/// Users named `cred-...` live in [`CREDENTIALS`], with their password
/// standing in for its hash as the credential fingerprint: absent there,
/// they are deleted accounts. Every other user has no credential (no
/// binding).
#[derive(Clone, Debug)]
pub(crate) struct TestUser {
    name: String,
    load: u64,
    credential: String,
}

/// The user table of the `cred-...` users: name to password. Tests use
/// names of their own, so they share it safely.
static CREDENTIALS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

fn credentials() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    CREDENTIALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets a `cred-...` user's password, as a sign-up or an operator's reset
/// would, touching no session.
pub(crate) fn set_password(user: &str, password: &str) {
    credentials().insert(user.to_owned(), password.to_owned());
}

/// Deletes a `cred-...` user's account.
pub(crate) fn delete_account(user: &str) {
    credentials().remove(user);
}

impl LoadUser<Arc<Barrier>> for TestUser {
    type Rejection = (StatusCode, &'static str);

    async fn load_user(
        user_id: &str,
        _state: &Arc<Barrier>,
    ) -> Result<Option<Self>, Self::Rejection> {
        static LOADS: AtomicU64 = AtomicU64::new(0);
        let credential = if user_id.starts_with("cred-") {
            match credentials().get(user_id) {
                Some(password) => password.clone(),
                None => return Ok(None),
            }
        } else {
            String::new()
        };
        match user_id {
            "ghost" => Ok(None),
            "broken" => Err((StatusCode::BAD_GATEWAY, "user database down")),
            name => Ok(Some(Self {
                name: name.to_owned(),
                load: LOADS.fetch_add(1, Ordering::Relaxed),
                credential,
            })),
        }
    }

    fn credential(&self) -> &[u8] {
        self.credential.as_bytes()
    }
}

/// What a devices page shows of one session.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct DeviceEntry {
    pub(crate) handle: String,
    pub(crate) current: bool,
    pub(crate) label: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip: Option<String>,
    pub(crate) created: i64,
    pub(crate) last_seen: i64,
}

/// Routes for devices, flash messages and login-required pages.
fn account_routes() -> Router<Arc<Barrier>> {
    async fn devices(session: Session) -> Result<Json<Vec<DeviceEntry>>, SessionError> {
        let listed = session.list_sessions().await?;
        Ok(Json(
            listed
                .into_iter()
                .map(|s| DeviceEntry {
                    handle: s.handle().to_string(),
                    current: s.current,
                    label: s.device.label(),
                    user_agent: s.device.user_agent.clone(),
                    ip: s.device.ip.map(|ip| ip.to_string()),
                    created: s.created_at.unix_timestamp(),
                    last_seen: s.last_seen.unix_timestamp(),
                })
                .collect(),
        ))
    }

    /// Takes the handle as text, so that junk answers as an unknown
    /// handle does (`404`), as the `device` module advises.
    async fn end_device(
        session: Session,
        Path(handle): Path<String>,
    ) -> Result<StatusCode, SessionError> {
        let handle: SessionHandle = handle.parse()?;
        session.logout_device(&handle).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn flash(session: Session, message: String) -> Result<StatusCode, SessionError> {
        session.flash(FlashLevel::Success, message).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn flashes(session: Session) -> Result<Json<Vec<Flash>>, SessionError> {
        Ok(Json(session.take_flashes().await?))
    }

    /// A page's layout, given its messages by the extractor: how many (by
    /// `Deref` to a slice), then each (by `IntoIterator`).
    async fn layout(flashes: Flashes) -> String {
        let waiting = flashes.len();
        let shown: Vec<String> = flashes
            .into_iter()
            .map(|flash| format!("{}:{}", flash.level.as_str(), flash.message))
            .collect();
        format!("{waiting} [{}]", shown.join("|"))
    }

    /// Two extractors in one request: the first takes the messages.
    async fn layout_twice(Flashes(first): Flashes, second: Flashes) -> String {
        format!("{} then {}", first.len(), second.len())
    }

    async fn login_with_flash(
        session: Session,
        Path(user): Path<String>,
    ) -> Result<StatusCode, SessionError> {
        session.login(&user).await?;
        session
            .flash(FlashLevel::Success, format!("Signed in as {user}."))
            .await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn logout_with_flash(session: Session) -> Result<StatusCode, SessionError> {
        session.invalidate().await?;
        session.flash(FlashLevel::Info, "Signed out.").await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn account(LoggedIn(user): LoggedIn) -> String {
        user
    }

    async fn maybe_account(user: Option<LoggedIn>) -> String {
        user.map_or_else(|| "anonymous".to_owned(), |LoggedIn(user)| user)
    }

    async fn me(CurrentUser(user): CurrentUser<TestUser>, again: CurrentUser<TestUser>) -> String {
        let shared = if user.load == again.0.load {
            "one load"
        } else {
            "two loads"
        };
        format!("{} ({shared})", user.name)
    }

    async fn maybe_me(user: Option<CurrentUser<TestUser>>) -> String {
        user.map_or_else(|| "nobody".to_owned(), |CurrentUser(user)| user.name)
    }

    /// A public page that opted in to seeing "anonymous" during an outage.
    async fn home(OutageTolerant(user): OutageTolerant<LoggedIn>) -> String {
        user.map_or_else(|| "anonymous".to_owned(), |LoggedIn(user)| user)
    }

    /// The same, loading the app's user type.
    async fn home_me(OutageTolerant(user): OutageTolerant<CurrentUser<TestUser>>) -> String {
        user.map_or_else(|| "nobody".to_owned(), |CurrentUser(user)| user.name)
    }

    /// A public page that also writes to the session (a visit counter).
    async fn home_counting(
        OutageTolerant(user): OutageTolerant<LoggedIn>,
        session: Session,
    ) -> Result<String, SessionError> {
        session.insert("visited", true).await?;
        Ok(user.map_or_else(|| "anonymous".to_owned(), |LoggedIn(user)| user))
    }

    /// A password login: checks the password, logs in, binds the session
    /// to the credential and records the confirmation.
    async fn password_login(
        session: Session,
        Path(user): Path<String>,
        password: String,
    ) -> Result<StatusCode, SessionError> {
        if credentials().get(&user) != Some(&password) {
            return Ok(StatusCode::UNAUTHORIZED);
        }
        session.login(user).await?;
        session.bind_credential(&password).await?;
        session.password_confirmed().await?;
        Ok(StatusCode::NO_CONTENT)
    }

    /// A login that forgets to bind the session.
    async fn unbound_login(
        session: Session,
        Path(user): Path<String>,
    ) -> Result<StatusCode, SessionError> {
        session.login(user).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn change_password(
        session: Session,
        CurrentUser(user): CurrentUser<TestUser>,
        password: String,
    ) -> Result<String, SessionError> {
        set_password(&user.name, &password);
        Ok(session.credential_changed(&password).await?.to_string())
    }

    async fn confirm_password(session: Session) -> Result<StatusCode, SessionError> {
        session.password_confirmed().await?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn sensitive(Reauthenticated(user): Reauthenticated) -> String {
        user
    }

    Router::new()
        .route("/password-login/{user}", post(password_login))
        .route("/unbound-login/{user}", post(unbound_login))
        .route("/password", post(change_password))
        .route("/confirm-password", post(confirm_password))
        .route("/sensitive", get(sensitive))
        .route("/devices", get(devices))
        .route("/devices/{handle}", delete(end_device))
        .route("/flash", post(flash))
        .route("/flashes", get(flashes))
        .route("/layout", get(layout))
        .route("/layout-twice", get(layout_twice))
        .route("/login-with-flash/{user}", post(login_with_flash))
        .route("/logout-with-flash", post(logout_with_flash))
        .route("/account", get(account).post(account))
        .route("/maybe-account", get(maybe_account))
        .route("/me", get(me))
        .route("/maybe-me", get(maybe_me))
        .route("/home", get(home))
        .route("/home-me", get(home_me))
        .route("/home-counting", get(home_counting))
        .nest("/area", Router::new().route("/page", get(account)))
}

/// The routes the CSRF tests use. Without a `CsrfLayer` around them,
/// `/token` answers 500, as any `CsrfToken` extractor does.
#[cfg(feature = "csrf")]
fn csrf_routes() -> Router<Arc<Barrier>> {
    use std::collections::HashMap;

    use axum::Form;
    use cloakroom::csrf::CsrfToken;

    Router::new()
        .route(
            "/token",
            get(|token: CsrfToken| async move { token.masked() }),
        )
        .route(
            "/meta",
            get(|token: CsrfToken| async move {
                format!("<!doctype html><head>{}</head>", token.meta_tag())
            }),
        )
        .route(
            "/echo",
            post(|Form(form): Form<HashMap<String, String>>| async move {
                form.get("msg").cloned().unwrap_or_default()
            }),
        )
        .route(
            "/write",
            post(|session: Session| async move {
                session.insert("written", true).await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/write-then-token",
            post(|session: Session| async move {
                session.insert("cart", 1).await?;
                Ok::<_, SessionError>(CsrfToken::for_session(&session).await?.masked())
            }),
        )
        .route(
            "/hidden",
            get(|token: CsrfToken| async move { token.hidden_field() }),
        )
        .route(
            "/token-then-write",
            get(|token: CsrfToken, session: Session| async move {
                session.insert("cart", 1).await?;
                Ok::<_, SessionError>(token.masked())
            }),
        )
        .route(
            "/token-then-login/{user}",
            get(
                |token: CsrfToken, session: Session, Path(user): Path<String>| async move {
                    session.login(user).await?;
                    Ok::<_, SessionError>(token.masked())
                },
            ),
        )
        .route("/hooks/incoming", post(|| async { "hook" }))
        .route("/upload", post(upload))
        .route("/wait/token", get(wait_then_render_token))
        .route("/wait/token-then-write", get(token_wait_then_write))
        .route(
            "/wait/login-then-token/{user}",
            get(login_wait_then_render_token),
        )
}

/// Issues the token (loading the session), is held, then renders it: the
/// other party acts between the issue and the rendering. A `GET`, so that
/// the CSRF check lets it through without a token.
#[cfg(feature = "csrf")]
async fn wait_then_render_token(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<String, SessionError> {
    let token = cloakroom::csrf::CsrfToken::for_session(&session).await?;
    hold(&barrier).await;
    Ok(token.masked())
}

/// Issues the token, is held, then writes to the session (a cart) and
/// renders the token.
#[cfg(feature = "csrf")]
async fn token_wait_then_write(
    State(barrier): State<Arc<Barrier>>,
    session: Session,
) -> Result<String, SessionError> {
    let token = cloakroom::csrf::CsrfToken::for_session(&session).await?;
    hold(&barrier).await;
    session.insert("cart", 1).await?;
    Ok(token.masked())
}

/// Takes the token as an extractor, logs in, is held before the commit
/// stores the login, then renders the token.
#[cfg(feature = "csrf")]
async fn login_wait_then_render_token(
    State(barrier): State<Arc<Barrier>>,
    token: cloakroom::csrf::CsrfToken,
    session: Session,
    Path(user): Path<String>,
) -> Result<String, SessionError> {
    session.login(user).await?;
    hold(&barrier).await;
    Ok(token.masked())
}

/// Every field of a multipart form, read with axum's `Multipart` as an app
/// would: one line `name: N bytes, DIGEST` each.
#[cfg(feature = "csrf")]
async fn upload(mut form: axum::extract::Multipart) -> Result<String, Response<Body>> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        (StatusCode::BAD_REQUEST, format!("multipart: {e}\n")).into_response()
    };
    let mut out = String::new();
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            data.extend_from_slice(&chunk);
        }
        out.push_str(&field_line(&name, &data));
    }
    Ok(out)
}

#[cfg(feature = "csrf")]
/// How `/upload` describes a field: its name, size and an FNV-1a digest
/// of its bytes.
pub(crate) fn field_line(name: &str, data: &[u8]) -> String {
    let digest = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{name}: {} bytes, {digest:016x}\n", data.len())
}

#[cfg(not(feature = "csrf"))]
fn csrf_routes() -> Router<Arc<Barrier>> {
    Router::new()
}
