//! Open connections that end with their session: a [`SessionWatch`]
//! resolves when the session it was made from ends, for any reason and on
//! any instance, so that a WebSocket or an event stream closes instead of
//! outliving a logout.
//!
//! # Example
//!
//! A server-sent event stream that ticks every second and ends with an
//! `end` event when its session ends:
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use axum::response::sse::{Event, Sse};
//! use axum::{routing::get, Router};
//! use cloakroom::login::LoggedIn;
//! use cloakroom::{Key, MemoryStore, Session, SessionError, SessionLayer};
//! use tokio_stream::wrappers::IntervalStream;
//! use tokio_stream::StreamExt as _;
//!
//! async fn stream(
//!     _user: LoggedIn,
//!     session: Session,
//! ) -> Result<Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>>, SessionError> {
//!     let watch = session.watch().await?;
//!     let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
//!         .map(|_| Ok(Event::default().data("tick")));
//!     Ok(Sse::new(watch.until_ended(ticks, |ended| {
//!         Ok(Event::default().event("end").data(ended.as_str()))
//!     })))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sessions = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
//! let app: Router = Router::new().route("/stream", get(stream)).layer(sessions);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/streams.rs` has the same with a WebSocket, closed with
//! [`Ended::CLOSE_CODE`].
//!
//! # What ends a watch
//!
//! Everything that ends the session: a logout in another request,
//! logout-everywhere, a device signed out from another one, a
//! [`SessionAdmin`](crate::SessionAdmin) revocation, a session ended for
//! a changed credential, a move to a new ID (a login or
//! [`regenerate`](crate::Session::regenerate) in another request: the
//! stream's cookie is the old one), and the idle or absolute deadline
//! ([`Ended::Expired`]). An open watch is **not** activity: a session
//! whose only sign of life is an open stream expires at its idle deadline,
//! as a token would (other requests of the session move the deadline, and
//! the watch follows). A stream that should keep its session alive can
//! say so by making requests, or by calling [`SessionWatch::touch`] on
//! the user's own activity (a message received over the socket), never
//! on a timer.
//!
//! # How fast, on which store
//!
//! The layer keeps its watches in one register, made with its first watch
//! (a layer whose handlers never watch pays nothing), served by one task
//! that listens to the store's [change feed](crate::store::Changes) and
//! reads back, without recording activity, each watched session the feed
//! names:
//!
//! | store | hears | an end elsewhere reaches the watch |
//! | --- | --- | --- |
//! | `MemoryStore` | every call, in process | at once |
//! | `RedisStore` (cached or not, standalone or Cluster) | the invalidation channel, from every instance (a store on a connection the app opened itself, `RedisStore::new`, has no address to subscribe through, and polls) | within a few milliseconds |
//! | `SqliteStore` | its own calls; not other processes writing the file | at once; from another process within 5 s |
//! | `PostgresStore` | `LISTEN` on the channel its table's trigger notifies, from every instance | within a few milliseconds |
//! | a store of your own without [`changes`](crate::store::SessionStore::changes) | nothing | within [`POLL_INTERVAL`] |
//!
//! A `RedisStore` whose watches listen holds one more connection (its
//! subscription; a cached store has it already), and a `PostgresStore`
//! one connection of the application's pool (its `LISTEN`) from the first
//! watch on: size the pool for it.
//!
//! A Redis or PostgreSQL feed that is lost (a restarted or frozen server,
//! a dropped subscription or connection: the channel's heartbeat does not
//! come back in time) makes every watch re-check its session at once and then every
//! [`POLL_INTERVAL`] until the channel is back, so no end goes unseen for
//! longer than about 2 s; a store that fails during a re-check ends
//! nothing (the session may well be live) and is asked again a second
//! later. A deadline is seen within a quarter of a second of the layer's
//! clock passing it.
//!
//! Each open watch costs one entry in the register (about 300 bytes of
//! heap with its channel, measured with 10,000 open) and one store read
//! per announcement of its session; a feed that is lost costs one read
//! per watch per [`POLL_INTERVAL`]. Measured on loopback (the load bench,
//! `benches/README.md`), a logout on one instance closes a stream held on
//! another in 0.23 ms at the 99th percentile on Redis, 0.54 ms on a Redis
//! Cluster and 2 ms on PostgreSQL; with the channel cut just before the
//! logout, in at most 1.0 s (Redis) and 0.5 s (PostgreSQL).

mod hub;
mod stream;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub(crate) use self::hub::Hub;
pub use self::stream::UntilEnded;
use crate::id::StoreKey;

