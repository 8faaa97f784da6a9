//! What is particular to `PostgresStore`, checked with SQL against a real
//! server: the migration, the columns, batched sweeping, keys that are
//! hashes, and how bad rows and broken set-ups are reported.

use std::time::{Duration, Instant};

use base64::Engine as _;
use cloakroom::store::{Lifetime, Patch, SessionRecord, Touch};
use cloakroom::{
    device::Device, id::SessionId, store::ConfigError, store::PostgresStore, store::SessionStore,
    store::StoreError, store::StoreKey,
};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;

use crate::support::app::{TestApp, IDLE};
use crate::support::client::logged_in;
use crate::support::harness::{tests, Test};
use crate::support::postgres::{connect, fresh_store, shared_url, unique_table, SCHEMA};

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        None => [
            invalid_names_and_batch_sizes_are_refused_by_the_builder,
        ],
        Some(&crate::POSTGRES) => [
            migrate_is_idempotent_and_safe_from_many_processes_at_once,
            migration_sql_applied_by_hand_gives_a_working_store,
            columns_hold_the_record_and_expires_at_follows_every_change,
            the_device_is_kept_in_two_columns_that_saves_leave_alone,
            rows_are_keyed_by_the_sha256_of_the_session_id_and_hold_no_raw_id,
            sweeping_deletes_expired_rows_in_bounded_batches,
            concurrent_sweepers_share_the_work_without_counting_a_row_twice,
            the_spawned_sweeper_deletes_expired_rows_in_the_background,
            rows_that_cannot_be_decoded_are_reported_as_corrupt_without_panicking,
            a_missing_table_is_a_backend_error_that_keeps_the_sqlx_error,
            a_nul_character_is_rejected_without_showing_the_data_and_nothing_is_written,
            migrating_an_up_to_date_table_does_not_wait_for_its_readers,
            forwards_are_rows_that_the_sweeper_removes_once_they_lapse,
            logout_everywhere_catches_the_session_of_a_login_that_raced_its_delete,
            a_retry_of_retire_racing_the_first_attempt_succeeds_too,
            ending_all_sessions_follows_a_session_moved_while_its_batch_waited,
        ],
    )
}

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

#[derive(Debug, PartialEq)]
struct Columns {
    user_id: Option<String>,
    created_at: OffsetDateTime,
    last_seen: OffsetDateTime,
    absolute_deadline: OffsetDateTime,
    idle_timeout_secs: i64,
    persistent: bool,
    expires_at: OffsetDateTime,
}

async fn columns(store: &PostgresStore, key: &StoreKey) -> Columns {
    type Row = (
        Option<String>,
        OffsetDateTime,
        OffsetDateTime,
        OffsetDateTime,
        i64,
        bool,
        OffsetDateTime,
    );
    let row: Row = sqlx::query_as(&format!(
        "SELECT user_id, created_at, last_seen, absolute_deadline, idle_timeout_secs, \
         persistent, expires_at FROM {} WHERE key = $1",
        store.quoted_table()
    ))
    .bind(key.as_bytes().as_slice())
    .fetch_one(store.pool())
    .await
    .expect("the row");
    Columns {
        user_id: row.0,
        created_at: row.1,
        last_seen: row.2,
        absolute_deadline: row.3,
        idle_timeout_secs: row.4,
        persistent: row.5,
        expires_at: row.6,
    }
}

/// How many rows the store's table holds.
pub(crate) async fn count_rows(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", store.quoted_table()))
        .fetch_one(store.pool())
        .await
        .expect("count rows")
}

async fn execute(store: &PostgresStore, sql: &str, key: &StoreKey) {
    sqlx::query(&sql.replace("{t}", store.quoted_table()))
        .bind(key.as_bytes().as_slice())
        .execute(store.pool())
        .await
        .expect(sql);
}

