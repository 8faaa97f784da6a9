//! The store conformance suite: one set of checks that every
//! [`SessionStore`] must pass, whoever wrote it.
//!
//! Enable the `test-suite` feature in your dev-dependencies and stamp the
//! suite out with [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```
//! // tests/conformance.rs
//! cloakroom::store_conformance_tests!(cloakroom::MemoryStore::new());
//! ```
//!
//! Each check is also a public `async fn` taking the store, for harnesses
//! of your own. The macro evaluates the store expression once per check:
//! give each check its own namespace (a fresh `MemoryStore`, a Redis key
//! prefix, a database table). The checks use random keys and user IDs, but
//! some move time forward (sweeping, replacing expired records), which in a
//! shared namespace would remove records that concurrent checks still
//! consider live. Times are chosen relative to the real current time and
//! only move forward, so backend TTLs derived from record deadlines never
//! fire during a check.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration as StdDuration;

use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};

use crate::clock::truncate_to_seconds;
use crate::device::{Device, MAX_USER_AGENT_LEN};
use crate::id::{SessionId, StoreKey};
use crate::record::{Lifetime, Patch, SessionRecord, Touch};
use crate::store::{Deleted, SessionStore};

/// The idle timeout of records made by this suite.
const IDLE: StdDuration = StdDuration::from_secs(100);
/// The absolute timeout of records made by this suite.
const ABSOLUTE: StdDuration = StdDuration::from_secs(1000);

/// Runs a check on a fresh multi-threaded tokio runtime. Used by
/// [`store_conformance_tests!`](crate::store_conformance_tests).
///
/// # Panics
///
/// When the runtime cannot be built, or the check fails.
pub fn run<F: Future<Output = ()>>(check: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime for the conformance suite")
        .block_on(check);
}

/// Stamps out one `#[test]` per conformance check.
///
/// The argument is an expression producing the store, evaluated inside an
/// async block (so it may `.await`) once per test. With `optional:` in
/// front it must produce an `Option` of a store instead, and `None` skips
/// the checks (for backends that are not installed).
///
/// ```
/// cloakroom::store_conformance_tests!(cloakroom::MemoryStore::new());
/// ```
///
/// With `harness:` in front, for a test target with a harness of its own
/// (`harness = false`, e.g. one that reports the checks as ignored when
/// the backend is not installed), it defines instead a function per check,
/// which runs it on a fresh runtime and panics when it fails, and a table
/// of them, `CHECKS: &[(&str, fn())]`, each with the check's name. The
/// expression produces the store, as without `optional:`.
///
/// ```
/// mod conformance {
///     cloakroom::store_conformance_tests!(harness: cloakroom::MemoryStore::new());
/// }
///
/// for (name, check) in conformance::CHECKS {
///     println!("checking {name}");
///     check();
/// }
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    (optional: $make_store:expr) => {
        $crate::store_conformance_tests!(@list [checks] $make_store);
    };
    (harness: $make_store:expr) => {
        $crate::store_conformance_tests!(@list [table] $make_store);
    };
    (@list [$how:ident] $make_store:expr) => {
        $crate::store_conformance_tests!(@$how $make_store;
            create_then_load_round_trips,
            create_does_not_overwrite_a_live_session,
            create_replaces_an_expired_session,
            create_over_an_expired_session_of_the_same_user_keeps_it_indexed,
            unknown_key_loads_as_none,
            idle_session_expires,
            absolute_deadline_ends_an_active_session,
            load_touches_when_due_and_returns_the_stored_record,
            load_does_not_touch_before_due,
            save_applies_only_the_patch,
            save_touches_when_due,
            save_touch_follows_the_lifetime,
            save_with_clear_replaces_all_data,
            save_changes_the_lifetime,
            save_never_recreates_a_deleted_session,
            save_on_unknown_key_creates_nothing,
            save_on_an_expired_session_is_refused,
            concurrent_saves_of_different_keys_all_survive,
            delete_removes_the_session,
            delete_owned_ends_the_owners_session_and_unindexes_it,
            delete_owned_leaves_another_users_or_an_anonymous_session_untouched,
            delete_owned_reports_a_forward_and_leaves_it_in_place,
            delete_user_ends_every_session_of_that_user_only,
            delete_user_can_keep_one_session,
            delete_all_ends_every_session_created_up_to_the_cutoff,
            delete_all_empties_a_store_larger_than_one_batch,
            list_user_reports_live_sessions_oldest_first,
            list_user_keeps_the_most_recent_within_the_limit,
            count_user_counts_live_sessions_only,
            retire_leaves_a_forward_that_only_delete_follows,
            retire_is_idempotent_and_refuses_an_ended_session,
            a_retired_session_leaves_the_user_index,
            restore_puts_the_session_back_only_over_its_own_live_forward,
            a_restored_session_rejoins_the_user_index,
            a_forward_occupies_its_key_until_it_lapses,
            sweep_keeps_live_sessions_and_drops_expired_ones,
            a_touch_near_the_absolute_deadline_still_records_activity,
            odd_keys_and_user_ids_are_stored_faithfully,
            every_character_the_layer_accepts_round_trips,
            large_values_round_trip,
            the_device_is_kept_and_listed,
            a_load_with_the_whole_idle_window_as_touch_fraction_never_touches,
            a_change_feed_announces_every_session_it_ends_or_moves,
        );
    };
    (@checks $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::test_suite::run(async {
                    match $make_store {
                        ::std::option::Option::Some(store) => {
                            $crate::test_suite::$check(&store).await;
                        }
                        ::std::option::Option::None => {
                            ::std::eprintln!(
                                "skipped {}: store not available",
                                ::std::stringify!($check)
                            );
                        }
                    }
                });
            }
        )*
    };
    (@table $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            fn $check() {
                $crate::test_suite::run(async {
                    let store = $make_store;
                    $crate::test_suite::$check(&store).await;
                });
            }
        )*

        /// The conformance checks: each one's name, and a function that
        /// runs it on a fresh runtime and panics when it fails.
        pub(crate) const CHECKS: &[(&str, fn())] = &[
            $((::std::stringify!($check), $check as fn())),*
        ];
    };
    ($make_store:expr) => {
        $crate::store_conformance_tests!(optional: ::std::option::Option::Some($make_store));
    };
}

fn key() -> StoreKey {
    SessionId::generate().expect("OS randomness").store_key()
}

fn user() -> String {
    format!("user-{}", key().short())
}

