//! The local cache of a [`RedisStore`](super::RedisStore): sessions read
//! recently, served in process, and evicted on every instance whenever any
//! instance changes them.
//!
//! Every script that writes a session publishes the session's store key (in
//! hex) on the channel `<prefix>changed`. Each cached store subscribes to
//! that channel on a connection of its own and evicts what it hears; in a
//! Redis Cluster a plain `PUBLISH` reaches every node, so one subscription
//! to any node hears every change.
//!
//! The cache serves only while it knows it has missed nothing:
//!
//! - It starts empty and serves nothing until its subscription is
//!   confirmed.
//! - When the subscription's connection ends, or a `PING` on it goes
//!   unanswered for [`HEARTBEAT`], the cache is flushed and serves nothing
//!   until it has subscribed again.
//! - A read checks that the subscription was heard from (a message or a
//!   `PING` reply) within [`SILENCE_LIMIT`], so even a subscriber task that
//!   is stuck cannot leave the cache serving.
//!
//! A load that races an invalidation must not put back what was just
//! evicted. So a load takes a [`Ticket`] (the generation of its shard and
//! the cache's epoch) before it reads Redis, and its result is kept only if
//! neither has moved since: an eviction bumps its shard's generation, and a
//! flush bumps the epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::PubSubSink;

use crate::id::StoreKey;
use crate::record::{SessionRecord, Touch};

/// How often the subscriber pings its connection, and how long it waits
/// for the answer before it counts the subscription as lost.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);
/// A read serves from the cache only if the subscription was heard from
/// this recently.
const SILENCE_LIMIT: Duration = Duration::from_millis(1500);
/// How long the subscriber waits before it subscribes again, after a lost
/// subscription or a failed attempt: a server that is going down is not
/// hammered, and the cache (flushed meanwhile) serves nothing.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The number of shards; each has its own lock and an equal part of the
/// capacity.
const SHARDS: usize = 16;

/// A bounded map of sessions read recently, kept true by the invalidation
/// channel.
pub(super) struct LocalCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    max_age: Duration,
    /// Bumped by every flush: a load that began before one keeps nothing.
    epoch: AtomicU64,
    /// Until when (nanoseconds after `started`) the cache may serve: moved
    /// forward whenever the subscription is heard from, set to 0 on a flush.
    serving_until: AtomicU64,
    started: Instant,
    /// Whether the subscriber task runs (it is spawned by the first load,
    /// inside the application's runtime).
    subscriber: AtomicBool,
}

struct Shard {
    entries: HashMap<StoreKey, Entry>,
    /// Bumped by every eviction from this shard.
    generation: u64,
}

struct Entry {
    record: SessionRecord,
    stored: Instant,
}

/// What a load saw of the cache before it read Redis: its result is kept
/// only if nothing was evicted from its shard, and nothing flushed, since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    shard: usize,
    generation: u64,
    epoch: u64,
    serving: bool,
}

impl LocalCache {
    pub(super) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        generation: 0,
                    })
                })
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
            max_age,
            epoch: AtomicU64::new(0),
            serving_until: AtomicU64::new(0),
            started: Instant::now(),
            subscriber: AtomicBool::new(false),
        }
    }

    /// The session under `key` if the cache holds it, may serve it, and no
    /// round trip is needed: it is live at `touch.now`, younger than the
    /// maximum age, and not due for a touch (which must reach Redis).
    pub(super) fn get(&self, key: &StoreKey, touch: &Touch) -> Option<SessionRecord> {
        if !self.serving() {
            return None;
        }
        let mut shard = self.shard(key);
        let entry = shard.entries.get(key)?;
        if entry.stored.elapsed() >= self.max_age || entry.record.is_expired(touch.now) {
            shard.entries.remove(key);
            return None;
        }
        if entry.record.touch_due(touch) {
            return None;
        }
        Some(entry.record.clone())
    }

    /// Taken before a load reads Redis; see [`LocalCache::keep`].
    pub(super) fn ticket(&self, key: &StoreKey) -> Ticket {
        let index = shard_of(key);
        let shard = self.lock(index);
        Ticket {
            shard: index,
            generation: shard.generation,
            // Read under the shard's lock, as `keep` reads it: a flush bumps
            // the epoch before it clears the shards.
            epoch: self.epoch.load(Ordering::SeqCst),
            serving: self.serving(),
        }
    }

    /// Keeps what a load read, unless the subscription was not confirmed
    /// when the load began, or anything that could make it stale happened
    /// since: an eviction from its shard, or a flush.
    pub(super) fn keep(&self, ticket: Ticket, key: &StoreKey, record: SessionRecord) {
        if !ticket.serving {
            return;
        }
        let mut shard = self.lock(ticket.shard);
        if shard.generation != ticket.generation
            || self.epoch.load(Ordering::SeqCst) != ticket.epoch
        {
            return;
        }
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(key) {
            // Full: make room by dropping one entry, in the map's own
            // (hash) order, which is as good as random.
            if let Some(victim) = shard.entries.keys().next().copied() {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(
            *key,
            Entry {
                record,
                stored: Instant::now(),
            },
        );
    }

    /// Drops `key` and makes any load of it in flight keep nothing.
    pub(super) fn evict(&self, key: &StoreKey) {
        let mut shard = self.shard(key);
        shard.generation += 1;
        shard.entries.remove(key);
    }

    /// Drops everything and serves nothing until the subscription is
    /// confirmed again.
    fn flush(&self) {
        self.serving_until.store(0, Ordering::SeqCst);
        // The epoch moves before the shards are cleared: a load that checks
        // a shard after its clearing sees the new epoch and keeps nothing.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.generation += 1;
            shard.entries.clear();
        }
    }

    /// The subscription was heard from: serve for a while longer.
    fn heard(&self) {
        let until = self.started.elapsed() + SILENCE_LIMIT;
        let until = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.serving_until.fetch_max(until, Ordering::SeqCst);
    }

    fn serving(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.serving_until.load(Ordering::SeqCst)
    }

    /// The number of sessions held, for tests and benchmarks.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, Shard> {
        self.lock(shard_of(key))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[index])
    }

    /// Whether this call is the one that must start the subscriber.
    pub(super) fn claim_subscriber(&self) -> bool {
        !self.subscriber.swap(true, Ordering::SeqCst)
    }
}