#[tokio::main(flavor = "current_thread")]
async fn invalid_names_and_batch_sizes_are_refused_by_the_builder() {
    // A lazy pool never connects: names are checked before any SQL.
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    for table in ["", "Sessions", "sessions; DROP TABLE users", "a\"b", "9t"] {
        let built = PostgresStore::builder(pool.clone()).table(table).build();
        assert_eq!(
            built.err(),
            Some(ConfigError::InvalidTableName(table.into()))
        );
    }
    let too_long = "t".repeat(49);
    assert!(PostgresStore::builder(pool.clone())
        .table(too_long)
        .build()
        .is_err());
    let built = PostgresStore::builder(pool.clone())
        .schema("my-app")
        .build();
    assert_eq!(
        built.err(),
        Some(ConfigError::InvalidSchemaName("my-app".into()))
    );
    let built = PostgresStore::builder(pool.clone())
        .sweep_batch_size(0)
        .build();
    assert_eq!(built.err(), Some(ConfigError::ZeroSweepBatchSize));

    let store = PostgresStore::builder(pool)
        .schema("auth")
        .table("order")
        .build()
        .unwrap();
    assert_eq!(store.quoted_table(), "\"auth\".\"order\"");
    let debug = format!("{store:?}");
    assert!(
        debug.starts_with("PostgresStore") && debug.contains("order"),
        "{debug}"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn migrate_is_idempotent_and_safe_from_many_processes_at_once() {
    let Some(url) = shared_url() else { return };
    // A schema of its own, so that concurrent `CREATE SCHEMA` is covered.
    let schema = format!("m_{}", &unique_table()[2..]);
    let table = unique_table();
    let mut migrations = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // One pool each: separate sessions, as separate processes would be.
        let pool = connect(url).await;
        let store = PostgresStore::builder(pool)
            .schema(&schema)
            .table(&table)
            .build()
            .unwrap();
        migrations.spawn(async move { store.migrate().await });
    }
    while let Some(result) = migrations.join_next().await {
        result
            .unwrap()
            .expect("every concurrent migration succeeds");
    }

    let pool = connect(url).await;
    let store = PostgresStore::builder(pool.clone())
        .schema(&schema)
        .table(&table)
        .build()
        .unwrap();
    store.migrate().await.expect("and again");
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(&schema)
    .bind(&table)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("key", "bytea", "NO"),
        ("user_id", "text", "YES"),
        ("data", "jsonb", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("last_seen", "timestamp with time zone", "NO"),
        ("absolute_deadline", "timestamp with time zone", "NO"),
        ("idle_timeout_secs", "bigint", "NO"),
        ("persistent", "boolean", "NO"),
        ("expires_at", "timestamp with time zone", "NO"),
        ("successor", "bytea", "YES"),
        ("user_agent", "text", "YES"),
        ("client_ip", "inet", "YES"),
    ];
    assert_eq!(
        columns
            .iter()
            .map(|(n, t, null)| (n.as_str(), t.as_str(), null.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 \
         ORDER BY indexname",
    )
    .bind(&schema)
    .bind(&table)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(indexes.len(), 3, "{indexes:#?}");
    assert!(indexes.iter().any(|d| d.contains("(expires_at)")));
    assert!(indexes
        .iter()
        .any(|d| d.contains("(user_id, expires_at) WHERE (user_id IS NOT NULL)")));
    assert!(indexes
        .iter()
        .any(|d| d.contains("UNIQUE") && d.contains("(key)")));

    // Leave nothing behind in a developer's `DATABASE_URL` database.
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn migration_sql_applied_by_hand_gives_a_working_store() {
    let Some(url) = shared_url() else { return };
    let pool = connect(url).await;
    let store = PostgresStore::builder(pool.clone())
        .schema(SCHEMA)
        .table(unique_table())
        .build()
        .unwrap();
    // What a team with its own migration tool would run; `migrate` is never
    // called.
    sqlx::raw_sql(store.migration_sql())
        .execute(&pool)
        .await
        .expect("the SQL runs as it is");
    let (k, t0) = (key(), now());
    let r = record(t0, Some("u"));
    assert!(store.create(&k, &r, t0).await.unwrap());
    assert_eq!(store.load(&k, no_touch(t0)).await.unwrap(), Some(r));
    sqlx::raw_sql(store.migration_sql())
        .execute(&pool)
        .await
        .expect("and again, over the existing table");
    store.migrate().await.expect("migrate agrees it is done");
    assert_eq!(count_rows(&store).await, 1);
}

#[tokio::main(flavor = "current_thread")]
async fn columns_hold_the_record_and_expires_at_follows_every_change() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let (k, t0) = (key(), now());
    let r = record(t0, Some("alice"));
    assert!(store.create(&k, &r, t0).await.unwrap());
    assert_eq!(
        columns(&store, &k).await,
        Columns {
            user_id: Some("alice".into()),
            created_at: t0,
            last_seen: t0,
            absolute_deadline: t0 + secs(1000),
            idle_timeout_secs: 100,
            persistent: false,
            expires_at: t0 + secs(100),
        }
    );

    // A due touch moves last_seen and expires_at in the same statement.
    let loaded = store
        .load(
            &k,
            Touch {
                now: t0 + secs(60),
                after: 0.5,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.last_seen, t0, "the row as it was before the touch");
    let c = columns(&store, &k).await;
    assert_eq!(c.last_seen, t0 + secs(60));
    assert_eq!(c.expires_at, t0 + secs(160));

    // A new lifetime: the idle deadline counts from the stored last_seen.
    let patch = Patch {
        lifetime: Some(Lifetime {
            idle_timeout: Duration::from_secs(5000),
            absolute_deadline: t0 + secs(20_000),
            persistent: true,
        }),
        ..Patch::default()
    };
    assert!(store
        .save(&k, &patch, no_touch(t0 + secs(61)))
        .await
        .unwrap());
    let c = columns(&store, &k).await;
    assert_eq!(c.idle_timeout_secs, 5000);
    assert_eq!(c.absolute_deadline, t0 + secs(20_000));
    assert!(c.persistent);
    assert_eq!(c.expires_at, t0 + secs(5060));

    // Near the absolute deadline the idle one is capped by it.
    let patch = Patch {
        lifetime: Some(Lifetime {
            idle_timeout: Duration::from_secs(5000),
            absolute_deadline: t0 + secs(3000),
            persistent: true,
        }),
        ..Patch::default()
    };
    assert!(store
        .save(&k, &patch, no_touch(t0 + secs(62)))
        .await
        .unwrap());
    assert_eq!(columns(&store, &k).await.expires_at, t0 + secs(3000));
    // ... and a load then records the activity, though it cannot move the
    // deadline.
    let touch = Touch {
        now: t0 + secs(2990),
        after: 0.0,
    };
    assert!(store.load(&k, touch).await.unwrap().is_some());
    let c = columns(&store, &k).await;
    assert_eq!(c.last_seen, t0 + secs(2990));
    assert_eq!(c.expires_at, t0 + secs(3000));
}

/// The device columns of the row under `key`: the User-Agent, and the
/// client address as PostgreSQL shows it, with its prefix length.
async fn device_columns(
    store: &PostgresStore,
    key: &StoreKey,
) -> (Option<String>, Option<String>, Option<i32>) {
    sqlx::query_as(&format!(
        "SELECT user_agent, host(client_ip), masklen(client_ip) FROM {} WHERE key = $1",
        store.quoted_table()
    ))
    .bind(key.as_bytes().as_slice())
    .fetch_one(store.pool())
    .await
    .expect("the row")
}

#[tokio::main(flavor = "current_thread")]
async fn the_device_is_kept_in_two_columns_that_saves_leave_alone() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let (k, bare, t0) = (key(), key(), now());
    let mut session = record(t0, Some("alice"));
    session.device = Device {
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) ✓".into()),
        ip: Some("2001:db8::7".parse().unwrap()),
    };
    assert!(store.create(&k, &session, t0).await.unwrap());
    assert!(store
        .create(&bare, &record(t0, Some("alice")), t0)
        .await
        .unwrap());
    let written = (
        Some("Mozilla/5.0 (X11; Linux x86_64) ✓".to_owned()),
        Some("2001:db8::7".to_owned()),
        Some(128),
    );
    assert_eq!(device_columns(&store, &k).await, written);
    assert_eq!(
        device_columns(&store, &bare).await,
        (None, None, None),
        "no device, NULLs"
    );

    // A save that clears the data and touches leaves the device alone.
    let clear = Patch {
        clear: true,
        ..Patch::default()
    };
    let touch = Touch {
        now: t0 + secs(5),
        after: 0.0,
    };
    assert!(store.save(&k, &clear, touch).await.unwrap());
    assert!(store.load(&k, touch).await.unwrap().is_some());
    assert_eq!(device_columns(&store, &k).await, written);

    // An IPv4 address is stored as one (a single host, /32).
    let v4 = key();
    session.device.ip = Some("192.0.2.7".parse().unwrap());
    assert!(store.create(&v4, &session, t0).await.unwrap());
    assert_eq!(
        device_columns(&store, &v4).await.1.as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(device_columns(&store, &v4).await.2, Some(32));
}

#[tokio::main(flavor = "current_thread")]
async fn rows_are_keyed_by_the_sha256_of_the_session_id_and_hold_no_raw_id() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let app = TestApp::new(store.clone());
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/k", "v").await;
    let cookie = client.cookie.clone().expect("a session cookie");
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&cookie[..22])
        .expect("the cookie starts with the base64url ID");
    assert_eq!(id.len(), 16);

    let t = store.quoted_table();
    let (hashed, raw, lengths): (i64, i64, Vec<i32>) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE key = sha256($1)), \
                count(*) FILTER (WHERE position($1 IN key) > 0 \
                                    OR position($2 IN data::text) > 0), \
                array_agg(octet_length(key)) \
         FROM {t}"
    ))
    .bind(&id)
    .bind(&cookie[..22])
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(hashed, 1, "the row's key is SHA-256 of the session ID");
    assert_eq!(raw, 0, "the raw ID is stored nowhere");
    assert_eq!(lengths, [32], "one session: login replaced the first one");
}