/// The real current time in whole seconds: the base of every check's times.
fn base() -> OffsetDateTime {
    truncate_to_seconds(OffsetDateTime::now_utc())
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

fn record(now: OffsetDateTime, data: Value) -> SessionRecord {
    let mut record = SessionRecord::new(now, IDLE, ABSOLUTE);
    if let Value::Object(map) = data {
        record.data = map;
    }
    record
}

fn owned_by(mut record: SessionRecord, user_id: &str) -> SessionRecord {
    record.user_id = Some(user_id.to_owned());
    record
}

fn touch(now: OffsetDateTime, after: f64) -> Touch {
    Touch { now, after }
}

async fn load<S: SessionStore>(
    store: &S,
    key: &StoreKey,
    now: OffsetDateTime,
) -> Option<SessionRecord> {
    // `after: 1.0` touches only once the whole idle window has passed, at
    // which point the record is expired anyway: a load that never touches.
    store
        .load(key, touch(now, 1.0))
        .await
        .expect("load should succeed")
}

async fn create<S: SessionStore>(store: &S, key: &StoreKey, record: &SessionRecord) {
    assert!(
        store
            .create(key, record, record.created_at)
            .await
            .expect("create should succeed"),
        "create of a fresh key should store it"
    );
}

/// A save that never touches (see `load`).
async fn save<S: SessionStore>(
    store: &S,
    key: &StoreKey,
    patch: &Patch,
    now: OffsetDateTime,
) -> bool {
    store
        .save(key, patch, touch(now, 1.0))
        .await
        .expect("save should succeed")
}

/// Every live session of `user_id`, listed with a limit no check reaches.
async fn list<S: SessionStore>(
    store: &S,
    user_id: &str,
    now: OffsetDateTime,
) -> Vec<crate::record::SessionInfo> {
    store
        .list_user(user_id, now, 1000)
        .await
        .expect("list_user should succeed")
}

fn data(record: &SessionRecord) -> Value {
    Value::Object(record.data.clone())
}

/// A created record loads back equal, with every kind of JSON value.
pub async fn create_then_load_round_trips<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let r = owned_by(
        record(
            t0,
            json!({
                "s": "text", "n": 42, "f": 1.5, "neg": -7, "t": true, "null": null,
                "tenth": 0.1, "tiny": 5e-324, "huge": 1.7976931348623157e308,
                "big_int": 9007199254740993_u64, "min_int": i64::MIN,
                "list": [1, "two", {"three": 3}], "nested": {"a": {"b": []}},
                "unicode": "ключ ✓ 🎟"
            }),
        ),
        &user(),
    );
    create(store, &k, &r).await;
    assert_eq!(load(store, &k, t0 + secs(1)).await, Some(r));
}

/// Insert-if-absent: a second create under a live key changes nothing.
pub async fn create_does_not_overwrite_a_live_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let first = record(t0, json!({"who": "first"}));
    create(store, &k, &first).await;
    let second = record(t0 + secs(1), json!({"who": "second"}));
    assert!(
        !store.create(&k, &second, t0 + secs(1)).await.unwrap(),
        "create over a live record must report a collision"
    );
    assert_eq!(load(store, &k, t0 + secs(2)).await, Some(first));
}

/// A record that is expired at `now` counts as absent for create.
pub async fn create_replaces_an_expired_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let u = user();
    create(store, &k, &owned_by(record(t0, json!({"old": 1})), &u)).await;
    let later = t0 + IDLE;
    let fresh = record(later, json!({"new": 1}));
    assert!(store.create(&k, &fresh, later).await.unwrap());
    assert_eq!(load(store, &k, later + secs(1)).await, Some(fresh));
    assert!(
        list(store, &u, later + secs(1)).await.is_empty(),
        "the replaced record no longer belongs to its old user"
    );
}

/// A record that replaces an expired one of the same user is that user's
/// session like any other: listed, counted and ended by logout-everywhere
/// (however the store cleans up after the expired record).
pub async fn create_over_an_expired_session_of_the_same_user_keeps_it_indexed<S: SessionStore>(
    store: &S,
) {
    let t0 = base();
    let k = key();
    let u = user();
    create(store, &k, &owned_by(record(t0, json!({"old": 1})), &u)).await;
    let later = t0 + IDLE;
    let fresh = owned_by(record(later, json!({"new": 1})), &u);
    assert!(store.create(&k, &fresh, later).await.unwrap());
    let listed = list(store, &u, later + secs(1)).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [k]);
    assert_eq!(listed[0].created_at, later);
    assert_eq!(store.count_user(&u, later + secs(1)).await.unwrap(), 1);
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
    assert_eq!(load(store, &k, later + secs(1)).await, None);
}

/// Loading a key that was never stored gives `None`.
pub async fn unknown_key_loads_as_none<S: SessionStore>(store: &S) {
    assert_eq!(load(store, &key(), base()).await, None);
}

/// Without activity a session ends exactly at its idle deadline.
pub async fn idle_session_expires<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({"x": 1}))).await;
    assert!(load(store, &k, t0 + IDLE - secs(1)).await.is_some());
    assert_eq!(load(store, &k, t0 + IDLE).await, None);
    assert!(
        !save(store, &k, &set("y", 1), t0 + IDLE).await,
        "an expired session accepts no writes"
    );
}

/// However often it is used, a session ends at its absolute deadline.
pub async fn absolute_deadline_ends_an_active_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let mut r = record(t0, json!({}));
    r.absolute_deadline = t0 + secs(250);
    create(store, &k, &r).await;
    for at in [60, 120, 180, 240] {
        let loaded = store.load(&k, touch(t0 + secs(at), 0.5)).await.unwrap();
        assert!(loaded.is_some(), "session alive at +{at}s");
    }
    assert!(load(store, &k, t0 + secs(249)).await.is_some());
    assert_eq!(load(store, &k, t0 + secs(250)).await, None);
}

fn set(key: &str, value: impl Into<Value>) -> Patch {
    let mut patch = Patch::default();
    patch.set.insert(key.to_owned(), value.into());
    patch
}

/// Rolling expiry: once due, a load extends the idle deadline in the same
/// step, and returns the record as it was before.
pub async fn load_touches_when_due_and_returns_the_stored_record<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let r = record(t0, json!({"x": 1}));
    create(store, &k, &r).await;

    let early = store.load(&k, touch(t0 + secs(10), 0.5)).await.unwrap();
    assert_eq!(
        early.map(|r| r.last_seen),
        Some(t0),
        "not due after 10 of 100 s"
    );

    let due = store.load(&k, touch(t0 + secs(60), 0.5)).await.unwrap();
    assert_eq!(
        due.as_ref().map(|r| r.last_seen),
        Some(t0),
        "the pre-touch record is returned"
    );
    assert!(due.unwrap().touch_due(&touch(t0 + secs(60), 0.5)));

    let after = load(store, &k, t0 + secs(61)).await.expect("still alive");
    assert_eq!(after.last_seen, t0 + secs(60), "the touch was stored");
    assert_eq!(data(&after), json!({"x": 1}), "a touch leaves data alone");
    assert!(
        load(store, &k, t0 + secs(150)).await.is_some(),
        "alive past the original idle deadline"
    );
    assert_eq!(load(store, &k, t0 + secs(160)).await, None);
}

/// A load before the touch threshold writes nothing.
pub async fn load_does_not_touch_before_due<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({}))).await;
    let loaded = store.load(&k, touch(t0 + secs(40), 0.5)).await.unwrap();
    assert!(loaded.is_some());
    assert_eq!(
        load(store, &k, t0 + IDLE).await,
        None,
        "the idle deadline did not move"
    );
}

