//! What is particular to `SqliteStore`, checked with SQL against a real
//! SQLite file: the builder, the migration (repeated, and from two pools
//! at once), the columns, batched sweeping, keys that are hashes and a
//! raw ID that is nowhere in the file, and how bad rows and data SQLite
//! cannot take are reported.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use cloakroom::store::{Deleted, Lifetime, Patch, SessionRecord, Touch};
use cloakroom::{
    id::SessionId, store::ConfigError, store::SessionStore, store::SqliteStore, store::StoreError,
    store::StoreKey,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::support::app::TestApp;
use crate::support::client::logged_in;
use crate::support::sqlite::{connect, fresh_path, fresh_store, store_on};

fn key() -> StoreKey {
    SessionId::generate().expect("OS randomness").store_key()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn record(at: OffsetDateTime, user: Option<&str>) -> SessionRecord {
    let mut r = SessionRecord::new(at, Duration::from_secs(100), Duration::from_secs(1000));
    r.user_id = user.map(str::to_owned);
    r.data.insert("a".into(), json!(1));
    r
}

/// `after: 1.0` never touches a live record.
fn no_touch(now: OffsetDateTime) -> Touch {
    Touch { now, after: 1.0 }
}

async fn count_rows(store: &SqliteStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", store.quoted_table()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Runs `sql` (with `{t}` for the table) on the row under `key`.
async fn execute(store: &SqliteStore, sql: &str, key: &StoreKey) {
    sqlx::query(&sql.replace("{t}", store.quoted_table()))
        .bind(key.as_bytes().as_slice())
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Asserts that `needle` appears in none of the database's files (the
/// file itself, its WAL and shared-memory index, a rollback journal).
pub(crate) fn assert_nowhere_in_the_files(db: &Path, needle: &[u8]) {
    let mut looked = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        looked += bytes.len();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{path} holds the raw session ID"
        );
    }
    assert!(looked > 0, "no database file at {}", db.display());
}

#[tokio::test]
async fn invalid_names_and_batch_sizes_are_refused_by_the_builder() {
    let pool = connect(&fresh_path()).await;
    for bad in [
        "",
        "Sessions",
        "a-b",
        "x\"; DROP TABLE y; --",
        "sqlite_master",
        &"t".repeat(49),
    ] {
        let error = SqliteStore::builder(pool.clone())
            .table(bad)
            .build()
            .expect_err(bad);
        assert!(
            matches!(&error, ConfigError::InvalidTableName(name) if name == bad),
            "{error:?}"
        );
    }
    let error = SqliteStore::builder(pool.clone())
        .sweep_batch_size(0)
        .build()
        .expect_err("zero batch");
    assert!(matches!(error, ConfigError::ZeroSweepBatchSize));
    let store = SqliteStore::builder(pool).table("order").build().unwrap();
    assert_eq!(store.quoted_table(), "\"order\"");
    store.migrate().await.unwrap();
    let t0 = now();
    assert!(store.create(&key(), &record(t0, None), t0).await.unwrap());
    assert!(format!("{store:?}").contains("order"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_is_idempotent_and_safe_from_many_pools_at_once() {
    // Several pools on one file stand for several processes starting at
    // once; each migrates twice. The file is created (and switched to WAL)
    // first, as a deployment does once: switching a new file to WAL is a
    // write that SQLite refuses at once with "database is locked", without
    // the busy timeout, when other connections open the same new file at
    // that moment. What this checks is `migrate`, which waits its turn.
    let path = fresh_path();
    connect(&path).await.close().await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::new(connect(&path).await);
            store.migrate().await.expect("first migration");
            store.migrate().await.expect("second migration");
            store
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap());
    }
    let t0 = now();
    let k = key();
    assert!(stores[0]
        .create(&k, &record(t0, Some("ann")), t0)
        .await
        .unwrap());
    // Migrating again keeps the rows.
    stores[1].migrate().await.unwrap();
    let loaded = stores[5].load(&k, no_touch(t0)).await.unwrap();
    assert_eq!(loaded, Some(record(t0, Some("ann"))));
    let (indexes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'cloakroom_sessions' \
         AND name IN ('cloakroom_sessions_user_id_idx', 'cloakroom_sessions_expires_at_idx')",
    )
    .fetch_one(stores[2].pool())
    .await
    .unwrap();
    assert_eq!(indexes, 2);
    // The user queries read a range of the user_id index: the user's live
    // sessions, never their expired rows.
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM cloakroom_sessions \
         WHERE user_id = ?1 AND expires_at > ?2",
    )
    .bind("ann")
    .bind(0)
    .fetch_all(stores[2].pool())
    .await
    .unwrap();
    assert!(
        plan.iter().any(|(_, _, _, d)| d
            .contains("cloakroom_sessions_user_id_idx (user_id=? AND expires_at>?)")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn migration_sql_applied_by_hand_gives_a_working_store() {
    let pool = connect(&fresh_path()).await;
    let store = SqliteStore::builder(pool.clone())
        .table("by_hand")
        .build()
        .unwrap();
    assert!(store
        .migration_sql()
        .contains("CREATE TABLE IF NOT EXISTS \"by_hand\""));
    sqlx::raw_sql(store.migration_sql())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(store.migration_sql())
        .execute(&pool)
        .await
        .unwrap();
    let t0 = now();
    let k = key();
    assert!(store.create(&k, &record(t0, None), t0).await.unwrap());
    assert!(store.load(&k, no_touch(t0)).await.unwrap().is_some());
}

#[tokio::test]
async fn columns_hold_the_record_and_expires_at_follows_every_change() {
    let store = fresh_store(|b| b).await;
    let t0 = now();
    let k = key();
    let mut r = record(t0, Some("bob"));
    r.device.ip = Some("2001:db8::ff00:42:8329".parse().unwrap());
    r.device.user_agent = Some("curl/8".into());
    assert!(store.create(&k, &r, t0).await.unwrap());
    let columns = || async {
        sqlx::query_as::<
            _,
            (
                i64,
                i64,
                i64,
                i64,
                i64,
                String,
                Option<String>,
                Option<String>,
            ),
        >(
            "SELECT length(key), last_seen, expires_at, absolute_deadline, persistent, data, \
                    user_agent, client_ip \
             FROM cloakroom_sessions WHERE key = ?1",
        )
        .bind(k.as_bytes().as_slice())
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    let t = t0.unix_timestamp();
    let c = columns().await;
    assert_eq!((c.0, c.1, c.2, c.3, c.4), (32, t, t + 100, t + 1000, 0));
    assert_eq!(
        serde_json::from_str::<Value>(&c.5).unwrap(),
        json!({"a": 1})
    );
    assert_eq!(c.6.as_deref(), Some("curl/8"));
    assert_eq!(c.7.as_deref(), Some("2001:db8::ff00:42:8329"));

    // A load that touches moves last_seen and expires_at.
    store
        .load(
            &k,
            Touch {
                now: t0 + secs(60),
                after: 0.5,
            },
        )
        .await
        .unwrap();
    let c = columns().await;
    assert_eq!((c.1, c.2), (t + 60, t + 160));
    // A save with a new lifetime and a touch: expires_at follows both,
    // capped by the absolute deadline.
    let patch = Patch {
        lifetime: Some(Lifetime {
            idle_timeout: Duration::from_secs(500),
            absolute_deadline: t0 + secs(400),
            persistent: true,
        }),
        ..Patch::default()
    };
    assert!(store
        .save(
            &k,
            &patch,
            Touch {
                now: t0 + secs(70),
                after: 0.0
            }
        )
        .await
        .unwrap());
    let c = columns().await;
    assert_eq!((c.1, c.2, c.3, c.4), (t + 70, t + 400, t + 400, 1));
    // The data is patched in place: a nested value set, a key removed.
    let mut patch = Patch::default();
    patch.set.insert(
        "n".into(),
        json!({"x": [1, null, true, 1.5e300, 18446744073709551615u64]}),
    );
    patch.remove.insert("a".into());
    assert!(store
        .save(&k, &patch, no_touch(t0 + secs(71)))
        .await
        .unwrap());
    let c = columns().await;
    assert_eq!(
        serde_json::from_str::<Value>(&c.5).unwrap(),
        json!({"n": {"x": [1, null, true, 1.5e300, 18446744073709551615u64]}}),
        "numbers keep their exact text"
    );
    assert_eq!(c.6.as_deref(), Some("curl/8"), "saves leave the device");
}

#[tokio::test]
async fn rows_are_keyed_by_the_sha256_of_the_session_id_and_the_raw_id_is_nowhere_in_the_file() {
    let path = fresh_path();
    let store = store_on(connect(&path).await, |b| b).await;
    let app = TestApp::new(store.clone());
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/k", "v").await;
    let cookie = client.cookie.clone().expect("a session cookie");
    let encoded = &cookie[..22];
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("the cookie starts with the base64url ID");
    assert_eq!(id.len(), 16);
    let hashed: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&id).into()
    };
    let keys: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key FROM cloakroom_sessions")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        keys,
        [hashed.to_vec()],
        "one row, keyed by SHA-256 of the ID"
    );

    // Neither the raw bytes nor their base64url text are in the database
    // file or its WAL, before and after a checkpoint.
    for needle in [&id[..], encoded.as_bytes()] {
        assert_nowhere_in_the_files(&path, needle);
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    for needle in [&id[..], encoded.as_bytes()] {
        assert_nowhere_in_the_files(&path, needle);
    }
    assert!(
        std::fs::read(&path)
            .unwrap()
            .windows(32)
            .any(|w| w == hashed),
        "the check looks at the right file: the hashed key is in it"
    );
}

#[tokio::test]
async fn sweeping_deletes_expired_rows_in_bounded_batches() {
    let store = fresh_store(|b| b.sweep_batch_size(3)).await;
    let t0 = now();
    for _ in 0..10 {
        assert!(store.create(&key(), &record(t0, None), t0).await.unwrap());
    }
    let live = [key(), key()];
    for k in &live {
        let r = record(t0 + secs(90), Some("bob"));
        assert!(store.create(k, &r, t0 + secs(90)).await.unwrap());
    }
    // A forward that lapses with the expired sessions.
    assert!(store
        .retire(&live[0], &live[1], t0 + secs(120), t0 + secs(90))
        .await
        .unwrap());
    assert_eq!(count_rows(&store).await, 12);

    let at = t0 + secs(150);
    assert_eq!(
        store.sweep_expired(at).await.unwrap(),
        11,
        "more than one batch of 3"
    );
    assert_eq!(count_rows(&store).await, 1, "only the live session is left");
    assert!(store.load(&live[1], no_touch(at)).await.unwrap().is_some());
    assert_eq!(store.sweep_expired(at).await.unwrap(), 0);
}

#[tokio::test]
async fn rows_that_cannot_be_decoded_are_reported_as_corrupt_without_panicking() {
    let store = fresh_store(|b| b).await;
    let t0 = now();
    let cases = [
        "UPDATE {t} SET data = '[1, 2]' WHERE key = ?1",
        "UPDATE {t} SET data = 'not json' WHERE key = ?1",
        "UPDATE {t} SET created_at = 9223372036854775807 WHERE key = ?1",
        "UPDATE {t} SET idle_timeout_secs = -5 WHERE key = ?1",
        "UPDATE {t} SET persistent = 7 WHERE key = ?1",
        "UPDATE {t} SET client_ip = '10.0.0.0/8' WHERE key = ?1",
    ];
    for sql in cases {
        let k = key();
        let user = format!("u-{}", k.short());
        assert!(store
            .create(&k, &record(t0, Some(&user)), t0)
            .await
            .unwrap());
        execute(&store, sql, &k).await;
        let loaded = store.load(&k, no_touch(t0 + secs(1))).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt(_))),
            "{sql}: {loaded:?}"
        );
        if sql.contains("created_at") || sql.contains("persistent") || sql.contains("client_ip") {
            let listed = store.list_user(&user, t0 + secs(1), 100).await;
            assert!(
                matches!(listed, Err(StoreError::Corrupt(_))),
                "{sql}: {listed:?}"
            );
        }
        if sql.contains("not json") {
            // A save cannot patch data that is not JSON.
            let mut patch = Patch::default();
            patch.set.insert("b".into(), json!(2));
            let saved = store.save(&k, &patch, no_touch(t0 + secs(1))).await;
            assert!(matches!(saved, Err(StoreError::Corrupt(_))), "{saved:?}");
        }
        // A corrupt row can still be ended.
        store.delete(&k, t0 + secs(1)).await.unwrap();
        assert_eq!(
            store.delete(&k, t0 + secs(1)).await.unwrap(),
            Deleted::Nothing
        );
    }

    // A key that is not a SHA-256 output, written by someone else.
    let k = key();
    assert!(store
        .create(&k, &record(t0, Some("odd-user")), t0)
        .await
        .unwrap());
    execute(&store, "UPDATE {t} SET key = x'0102' WHERE key = ?1", &k).await;
    let listed = store.list_user("odd-user", t0 + secs(1), 100).await;
    assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
}

#[tokio::test]
async fn data_nested_deeper_than_can_be_read_back_is_rejected_and_nothing_is_written() {
    let store = fresh_store(|b| b).await;
    let t0 = now();
    let nested = |levels: usize| {
        let mut v = json!("bottom");
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    };
    // 126 levels in the value, 127 with the data object: kept.
    let k = key();
    let mut r = record(t0, None);
    r.data.insert("deep".into(), nested(126));
    assert!(store.create(&k, &r, t0).await.unwrap());
    assert_eq!(store.load(&k, no_touch(t0)).await.unwrap(), Some(r));

    // One more: refused, by create and by save, and nothing is written.
    let mut too_deep = record(t0, None);
    too_deep.data.insert("deep".into(), nested(127));
    let other = key();
    let created = store.create(&other, &too_deep, t0).await;
    assert!(
        matches!(created, Err(StoreError::Rejected(_))),
        "{created:?}"
    );
    assert_eq!(store.load(&other, no_touch(t0)).await.unwrap(), None);
    let mut patch = Patch::default();
    patch.set.insert("deep".into(), nested(127));
    patch.set.insert("b".into(), json!(2));
    let saved = store.save(&k, &patch, no_touch(t0)).await;
    assert!(matches!(saved, Err(StoreError::Rejected(_))), "{saved:?}");
    let loaded = store.load(&k, no_touch(t0)).await.unwrap().unwrap();
    assert!(
        !loaded.data.contains_key("b"),
        "nothing of the patch was applied"
    );
}

#[tokio::test]
async fn a_missing_table_is_a_backend_error_that_keeps_the_sqlx_error() {
    let store = SqliteStore::new(connect(&fresh_path()).await);
    let error = store
        .load(&key(), no_touch(now()))
        .await
        .expect_err("no table");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    let source = std::error::Error::source(&error).expect("a source");
    assert_eq!(source.to_string(), "database error 1 (SQLITE_ERROR)");
    assert!(source
        .source()
        .and_then(|e| e.downcast_ref::<sqlx::Error>())
        .is_some());
}

#[tokio::test]
async fn a_patch_naming_hundreds_of_keys_is_one_save() {
    let store = fresh_store(|b| b).await;
    let t0 = now();
    let k = key();
    let mut r = record(t0, None);
    for i in 0..300 {
        r.data.insert(format!("old{i}"), json!(i));
    }
    assert!(store.create(&k, &r, t0).await.unwrap());
    let mut patch = Patch::default();
    for i in 0..250 {
        patch.remove.insert(format!("old{i}"));
    }
    for i in 0..180 {
        patch.set.insert(format!("new \"{i}\""), json!({"i": i}));
    }
    assert!(store.save(&k, &patch, no_touch(t0)).await.unwrap());
    let loaded = store.load(&k, no_touch(t0)).await.unwrap().unwrap();
    r.apply(&patch);
    assert_eq!(loaded, r);
}