#[tokio::main(flavor = "current_thread")]
async fn sweeping_deletes_expired_rows_in_bounded_batches() {
    let Some(store) = fresh_store(|b| b.sweep_batch_size(3)).await else {
        return;
    };
    let t0 = now();
    for _ in 0..10 {
        assert!(store.create(&key(), &record(t0, None), t0).await.unwrap());
    }
    let live = [key(), key()];
    for k in &live {
        let r = record(t0 + secs(90), Some("bob"));
        assert!(store.create(k, &r, t0 + secs(90)).await.unwrap());
    }
    assert_eq!(count_rows(&store).await, 12);

    let at = t0 + secs(150);
    assert_eq!(
        store.sweep_expired(at).await.unwrap(),
        10,
        "more than one batch of 3"
    );
    assert_eq!(count_rows(&store).await, 2, "only the live rows are left");
    for k in &live {
        assert!(store.load(k, no_touch(at)).await.unwrap().is_some());
    }
    assert_eq!(store.sweep_expired(at).await.unwrap(), 0);
}

#[tokio::main(flavor = "current_thread")]
async fn concurrent_sweepers_share_the_work_without_counting_a_row_twice() {
    let Some(store) = fresh_store(|b| b.sweep_batch_size(5)).await else {
        return;
    };
    let t0 = now();
    for _ in 0..60 {
        assert!(store.create(&key(), &record(t0, None), t0).await.unwrap());
    }
    let at = t0 + secs(100);
    let (a, b) = tokio::join!(store.sweep_expired(at), store.sweep_expired(at));
    let swept = a.unwrap() + b.unwrap();
    // SKIP LOCKED lets one sweeper stop early while the other holds rows;
    // a last sweep picks up anything both skipped.
    let rest = store.sweep_expired(at).await.unwrap();
    assert_eq!(swept + rest, 60);
    assert_eq!(count_rows(&store).await, 0);
}

