//! The per-user index: a sorted set of each user's session keys, behind
//! logout-everywhere, counts and listings.
//!
//! Its layout and why stale members are harmless are described on
//! [`RedisStore`]; this module adds, raises, prunes and reads members, and
//! keeps a listing's memory bounded by its limit.
//!
//! Members are scored by their session's deadline, kept at or above the
//! record's own: set when the session is created, raised before a load's
//! touch writes the record, and after a save that moved it. So the live
//! sessions are the members scored after now, which counts and listings
//! read alone, however many dead members wait to be pruned. Pruning takes at most [`BATCH`] members scored in the past per
//! call and checks each one's record first: one whose raise was lost (a
//! save that landed, then a failed `ZADD`) is live, and is raised instead
//! of dropped, so that logout-everywhere still finds it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::codec::{listed_session, LISTED_FIELDS, META_FIELDS};
use super::connection::store_error;
use super::scripts::{INDEX_ADD, INDEX_PRUNE};
use super::{RedisStore, BATCH};
use crate::id::StoreKey;
use crate::record::SessionInfo;
use crate::store::StoreError;

impl RedisStore {
    /// `<prefix>u:<SHA-256 of the user id as hex>`.
    pub(super) fn index_key(&self, user_id: &str) -> String {
        format!("{}u:{}", self.prefix, hex::encode(Sha256::digest(user_id)))
    }

    /// Adds `key` to the user's index scored by `deadline`, or raises its
    /// score to it (never lowers it); with the session's `absolute`
    /// deadline, keeps the index alive at least until then.
    pub(super) async fn index(
        &self,
        user_id: &str,
        key: &StoreKey,
        deadline: OffsetDateTime,
        absolute: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        self.index_hex(
            user_id,
            &key.to_hex(),
            deadline.unix_timestamp(),
            absolute.map(OffsetDateTime::unix_timestamp),
        )
        .await
    }

