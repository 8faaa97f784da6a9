//! The local cache of a [`RedisStore`](super::RedisStore): sessions read
//! recently, served in process, and evicted on every instance whenever any
//! instance changes them.
//!
//! Every script that writes a session publishes the session's store key (in
//! hex) on the channel `<prefix>changed`, and ending all sessions publishes
//! [`FLUSH`] there, on which every cache drops everything. Each cached store subscribes to
//! that channel on a connection of its own and evicts what it hears; in a
//! Redis Cluster a plain `PUBLISH` reaches every node, so one subscription
//! to any node hears every change.
//!
//! The cache serves only while it knows it has missed nothing:
//!
//! - It starts empty and serves nothing until a heartbeat has made the
//!   round trip: published through the store's own connection (on a
//!   cluster, on every master) every [`HEARTBEAT`], and heard back over the
//!   subscription from each node it was published on.
//! - When the subscription's connection ends, or a heartbeat does not come
//!   back within [`HEARTBEAT`], the cache is flushed and serves nothing
//!   until it has subscribed again and a heartbeat has come back.
//! - A read checks that a heartbeat came back within [`SILENCE_LIMIT`], so
//!   even a subscriber task that is stuck cannot leave the cache serving.
//!
//! A load that races an invalidation must not put back what was just
//! evicted. So a load takes a [`Ticket`] (the generation of its shard and
//! the cache's epoch) before it reads Redis, and its result is kept only if
//! neither has moved since: an eviction bumps its shard's generation, and a
//! flush bumps the epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use rand::rngs::OsRng;
use rand::TryRngCore as _;
use redis::aio::PubSubStream;

use super::connection::RedisConnection;

use crate::id::StoreKey;
use crate::record::{SessionRecord, Touch};
use crate::store::{Change, ChangeNotifier};

/// How often the subscriber sends a heartbeat through the invalidation
/// channel, and how long it waits for it to come back before it counts
/// the subscription as lost.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A read serves from the cache only if a heartbeat came back this
/// recently.
const SILENCE_LIMIT: Duration = Duration::from_millis(1500);
/// How long the subscriber waits before it subscribes again, after a lost
/// subscription or a failed attempt: a server that is going down is not
/// hammered, and the cache (flushed meanwhile) serves nothing.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The number of shards; each has its own lock and an equal part of the
/// capacity.
const SHARDS: usize = 16;

/// A bounded map of sessions read recently, kept true by the invalidation
/// channel.
pub(super) struct LocalCache {
    shards: Box<[Mutex<Shard>]>,
    /// The capacity, shared out among the shards.
    capacity: usize,
    max_age: Duration,
    /// Bumped by every flush: a load that began before one keeps nothing.
    epoch: AtomicU64,
    /// Until when (nanoseconds after `started`) the cache may serve: moved
    /// forward whenever the subscription is heard from, set to 0 on a flush.
    serving_until: AtomicU64,
    started: Instant,
    /// What the subscriber hears, passed on to session watches.
    changes: ChangeNotifier,
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
            capacity,
            max_age,
            epoch: AtomicU64::new(0),
            serving_until: AtomicU64::new(0),
            started: Instant::now(),
            // Lost until the first heartbeat comes back.
            changes: ChangeNotifier::starting(false),
        }
    }

    /// The feed session watches hear: every key evicted by the
    /// subscription, and whether it is trusted.
    pub(super) fn changes(&self) -> &ChangeNotifier {
        &self.changes
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
        let room = self.room(ticket.shard);
        if room == 0 {
            return;
        }
        if shard.entries.len() >= room && !shard.entries.contains_key(key) {
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

    /// How many sessions shard `index` may hold: an equal part of the
    /// capacity, the remainder going to the first shards, so that the
    /// shards together hold at most the capacity.
    fn room(&self, index: usize) -> usize {
        self.capacity / SHARDS + usize::from(index < self.capacity % SHARDS)
    }

    /// Drops `key` and makes any load of it in flight keep nothing.
    pub(super) fn evict(&self, key: &StoreKey) {
        let mut shard = self.shard(key);
        shard.generation += 1;
        shard.entries.remove(key);
    }

    /// Drops everything and serves nothing until the subscription is
    /// confirmed again.
    pub(super) fn flush(&self) {
        self.serving_until.store(0, Ordering::SeqCst);
        // The epoch moves before the shards are cleared: a load that checks
        // a shard after its clearing sees the new epoch and keeps nothing,
        // and one that kept before it is cleared with the rest.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in self.shards.iter() {
            lock(shard).entries.clear();
        }
    }

    /// A heartbeat came back whole: nothing published before it was
    /// missed, so serve for a while longer.
    fn heard(&self) {
        if !self.serving() {
            self.changes.notify(Change::Resumed);
        }
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
}

/// A poisoned lock only means a panic elsewhere while it was held; what
/// it guards here (a shard's map, a task handle) is changed in single
/// calls, so it is still whole and stays usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
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
    /// The store's own connection, which the heartbeat is published
    /// through.
    pub(super) connection: RedisConnection,
}

