//! The change feed of a [`PostgresStore`](super::PostgresStore):
//! `LISTEN` on the channel the table's trigger announces ended and moved
//! sessions on, for session watches.
//!
//! The feed is trusted only while it is heard: the listener publishes a
//! heartbeat on the channel through the pool every [`HEARTBEAT`], and
//! reports itself [lost](Change::Lost) when one has not come back within
//! [`SILENCE_LIMIT`] (a frozen server, a connection that died without a
//! word) or its connection ends (a terminated backend, a restart). It
//! then listens again on a fresh connection, and reports
//! [resumed](Change::Resumed) once `LISTEN` is in place; the watches
//! re-check every session meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::id::StoreKey;
use crate::store::{Change, ChangeNotifier};

/// How often a heartbeat is published.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long the feed may go without hearing its own heartbeat before it
/// counts as lost.
const SILENCE_LIMIT: Duration = Duration::from_millis(1500);
/// How long connecting and `LISTEN` may take, and the pause between
/// attempts after a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How often a table without the trigger is looked at again.
const NO_TRIGGER_RECHECK: Duration = Duration::from_secs(30);
/// A heartbeat's payload; store keys are hex, so never this.
const HEARTBEAT_PAYLOAD: &str = "heartbeat";

/// Keeps a `LISTEN` on `channel` and passes what it hears to `notifier`,
/// until aborted (when the last clone of the store is dropped).
pub(super) async fn listen(
    pool: PgPool,
    channel: String,
    has_trigger: String,
    notifier: ChangeNotifier,
) {
    loop {
        // A table migrated by an earlier version announces nothing: the
        // feed stays lost (watches poll) until `migrate` adds the trigger.
        match sqlx::query_scalar::<_, bool>(&has_trigger)
            .fetch_one(&pool)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                crate::events::watch_feed_failed(
                    "the session table has no announce trigger; run PostgresStore::migrate",
                );
                tokio::time::sleep(NO_TRIGGER_RECHECK).await;
                continue;
            }
            Err(error) => {
                crate::events::watch_feed_failed(&error.to_string());
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        }
        let connecting = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(listener)) => {
                crate::events::watch_feed_listening();
                // `LISTEN` is in place: nothing announced from here on is
                // missed, and the watches re-check what may have been.
                notifier.notify(Change::Resumed);
                hear(&pool, &channel, &notifier, listener).await;
                notifier.notify(Change::Lost);
                crate::events::watch_feed_lost();
            }
            Ok(Err(error)) => crate::events::watch_feed_failed(&error.to_string()),
            Err(_) => crate::events::watch_feed_failed("timed out"),
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

/// Passes on what `listener` hears until its connection ends or a
/// heartbeat does not come back in time.
async fn hear(pool: &PgPool, channel: &str, notifier: &ChangeNotifier, mut listener: PgListener) {
    let started = Instant::now();
    // When a heartbeat last came back, in milliseconds after `started`.
    // Any instance's will do: `NOTIFY` reaches every listener of the
    // database, so hearing one proves this connection hears them all.
    let heard = Arc::new(AtomicU64::new(0));
    // The reader runs on its own, never cancelled half-way through a
    // message; it ends when the connection does.
    let mut reader = {
        let (notifier, heard) = (notifier.clone(), Arc::clone(&heard));
        tokio::spawn(async move {
            while let Ok(Some(notification)) = listener.try_recv().await {
                let payload = notification.payload();
                if let Some(key) = parse_key(payload) {
                    notifier.notify(Change::Session(key));
                } else if payload == HEARTBEAT_PAYLOAD {
                    let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    heard.fetch_max(at, Ordering::SeqCst);
                } else {
                    // Not ours to understand: look at everything again.
                    notifier.notify(Change::All);
                }
            }
        })
    };
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut reader => return,
            _ = ticks.tick() => {}
        }
        let silent_for = started
            .elapsed()
            .saturating_sub(Duration::from_millis(heard.load(Ordering::SeqCst)));
        if silent_for > SILENCE_LIMIT {
            reader.abort();
            return;
        }
        let beat = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(HEARTBEAT_PAYLOAD)
            .execute(pool);
        // A heartbeat that cannot be sent is one that does not come back:
        // the silence check above decides.
        let _ = tokio::time::timeout(HEARTBEAT, beat).await;
    }
}

fn parse_key(payload: &str) -> Option<StoreKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(payload, &mut bytes).ok()?;
    Some(StoreKey::from_bytes(bytes))
}