    async fn index_hex(
        &self,
        user_id: &str,
        member: &str,
        deadline: i64,
        absolute: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut invocation = INDEX_ADD.key(self.index_key(user_id));
        invocation.arg(member).arg(deadline);
        if let Some(absolute) = absolute {
            invocation.arg(absolute);
        }
        invocation
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Looks at up to [`BATCH`] members scored at or before `now`: those
    /// whose record is gone, expired, a forward or another user's leave
    /// the index; a live one (its raise was lost) is raised to its
    /// deadline.
    async fn prune(&self, user_id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let due: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.index_key(user_id))
            .arg("-inf")
            .arg(now.unix_timestamp())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if due.is_empty() {
            return Ok(());
        }
        let mut stale = Vec::new();
        let mut reads = self.read_members(due, &META_FIELDS);
        while let Some((member, fields)) = reads.next().await {
            match listed_session(&fields.map_err(store_error)?, user_id, &member, now)? {
                Some(info) => {
                    let deadline = info.expires_at.unix_timestamp();
                    self.index_hex(user_id, &member, deadline, None).await?;
                }
                None => stale.push(member),
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        // Only those still scored in the past: one touched meanwhile was
        // raised, and stays.
        INDEX_PRUNE
            .key(self.index_key(user_id))
            .arg(now.unix_timestamp())
            .arg(&stale)
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// `fields` of each member's record, `BATCH` reads in flight, in no
    /// particular order.
    fn read_members(
        &self,
        members: Vec<String>,
        fields: &'static [&'static str],
    ) -> impl futures_util::Stream<Item = (String, redis::RedisResult<Vec<Option<Vec<u8>>>>)> + '_
    {
        // Members are moved into the reads, not borrowed: with a closure
        // over borrowed members, the compiler cannot show that the trait
        // method's future is `Send` (a higher-ranked lifetime limitation).
        futures_util::stream::iter(members)
            .map(move |member: String| {
                let mut connection = self.connection();
                let record_key = self.record_key_hex(&member);
                async move {
                    let fields = redis::cmd("HMGET")
                        .arg(record_key)
                        .arg(fields)
                        .query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                        .await;
                    (member, fields)
                }
            })
            .buffer_unordered(BATCH)
    }

    /// Every member of the user's index, expired or not.
    pub(super) async fn index_members(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        redis::cmd("ZRANGE")
            .arg(self.index_key(user_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)
    }

    /// The members of the user's index scored after `now`, after a
    /// bounded prune of the others.
    async fn live_members(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        self.prune(user_id, now).await?;
        redis::cmd("ZRANGE")
            .arg(self.index_key(user_id))
            .arg(format!("({}", now.unix_timestamp()))
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)
    }

    /// Removes `members` from the user's index, `BATCH` per `ZREM`.
    pub(super) async fn unindex(
        &self,
        user_id: &str,
        members: &[String],
    ) -> Result<(), StoreError> {
        for batch in members.chunks(BATCH) {
            redis::cmd("ZREM")
                .arg(self.index_key(user_id))
                .arg(batch)
                .query_async::<i64>(&mut self.connection())
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// The user's live sessions at `now`, at most `limit` of them (the
    /// most recently created), oldest first: what `list_user` answers.
    pub(super) async fn newest_sessions(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut newest = Newest::new(limit);
        self.visit_live(user_id, now, &LISTED_FIELDS, |info| newest.offer(info))
            .await?;
        Ok(newest.oldest_first())
    }

    /// The listing entries of the user's sessions live at `now`, handed to
    /// `found` one at a time as their metadata arrives (`BATCH` reads in
    /// flight, in no particular order). Each read takes `fields`:
    /// [`META_FIELDS`](super::codec::META_FIELDS), or [`LISTED_FIELDS`]
    /// for entries with their device.
    /// Members whose record is gone, expired, a forward or another user's
    /// leave the index on the way.
    pub(super) async fn visit_live(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        fields: &'static [&'static str],
        mut found: impl FnMut(SessionInfo) + Send,
    ) -> Result<(), StoreError> {
        let members = self.live_members(user_id, now).await?;
        let mut reads = self.read_members(members, fields);
        let mut stale = Vec::new();
        while let Some((member, fields)) = reads.next().await {
            let fields = fields.map_err(store_error)?;
            match listed_session(&fields, user_id, &member, now)? {
                Some(info) => found(info),
                None => stale.push(member),
            }
            if stale.len() == BATCH {
                self.unindex(user_id, &stale).await?;
                stale.clear();
            }
        }
        self.unindex(user_id, &stale).await
    }
}

/// The most recently created of the sessions offered so far, at most
/// `limit` of them: a listing's memory is bounded by its limit however many
/// sessions the user has.
pub(super) struct Newest {
    limit: usize,
    /// A min-heap on creation, so the oldest kept session is at the top,
    /// ready to make way.
    heap: BinaryHeap<Reverse<ByCreation>>,
}

/// A listing entry ordered by creation time, then key (as listings are).
struct ByCreation(SessionInfo);

impl ByCreation {
    fn order(&self) -> (OffsetDateTime, StoreKey) {
        (self.0.created_at, self.0.key)
    }
}

impl PartialEq for ByCreation {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for ByCreation {}

impl PartialOrd for ByCreation {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByCreation {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl Newest {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::new(),
        }
    }

    pub(super) fn offer(&mut self, info: SessionInfo) {
        let entry = ByCreation(info);
        if self.heap.len() < self.limit {
            self.heap.push(Reverse(entry));
        } else if let Some(mut oldest) = self.heap.peek_mut() {
            if entry > oldest.0 {
                *oldest = Reverse(entry);
            }
        }
    }

    /// The kept sessions, oldest first.
    pub(super) fn oldest_first(self) -> Vec<SessionInfo> {
        // Ascending order of `Reverse` is newest first.
        let mut sessions: Vec<SessionInfo> = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(ByCreation(info))| info)
            .collect();
        sessions.reverse();
        sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionRecord;

    fn info(created: i64) -> SessionInfo {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut r = SessionRecord::new(
            now,
            std::time::Duration::from_secs(30 * 60),
            std::time::Duration::from_secs(12 * 3600),
        );
        r.user_id = Some("alice".into());
        r.created_at = OffsetDateTime::from_unix_timestamp(1_700_000_000 + created).unwrap();
        r.info(crate::id::SessionId::generate().unwrap().store_key())
    }

    #[test]
    fn a_listing_keeps_the_newest_within_its_limit_oldest_first() {
        let offered: Vec<SessionInfo> = [5, 1, 9, 3, 7, 9, 0].into_iter().map(info).collect();
        let mut newest = Newest::new(3);
        for i in &offered {
            newest.offer(i.clone());
        }
        let kept = newest.oldest_first();
        let mut expected = offered.clone();
        expected.sort_by_key(|s| (s.created_at, s.key));
        assert_eq!(kept, expected[4..]);

        let mut all = Newest::new(usize::MAX);
        for i in &offered {
            all.offer(i.clone());
        }
        assert_eq!(all.oldest_first(), expected);

        let mut none = Newest::new(0);
        none.offer(info(1));
        assert!(none.oldest_first().is_empty());
    }
}