/// The subscriber: keeps a subscription to the invalidation channel and
/// evicts what it hears, until the cache is dropped. Every time the
/// subscription is (re)made the cache starts from empty.
pub(super) async fn subscribe(cache: Weak<LocalCache>, subscription: Subscription) {
    // Instances start at different nodes of a cluster, which spreads the
    // subscriptions (and means a bad node is not every instance's).
    // (Truncating the random number on a 32-bit target changes nothing.)
    let mut attempt = random_u64() as usize;
    loop {
        {
            let Some(cache) = cache.upgrade() else { return };
            cache.flush();
            cache.changes.notify(Change::Lost);
        }
        let url = &subscription.urls[attempt % subscription.urls.len()];
        attempt = attempt.wrapping_add(1);
        match connect(url, &subscription.channel).await {
            Ok(stream) => {
                crate::events::cache_subscribed();
                listen(&cache, &subscription, stream).await;
                if let Some(cache) = cache.upgrade() {
                    // At once, not after the delay: until this flush the
                    // cache would still serve what it may have missed news of.
                    cache.flush();
                    cache.changes.notify(Change::Lost);
                }
                crate::events::cache_subscription_lost();
            }
            Err(error) => crate::events::cache_subscribe_failed(&error),
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

async fn connect(url: &str, channel: &str) -> Result<PubSubStream, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, subscribing).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))),
    }
}

/// One heartbeat in flight: published through the store's own connection
/// (on a cluster, to every master), it must come back over the
/// subscription once from each node it was published on.
struct Heartbeat {
    /// `<HEARTBEAT_TAG><this subscriber's nonce>:<sequence number>`.
    payload: Vec<u8>,
    sent: Instant,
    /// How many nodes took the publish, once known.
    published_on: Option<usize>,
    /// How many copies came back so far.
    heard: usize,
}

impl Heartbeat {
    fn complete(&self) -> bool {
        self.published_on.is_some_and(|nodes| self.heard >= nodes)
    }
}

/// Evicts what the subscription hears until it ends, a heartbeat does not
/// come back in time, or the cache is dropped.
///
/// The cache serves only for [`SILENCE_LIMIT`] after the last heartbeat
/// that came back complete. A heartbeat reaches the subscription after
/// every change published before it on the same node (Redis delivers a
/// node's messages in order, and forwards them over the cluster bus in
/// order), so a complete one proves nothing published before it was lost.
async fn listen(cache: &Weak<LocalCache>, subscription: &Subscription, mut stream: PubSubStream) {
    let nonce = format!("{:016x}", random_u64());
    let mut sequence = 0u64;
    let mut in_flight: Option<Heartbeat> = None;
    let mut publishing: Option<BoxFuture<'static, Result<usize, redis::RedisError>>> = None;
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                let Some(cache) = cache.upgrade() else { return };
                on_message(&cache, message.get_payload_bytes(), in_flight.as_mut());
            }
            published = async { publishing.as_mut().expect("guarded").await }, if publishing.is_some() => {
                publishing = None;
                let (Ok(nodes), Some(beat)) = (published, in_flight.as_mut()) else { return };
                beat.published_on = Some(nodes);
                if beat.complete() {
                    let Some(cache) = cache.upgrade() else { return };
                    cache.heard();
                }
            }
            _ = ticks.tick() => {
                if let Some(beat) = in_flight.as_ref().filter(|b| !b.complete()) {
                    if beat.sent.elapsed() >= HEARTBEAT {
                        // Not back in time: the subscription (or the path
                        // from a node to it) may be dropping messages.
                        return;
                    }
                    // Still within its time: one heartbeat at a time.
                    continue;
                }
                sequence += 1;
                let payload = format!("{}{nonce}:{sequence}", std::str::from_utf8(HEARTBEAT_TAG).unwrap_or_default())
                    .into_bytes();
                let connection = subscription.connection.clone();
                let channel = subscription.channel.clone();
                let body = payload.clone();
                publishing = Some(Box::pin(async move {
                    match tokio::time::timeout(HEARTBEAT, connection.publish_everywhere(&channel, &body)).await {
                        Ok(result) => result,
                        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                            std::io::ErrorKind::TimedOut,
                        ))),
                    }
                }));
                in_flight = Some(Heartbeat {
                    payload,
                    sent: Instant::now(),
                    published_on: None,
                    heard: 0,
                });
            }
        }
    }
}

/// What heartbeats start with; store keys are hex, so never this.
const HEARTBEAT_TAG: &[u8] = b"heartbeat:";

/// The message on which every cache drops everything, published when all
/// sessions were ended. Never a store key (those are 64 hex digits; this
/// has letters that are not hex digits) nor a heartbeat (it does not start
/// with [`HEARTBEAT_TAG`]).
pub(super) const FLUSH: &[u8] = b"flush-all";