/// A save changes the keys in the patch and nothing else.
pub async fn save_applies_only_the_patch<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let u = user();
    create(
        store,
        &k,
        &owned_by(record(t0, json!({"a": 1, "b": 2, "c": 3})), &u),
    )
    .await;
    let mut patch = set("b", 20);
    patch.set.insert("d".into(), json!({"deep": [4]}));
    patch.remove.insert("c".into());
    patch.remove.insert("never-there".into());
    assert!(save(store, &k, &patch, t0 + secs(1)).await);
    let loaded = load(store, &k, t0 + secs(2)).await.unwrap();
    assert_eq!(data(&loaded), json!({"a": 1, "b": 20, "d": {"deep": [4]}}));
    assert_eq!(loaded.user_id.as_deref(), Some(u.as_str()));
    assert_eq!(loaded.created_at, t0);
    assert_eq!(loaded.last_seen, t0, "a save is not a touch");
}

/// A save rolls the idle deadline like a load, once due: a request that
/// writes without reading is activity too.
pub async fn save_touches_when_due<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({"a": 1}))).await;
    assert!(store
        .save(&k, &set("b", 2), touch(t0 + secs(10), 0.5))
        .await
        .unwrap());
    let early = load(store, &k, t0 + secs(11)).await.unwrap();
    assert_eq!(early.last_seen, t0, "not due after 10 of 100 s");
    assert!(store
        .save(&k, &set("c", 3), touch(t0 + secs(60), 0.5))
        .await
        .unwrap());
    let later = load(store, &k, t0 + secs(61)).await.unwrap();
    assert_eq!(
        later.last_seen,
        t0 + secs(60),
        "the save extended the deadline"
    );
    assert_eq!(data(&later), json!({"a": 1, "b": 2, "c": 3}));
    assert!(
        load(store, &k, t0 + secs(150)).await.is_some(),
        "alive past the old deadline"
    );
    assert_eq!(load(store, &k, t0 + secs(160)).await, None);
}

/// A save's touch never reaches past the absolute deadline, and a save
/// that changes the lifetime touches by the new lifetime.
pub async fn save_touch_follows_the_lifetime<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let mut r = record(t0, json!({}));
    r.absolute_deadline = t0 + secs(120);
    create(store, &k, &r).await;
    assert!(store
        .save(&k, &set("a", 1), touch(t0 + secs(90), 0.5))
        .await
        .unwrap());
    assert_eq!(
        load(store, &k, t0 + secs(119)).await.map(|r| r.last_seen),
        Some(t0 + secs(90))
    );
    assert_eq!(
        load(store, &k, t0 + secs(120)).await,
        None,
        "absolute deadline holds"
    );

    let k = key();
    create(store, &k, &record(t0, json!({}))).await;
    let patch = Patch {
        lifetime: Some(Lifetime {
            idle_timeout: StdDuration::from_secs(1000),
            absolute_deadline: t0 + secs(5000),
            persistent: true,
        }),
        ..Patch::default()
    };
    // 60 s is less than half of the new 1000 s idle window: not due.
    assert!(store
        .save(&k, &patch, touch(t0 + secs(60), 0.5))
        .await
        .unwrap());
    let loaded = load(store, &k, t0 + secs(61)).await.unwrap();
    assert_eq!(loaded.last_seen, t0);
    assert_eq!(loaded.idle_timeout, StdDuration::from_secs(1000));
}

/// `clear` drops every key before the patch's own insertions.
pub async fn save_with_clear_replaces_all_data<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({"a": 1, "b": 2}))).await;
    let mut patch = set("c", 3);
    patch.clear = true;
    assert!(save(store, &k, &patch, t0 + secs(1)).await);
    let loaded = load(store, &k, t0 + secs(2)).await.unwrap();
    assert_eq!(data(&loaded), json!({"c": 3}));

    let patch = Patch {
        clear: true,
        ..Patch::default()
    };
    assert!(save(store, &k, &patch, t0 + secs(3)).await);
    let loaded = load(store, &k, t0 + secs(4))
        .await
        .expect("an empty session still exists");
    assert_eq!(data(&loaded), json!({}));
}

/// A new lifetime ("remember me") is stored and governs expiry from then on.
pub async fn save_changes_the_lifetime<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({}))).await;
    let lifetime = Lifetime {
        idle_timeout: StdDuration::from_secs(5000),
        absolute_deadline: t0 + secs(20_000),
        persistent: true,
    };
    let patch = Patch {
        lifetime: Some(lifetime),
        ..Patch::default()
    };
    assert!(save(store, &k, &patch, t0 + secs(1)).await);
    let loaded = load(store, &k, t0 + secs(1000))
        .await
        .expect("outlives the old idle timeout");
    assert_eq!(loaded.idle_timeout, StdDuration::from_secs(5000));
    assert_eq!(loaded.absolute_deadline, t0 + secs(20_000));
    assert!(loaded.persistent);
    assert_eq!(
        load(store, &k, t0 + secs(5000)).await,
        None,
        "new idle deadline"
    );
}

/// Update-only: a save after delete (a logout racing a write) does not
/// bring the session back.
pub async fn save_never_recreates_a_deleted_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({"a": 1}))).await;
    assert_eq!(store.delete(&k, t0).await.unwrap(), Deleted::Session);
    assert!(!save(store, &k, &set("b", 2), t0 + secs(1)).await);
    assert_eq!(load(store, &k, t0 + secs(2)).await, None);
}

/// Saving to a key that was never created stores nothing.
pub async fn save_on_unknown_key_creates_nothing<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    assert!(!save(store, &k, &set("a", 1), t0).await);
    assert_eq!(load(store, &k, t0).await, None);
}

/// A save at a time the session is expired is refused and changes nothing.
pub async fn save_on_an_expired_session_is_refused<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let created = record(t0, json!({"a": 1}));
    create(store, &k, &created).await;
    assert!(!save(store, &k, &set("a", 2), t0 + IDLE + secs(5)).await);
    // The store may drop the expired record (Redis' TTL, a sweep on
    // access); one that keeps it (the memory store does) keeps it exactly
    // as created: no data written, no deadline rolled.
    if let Some(kept) = load(store, &k, t0 + secs(1)).await {
        assert_eq!(kept, created, "a refused save changes nothing");
    }
    assert_eq!(load(store, &k, t0 + IDLE + secs(6)).await, None);
}

/// Many requests writing different keys of one session at once: every
/// write survives.
pub async fn concurrent_saves_of_different_keys_all_survive<S: SessionStore + Clone>(store: &S) {
    const WRITERS: usize = 64;
    let t0 = base();
    let k = key();
    create(store, &k, &record(t0, json!({"base": true}))).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = store.clone();
        tasks.spawn(async move {
            let patch = set(&format!("k{i}"), i);
            store.save(&k, &patch, touch(t0 + secs(1), 1.0)).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(
            result.expect("task").expect("save"),
            "every save finds the session"
        );
    }
    let loaded = load(store, &k, t0 + secs(2)).await.unwrap();
    assert_eq!(loaded.data.len(), WRITERS + 1, "no write was lost");
    for i in 0..WRITERS {
        assert_eq!(loaded.data[&format!("k{i}")], json!(i));
    }
}

/// Delete removes the record and reports what was there.
pub async fn delete_removes_the_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let u = user();
    create(store, &k, &owned_by(record(t0, json!({})), &u)).await;
    assert_eq!(store.delete(&k, t0).await.unwrap(), Deleted::Session);
    assert_eq!(load(store, &k, t0).await, None);
    assert_eq!(store.delete(&k, t0).await.unwrap(), Deleted::Nothing);
    assert!(list(store, &u, t0).await.is_empty());
    assert_eq!(store.count_user(&u, t0).await.unwrap(), 0);
}

