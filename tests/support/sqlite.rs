//! SQLite for the tests: a fresh database file per test, in one scratch
//! directory per test binary (removed once the test process is gone), on a
//! pool set up as the store's docs advise (WAL, a busy timeout).
//!
//! SQLite is compiled into sqlx, so it is always available: nothing here
//! skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use cloakroom::{id::SessionId, store::SqliteStore, store::SqliteStoreBuilder};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::backend;

/// How long a write waits for another connection's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The scratch directory of this test binary.
pub(crate) fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = backend::scratch_dir("sqlite");
        remove_when_gone(&dir);
        dir
    })
}

/// A path for a new database file, unique to the caller.
pub(crate) fn fresh_path() -> PathBuf {
    let random = SessionId::generate().expect("OS randomness").store_key();
    dir().join(format!("s_{}.db", &random.to_hex()[..16]))
}

/// The connect options the store's docs advise, for `path`.
pub(crate) fn options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(busy_timeout)
}

/// A pool on the database file at `path` (created if missing).
pub(crate) async fn connect(path: &Path) -> SqlitePool {
    connect_with(path, BUSY_TIMEOUT).await
}

/// [`connect`] with another busy timeout.
pub(crate) async fn connect_with(path: &Path, busy_timeout: Duration) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options(path, busy_timeout))
        .await
        .unwrap_or_else(|e| panic!("cannot open SQLite at {}: {e}", path.display()))
}

/// A migrated store on `pool`, configured further by `configure`.
pub(crate) async fn store_on(
    pool: SqlitePool,
    configure: impl FnOnce(SqliteStoreBuilder) -> SqliteStoreBuilder,
) -> SqliteStore {
    let store = configure(SqliteStore::builder(pool))
        .build()
        .expect("valid test store settings");
    store.migrate().await.expect("migration");
    store
}

/// A store on a database file of its own. Always `Some`: the `Option` is
/// what the store-generic suite takes.
///
/// A file per test: the checks use fixed user names, and the conformance
/// suite's sweep check sweeps at a time in the future, which in a shared
/// table would delete the live sessions of the checks running beside it.
pub(crate) async fn store() -> Option<SqliteStore> {
    Some(fresh_store(|b| b).await)
}

/// [`store`], configured further by `configure`.
pub(crate) async fn fresh_store(
    configure: impl FnOnce(SqliteStoreBuilder) -> SqliteStoreBuilder,
) -> SqliteStore {
    store_on(connect(&fresh_path()).await, configure).await
}

/// Removes `dir` once this test process has exited.
fn remove_when_gone(dir: &Path) {
    let script = r#"
parent=$1; dir=$2
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
rm -rf "$dir"
"#;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("cleaner")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