/// What a message on the invalidation channel asks of a cache.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// A session changed or ended: evict it.
    Evict(StoreKey),
    /// Every session ended: drop everything.
    Flush,
    /// A heartbeat: this subscriber's own, or another instance's.
    Heartbeat,
    /// Anything else: something other than this crate publishes on the
    /// channel.
    Unknown,
}

fn message(payload: &[u8]) -> Message {
    if let Some(key) = parse_key(payload) {
        Message::Evict(key)
    } else if payload == FLUSH {
        Message::Flush
    } else if payload.starts_with(HEARTBEAT_TAG) {
        Message::Heartbeat
    } else {
        Message::Unknown
    }
}

/// Does what a message heard on the channel asks of `cache`; `in_flight`
/// is this subscriber's heartbeat awaiting its copies, if any.
fn on_message(cache: &LocalCache, payload: &[u8], in_flight: Option<&mut Heartbeat>) {
    match message(payload) {
        Message::Evict(key) => {
            // Evicted first: a watch reading the session back must not be
            // served the cached copy.
            cache.evict(&key);
            cache.changes.notify(Change::Session(key));
        }
        // All sessions were ended: nothing this cache holds is live. It
        // serves again (from empty) once the next heartbeat is back.
        Message::Flush => {
            cache.flush();
            cache.changes.notify(Change::All);
        }
        Message::Heartbeat => {
            // Other instances' heartbeats mean nothing here.
            if let Some(beat) = in_flight.filter(|b| b.payload == payload) {
                beat.heard += 1;
                if beat.complete() {
                    cache.heard();
                }
            }
        }
        // Forgetting everything is the safe answer to the unknown; the next
        // heartbeat lets the cache serve again.
        Message::Unknown => {
            cache.flush();
            cache.changes.notify(Change::All);
        }
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // A heartbeat nonce only tells this subscriber's heartbeats from other
    // instances'; if the OS cannot give randomness, the time will do.
    if OsRng.try_fill_bytes(&mut bytes).is_err() {
        return u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        )
        .unwrap_or_default();
    }
    u64::from_le_bytes(bytes)
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
            Duration::from_secs(30 * 60),
            Duration::from_secs(12 * 3600),
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
        for capacity in [1, 5, SHARDS, SHARDS * 2 + 3] {
            let cache = serving(capacity);
            for i in 0..=255u8 {
                for j in 0..4u8 {
                    let k = key(i, j);
                    cache.keep(cache.ticket(&k), &k, record());
                }
            }
            assert_eq!(cache.len(), capacity);
            // The last one kept is there.
            assert!(
                cache.get(&key(255 - 15, 3), &touch()).is_some(),
                "{capacity}"
            );
        }
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
    fn the_flush_message_is_neither_a_key_nor_a_heartbeat_and_empties_the_cache() {
        let k = key(0xab, 0x01);
        assert_eq!(message(k.to_hex().as_bytes()), Message::Evict(k));
        assert_eq!(message(FLUSH), Message::Flush);
        assert_eq!(parse_key(FLUSH), None);
        assert!(!FLUSH.starts_with(HEARTBEAT_TAG));
        assert_eq!(message(b"heartbeat:0123:1"), Message::Heartbeat);
        assert_eq!(message(b"hello"), Message::Unknown);

        let cache = serving(100);
        let (a, b) = (key(1, 1), key(2, 2));
        for k in [a, b] {
            cache.keep(cache.ticket(&k), &k, record());
        }
        let loading = cache.ticket(&a);
        on_message(&cache, FLUSH, None);
        assert_eq!(cache.len(), 0, "every session dropped");
        assert_eq!(cache.get(&b, &touch()), None);
        cache.keep(loading, &a, record());
        assert_eq!(cache.len(), 0, "a load that began before keeps nothing");
        // It serves again (from empty) once a heartbeat is back.
        cache.heard();
        cache.keep(cache.ticket(&a), &a, record());
        assert_eq!(cache.get(&a, &touch()), Some(record()));
    }

    #[test]
    fn messages_evict_their_key_and_heartbeats_confirm_only_their_own() {
        let cache = serving(100);
        let (a, b) = (key(1, 1), key(2, 2));
        for k in [a, b] {
            cache.keep(cache.ticket(&k), &k, record());
        }
        on_message(&cache, a.to_hex().as_bytes(), None);
        assert_eq!(cache.get(&a, &touch()), None);
        assert!(cache.get(&b, &touch()).is_some());
        // Another instance's heartbeat changes nothing.
        let mut beat = Heartbeat {
            payload: b"heartbeat:mine:1".to_vec(),
            sent: Instant::now(),
            published_on: Some(1),
            heard: 0,
        };
        on_message(&cache, b"heartbeat:theirs:1", Some(&mut beat));
        assert_eq!(beat.heard, 0);
        assert!(cache.get(&b, &touch()).is_some());
        on_message(&cache, b"heartbeat:mine:1", Some(&mut beat));
        assert_eq!(beat.heard, 1);
        on_message(&cache, b"something else", Some(&mut beat));
        assert_eq!(cache.len(), 0, "the unknown flushes");
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
