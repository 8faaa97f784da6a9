//! Server-side sessions for tower, axum and hyper.
//!
//! A cloakroom hands you a ticket that means nothing by itself; your coat
//! stays behind the counter, and the attendant can refuse a ticket at any
//! moment. `cloakroom` does that for web sessions: the browser holds an
//! opaque, signed, 128-bit random ID in an `HttpOnly`, `Secure`, `SameSite`
//! cookie, and the session data stays on the server, in a store you choose.
//!
//! This page is the guide. Each topic's details are on its module's page:
//! [`login`] (routes that need a user), [`device`] (a user's devices and
//! client addresses), [`flash`] (flash messages in axum pages), [`csrf`]
//! (CSRF protection), [`store`] (the stores,
//! and how to write one), [`test_suite`] (testing a store, or an app
//! with a clock you move) and [`id`] (session IDs).
//!
//! # Why server-side sessions
//!
//! Many apps keep sessions in JWTs, often in `localStorage`. Such a token
//! cannot be revoked before it expires (a logout, a stolen laptop, a
//! demoted admin), its claims go stale the moment they are issued, and any
//! XSS on the page can read it and carry it away. Revocation needs server
//! state anyway. With `cloakroom`:
//!
//! - **Revocation is instant.** Logout deletes the session; "log out
//!   everywhere" deletes every session of a user, from a request
//!   ([`Session::logout_everywhere`]) or from anywhere in the app
//!   ([`SessionAdmin::logout_everywhere`]), after a password change, say.
//! - **Nothing in the cookie can go stale, be read or be forged.** It is a
//!   random ID plus an HMAC-SHA256 tag; the data and the user live on the
//!   server.
//! - **Scripts cannot read the cookie** (`HttpOnly`), so XSS cannot steal
//!   the session.
//! - **It stays cheap.** A request that does not use its session makes no
//!   store call; a read is one store call; rolling expiry writes only once
//!   a configurable fraction of the idle window has passed; a write sends
//!   only the keys that changed.
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! cloakroom = "0.1"
//! axum = "0.8"
//! tokio = { version = "1", features = ["full"] }
//! tracing-subscriber = "0.3"
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::post, Router};
//! use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
//!     session.insert("counter", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     // ... check the password first ...
//!     session.login("user-42").await?; // a fresh session ID; the old one stops working
//!     Ok("welcome")
//! }
//!
//! async fn logout(session: Session) -> Result<&'static str, SessionError> {
//!     session.invalidate().await?; // deleted now, cookie expired
//!     Ok("bye")
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The layer reports store failures and setup mistakes through tracing.
//!     tracing_subscriber::fmt().init();
//!     // 32 or more random bytes as hex, from your configuration.
//!     let key = Key::from_hex(&std::env::var("SESSION_KEY")?)?;
//!     let sessions = SessionLayer::builder(MemoryStore::new())
//!         .key(key)
//!         .idle_timeout(Duration::from_secs(30 * 60))
//!         .absolute_timeout(Duration::from_secs(12 * 3600))
//!         .build()?;
//!
//!     let app = Router::new()
//!         .route("/counter", post(counter))
//!         .route("/login", post(login))
//!         .route("/logout", post(logout))
//!         .layer(sessions);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! Make a key once and keep it with your secrets: `openssl rand -hex 32`,
//! or [`Key::generate`] and [`Key::to_hex`] from Rust.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! | --- | --- | --- |
//! | `memory` | [`MemoryStore`]: sharded, in process, expired sessions swept on access and in the background, at most 1,000,000 sessions unless configured | yes |
//! | `axum` | [`Session`] as an axum extractor (also `Option<Session>`); [`Flashes`](flash::Flashes) for a page's flash messages; [`LoggedIn`](login::LoggedIn), [`CurrentUser`](login::CurrentUser) and [`LoadUser`](login::LoadUser) for routes that need a user; [`SessionError`] as a response ([`SessionError::status`]: `503` for store failures, `400` for data no store can hold, `401`/`404` for [`logout_device`](Session::logout_device)) | yes |
//! | `csrf` | [`CsrfLayer`](csrf::CsrfLayer) and [`CsrfToken`](csrf::CsrfToken): CSRF protection bound to the session | yes |
//! | `device-labels` | [`Device::label`](device::Device::label): "Firefox on Linux" from the stored User-Agent (the `woothee` parser); without it, no labels | yes |
//! | `redis` | [`RedisStore`](store::RedisStore): one Redis server or a Redis Cluster, with an optional local cache | no |
//! | `postgres` | [`PostgresStore`](store::PostgresStore): sessions in a PostgreSQL table on the app's own sqlx `PgPool` (sqlx 0.8) | no |
//! | `sqlite` | [`SqliteStore`](store::SqliteStore): sessions in a SQLite file on the app's own sqlx `SqlitePool` (sqlx 0.8, SQLite compiled in): persistent sessions with no server to run | no |
//! | `test-suite` | [`test_suite`]: the store conformance suite, [`CountingStore`](test_suite::CountingStore) and [`ManualClock`](test_suite::ManualClock) | no |
//!
//! # Using the session
//!
//! A handler takes a [`Session`] (in axum, as an extractor; outside axum it
//! is in the request extensions, `request.extensions().get::<Session>()`,
//! as `examples/hyper.rs` shows). It offers typed
//! [`get`](Session::get), [`insert`](Session::insert),
//! [`remove`](Session::remove), [`take`](Session::take) and
//! [`clear`](Session::clear) for any serde type, [`user_id`](Session::user_id),
//! the login and logout operations below, and flash messages. Timestamps
//! are `time::OffsetDateTime`, re-exported as [`store::time`].
//!
//! Nothing is read from the store until a method needs it, and only what
//! the request changed is written, when the response goes out. Data no
//! store can hold (a NUL character, nesting deeper than 64 levels) is
//! refused before anything is written, with [`SessionError::Unstorable`],
//! which answers `400`. A store that fails or hangs past the store timeout
//! makes the request answer `503`, with nothing half-written. A public
//! page that only shows who is signed in can stay up during a store
//! outage instead, served as to an anonymous visitor, by taking
//! [`OutageTolerant`](login::OutageTolerant) (see the
//! [`login`](login#during-a-store-outage) module); pages that need the
//! user still answer `503`.
//!
//! # Configuring the layer
//!
//! Every setting is a method of [`SessionLayerBuilder`], from
//! [`SessionLayer::builder`]: the signing keys ([`key`](SessionLayerBuilder::key),
//! which a second call replaces; [`previous_key`](SessionLayerBuilder::previous_key)
//! to keep an old key verifying during a rotation; [`key_ring`](SessionLayerBuilder::key_ring)),
//! the cookie ([`cookie_name`](SessionLayerBuilder::cookie_name),
//! [`host_prefix`](SessionLayerBuilder::host_prefix),
//! [`domain`](SessionLayerBuilder::domain), [`path`](SessionLayerBuilder::path),
//! [`same_site`](SessionLayerBuilder::same_site),
//! [`secure`](SessionLayerBuilder::secure),
//! [`http_only`](SessionLayerBuilder::http_only),
//! [`persistent`](SessionLayerBuilder::persistent)), the lifetimes
//! ([`idle_timeout`](SessionLayerBuilder::idle_timeout), 30 minutes;
//! [`absolute_timeout`](SessionLayerBuilder::absolute_timeout), 12 hours;
//! [`remember_me_idle_timeout`](SessionLayerBuilder::remember_me_idle_timeout),
//! 7 days; [`remember_me_absolute_timeout`](SessionLayerBuilder::remember_me_absolute_timeout),
//! 30 days; [`touch_after`](SessionLayerBuilder::touch_after), 0.1 and at
//! most 0.5), [`max_sessions_per_user`](SessionLayerBuilder::max_sessions_per_user)
//! (100), [`store_timeout`](SessionLayerBuilder::store_timeout) (3 s), what
//! a login records ([`record_user_agent`](SessionLayerBuilder::record_user_agent),
//! on; [`client_ip`](SessionLayerBuilder::client_ip), off),
//! [`login_url`](SessionLayerBuilder::login_url) (`/login`), the app's own
//! pages for a route that needs a user and for session errors in axum
//! ([`login_required_response`](SessionLayerBuilder::login_required_response),
//! [`session_error_response`](SessionLayerBuilder::session_error_response);
//! short text by default) and [`clock`](SessionLayerBuilder::clock).
//!
//! The cookie is called `__Host-id` by default: the `__Host-` prefix is
//! used whenever `Secure`, no `Domain` and `Path=/` allow it, and any other
//! `Secure` cookie is `__Secure-id`. [`build`](SessionLayerBuilder::build)
//! refuses settings that contradict each other (`host_prefix(true)` with a
//! domain or without `Secure`, `SameSite=None` without `Secure`, an
//! absolute timeout shorter than its idle one, no key, a key under 32
//! bytes) with an error naming the conflict; a timeout error names both
//! values and which of them is a default, so `idle_timeout` of a day alone
//! tells you to raise `absolute_timeout` too.
//!
//! The builder does nothing until `.build()`: handing the builder itself to
//! `Router::layer` fails to compile with ``error[E0277]: the trait bound
//! `SessionLayerBuilder: Layer<Route>` is not satisfied``; add `.build()?`.
//!
//! ## Developing on plain http
//!
//! The cookie is `Secure` by default, and browsers keep a `Secure` cookie
//! sent over plain http only from `localhost`, `127.0.0.1`, `[::1]` and
//! `*.localhost`. Anywhere else (a LAN name or address such as
//! `http://192.168.1.20:3000`, a container's host name) the browser
//! silently drops it: a login answers `303` and lands back on the login
//! form. The layer logs one warning (`secure_cookie_over_plain_http`) the
//! first time it sets a `Secure` cookie on a request with no sign of https
//! (no `https` scheme, no `X-Forwarded-Proto: https`, a host that is not
//! loopback), unless a request has already come over https. To develop
//! from another machine, browse to `http://<name>.localhost:3000` with that
//! name pointing at the server, put a TLS proxy in front (`caddy
//! reverse-proxy --from <name> --to :3000`), or, in development builds
//! only, call [`secure(false)`](SessionLayerBuilder::secure), which drops
//! the `__Host-` and `__Secure-` prefixes and logs a warning
//! (`cookie_without_secure`) when the layer is built, so that it is not
//! carried into production unseen.
//!
//! # Logins, devices and flash messages
//!
//! [`Session::login`] logs a user in under a fresh session ID (the old ID
//! stops working, so an ID planted before the login is worthless).
//! [`Session::login_keeping`] does the same and carries over only the data
//! keys it names from the anonymous session, which an attacker may have
//! planted: use it for every login from a password form, and plain `login`
//! only where the anonymous session holds nothing a stranger could have put
//! there. [`Session::remember_me`], in the request that logs in, gives the
//! session a persistent cookie and the remember-me lifetimes.
//! [`Session::regenerate`] moves the session to a fresh ID without a login
//! (after a privilege change, say). [`Session::invalidate`] logs out: it
//! ends the session and expires the cookie. [`Session::logout_everywhere`]
//! ends every session of the user, [`Session::logout_other_devices`] all
//! but this one.
//!
//! Routes that need a user take [`LoggedIn`](login::LoggedIn) (the user ID)
//! or [`CurrentUser`](login::CurrentUser) (the app's own user type), which
//! send a browser without a user to the login page with `?next=`.
//! Sessions can be bound to the user's credential
//! ([`Session::bind_credential`]): a password changed elsewhere, an
//! operator's reset or a deleted account ends them, in the store.
//! [`Reauthenticated`](login::Reauthenticated) guards sensitive actions
//! with a recent [`Session::password_confirmed`]. A login through an
//! identity provider can end with the provider's session:
//! [`Session::expire_login_at`] gives it an earlier absolute deadline of
//! its own, and [`Session::link_external_session`] lets a back-channel
//! logout end it through [`SessionAdmin::end_external_session`]. See the
//! [`login`] module. [`Session::list_sessions`], [`Session::count_sessions`]
//! and [`Session::logout_device`] serve a "your devices" page: see the
//! [`device`] module.
//!
//! [`Session::flash`] leaves a [`Flash`] message for the next page, and
//! [`Session::take_flashes`] returns the waiting messages (oldest first, at
//! most 16) and removes them, so the page after does not show them again.
//! A request that neither sets nor reads a message writes nothing for
//! them, and a page without a session reads nothing. Set a message after
//! `login` or `invalidate` in the same request: it lands in the session
//! the browser keeps (after a logout, a fresh anonymous one). In axum, the
//! [`Flashes`](flash::Flashes) extractor takes them in one argument of a
//! page's handler: see the [`flash`] module.
//!
//! Outside requests, a [`SessionAdmin`] lists, counts and ends a user's
//! sessions and sweeps expired ones: from the layer
//! ([`SessionLayer::admin`]), or from the store alone
//! ([`SessionAdmin::new`], for an operations tool; it needs no signing
//! key). After a breach or a leaked signing key, restart with a new key
//! (and no `previous_key`), then call
//! [`SessionAdmin::end_all_sessions`]: it ends every session of every
//! user, anonymous ones too, on every instance, and returns how many;
//! logins that complete after it starts are kept. It works through the
//! store in batches and is not cut off at the store timeout; if it fails,
//! calling it again ends the rest.
//!
//! `examples/accounts.rs` puts all of this together: argon2 password
//! logins with remember-me, a page behind login, a devices page, a
//! password change that signs out every other device, flash messages and
//! CSRF tokens on every form.
//!
//! # CSRF protection
//!
//! `SameSite=Lax` keeps the session cookie off cross-site form posts, but
//! not off requests from a sibling subdomain (the same *site*), off
//! state-changing `GET`s, or in old browsers.
//! [`CsrfLayer`](csrf::CsrfLayer), inside the session layer, adds two
//! checks to every `POST`, `PUT`, `PATCH` and `DELETE`: where the browser
//! says the request comes from (`Sec-Fetch-Site`, `Origin`), then a token
//! bound to the session, which handlers put into forms with the
//! [`CsrfToken`](csrf::CsrfToken) extractor. Install both layers in one
//! call, in the order they need:
//! `.layer(sessions.with_csrf(CsrfLayer::new()))` ([`SessionLayer::with_csrf`]).
//! A layer missing or in the wrong order answers `500` with a body that
//! says how to fix it (in debug builds) and logs it once; a session layer
//! without CSRF checks warns at the first unsafe request from a browser,
//! unless built with
//! [`csrf_not_needed`](SessionLayerBuilder::csrf_not_needed). The [`csrf`]
//! module has the set-up, tokens for scripts and the failure page.
//!
//! # Open connections end with their session
//!
//! A WebSocket or an event stream outlives the request that opened it, so
//! a logout reaching only the next request would leave it running.
//! [`Session::watch`] gives a [`SessionWatch`](watch::SessionWatch) that
//! resolves when the session ends for any reason (a logout anywhere,
//! logout-everywhere, a revoked device, a changed credential, a new ID,
//! its deadline), on whichever instance it happens;
//! [`SessionWatch::until_ended`](watch::SessionWatch::until_ended) ends a
//! stream with a last event, and [`Ended::CLOSE_CODE`](watch::Ended::CLOSE_CODE)
//! closes a socket. The [`watch`] module says how fast each store tells
//! (at once in process, milliseconds on Redis and PostgreSQL) and the
//! bound when its channel is lost (about 2 s); `examples/streams.rs` has
//! an SSE and a WebSocket handler.
//!
//! # Choosing and configuring a store
//!
//! | Store | Feature | Sessions live | Suits |
//! | --- | --- | --- | --- |
//! | [`MemoryStore`] | `memory` (default) | in the process, lost on restart | one process, development, tests |
//! | [`RedisStore`](store::RedisStore) | `redis` | in Redis 7.0 or later, standalone or Cluster | several instances; reads served in process with the local cache |
//! | [`PostgresStore`](store::PostgresStore) | `postgres` | in a table on the app's own `PgPool` | apps that already run PostgreSQL |
//! | [`SqliteStore`](store::SqliteStore) | `sqlite` | in a table in a SQLite file, on the app's own `SqlitePool` | one application server, sessions that survive a restart, no server to run |
//!
//! Each store's page describes its layout, its statements or scripts, its
//! failure modes and its limits. Every store passes the same conformance
//! suite and the same end-to-end tests, so the layer behaves the same on
//! each. A store outage, a locked table or a paused server answers `503`
//! within the store timeout, and service resumes by itself.
//!
//! **Memory.** [`MemoryStore::new`], or [`MemoryStore::builder`] for
//! another capacity. A layer on it sweeps expired sessions in the
//! background by itself.
//!
//! **Redis and Redis Cluster.**
//! [`RedisStore::connect`](store::RedisStore::connect) for one server, or
//! [`RedisConnection::connect_cluster`](store::RedisConnection::connect_cluster)
//! and [`RedisStore::builder`](store::RedisStore::builder) for a cluster;
//! the builder also sets a [`key_prefix`](store::RedisStoreBuilder::key_prefix)
//! (one per application sharing a Redis) and a
//! [`local_cache`](store::RedisStoreBuilder::local_cache). With the cache,
//! several instances on one Redis serve session reads from memory, while a
//! logout, logout-everywhere or admin revocation on any instance is refused
//! by every other within a fraction of a millisecond (p99 239 µs on
//! loopback). The cache needs every instance on that Redis to run a
//! version that announces its writes, and, with Redis ACLs, access to the
//! channel `<prefix>changed`. Redis expires sessions by itself; no sweeper
//! is needed.
//!
//! **PostgreSQL.** [`PostgresStore::new`](store::PostgresStore::new) on a
//! clone of the app's pool, or [`PostgresStore::builder`](store::PostgresStore::builder)
//! for another schema, table or sweep batch size. Call
//! [`migrate`](store::PostgresStore::migrate) at start-up (idempotent, safe
//! from several processes at once), or apply
//! [`migration_sql`](store::PostgresStore::migration_sql) with your own
//! migration tool, and run a sweeper:
//! `layer.admin().spawn_sweeper(Duration::from_secs(300))`.
//!
//! **SQLite.** [`SqliteStore::new`](store::SqliteStore::new) on a clone of
//! the app's pool, or [`SqliteStore::builder`](store::SqliteStore::builder);
//! [`migrate`](store::SqliteStore::migrate) and a sweeper as for
//! PostgreSQL. Open the pool with these options (the store's page shows
//! the code):
//!
//! - `journal_mode(SqliteJournalMode::Wal)`, so that reads never wait for
//!   a write;
//! - a `busy_timeout` shorter than the layer's store timeout (3 s by
//!   default), so that a database locked by someone else is SQLite's own
//!   quick `503` rather than the layer's time-out;
//! - `synchronous(SqliteSynchronous::Normal)`, the usual companion of WAL;
//! - `create_if_missing(true)` for a file that may not exist yet.
//!
//! SQLite has one writer at a time: expect some thousands of session
//! writes a second from one process and many more reads. Several
//! application servers, or tens of thousands of writes a second, want
//! PostgreSQL or Redis.
//!
//! **Your own.** Implement [`SessionStore`](store::SessionStore) and run
//! the conformance suite against it: see [Writing a
//! store](store#writing-a-store).
//!
#![doc = include_str!("../docs/security.md")]
//!
//! # Security events
//!
//! The layer emits `tracing` events with target `cloakroom::security` and a
//! stable `event` field: `session_created`, `session_rotated` (login or
//! regenerate), `session_forwarded` (a logout followed a moved session to
//! its new ID), `session_invalidated`, `logged_out_everywhere`,
//! `all_sessions_ended` (every session of every user, by
//! [`SessionAdmin::end_all_sessions`]), `sessions_evicted` (over the
//! per-user limit), `session_orphaned` (a new
//! record that could not be deleted after a failure), `cookie_rejected`
//! (once per request, with `reason` = `malformed`, `bad_signature` or
//! `too_many`, and counts), `session_vanished` (ended by another request
//! while this one ran), `id_collision`, `csrf_rejected` (with `reason`),
//! and at debug level `session_not_found`. Sessions appear only as
//! `session` = the first 8 hex characters of their store key. Store
//! failures are logged with target `cloakroom` and `event` =
//! `store_error`, with the error's class and its source's description,
//! never its `Debug` form.
//!
//! # Performance
//!
//! A request that does not use its session costs a cookie parse, one HMAC
//! verification and one small allocation, and no store call. A read is one
//! store call, and so is a write that does not read first; rolling expiry
//! rides along and writes at most once per `touch_after × idle_timeout`.
//! On a 2-core VM, behind axum with 64 connections, an authenticated read
//! on `MemoryStore` ran at 1.31× tower-sessions with the same rolling
//! timeout, and on Redis at 1.35× tower-sessions' Redis store, or 1.65× with
//! `RedisStore`'s local cache, which serves repeat reads in process and
//! hears of a logout on another instance within 239 µs (p99, loopback).
//! Verifying a cookie takes about 170 ns; a million sessions with a
//! 100-byte payload take 300 MB in `MemoryStore`. A `SqliteStore` saves
//! about 6,000 sessions a second from one process. `benches/README.md` in
//! the repository has the full tables, the commands that produced them,
//! and how much the figures vary between runs.
//!
//! # Examples
//!
//! The crate's `examples/` folder: `accounts.rs`, a small accounts site
//! with everything above, is the one to read first; `demo.rs` is the
//! demo app (`cargo run --example demo`); `counter.rs`, `login.rs`,
//! `csrf.rs`, `devices.rs`, `redis.rs`, `postgres.rs`, `sqlite.rs` and
//! `hyper.rs` each show one topic. Each file's header says how to run it.
//!
//! # How a request flows
//!
//! `ARCHITECTURE.md` in the repository follows one request through the
//! crate (cookie, session, store, commit plan, `Set-Cookie`) and says what
//! each module may not know.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