/// `delete_owned` by the session's own user deletes it like `delete`:
/// gone, out of the user's index, and nothing the second time.
pub async fn delete_owned_ends_the_owners_session_and_unindexes_it<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (k, kept) = (key(), key());
    create(store, &k, &owned_by(record(t0, json!({"a": 1})), &u)).await;
    create(store, &kept, &owned_by(record(t0, json!({})), &u)).await;
    assert_eq!(store.count_user(&u, t0).await.unwrap(), 2);
    assert_eq!(
        store.delete_owned(&k, &u, t0 + secs(1)).await.unwrap(),
        Deleted::Session
    );
    assert_eq!(load(store, &k, t0 + secs(1)).await, None);
    assert!(!save(store, &k, &set("b", 2), t0 + secs(1)).await);
    assert_eq!(
        store.count_user(&u, t0 + secs(1)).await.unwrap(),
        1,
        "the deleted session left its user's index"
    );
    let listed = list(store, &u, t0 + secs(1)).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [kept]);
    assert_eq!(
        store.delete_owned(&k, &u, t0 + secs(1)).await.unwrap(),
        Deleted::Nothing
    );
    assert_eq!(
        store.delete_owned(&key(), &u, t0 + secs(1)).await.unwrap(),
        Deleted::Nothing,
        "a key never stored"
    );
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
}

/// `delete_owned` by anyone but the session's user leaves the session as
/// it was: loadable, listed and counted for its own user, and it answers
/// `Nothing`, as for a key that holds nothing.
pub async fn delete_owned_leaves_another_users_or_an_anonymous_session_untouched<
    S: SessionStore,
>(
    store: &S,
) {
    let t0 = base();
    let (u, v) = (user(), user());
    let (theirs, anonymous) = (key(), key());
    let their_record = owned_by(record(t0, json!({"v": true})), &v);
    let anonymous_record = record(t0, json!({"cart": [1]}));
    create(store, &theirs, &their_record).await;
    create(store, &anonymous, &anonymous_record).await;
    let now = t0 + secs(1);
    assert_eq!(
        store.delete_owned(&theirs, &u, now).await.unwrap(),
        Deleted::Nothing,
        "another user's session"
    );
    assert_eq!(
        store.delete_owned(&anonymous, &u, now).await.unwrap(),
        Deleted::Nothing,
        "an anonymous session"
    );
    assert_eq!(load(store, &theirs, now).await, Some(their_record));
    assert_eq!(load(store, &anonymous, now).await, Some(anonymous_record));
    assert_eq!(store.count_user(&v, now).await.unwrap(), 1);
    let listed = list(store, &v, now).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [theirs]);
    assert!(save(store, &theirs, &set("still", 1), now).await);
    // Its own user still can.
    assert_eq!(
        store.delete_owned(&theirs, &v, now).await.unwrap(),
        Deleted::Session
    );
    assert_eq!(store.count_user(&v, now).await.unwrap(), 0);

    // An expired session is no one's to keep: `Nothing`, whoever asks.
    let expired = key();
    create(store, &expired, &owned_by(record(t0, json!({})), &v)).await;
    let late = t0 + IDLE + secs(1);
    assert_eq!(
        store.delete_owned(&expired, &u, late).await.unwrap(),
        Deleted::Nothing
    );
    assert_eq!(load(store, &expired, late).await, None);
}

/// A forward names no user: `delete_owned` reports its successor, to
/// whoever asks, and leaves it in place until it lapses, as `delete` does.
pub async fn delete_owned_reports_a_forward_and_leaves_it_in_place<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (old, new) = (key(), key());
    create(store, &old, &owned_by(record(t0, json!({})), &u)).await;
    let until = t0 + secs(60);
    assert!(store.retire(&old, &new, until, t0).await.unwrap());
    let now = t0 + secs(1);
    assert_eq!(
        store.delete_owned(&old, &u, now).await.unwrap(),
        Deleted::Forward(new)
    );
    assert_eq!(
        store.delete_owned(&old, &user(), now).await.unwrap(),
        Deleted::Forward(new),
        "the forward is kept, and whose it was is not told"
    );
    assert_eq!(
        store.delete(&old, now).await.unwrap(),
        Deleted::Forward(new)
    );
    assert_eq!(load(store, &old, now).await, None);
    assert_eq!(
        store.delete_owned(&old, &u, until).await.unwrap(),
        Deleted::Nothing,
        "a lapsed forward names no successor"
    );
}

/// Logout everywhere ends all sessions of the user, and only theirs.
pub async fn delete_user_ends_every_session_of_that_user_only<S: SessionStore>(store: &S) {
    let t0 = base();
    let (u, v) = (user(), user());
    let mine = [key(), key(), key()];
    for k in &mine {
        create(store, k, &owned_by(record(t0, json!({})), &u)).await;
    }
    let theirs = key();
    create(store, &theirs, &owned_by(record(t0, json!({})), &v)).await;
    let anonymous = key();
    create(store, &anonymous, &record(t0, json!({}))).await;

    assert_eq!(store.delete_user(&u, None).await.unwrap(), 3);
    for k in &mine {
        assert_eq!(load(store, k, t0 + secs(1)).await, None);
        assert!(!save(store, k, &set("x", 1), t0 + secs(1)).await);
    }
    assert!(load(store, &theirs, t0 + secs(1)).await.is_some());
    assert!(load(store, &anonymous, t0 + secs(1)).await.is_some());
    assert!(list(store, &u, t0 + secs(1)).await.is_empty());
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 0);
    assert_eq!(store.delete_user(&user(), None).await.unwrap(), 0);
}

/// "Log out other devices" keeps the named session.
pub async fn delete_user_can_keep_one_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let keys = [key(), key(), key()];
    for k in &keys {
        create(store, k, &owned_by(record(t0, json!({})), &u)).await;
    }
    assert_eq!(store.delete_user(&u, Some(&keys[0])).await.unwrap(), 2);
    assert!(load(store, &keys[0], t0 + secs(1)).await.is_some());
    assert_eq!(load(store, &keys[1], t0 + secs(1)).await, None);
    assert_eq!(load(store, &keys[2], t0 + secs(1)).await, None);
    let listed = list(store, &u, t0 + secs(1)).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [keys[0]]);
    // The kept session is still indexed: a later logout-everywhere ends it.
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
}