/// How often watches re-check their sessions when the store's change feed
/// cannot be trusted (lost, or a store without one).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a [`SessionWatch`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The session was ended or moved before its deadline: a logout,
    /// logout-everywhere, a revocation, a changed credential, a new ID.
    Revoked,
    /// The session's idle or absolute deadline passed.
    Expired,
}

impl Ended {
    /// The WebSocket close code to close with: in the range RFC 6455
    /// leaves to applications, and `4401` to echo HTTP's `401`.
    pub const CLOSE_CODE: u16 = 4401;

    /// A short reason, for an event's data or a close frame:
    /// `"session ended"` or `"session expired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "session ended",
            Self::Expired => "session expired",
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolves when a session ends; get one from
/// [`Session::watch`](crate::Session::watch). It owns what it needs, so it
/// can move into a WebSocket handler or a stream and outlive the request.
/// Dropping it closes the watch.
pub struct SessionWatch {
    state: WatchState,
}

enum WatchState {
    Open {
        hub: Arc<Hub>,
        key: StoreKey,
        id: u64,
        receiver: oneshot::Receiver<Ended>,
    },
    Done(Ended),
}

impl SessionWatch {
    pub(crate) fn open(
        hub: Arc<Hub>,
        key: StoreKey,
        id: u64,
        receiver: oneshot::Receiver<Ended>,
    ) -> Self {
        Self {
            state: WatchState::Open {
                hub,
                key,
                id,
                receiver,
            },
        }
    }

    /// A watch on nothing: the session had ended (or was never stored)
    /// when it was asked for.
    pub(crate) fn done(ended: Ended) -> Self {
        Self {
            state: WatchState::Done(ended),
        }
    }

    /// Waits until the session ends. Cancel-safe: use it in
    /// `tokio::select!` beside the connection's own work, and call it again
    /// after another branch won.
    pub async fn ended(&mut self) -> Ended {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }

    /// The reason, if the session has ended; never waits.
    pub fn try_ended(&mut self) -> Option<Ended> {
        let waker = std::task::Waker::noop();
        match self.poll_ended(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(ended) => Some(ended),
            std::task::Poll::Pending => None,
        }
    }

    pub(crate) fn poll_ended(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Ended> {
        let WatchState::Open { receiver, .. } = &mut self.state else {
            let WatchState::Done(ended) = self.state else {
                unreachable!("the state is either open or done")
            };
            return std::task::Poll::Ready(ended);
        };
        let ended = match std::pin::Pin::new(receiver).poll(cx) {
            std::task::Poll::Pending => return std::task::Poll::Pending,
            std::task::Poll::Ready(Ok(ended)) => ended,
            // The layer (and its register) is gone: nobody can vouch for
            // the session any more.
            std::task::Poll::Ready(Err(_)) => Ended::Revoked,
        };
        self.close();
        self.state = WatchState::Done(ended);
        std::task::Poll::Ready(ended)
    }

    /// Counts as activity of the session, as a request would (the idle
    /// deadline rolls when a touch is due), for a connection whose user is
    /// active on it: call it when a message arrives from the client, never
    /// on a timer (a stream left open on an unattended screen must not keep
    /// its session alive). Returns whether the session is live; when it is
    /// not, the watch ends.
    ///
    /// # Errors
    ///
    /// [`StoreError`](crate::store::StoreError) when the store fails; the
    /// watch stays open.
    pub async fn touch(&self) -> Result<bool, crate::store::StoreError> {
        match &self.state {
            WatchState::Open { hub, key, .. } => hub.touch(key).await,
            WatchState::Done(_) => Ok(false),
        }
    }

    /// Wraps a stream (the events of an SSE response, say) so that it ends
    /// when the session does, with one last item made by `last` (an `end`
    /// event). Once the session has ended, nothing more of the stream is
    /// passed on.
    pub fn until_ended<S, F>(self, stream: S, last: F) -> UntilEnded<S, F>
    where
        S: futures_core::Stream,
        F: FnOnce(Ended) -> S::Item,
    {
        UntilEnded::new(self, stream, last)
    }

    fn close(&mut self) {
        if let WatchState::Open { hub, key, id, .. } = &self.state {
            hub.close(key, *id);
        }
    }
}

use std::future::Future as _;

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store key is not shown: it names the session in the store.
        let ended = match &self.state {
            WatchState::Open { .. } => None,
            WatchState::Done(ended) => Some(*ended),
        };
        f.debug_struct("SessionWatch")
            .field("ended", &ended)
            .finish()
    }
}