mod admin;
#[cfg(feature = "axum")]
mod axum;
mod clock;
mod config;
mod context;
mod cookie;
mod core;
mod credential;
#[cfg(feature = "csrf")]
pub mod csrf;
pub mod device;
mod error;
mod events;
#[cfg(feature = "axum")]
pub mod flash;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
mod key;
mod layer;
#[cfg(feature = "axum")]
pub mod login;
mod record;
#[cfg(feature = "axum")]
mod respond;
mod service;
mod session;
pub mod store;
#[cfg(feature = "test-suite")]
pub mod test_suite;
pub mod watch;

pub use crate::admin::SessionAdmin;
#[cfg(feature = "axum")]
pub use crate::axum::MissingSessionLayer;
pub use crate::cookie::SameSite;
pub use crate::error::{ConfigError, SessionError};
pub use crate::key::{Key, KeyRing};
pub use crate::layer::{SessionLayer, SessionLayerBuilder};
pub use crate::service::{ResponseFuture, SessionService};
pub use crate::session::{Flash, FlashLevel, Session};
#[cfg(feature = "memory")]
pub use crate::store::memory::{MemoryStore, MemoryStoreBuilder};

/// The README's Rust snippets, compiled by `cargo test --doc` with every
/// feature so that the README cannot drift from the API.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "memory",
    feature = "csrf",
    feature = "redis",
    feature = "postgres",
    feature = "sqlite"
))]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;
