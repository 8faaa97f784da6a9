//! The server process (`LOAD_ROLE=server`): one implementation on one
//! store, on one tokio thread, counting its requests, store calls and heap
//! allocations for `GET /__stats`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::test_suite::CountingStore;
use cloakroom::{store::RedisStore, store::SessionStore, Key, MemoryStore, Session, SessionLayer};
use serde_json::json;

use crate::ALLOCATOR;

/// Counts requests and store calls; reported by `GET /__stats`.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    store_calls: AtomicU64,
}

pub(crate) fn server_main() {
    let imp = std::env::var("LOAD_IMPL").expect("LOAD_IMPL");
    let store = std::env::var("LOAD_STORE").expect("LOAD_STORE");
    let addr: SocketAddr = std::env::var("LOAD_ADDR")
        .expect("LOAD_ADDR")
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let stats = Arc::new(Stats::default());
        let app = match imp.as_str() {
            "baseline" => baseline_app(),
            "cloakroom" => cloakroom_app(&store, stats.clone(), false).await,
            "cloakroom-cached" => cloakroom_app(&store, stats.clone(), true).await,
            "tower-sessions" => tower_sessions_app(&store, stats.clone(), true).await,
            "tower-sessions-default" => tower_sessions_app(&store, stats.clone(), false).await,
            other => panic!("unknown implementation {other}"),
        };
        let counted = stats.clone();
        let app = app
            .route(
                "/__stats",
                get(move |State(stats): State<Arc<Stats>>| async move {
                    let allocs = ALLOCATOR.stats().allocations + ALLOCATOR.stats().reallocations;
                    Json(json!({
                        "requests": stats.requests.load(Ordering::Relaxed),
                        "store_calls": stats.store_calls.load(Ordering::Relaxed),
                        "allocations": allocs,
                    }))
                })
                .with_state(stats),
            )
            .layer(axum::middleware::from_fn(
                move |request: Request<axum::body::Body>, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        if request.uri().path() != "/__stats" {
                            counted.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        next.run(request).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("READY");
        axum::serve(listener, app).await.unwrap();
    });
}

fn baseline_app() -> Router {
    Router::new()
        .route("/anonymous", get(|| async { "ok" }))
        .route("/login", post(|| async { "ok" }))
        .route("/read", get(|| async { "alice" }))
        .route("/write", post(|| async { StatusCode::NO_CONTENT }))
}

/// Which write the `write` scenario makes: a value that changes on every
/// request, so that no implementation can skip it as unchanged.
fn next_value() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// cloakroom on `store`; on Redis, with the local cache if `cached`.
async fn cloakroom_app(store: &str, stats: Arc<Stats>, cached: bool) -> Router {
    async fn build<S: SessionStore + Clone>(store: S, stats: Arc<Stats>) -> Router {
        let counting = CountingStore::new(store);
        let layer = SessionLayer::builder(counting.clone())
            .key(Key::from_bytes(&[7; 32]).unwrap())
            .build()
            .unwrap();
        tokio::spawn(async move {
            // Mirror the wrapper's counter into the shared stats.
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                stats
                    .store_calls
                    .store(counting.calls().total(), Ordering::Relaxed);
            }
        });
        Router::new()
            .route("/anonymous", get(|| async { "ok" }))
            .route(
                "/login",
                post(|session: Session| async move {
                    session.login("alice").await.unwrap();
                    "ok"
                }),
            )
            .route(
                "/read",
                get(|session: Session| async move {
                    session.user_id().await.unwrap().unwrap_or_default()
                }),
            )
            .route(
                "/write",
                post(|session: Session| async move {
                    session.insert("page", next_value()).await.unwrap();
                    StatusCode::NO_CONTENT
                }),
            )
            .layer(layer)
    }
    match store {
        "memory" => build(MemoryStore::new(), stats).await,
        "redis" => {
            let url = std::env::var("REDIS_URL").expect("REDIS_URL");
            let connection = cloakroom::store::RedisConnection::connect(&url)
                .await
                .unwrap();
            let builder = RedisStore::builder(connection).key_prefix("bench-cloakroom:");
            let builder = if cached {
                builder.local_cache(100_000)
            } else {
                builder
            };
            let store = builder.build().unwrap();
            build(store, stats).await
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            // As the store's docs advise: WAL, `synchronous = NORMAL`, a
            // busy timeout.
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let path = std::env::var("LOAD_SQLITE_PATH").expect("LOAD_SQLITE_PATH");
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(2));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .unwrap();
            let store = cloakroom::store::SqliteStore::new(pool);
            store.migrate().await.unwrap();
            build(store, stats).await
        }
        other => panic!("unknown store {other}"),
    }
}

/// tower-sessions' store trait, counted like cloakroom's `CountingStore`.
#[derive(Debug, Clone)]
struct CountingTowerStore<S> {
    inner: S,
    stats: Arc<Stats>,
}

/// tower-sessions requires stores to be `Debug`.
impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

#[async_trait::async_trait]
impl<S: tower_sessions::SessionStore + Clone> tower_sessions::SessionStore
    for CountingTowerStore<S>
{
    async fn create(
        &self,
        record: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.create(record).await
    }

    async fn save(
        &self,
        record: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.save(record).await
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.load(id).await
    }

    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(id).await
    }
}

async fn tower_sessions_app(store: &str, stats: Arc<Stats>, always_save: bool) -> Router {
    match store {
        "memory" => {
            build_tower_sessions(tower_sessions::MemoryStore::default(), stats, always_save)
        }
        "redis" => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let url = std::env::var("REDIS_URL").expect("REDIS_URL");
            let pool = Pool::new(Config::from_url(&url).unwrap(), None, None, None, 4).unwrap();
            pool.init().await.unwrap();
            let store = tower_sessions_redis_store::RedisStore::new(pool);
            build_tower_sessions(store, stats, always_save)
        }
        other => panic!("unknown store {other}"),
    }
}

fn build_tower_sessions<S: tower_sessions::SessionStore + Clone>(
    store: S,
    stats: Arc<Stats>,
    always_save: bool,
) -> Router {
    // The same timeout as cloakroom's defaults: 30 minutes idle.
    let layer = tower_sessions::SessionManagerLayer::new(CountingTowerStore {
        inner: store,
        stats,
    })
    .with_expiry(tower_sessions::Expiry::OnInactivity(
        time::Duration::minutes(30),
    ))
    .with_always_save(always_save);
    Router::new()
        .route("/anonymous", get(|| async { "ok" }))
        .route(
            "/login",
            post(|session: tower_sessions::Session| async move {
                session.cycle_id().await.unwrap();
                session.insert("user", "alice").await.unwrap();
                "ok"
            }),
        )
        .route(
            "/read",
            get(|session: tower_sessions::Session| async move {
                session
                    .get::<String>("user")
                    .await
                    .unwrap()
                    .unwrap_or_default()
            }),
        )
        .route(
            "/write",
            post(|session: tower_sessions::Session| async move {
                session.insert("page", next_value()).await.unwrap();
                StatusCode::NO_CONTENT
            }),
        )
        .layer(layer)
}