/// A poisoned shard only means a panic elsewhere while it was held; its map
/// is still whole (every change to it is one call), so it stays usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Store keys are SHA-256 output, so any byte of them spreads evenly.
fn shard_of(key: &StoreKey) -> usize {
    usize::from(key.as_bytes()[0]) % SHARDS
}

/// Where the subscriber connects, and what it listens to.
pub(super) struct Subscription {
    /// The server (or, for a cluster, each node given) to subscribe
    /// through, tried in turn.
    pub(super) urls: Arc<[String]>,
    /// `<prefix>changed`.
    pub(super) channel: String,
}

/// The subscriber: keeps a subscription to the invalidation channel and
/// evicts what it hears, until the cache is dropped. Every time the
/// subscription is (re)made the cache starts from empty.
pub(super) async fn subscribe(cache: Weak<LocalCache>, subscription: Subscription) {
    let mut attempt = 0usize;
    loop {
        {
            let Some(cache) = cache.upgrade() else { return };
            cache.flush();
        }
        let url = &subscription.urls[attempt % subscription.urls.len()];
        attempt = attempt.wrapping_add(1);
        match connect(url, &subscription.channel).await {
            Ok((sink, stream)) => {
                crate::events::cache_subscribed();
                listen(&cache, sink, stream).await;
                if let Some(cache) = cache.upgrade() {
                    // At once, not after the delay: until this flush the
                    // cache would still serve what it may have missed news of.
                    cache.flush();
                }
                crate::events::cache_subscription_lost();
            }
            Err(error) => crate::events::cache_subscribe_failed(&error),
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

async fn connect(
    url: &str,
    channel: &str,
) -> Result<(PubSubSink, redis::aio::PubSubStream), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, subscribing).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))),
    }
}

/// Evicts what the subscription hears until it ends, a ping goes
/// unanswered, or the cache is dropped.
async fn listen(
    cache: &Weak<LocalCache>,
    mut sink: PubSubSink,
    mut stream: redis::aio::PubSubStream,
) {
    match cache.upgrade() {
        // Subscribed: from here on nothing can be missed unnoticed.
        Some(cache) => cache.heard(),
        None => return,
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                let Some(cache) = cache.upgrade() else { return };
                match parse_key(message.get_payload_bytes()) {
                    Some(key) => cache.evict(&key),
                    // Not a store key: something else publishes on the
                    // channel. Flushing is the safe answer to the unknown.
                    None => return,
                }
                cache.heard();
            }
            _ = heartbeat.tick() => {
                let ping = tokio::time::timeout(HEARTBEAT, sink.ping::<()>());
                if !matches!(ping.await, Ok(Ok(()))) {
                    return;
                }
                let Some(cache) = cache.upgrade() else { return };
                cache.heard();
            }
        }
    }
}