/// `delete_all` ends the sessions of every user, and anonymous ones,
/// created up to the cutoff, and every forward; it keeps the sessions
/// created after the cutoff (and their index entries), empties the users'
/// counts and listings, and counts only the sessions that were live.
pub async fn delete_all_ends_every_session_created_up_to_the_cutoff<S: SessionStore>(store: &S) {
    let t0 = base();
    let cutoff = t0 + secs(10);
    let now = t0 + secs(20);
    let (u, v) = (user(), user());
    let (mine, theirs) = ([key(), key()], key());
    for k in &mine {
        create(store, k, &owned_by(record(t0 + secs(5), json!({})), &u)).await;
    }
    create(store, &theirs, &owned_by(record(cutoff, json!({})), &v)).await;
    let anonymous = [key(), key()];
    create(store, &anonymous[0], &record(t0, json!({"cart": 1}))).await;
    create(store, &anonymous[1], &record(cutoff, json!({}))).await;
    // A session moved by a regenerate: the forward under its old key, and
    // its new record, which keeps the creation time.
    let (moved, successor) = (key(), key());
    let moved_record = owned_by(record(t0 + secs(1), json!({"m": 1})), &u);
    create(store, &moved, &moved_record).await;
    create(store, &successor, &moved_record).await;
    assert!(store
        .retire(&moved, &successor, t0 + secs(60), t0 + secs(2))
        .await
        .unwrap());
    // A forward that has lapsed by `now`, and a session expired by then:
    // deleted, not counted.
    let (lapsed, lapsed_to) = (key(), key());
    create(store, &lapsed, &record(t0, json!({}))).await;
    assert!(store
        .retire(&lapsed, &lapsed_to, t0 + secs(15), t0 + secs(2))
        .await
        .unwrap());
    let expired = key();
    let mut short = owned_by(record(t0, json!({})), &v);
    short.absolute_deadline = t0 + secs(15);
    create(store, &expired, &short).await;
    // Created after the cutoff: kept.
    let (later, later_anonymous) = (key(), key());
    create(
        store,
        &later,
        &owned_by(record(cutoff + secs(1), json!({"l": 1})), &u),
    )
    .await;
    create(
        store,
        &later_anonymous,
        &record(cutoff + secs(1), json!({})),
    )
    .await;

    assert_eq!(
        store.delete_all(cutoff, now).await.expect("delete_all"),
        6,
        "two of u's, v's, two anonymous, the moved session's new record; \
         no forward, no expired session"
    );
    for k in mine
        .iter()
        .chain([&theirs, &successor, &expired])
        .chain(&anonymous)
    {
        assert_eq!(load(store, k, now).await, None);
        assert!(
            !save(store, k, &set("x", 1), now).await,
            "nothing to save into"
        );
    }
    assert_eq!(
        store.delete(&moved, now).await.unwrap(),
        Deleted::Nothing,
        "the forward is gone: a logout of the old ID finds nothing to follow"
    );
    assert_eq!(store.count_user(&u, now).await.unwrap(), 1);
    let listed = list(store, &u, now).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [later]);
    assert_eq!(store.count_user(&v, now).await.unwrap(), 0);
    assert!(list(store, &v, now).await.is_empty());
    assert!(load(store, &later, now).await.is_some());
    assert!(load(store, &later_anonymous, now).await.is_some());

    assert_eq!(
        store.delete_all(cutoff, now).await.unwrap(),
        0,
        "a second pass finds nothing"
    );
    assert_eq!(
        store.delete_user(&u, None).await.unwrap(),
        1,
        "the kept session is still indexed"
    );
    assert_eq!(
        store.delete_user(&v, None).await.unwrap(),
        0,
        "nothing of v's is left to reach"
    );
}

/// `delete_all` goes over the whole store however many batches that
/// takes: 1,500 sessions, more than one batch of any store, all end.
pub async fn delete_all_empties_a_store_larger_than_one_batch<S: SessionStore>(store: &S) {
    const SESSIONS: usize = 1500;
    let t0 = base();
    let users = [user(), user(), user()];
    let keys: Vec<StoreKey> = (0..SESSIONS).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        let r = record(t0, json!({"i": i}));
        // A tenth logged in, spread over three users; the rest anonymous.
        let r = match i % 10 {
            0 => owned_by(r, &users[i / 10 % users.len()]),
            _ => r,
        };
        create(store, k, &r).await;
    }
    let now = t0 + secs(1);
    assert_eq!(
        store.delete_all(t0, now).await.expect("delete_all"),
        SESSIONS as u64
    );
    for k in &keys {
        assert_eq!(load(store, k, now).await, None);
    }
    for u in &users {
        assert_eq!(store.count_user(u, now).await.unwrap(), 0);
        assert!(list(store, u, now).await.is_empty());
    }
    assert_eq!(store.delete_all(t0, now).await.unwrap(), 0);
}

/// Listing shows live sessions with their times, oldest first.
pub async fn list_user_reports_live_sessions_oldest_first<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (older, newer, ended) = (key(), key(), key());
    // The newer one is remembered: a longer idle window, a persistent
    // cookie.
    let mut remembered = owned_by(record(t0 + secs(10), json!({})), &u);
    remembered.persistent = true;
    remembered.idle_timeout = IDLE * 2;
    create(store, &newer, &remembered).await;
    create(store, &older, &owned_by(record(t0, json!({})), &u)).await;
    create(
        store,
        &ended,
        &owned_by(record(t0 + secs(5), json!({})), &u),
    )
    .await;
    store.delete(&ended, t0 + secs(5)).await.unwrap();
    create(store, &key(), &owned_by(record(t0, json!({})), &user())).await;

    let listed = list(store, &u, t0 + secs(20)).await;
    assert_eq!(
        listed.iter().map(|s| s.key).collect::<Vec<_>>(),
        [older, newer]
    );
    assert_eq!(listed[0].created_at, t0);
    assert_eq!(listed[0].last_seen, t0);
    assert_eq!(listed[0].expires_at, t0 + IDLE);
    assert!(!listed[0].persistent);
    assert!(!listed[0].current, "stores never mark a session current");
    assert_eq!(listed[1].created_at, t0 + secs(10));
    assert_eq!(listed[1].last_seen, t0 + secs(10));
    assert_eq!(listed[1].expires_at, t0 + secs(10) + IDLE * 2);
    assert!(listed[1].persistent);
    assert!(!listed[1].current);

    let later = list(store, &u, t0 + IDLE + secs(5)).await;
    assert_eq!(
        later.iter().map(|s| s.key).collect::<Vec<_>>(),
        [newer],
        "expired sessions are not listed"
    );
}

/// Sweeping leaves live sessions intact and expired ones unreachable.
pub async fn sweep_keeps_live_sessions_and_drops_expired_ones<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (expired, live) = (key(), key());
    create(store, &expired, &owned_by(record(t0, json!({"e": 1})), &u)).await;
    create(
        store,
        &live,
        &owned_by(record(t0 + secs(90), json!({"l": 1})), &u),
    )
    .await;
    let now = t0 + secs(150);
    store
        .sweep_expired(now)
        .await
        .expect("sweep should succeed");
    assert_eq!(load(store, &expired, now).await, None);
    let kept = load(store, &live, now).await.expect("live session kept");
    assert_eq!(data(&kept), json!({"l": 1}));
    let listed = list(store, &u, now).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [live]);
}

/// Keys and user IDs with separators, braces, quotes and non-ASCII text
/// are kept exactly.
pub async fn odd_keys_and_user_ids_are_stored_faithfully<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let u = format!("{}:{{tag}} \"quoted\" ✓ *?[]", user());
    let odd_keys = [
        "",
        "a:b",
        "{tag}",
        "ключ",
        "with space",
        "d:x",
        "__meta",
        "*",
    ];
    let mut map = Map::new();
    for (i, name) in odd_keys.iter().enumerate() {
        map.insert((*name).to_owned(), json!(i));
    }
    let long_key = "k".repeat(1000);
    map.insert(long_key.clone(), json!("long"));
    let r = owned_by(record(t0, Value::Object(map)), &u);
    create(store, &k, &r).await;
    assert_eq!(load(store, &k, t0).await, Some(r));

    let mut patch = Patch::default();
    patch.remove.insert(String::new());
    patch.set.insert("{tag}".into(), json!("changed"));
    assert!(save(store, &k, &patch, t0 + secs(1)).await);
    let loaded = load(store, &k, t0 + secs(1)).await.unwrap();
    assert!(!loaded.data.contains_key(""));
    assert_eq!(loaded.data["{tag}"], json!("changed"));
    assert_eq!(loaded.data[&long_key], json!("long"));

    let listed = list(store, &u, t0 + secs(1)).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
}