#[tokio::main(flavor = "current_thread")]
async fn the_spawned_sweeper_deletes_expired_rows_in_the_background() {
    let Some(store) = fresh_store(|b| b.sweep_batch_size(2)).await else {
        return;
    };
    let app = TestApp::new(store.clone());
    for _ in 0..5 {
        app.client().put("/set/k", "v").await;
    }
    let mut keeper = app.client();
    assert_eq!(count_rows(&store).await, 5);
    app.clock.advance(IDLE);
    keeper.put("/set/k", "v").await;
    assert!(keeper.cookie.is_some(), "the write created a session");
    assert_eq!(count_rows(&store).await, 6);

    // The first tick of the sweeper is immediate; the rest of the period
    // is far beyond this test.
    let sweeper = app.layer.admin().spawn_sweeper(Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_rows(&store).await > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    assert_eq!(
        count_rows(&store).await,
        1,
        "expired rows swept, live one kept"
    );
    assert_eq!(keeper.get("/get/k").await.body, "v");
}

#[tokio::main(flavor = "current_thread")]
async fn rows_that_cannot_be_decoded_are_reported_as_corrupt_without_panicking() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let t0 = now();
    let cases = [
        "UPDATE {t} SET data = '[1, 2]' WHERE key = $1",
        "UPDATE {t} SET data = '{\"a\": 1}', created_at = 'infinity' WHERE key = $1",
        "UPDATE {t} SET last_seen = '20000-01-01 00:00:00+00' WHERE key = $1",
        "UPDATE {t} SET idle_timeout_secs = -5 WHERE key = $1",
        // A network where one address belongs.
        "UPDATE {t} SET client_ip = '10.0.0.0/8' WHERE key = $1",
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
        if sql.contains("infinity") || sql.contains("20000") || sql.contains("client_ip") {
            let listed = store.list_user(&user, t0 + secs(1), 100).await;
            assert!(
                matches!(listed, Err(StoreError::Corrupt(_))),
                "{sql}: {listed:?}"
            );
        }
        // A corrupt row can still be ended.
        store.delete(&k, t0 + secs(1)).await.unwrap();
        assert_eq!(
            store.delete(&k, t0 + secs(1)).await.unwrap(),
            cloakroom::store::Deleted::Nothing
        );
    }

    // A key that is not a SHA-256 output, written by someone else.
    let k = key();
    assert!(store
        .create(&k, &record(t0, Some("odd-user")), t0)
        .await
        .unwrap());
    execute(&store, "UPDATE {t} SET key = '\\x0102' WHERE key = $1", &k).await;
    let listed = store.list_user("odd-user", t0 + secs(1), 100).await;
    assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
}