/// A store key in hex, as the scripts publish it.
fn parse_key(payload: &[u8]) -> Option<StoreKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(payload, &mut bytes).ok()?;
    Some(StoreKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::record::SessionRecord;

    fn key(first: u8, rest: u8) -> StoreKey {
        let mut bytes = [rest; 32];
        bytes[0] = first;
        StoreKey::from_bytes(bytes)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    fn touch() -> Touch {
        Touch {
            now: now(),
            after: 0.1,
        }
    }

    fn record() -> SessionRecord {
        SessionRecord::new(
            now(),
            time::Duration::minutes(30),
            time::Duration::hours(12),
        )
    }

    /// A cache whose subscription was just confirmed.
    fn serving(capacity: usize) -> LocalCache {
        let cache = LocalCache::new(capacity, Duration::from_secs(60));
        cache.heard();
        cache
    }

    #[test]
    fn a_kept_session_is_served_until_evicted() {
        let cache = serving(100);
        let k = key(1, 1);
        cache.keep(cache.ticket(&k), &k, record());
        assert_eq!(cache.get(&k, &touch()), Some(record()));
        cache.evict(&k);
        assert_eq!(cache.get(&k, &touch()), None);
    }

    #[test]
    fn nothing_is_served_or_kept_before_the_subscription_is_confirmed() {
        let cache = LocalCache::new(100, Duration::from_secs(60));
        let k = key(1, 1);
        let ticket = cache.ticket(&k);
        cache.heard();
        cache.keep(ticket, &k, record());
        assert_eq!(
            cache.len(),
            0,
            "a load that began unsubscribed keeps nothing"
        );
        cache.keep(cache.ticket(&k), &k, record());
        assert_eq!(cache.len(), 1);
        cache.flush();
        assert_eq!(cache.len(), 0);
        cache.keep(cache.ticket(&k), &k, record());
        assert_eq!(
            cache.get(&k, &touch()),
            None,
            "a flushed cache serves nothing"
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_load_that_raced_an_eviction_or_a_flush_keeps_nothing() {
        let cache = serving(100);
        let k = key(1, 1);
        let ticket = cache.ticket(&k);
        cache.evict(&k);
        cache.keep(ticket, &k, record());
        assert_eq!(cache.len(), 0, "evicted while loading");

        // An eviction in another shard does not matter.
        let ticket = cache.ticket(&k);
        cache.evict(&key(2, 1));
        cache.keep(ticket, &k, record());
        assert_eq!(cache.len(), 1);

        let other = key(3, 3);
        let ticket = cache.ticket(&other);
        cache.flush();
        cache.heard();
        cache.keep(ticket, &other, record());
        assert_eq!(cache.len(), 0, "flushed while loading");
    }

    #[test]
    fn expired_old_and_touch_due_sessions_are_not_served() {
        let cache = serving(100);
        let k = key(1, 1);
        cache.keep(cache.ticket(&k), &k, record());
        let later = |secs| Touch {
            now: now() + time::Duration::seconds(secs),
            after: 0.1,
        };
        // 10% of 30 minutes is 180 s.
        assert!(cache.get(&k, &later(179)).is_some());
        assert_eq!(
            cache.get(&k, &later(180)),
            None,
            "a due touch goes to Redis"
        );
        assert_eq!(cache.len(), 1, "and the entry stays for the touch to evict");
        assert_eq!(cache.get(&k, &later(30 * 60)), None, "idle");
        assert_eq!(cache.len(), 0, "an expired entry is dropped");

        let young = LocalCache::new(100, Duration::ZERO);
        young.heard();
        young.keep(young.ticket(&k), &k, record());
        assert_eq!(young.get(&k, &touch()), None, "older than the maximum age");
        assert_eq!(young.len(), 0);
    }

    #[test]
    fn a_full_cache_makes_room_and_never_grows_past_its_capacity() {
        let cache = serving(SHARDS * 2);
        for i in 0..=255u8 {
            for j in 0..4u8 {
                let k = key(i, j);
                cache.keep(cache.ticket(&k), &k, record());
            }
        }
        assert_eq!(cache.len(), SHARDS * 2);
        // The last one kept is there.
        assert!(cache.get(&key(255, 3), &touch()).is_some());
    }

    #[test]
    fn a_silent_subscription_stops_the_cache_serving() {
        let cache = serving(100);
        let k = key(1, 1);
        cache.keep(cache.ticket(&k), &k, record());
        assert!(cache.get(&k, &touch()).is_some());
        cache.serving_until.store(1, Ordering::SeqCst);
        assert_eq!(cache.get(&k, &touch()), None);
    }

    #[test]
    fn only_published_store_keys_parse() {
        let k = key(0xab, 0x01);
        assert_eq!(parse_key(k.to_hex().as_bytes()), Some(k));
        assert_eq!(parse_key(b"hello"), None);
        assert_eq!(parse_key(&[b'a'; 63]), None);
        assert_eq!(parse_key(&[b'z'; 64]), None);
    }
}