/// A large value (64 KiB) is stored and patched like any other.
pub async fn large_values_round_trip<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let big = "x".repeat(64 * 1024);
    let r = record(t0, json!({"big": big, "small": 1}));
    create(store, &k, &r).await;
    assert!(save(store, &k, &set("small", 2), t0 + secs(1)).await);
    let loaded = load(store, &k, t0 + secs(1)).await.unwrap();
    assert_eq!(loaded.data["big"].as_str().map(str::len), Some(64 * 1024));
    assert_eq!(loaded.data["small"], json!(2));
}

/// With more sessions than the limit, the most recently created ones are
/// listed, still oldest first.
pub async fn list_user_keeps_the_most_recent_within_the_limit<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let keys: Vec<StoreKey> = (0..5).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        let created = t0 + secs(i as i64);
        create(store, k, &owned_by(record(created, json!({})), &u)).await;
    }
    let now = t0 + secs(10);
    let listed = store.list_user(&u, now, 3).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.key).collect::<Vec<_>>(),
        keys[2..],
        "the three newest, oldest first"
    );
    assert!(store.list_user(&u, now, 0).await.unwrap().is_empty());
    assert_eq!(list(store, &u, now).await.len(), 5);
}

/// The count covers live sessions of the user: not ended, expired or
/// retired ones, nor other users' sessions.
pub async fn count_user_counts_live_sessions_only<S: SessionStore>(store: &S) {
    let t0 = base();
    let (u, v) = (user(), user());
    assert_eq!(store.count_user(&u, t0).await.unwrap(), 0);
    let live = [key(), key(), key()];
    for k in &live {
        create(store, k, &owned_by(record(t0 + secs(50), json!({})), &u)).await;
    }
    let (expiring, ended, retired) = (key(), key(), key());
    create(store, &expiring, &owned_by(record(t0, json!({})), &u)).await;
    create(
        store,
        &ended,
        &owned_by(record(t0 + secs(50), json!({})), &u),
    )
    .await;
    create(
        store,
        &retired,
        &owned_by(record(t0 + secs(50), json!({})), &u),
    )
    .await;
    create(
        store,
        &key(),
        &owned_by(record(t0 + secs(50), json!({})), &v),
    )
    .await;
    store.delete(&ended, t0 + secs(50)).await.unwrap();
    let now = t0 + IDLE + secs(10);
    assert!(store
        .retire(&retired, &key(), now + secs(60), now)
        .await
        .unwrap());
    assert_eq!(
        store.count_user(&u, now).await.unwrap(),
        3,
        "the idle-expired, the deleted and the retired session do not count"
    );
    assert_eq!(store.count_user(&v, now).await.unwrap(), 1);
    assert_eq!(list(store, &u, now).await.len(), 3, "count and list agree");
}

/// Retiring replaces a live session by a forward: it no longer loads or
/// saves, and deleting it names the successor (and keeps it).
pub async fn retire_leaves_a_forward_that_only_delete_follows<S: SessionStore>(store: &S) {
    let t0 = base();
    let (old, new) = (key(), key());
    create(store, &old, &record(t0, json!({"a": 1}))).await;
    let now = t0 + secs(5);
    assert!(store.retire(&old, &new, now + secs(60), now).await.unwrap());
    assert_eq!(
        load(store, &old, now).await,
        None,
        "a forward is no session"
    );
    assert!(
        !save(store, &old, &set("b", 2), now).await,
        "nor is it written through"
    );
    assert_eq!(load(store, &old, now).await, None);
    assert_eq!(load(store, &new, now).await, None, "retire creates nothing");
    assert_eq!(
        store.delete(&old, now).await.unwrap(),
        Deleted::Forward(new)
    );
    assert_eq!(
        store.delete(&old, now).await.unwrap(),
        Deleted::Forward(new),
        "the forward stays, so a logout that failed halfway can be retried"
    );
    assert_eq!(load(store, &old, now).await, None);
    assert!(!save(store, &old, &set("b", 2), now).await);
}

/// Restoring takes a retire back: the forward to that successor becomes
/// the given record again, whole; anything else under the key (a live
/// session, a forward elsewhere or lapsed, nothing) is left alone.
pub async fn restore_puts_the_session_back_only_over_its_own_live_forward<S: SessionStore>(
    store: &S,
) {
    let t0 = base();
    let (old, new, other) = (key(), key(), key());
    let before = record(t0, json!({"cart": [1, 2], "n": 3}));
    create(store, &old, &before).await;
    let now = t0 + secs(5);
    assert!(store.retire(&old, &new, now + secs(60), now).await.unwrap());
    assert!(
        !store.restore(&old, &other, &before, now).await.unwrap(),
        "a forward to another successor"
    );
    assert_eq!(load(store, &old, now).await, None);
    assert!(store.restore(&old, &new, &before, now).await.unwrap());
    let restored = load(store, &old, now).await.expect("the session is back");
    assert_eq!(data(&restored), json!({"cart": [1, 2], "n": 3}));
    assert_eq!(restored.created_at, before.created_at);
    assert_eq!(restored.absolute_deadline, before.absolute_deadline);
    assert!(
        save(store, &old, &set("n", 4), now).await,
        "it saves like any session"
    );
    assert_eq!(
        store.delete(&old, now).await.unwrap(),
        Deleted::Session,
        "no forward is left"
    );

    assert!(
        !store.restore(&old, &new, &before, now).await.unwrap(),
        "nothing stored any more"
    );
    assert_eq!(load(store, &old, now).await, None, "and nothing written");

    let live = key();
    create(store, &live, &record(t0, json!({"mine": true}))).await;
    assert!(
        !store.restore(&live, &new, &before, now).await.unwrap(),
        "a live session is not overwritten"
    );
    assert_eq!(
        data(&load(store, &live, now).await.unwrap()),
        json!({"mine": true})
    );

    let lapsed = key();
    create(store, &lapsed, &record(t0, json!({}))).await;
    assert!(store
        .retire(&lapsed, &new, now + secs(2), now)
        .await
        .unwrap());
    let late = now + secs(2); // a forward lapses at its `until`
    assert!(
        !store
            .restore(&lapsed, &new, &record(late, json!({})), late)
            .await
            .unwrap(),
        "a lapsed forward"
    );
    assert_eq!(load(store, &lapsed, late).await, None);
}

