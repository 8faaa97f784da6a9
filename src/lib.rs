//! Server-side sessions for tower, axum and hyper.
//!
//! A cloakroom hands you a ticket that means nothing by itself; your coat
//! stays behind the counter, and the attendant can refuse a ticket at any
//! moment. `cloakroom` does the same for web sessions: the browser holds an
//! opaque, signed, 128-bit random ID in an `HttpOnly` cookie, and everything
//! else lives in a store the server controls. Sessions can be revoked
//! instantly, their data never goes stale in the client, and nothing in the
//! cookie can be read or forged.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::{get, post}, Router};
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
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Load the key from configuration: 32+ random bytes, as hex.
//! let key = Key::from_hex(&std::env::var("SESSION_KEY")?)?;
//! let sessions = SessionLayer::builder(MemoryStore::new())
//!     .key(key)
//!     .idle_timeout(Duration::from_secs(30 * 60))
//!     .absolute_timeout(Duration::from_secs(12 * 3600))
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/counter", post(counter))
//!     .route("/login", post(login))
//!     .route("/logout", post(logout))
//!     .layer(sessions);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Outside axum, the [`Session`] is in the request extensions
//! (`request.extensions().get::<Session>()`); see `examples/hyper.rs`.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! | --- | --- | --- |
//! | `memory` | [`MemoryStore`], sessions in process memory | yes |
//! | `axum` | [`Session`] as an axum extractor; errors as responses | yes |
//! | `csrf` | [`CsrfLayer`](crate::csrf::CsrfLayer) and [`CsrfToken`](crate::csrf::CsrfToken): CSRF protection bound to the session | yes |
//! | `redis` | [`RedisStore`](crate::store::RedisStore): Redis, standalone or Redis Cluster | no |
//! | `postgres` | [`PostgresStore`](crate::store::PostgresStore): sessions in a PostgreSQL table on the application's sqlx `PgPool` | no |
//! | `sqlite` | [`SqliteStore`](crate::store::SqliteStore): sessions in a SQLite file on the application's sqlx `SqlitePool`, no server to run | no |
//! | `test-suite` | [`test_suite`]: the store conformance suite and [`test_suite::CountingStore`] | no |
//!
//! # How a request flows
//!
//! 1. The layer reads every `Cookie` header and verifies the session
//!    cookie's HMAC with each key of the [`KeyRing`]. Junk, tampered or
//!    oversized cookies end here as "no session": no store call, no error.
//! 2. The handler's first use of the [`Session`] loads it from the store by
//!    its [`StoreKey`](crate::store::StoreKey) (SHA-256 of the ID), rolling the idle deadline in the
//!    same call when it is due. A handler that never touches the session
//!    costs no store call.
//! 3. When the response comes back, the layer writes only what the request
//!    changed (a [`store::Patch`]), creates a new session if one got data, and sets
//!    or expires the cookie. Responses that set a cookie get
//!    `Cache-Control: no-store` (unless the handler chose a policy); any
//!    response that read the session gets `Vary: Cookie`.
//!
//! # Security model
//!
//! - **Guessing**: IDs are 128 bits from the OS CSPRNG, signed with
//!   HMAC-SHA256 (256-bit tag); a guess must hit both.
//! - **Forged or tampered cookies**: rejected by the signature check,
//!   compared in constant time, before any store call.
//! - **Fixation**: [`Session::login`] and [`Session::regenerate`] move the
//!   session to a fresh ID when the response goes out; an ID the client
//!   made up is never adopted. The new record is written before the old
//!   one is retired, so a concurrent logout or logout-everywhere ends the
//!   new ID too, and a store failure or dropped request leaves one session,
//!   never none.
//! - **Theft via XSS**: the cookie is `HttpOnly`, so scripts cannot read it.
//!   XSS can still act as the user while the page is open; it cannot carry
//!   the session away.
//! - **Stale privileges**: data lives on the server; [`Session::logout_everywhere`]
//!   and [`SessionAdmin::logout_everywhere`] end a user's sessions at once.
//! - **Store dump or log leak**: stores hold SHA-256(ID), which is no
//!   cookie; `Debug` and tracing output show only an 8-character prefix of
//!   that hash.
//! - **CSRF**: `SameSite=Lax` stops cross-site form posts from carrying the
//!   cookie in current browsers. It does not stop attacks from sibling
//!   subdomains (same site) or state-changing `GET`s; use `CsrfLayer` for
//!   those.
//! - **Cookie planting from a subdomain**: the cookie carries the `__Host-`
//!   prefix whenever the settings allow it, and `__Secure-` otherwise (see
//!   [`SessionLayerBuilder::host_prefix`]).
//! - **Unbounded sessions**: every deadline counts from the session's
//!   creation, only a login gets the remember-me lifetime, a user has at
//!   most 100 sessions by default, also after a burst of concurrent logins
//!   ([`SessionLayerBuilder::max_sessions_per_user`]), a `MemoryStore`
//!   holds at most 1,000,000 sessions unless configured, and every store
//!   call is bounded by [`SessionLayerBuilder::store_timeout`].
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
//! 100-byte payload take 300 MB in `MemoryStore`. The README has the full
//! tables, the commands, and how much the figures vary between runs.

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
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
mod key;
mod layer;
#[cfg(feature = "axum")]
pub mod login;
mod record;
mod service;
mod session;
pub mod store;
#[cfg(feature = "test-suite")]
pub mod test_suite;

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