#[tokio::main(flavor = "current_thread")]
async fn a_missing_table_is_a_backend_error_that_keeps_the_sqlx_error() {
    let Some(url) = shared_url() else { return };
    let store = PostgresStore::builder(connect(url).await)
        .schema(SCHEMA)
        .table(unique_table())
        .build()
        .unwrap();
    let error = store
        .load(&key(), no_touch(now()))
        .await
        .expect_err("no table");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    let source = std::error::Error::source(&error).expect("a source");
    assert_eq!(
        source.to_string(),
        "database error 42P01 (syntax error or access rule violation)"
    );
    let sqlx_error = source
        .source()
        .and_then(|e| e.downcast_ref::<sqlx::Error>())
        .expect("the sqlx error, one level down");
    let code = sqlx_error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42P01"), "undefined_table");
}

/// Everything of a store error that could end up in a log: the top-level
/// `Debug` (what the layer prints) and the `Display` of every error along
/// the source chain.
fn shown(error: &StoreError) -> String {
    let mut shown = format!("{error:?}");
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        shown.push('\n');
        shown.push_str(&e.to_string());
        next = e.source();
    }
    shown
}

/// A [`StoreError::Rejected`] that shows nothing of `secret`.
fn assert_rejected_quietly<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    secret: &str,
    what: &str,
) -> StoreError {
    match result {
        Err(error @ StoreError::Rejected(_)) => {
            let shown = shown(&error);
            assert!(!shown.contains(secret), "{what} shows the data: {shown}");
            assert!(
                shown.contains("(data exception)"),
                "{what}: the SQLSTATE class is shown: {shown}"
            );
            error
        }
        other => panic!("{what}: expected StoreError::Rejected, got {other:?}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn a_nul_character_is_rejected_without_showing_the_data_and_nothing_is_written() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let t0 = now();
    let secret = "secret-card-4111";
    let with_nul = format!("{secret}\u{0}tail");

    // A session value, a data key and a user ID, each given to `create`.
    let mut in_value = record(t0, None);
    in_value.data.insert("note".into(), json!(with_nul));
    let mut in_key = record(t0, None);
    in_key.data.insert(with_nul.clone(), json!(1));
    let in_user = record(t0, Some(&with_nul));
    for (what, r) in [
        ("a value", &in_value),
        ("a data key", &in_key),
        ("a user ID", &in_user),
    ] {
        let k = key();
        let error = assert_rejected_quietly(store.create(&k, r, t0).await, secret, what);
        assert!(error.is_rejected());
        assert_eq!(store.load(&k, no_touch(t0)).await.unwrap(), None, "{what}");
    }
    assert_eq!(count_rows(&store).await, 0, "nothing was written");

    // PostgreSQL's report itself quotes the data (in its context line),
    // which is why only the SQLSTATE is shown. It is still there, one
    // level down, for whoever asks for it on purpose.
    let error = store.create(&key(), &in_value, t0).await.unwrap_err();
    let sqlx_error = std::error::Error::source(&error)
        .and_then(|e| e.source())
        .and_then(|e| e.downcast_ref::<sqlx::Error>())
        .expect("the sqlx error below the shown one");
    assert!(format!("{sqlx_error:?}").contains(secret), "{sqlx_error:?}");

    // The same through `save`, for a value, a key set and a key removed:
    // refused whole, the other keys of the patch included.
    let k = key();
    assert!(store.create(&k, &record(t0, None), t0).await.unwrap());
    let mut value = Patch::default();
    value.set.insert("note".into(), json!(with_nul));
    value.set.insert("b".into(), json!(2));
    let mut set_key = Patch::default();
    set_key.set.insert(with_nul.clone(), json!(1));
    set_key.set.insert("b".into(), json!(2));
    let mut removed_key = Patch::default();
    removed_key.remove.insert(with_nul.clone());
    removed_key.set.insert("b".into(), json!(2));
    for (what, patch) in [
        ("a saved value", &value),
        ("a saved key", &set_key),
        ("a removed key", &removed_key),
    ] {
        let saved = store.save(&k, patch, no_touch(t0 + secs(1))).await;
        assert_rejected_quietly(saved, secret, what);
        let loaded = store.load(&k, no_touch(t0 + secs(1))).await.unwrap();
        assert_eq!(
            loaded.map(|r| serde_json::Value::Object(r.data)),
            Some(json!({"a": 1})),
            "{what}: the patch was not half-applied"
        );
    }

    // A user ID given to the per-user calls.
    assert_rejected_quietly(
        store.delete_user(&with_nul, None).await,
        secret,
        "delete_user",
    );
    assert_rejected_quietly(store.count_user(&with_nul, t0).await, secret, "count_user");
    assert_rejected_quietly(
        store.list_user(&with_nul, t0, 10).await,
        secret,
        "list_user",
    );
}

/// How many backends wait for a lock while running a statement on the
/// store's table.
async fn waiting(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
    )
    .bind(store.quoted_table())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until `count` statements on the store's table wait for a lock.
async fn wait_for_waiters(store: &PostgresStore, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiting(store).await < count {
        assert!(Instant::now() < deadline, "fewer than {count} waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn migrating_an_up_to_date_table_does_not_wait_for_its_readers() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let url = shared_url().expect("a server");
    let reader_pool = connect(url).await;
    let mut reader = reader_pool.begin().await.unwrap();
    // A long read, as a `pg_dump` does: ACCESS SHARE until it ends.
    sqlx::query(&format!("SELECT count(*) FROM {}", store.quoted_table()))
        .execute(&mut *reader)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), store.migrate())
        .await
        .expect("the migration did not wait for the reader")
        .expect("the migration");
    reader.rollback().await.unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn forwards_are_rows_that_the_sweeper_removes_once_they_lapse() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let (old, new, t0) = (key(), key(), now());
    let mut session = record(t0, Some("erin"));
    session.device = Device {
        user_agent: Some("Mozilla/5.0".into()),
        ip: Some("192.0.2.1".parse().unwrap()),
    };
    assert!(store.create(&old, &session, t0).await.unwrap());
    let until = t0 + secs(30);
    assert!(store.retire(&old, &new, until, t0).await.unwrap());
    type ForwardRow = (
        Option<String>,
        serde_json::Value,
        Option<Vec<u8>>,
        OffsetDateTime,
        Option<String>,
        Option<String>,
    );
    let (user_id, data, successor, expires_at, user_agent, client_ip): ForwardRow =
        sqlx::query_as(&format!(
            "SELECT user_id, data, successor, expires_at, user_agent, host(client_ip) \
             FROM {} WHERE key = $1",
            store.quoted_table()
        ))
        .bind(old.as_bytes().as_slice())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(user_id, None, "a forward belongs to no user");
    assert_eq!(data, json!({}), "and keeps no data");
    assert_eq!((user_agent, client_ip), (None, None), "nor device");
    assert_eq!(successor.as_deref(), Some(new.as_bytes().as_slice()));
    assert_eq!(expires_at, until);

    assert_eq!(store.sweep_expired(until - secs(1)).await.unwrap(), 0);
    assert_eq!(count_rows(&store).await, 1, "kept until it lapses");
    assert_eq!(store.sweep_expired(until).await.unwrap(), 1);
    assert_eq!(count_rows(&store).await, 0, "swept once lapsed");
}

#[tokio::main(flavor = "current_thread")]
async fn logout_everywhere_catches_the_session_of_a_login_that_raced_its_delete() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let url = shared_url().expect("a server");
    let t = store.quoted_table().to_owned();
    let (old, new, t0) = (key(), key(), now());
    assert!(store
        .create(&old, &record(t0, Some("carol")), t0)
        .await
        .unwrap());

    // A login in flight: its retire of the old session has written the
    // forward but not committed yet, so it holds the row.
    let login = retire_uncommitted(url, &t, &old, &new, t0 + secs(60)).await;

    // Logout-everywhere starts: its first DELETE takes its snapshot (the
    // old session of carol, no new one) and waits for that row.
    let logout = tokio::spawn({
        let store = store.clone();
        async move { store.delete_user("carol", None).await }
    });
    wait_for_waiters(&store, 1).await;

    // The login creates the new session, then commits the retire. The
    // waiting DELETE finds the old row no longer carol's and skips it, and
    // its snapshot never shows the new one.
    assert!(store
        .create(&new, &record(t0, Some("carol")), t0)
        .await
        .unwrap());
    login.commit().await.unwrap();

    let deleted = logout.await.unwrap().expect("delete_user");
    assert_eq!(deleted, 1, "the new session, found by a later pass");
    assert_eq!(
        store.load(&new, no_touch(t0 + secs(1))).await.unwrap(),
        None
    );
    assert_eq!(store.count_user("carol", t0 + secs(1)).await.unwrap(), 0);
    assert_eq!(
        store.delete(&old, t0 + secs(1)).await.unwrap(),
        cloakroom::store::Deleted::Forward(new),
        "the forward itself is left to its own logout"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn a_retry_of_retire_racing_the_first_attempt_succeeds_too() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let url = shared_url().expect("a server");
    let t = store.quoted_table().to_owned();
    let (old, new, t0) = (key(), key(), now());
    assert!(store.create(&old, &record(t0, None), t0).await.unwrap());

    // Hold the row, so that both attempts are in flight at once.
    let holder_pool = connect(url).await;
    let mut holder = holder_pool.begin().await.unwrap();
    sqlx::query(&format!("SELECT 1 FROM {t} WHERE key = $1 FOR UPDATE"))
        .bind(old.as_bytes().as_slice())
        .execute(&mut *holder)
        .await
        .unwrap();
    let attempt = || {
        let store = store.clone();
        tokio::spawn(async move { store.retire(&old, &new, t0 + secs(60), t0).await })
    };
    let (first, retry) = (attempt(), attempt());
    wait_for_waiters(&store, 2).await;
    holder.rollback().await.unwrap();

    assert!(first.await.unwrap().expect("retire"));
    assert!(
        retry.await.unwrap().expect("retire"),
        "the attempt that ran second sees the forward the first one wrote"
    );
    assert_eq!(
        store.delete(&old, t0 + secs(1)).await.unwrap(),
        cloakroom::store::Deleted::Forward(new)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn ending_all_sessions_follows_a_session_moved_while_its_batch_waited() {
    let Some(store) = fresh_store(|b| b).await else {
        return;
    };
    let url = shared_url().expect("a server");
    let t = store.quoted_table().to_owned();
    let (old, new, t0) = (key(), key(), now());
    let created = t0 - secs(10);
    assert!(store
        .create(&old, &record(created, Some("carol")), created)
        .await
        .unwrap());

    // A regenerate in flight: its retire of the old session has written
    // the forward but not committed yet, so it holds the row.
    let regenerate = retire_uncommitted(url, &t, &old, &new, t0 + secs(60)).await;

    // The pass starts: its batch takes its snapshot (the old session, no
    // new one) and waits for that row.
    let pass = tokio::spawn({
        let store = store.clone();
        async move { store.delete_all(t0, t0 + secs(1)).await }
    });
    wait_for_waiters(&store, 1).await;

    // The regenerate's new session, with the old one's creation time, then
    // the retire commits: the batch deletes the row as it now is, a
    // forward, and its snapshot never shows the new session.
    assert!(store
        .create(&new, &record(created, Some("carol")), t0)
        .await
        .unwrap());
    regenerate.commit().await.unwrap();

    assert_eq!(
        pass.await.unwrap().expect("delete_all"),
        1,
        "the new session, reached through the forward, and counted: \
         a pass that ends nothing would be taken for the last"
    );
    assert_eq!(
        store.load(&new, no_touch(t0 + secs(1))).await.unwrap(),
        None
    );
    assert_eq!(store.count_user("carol", t0 + secs(1)).await.unwrap(), 0);
    assert_eq!(count_rows(&store).await, 0);
}

/// A retire of `old` in favour of `new` (a login's or a regenerate's), on
/// a connection of its own, written but not committed: it holds the row
/// until the caller commits it.
async fn retire_uncommitted(
    url: &str,
    table: &str,
    old: &StoreKey,
    new: &StoreKey,
    until: OffsetDateTime,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut retire = connect(url).await.begin().await.unwrap();
    sqlx::query(&format!(
        "UPDATE {table} SET successor = $2, user_id = NULL, data = '{{}}', expires_at = $3 \
         WHERE key = $1"
    ))
    .bind(old.as_bytes().as_slice())
    .bind(new.as_bytes().as_slice())
    .bind(until)
    .execute(&mut *retire)
    .await
    .unwrap();
    retire
}