/// A restored session of a user is counted, listed and reached by
/// logout-everywhere again.
pub async fn a_restored_session_rejoins_the_user_index<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (old, new) = (key(), key());
    let before = owned_by(record(t0, json!({})), &u);
    create(store, &old, &before).await;
    create(store, &new, &owned_by(record(t0, json!({})), &u)).await;
    let now = t0 + secs(5);
    assert!(store.retire(&old, &new, now + secs(60), now).await.unwrap());
    assert_eq!(store.count_user(&u, now).await.unwrap(), 1);
    assert!(store.restore(&old, &new, &before, now).await.unwrap());
    assert_eq!(store.count_user(&u, now).await.unwrap(), 2);
    let listed: Vec<StoreKey> = list(store, &u, now).await.iter().map(|s| s.key).collect();
    assert!(listed.contains(&old), "{listed:?}");
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 2);
    assert_eq!(load(store, &old, now).await, None);
    assert_eq!(store.count_user(&u, now).await.unwrap(), 0);
}

/// A retry of the same retirement succeeds again; retiring a session that
/// is gone, expired, or already moved elsewhere changes nothing.
pub async fn retire_is_idempotent_and_refuses_an_ended_session<S: SessionStore>(store: &S) {
    let t0 = base();
    let (old, new, other) = (key(), key(), key());
    create(store, &old, &record(t0, json!({}))).await;
    assert!(store.retire(&old, &new, t0 + secs(60), t0).await.unwrap());
    assert!(
        store
            .retire(&old, &new, t0 + secs(60), t0 + secs(1))
            .await
            .unwrap(),
        "a retry with the same successor"
    );
    assert!(
        !store
            .retire(&old, &other, t0 + secs(60), t0 + secs(1))
            .await
            .unwrap(),
        "already moved elsewhere"
    );
    assert_eq!(
        store.delete(&old, t0 + secs(1)).await.unwrap(),
        Deleted::Forward(new)
    );

    let never = key();
    assert!(!store.retire(&never, &new, t0 + secs(60), t0).await.unwrap());
    assert_eq!(store.delete(&never, t0).await.unwrap(), Deleted::Nothing);

    let deleted = key();
    create(store, &deleted, &record(t0, json!({}))).await;
    store.delete(&deleted, t0).await.unwrap();
    assert!(!store
        .retire(&deleted, &new, t0 + secs(60), t0)
        .await
        .unwrap());
    assert_eq!(store.delete(&deleted, t0).await.unwrap(), Deleted::Nothing);

    let expired = key();
    create(store, &expired, &record(t0, json!({}))).await;
    let late = t0 + IDLE + secs(1);
    assert!(!store
        .retire(&expired, &new, late + secs(60), late)
        .await
        .unwrap());
    assert_eq!(
        store.delete(&expired, late).await.unwrap(),
        Deleted::Nothing,
        "an expired session is not moved"
    );
}

/// The retired session is no longer the user's: not listed, not counted,
/// not deleted (again) by logout-everywhere.
pub async fn a_retired_session_leaves_the_user_index<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    let (old, kept, new) = (key(), key(), key());
    create(store, &old, &owned_by(record(t0, json!({})), &u)).await;
    create(store, &kept, &owned_by(record(t0, json!({})), &u)).await;
    assert!(store.retire(&old, &new, t0 + secs(60), t0).await.unwrap());
    let listed = list(store, &u, t0 + secs(1)).await;
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), [kept]);
    assert_eq!(store.count_user(&u, t0 + secs(1)).await.unwrap(), 1);
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
    assert_eq!(
        store.delete(&old, t0 + secs(1)).await.unwrap(),
        Deleted::Forward(new),
        "logout-everywhere leaves forwards alone; the successor is indexed itself"
    );
}

/// A forward lasts until its `until`: it holds its key against `create`
/// and sweeping until then, and afterwards it is gone.
pub async fn a_forward_occupies_its_key_until_it_lapses<S: SessionStore>(store: &S) {
    let t0 = base();
    let (old, new) = (key(), key());
    create(store, &old, &record(t0, json!({}))).await;
    let until = t0 + secs(30);
    assert!(store.retire(&old, &new, until, t0).await.unwrap());
    let fresh = record(t0 + secs(1), json!({}));
    assert!(
        !store.create(&old, &fresh, t0 + secs(1)).await.unwrap(),
        "a live forward holds its key"
    );
    store.sweep_expired(t0 + secs(29)).await.unwrap();
    assert_eq!(
        store.delete(&old, t0 + secs(29)).await.unwrap(),
        Deleted::Forward(new),
        "not swept before it lapses"
    );

    let (old, new) = (key(), key());
    create(store, &old, &record(t0, json!({}))).await;
    assert!(store.retire(&old, &new, until, t0).await.unwrap());
    assert_eq!(
        store.delete(&old, until).await.unwrap(),
        Deleted::Nothing,
        "a lapsed forward names no successor"
    );

    let (old, new) = (key(), key());
    create(store, &old, &record(t0, json!({}))).await;
    assert!(store.retire(&old, &new, until, t0).await.unwrap());
    let later = record(until, json!({"new": 1}));
    assert!(
        store.create(&old, &later, until).await.unwrap(),
        "a lapsed forward counts as absent"
    );
    assert_eq!(load(store, &old, until).await, Some(later));
}

/// `last_seen` means the last activity (at touch granularity) even when
/// the absolute deadline, not the idle one, bounds the session.
pub async fn a_touch_near_the_absolute_deadline_still_records_activity<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let mut r = record(t0, json!({}));
    r.absolute_deadline = t0 + secs(120);
    create(store, &k, &r).await;
    // At 60 s the idle deadline (160 s) is already past the absolute one.
    let loaded = store.load(&k, touch(t0 + secs(60), 0.5)).await.unwrap();
    assert!(loaded.is_some());
    let after = load(store, &k, t0 + secs(61)).await.unwrap();
    assert_eq!(after.last_seen, t0 + secs(60), "the load was recorded");
    assert!(store
        .save(&k, &set("a", 1), touch(t0 + secs(110), 0.5))
        .await
        .unwrap());
    let after = load(store, &k, t0 + secs(111)).await.unwrap();
    assert_eq!(after.last_seen, t0 + secs(110), "the save was recorded");
    assert_eq!(
        load(store, &k, t0 + secs(120)).await,
        None,
        "still ends on time"
    );
}

/// The layer refuses only NUL characters (and absurd nesting) in data and
/// user IDs; every other character must be kept exactly, in keys, values
/// and user IDs, on every store.
pub async fn every_character_the_layer_accepts_round_trips<S: SessionStore>(store: &S) {
    let t0 = base();
    let k = key();
    let controls: String = (1u8..0x20).map(char::from).chain(['\u{7f}']).collect();
    let unusual = format!("{controls}\u{2028}\u{2029}\u{feff}\u{fffd}\u{10ffff}🎟 \\ \"");
    let u = format!("{}-{unusual}", user());
    let mut deep = json!("bottom");
    for _ in 0..64 {
        deep = json!([deep]);
    }
    let r = owned_by(
        record(
            t0,
            json!({
                unusual.clone(): unusual.clone(),
                "nested": {unusual.clone(): [unusual.clone(), {"k": unusual.clone()}]},
                "deep": deep,
            }),
        ),
        &u,
    );
    create(store, &k, &r).await;
    assert_eq!(load(store, &k, t0).await, Some(r));
    assert!(
        save(
            store,
            &k,
            &set(&unusual, json!(unusual.clone())),
            t0 + secs(1)
        )
        .await
    );
    assert_eq!(list(store, &u, t0 + secs(1)).await.len(), 1);
    assert_eq!(store.count_user(&u, t0 + secs(1)).await.unwrap(), 1);
    assert_eq!(store.delete_user(&u, None).await.unwrap(), 1);
}

/// The device a session was logged in from is kept with it: it loads back
/// as created, survives touches and every kind of save (`clear` empties
/// data, and the device is no data), is listed with its session, and is
/// not inherited by a record that replaces an expired one.
pub async fn the_device_is_kept_and_listed<S: SessionStore>(store: &S) {
    let t0 = base();
    let u = user();
    // As long as the layer keeps, with non-ASCII text, a tab (the one
    // control character a header value may hold) and characters that mean
    // something to the stores' encodings.
    let mut agent = String::from("Mozilla/5.0 (X11; Linux; ключ ✓ 🎟)\t\"d:x\" {tag} 'q' \\ ");
    while agent.len() + 'é'.len_utf8() <= MAX_USER_AGENT_LEN {
        agent.push('é');
    }
    let mut full = owned_by(record(t0, json!({"a": 1})), &u);
    full.device = Device {
        user_agent: Some(agent),
        ip: Some(IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329,
        ))),
    };
    let mut ipv4_only = owned_by(record(t0 + secs(1), json!({"b": 2})), &u);
    ipv4_only.device = Device {
        user_agent: None,
        ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 44))),
    };
    let empty = owned_by(record(t0 + secs(2), json!({"c": 3})), &u);
    let records = [(key(), full), (key(), ipv4_only), (key(), empty)];
    for (k, r) in &records {
        create(store, k, r).await;
    }
    for (k, r) in &records {
        assert_eq!(load(store, k, t0 + secs(3)).await.as_ref(), Some(r));
    }

    // A load that touches, a save that touches, a save that clears the data,
    // and one that changes the lifetime.
    let lifetime = Lifetime {
        idle_timeout: StdDuration::from_secs(500),
        absolute_deadline: t0 + secs(900),
        persistent: true,
    };
    for (k, r) in &records {
        assert!(store
            .load(k, touch(t0 + secs(60), 0.5))
            .await
            .expect("load should succeed")
            .is_some());
        assert!(store
            .save(k, &set("d", 4), touch(t0 + secs(70), 0.0))
            .await
            .expect("save should succeed"));
        let mut cleared = set("e", 5);
        cleared.clear = true;
        assert!(save(store, k, &cleared, t0 + secs(71)).await);
        let relived = Patch {
            lifetime: Some(lifetime),
            ..Patch::default()
        };
        assert!(save(store, k, &relived, t0 + secs(72)).await);
        let loaded = load(store, k, t0 + secs(73)).await.expect("still alive");
        assert_eq!(data(&loaded), json!({"e": 5}), "the saves were applied");
        assert_eq!(loaded.last_seen, t0 + secs(70), "and touched");
        assert_eq!(loaded.device, r.device, "the device survives them all");
    }

    let listed = list(store, &u, t0 + secs(73)).await;
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.key, s.device.clone()))
            .collect::<Vec<_>>(),
        records
            .iter()
            .map(|(k, r)| (*k, r.device.clone()))
            .collect::<Vec<_>>(),
        "each session is listed with its own device"
    );

    // Once the sessions have expired, records created under their keys
    // start with the devices they were given, not the expired ones': one
    // with its User-Agent replaced and its address dropped, one with its
    // address dropped.
    let later = t0 + secs(900);
    let replacing_full = Device {
        user_agent: Some("curl/8.5.0".into()),
        ip: None,
    };
    let replacements = [
        (records[0].0, replacing_full),
        (records[1].0, Device::default()),
    ];
    for (k, device) in &replacements {
        let mut fresh = owned_by(record(later, json!({})), &u);
        fresh.device = device.clone();
        assert!(store.create(k, &fresh, later).await.unwrap());
        assert_eq!(load(store, k, later).await, Some(fresh));
    }
    let mut listed = list(store, &u, later)
        .await
        .into_iter()
        .map(|s| (s.key, s.device))
        .collect::<Vec<_>>();
    let mut expected = replacements.to_vec();
    // Both were created in the same second; their order is not the point.
    listed.sort_by_key(|(k, _)| *k);
    expected.sort_by_key(|(k, _)| *k);
    assert_eq!(listed, expected);
}

/// Session watches read their sessions back with a touch fraction of 1.0
/// (a whole idle window), which must never record activity: the open
/// stream of an unattended screen must not keep its session alive.
pub async fn a_load_with_the_whole_idle_window_as_touch_fraction_never_touches<S: SessionStore>(
    store: &S,
) {
    let now = base();
    let key = key();
    assert!(store
        .create(&key, &record(now, json!({})), now)
        .await
        .unwrap());
    let idle = secs(IDLE.as_secs() as i64);
    for later in [secs(1), idle / 2, idle - secs(1)] {
        let found = store.load(&key, touch(now + later, 1.0)).await.unwrap();
        let found = found.expect("live until the idle deadline");
        assert_eq!(found.last_seen, now, "no activity recorded at +{later}");
    }
    // Each read returns the record as stored before it: a touch by the
    // one before would show in `last_seen` above, and would move the
    // deadline below.
    assert!(
        store
            .load(&key, touch(now + idle, 1.0))
            .await
            .unwrap()
            .is_none(),
        "expired at the idle deadline"
    );
}

/// A store that has a change feed
/// ([`SessionStore::changes`](crate::store::SessionStore::changes))
/// announces each session it deletes, retires, or ends with its user's,
/// once the feed is live (a feed that must subscribe somewhere first
/// starts lost). Passes at once for a store without one.
pub async fn a_change_feed_announces_every_session_it_ends_or_moves<S: SessionStore>(store: &S) {
    let Some(mut changes) = store.changes() else {
        return;
    };
    // A hang guard, not a measure.
    let within = StdDuration::from_secs(10);
    let started = std::time::Instant::now();
    while !changes.is_live() {
        assert!(started.elapsed() < within, "the feed becomes live");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    let now = base();
    let user = user();
    let (deleted, retired, successor, owned) = (key(), key(), key(), key());
    for k in [&deleted, &retired, &owned] {
        let record = owned_by(record(now, json!({})), &user);
        assert!(store.create(k, &record, now).await.unwrap());
    }
    store.delete(&deleted, now).await.unwrap();
    announced(&mut changes, deleted, &user).await;
    assert!(store
        .retire(&retired, &successor, now + secs(10), now)
        .await
        .unwrap());
    announced(&mut changes, retired, &user).await;
    store.delete_user(&user, None).await.unwrap();
    announced(&mut changes, owned, &user).await;
}

/// Waits until `changes` announces `key`: by its key, its user, or
/// "everything".
async fn announced(changes: &mut crate::store::Changes, key: StoreKey, user: &str) {
    use crate::store::Change;

    let waiting = async {
        loop {
            match changes.next().await.expect("the feed stays open") {
                Change::Session(k) if k == key => return,
                Change::User(u) if u == user => return,
                Change::All => return,
                _ => {}
            }
        }
    };
    // A hang guard, not a measure.
    tokio::time::timeout(StdDuration::from_secs(10), waiting)
        .await
        .unwrap_or_else(|_| panic!("the end of {} is announced", key.short()));
}
