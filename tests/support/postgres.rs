//! PostgreSQL for the tests: `DATABASE_URL` when set, otherwise a
//! throwaway cluster (`initdb` into a scratch directory, `postgres` on a
//! free loopback port) started once per test binary, stopped by the
//! watchdog when the test process ends, and removed afterwards.
//!
//! Tests get their own pool each (every `#[tokio::test]` has its own
//! runtime, and a pool belongs to the runtime that made it) and their own
//! table, in the schema `cloakroom_test`, so a developer's `DATABASE_URL`
//! database can be cleaned with `DROP SCHEMA cloakroom_test CASCADE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloakroom::{id::SessionId, store::PostgresStore, store::PostgresStoreBuilder};
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::backend;

const BACKEND: &str = "PostgreSQL";
/// The schema every test table lives in.
pub(crate) const SCHEMA: &str = "cloakroom_test";
/// How long a test pool waits for a connection. Short, so that a test
/// against a server that went away fails fast; a healthy local server
/// answers in milliseconds.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared server's URL for this test binary, or `None` (after the
/// skip notice) when PostgreSQL is not available.
pub(crate) fn shared_url() -> Option<&'static str> {
    static SHARED: OnceLock<Option<(String, Option<Server>)>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(why) = missing() {
                return backend::unavailable(BACKEND, &why);
            }
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return Some((url, None));
            }
            // Kept in the static for the life of the process; the watchdog
            // stops it and `remove_when_gone` deletes its files.
            let server = Server::start()?;
            Some((server.url(), Some(server)))
        })
        .as_ref()
        .map(|(url, _)| url.as_str())
}

/// Why there is no PostgreSQL to share (neither `DATABASE_URL` nor the
/// binaries to start a server), if so. Starts nothing.
pub(crate) fn missing() -> Option<String> {
    if let Err(why) = backend::hidden("postgres") {
        return Some(why);
    }
    if std::env::var_os("DATABASE_URL").is_some() {
        return None;
    }
    server_missing()
}

/// Why no server of a test's own can be started ([`Server::start`]), if
/// so.
pub(crate) fn server_missing() -> Option<String> {
    server_binaries().err()
}

/// A random table name, unique to the caller.
pub(crate) fn unique_table() -> String {
    let random = SessionId::generate().expect("OS randomness").store_key();
    format!("t_{}", &random.to_hex()[..16])
}

/// A pool on `url`, retrying for a while: a freshly started server accepts
/// TCP connections a moment before it accepts sessions.
pub(crate) async fn connect(url: &str) -> PgPool {
    connect_with(url, ACQUIRE_TIMEOUT).await
}

/// [`connect`] with another acquire timeout: how long a call waits for a
/// connection before failing with a pool time-out.
pub(crate) async fn connect_with(url: &str, acquire_timeout: Duration) -> PgPool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await
        {
            Ok(pool) => return pool,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for PostgreSQL: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot connect to PostgreSQL at {url}: {error}"),
        }
    }
}

/// A migrated store on `pool`, in the test schema, configured further by
/// `configure` (whose table name wins over the one given here).
pub(crate) async fn store_on(
    pool: PgPool,
    table: &str,
    configure: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> PostgresStore {
    let builder = PostgresStore::builder(pool).schema(SCHEMA).table(table);
    let store = configure(builder).build().expect("valid test store names");
    store.migrate().await.expect("migration");
    store
}

/// A store on the shared server with a table of its own, or `None` when
/// PostgreSQL is not available.
///
/// A table per test, not per binary: the checks' random keys and user IDs
/// keep their rows apart, but a sweep at a time in the future (as the
/// conformance suite's sweep check does) would delete the live rows of
/// every check running beside it in a shared table.
pub(crate) async fn store() -> Option<PostgresStore> {
    fresh_store(|b| b).await
}

/// [`store`], configured further by `configure`.
pub(crate) async fn fresh_store(
    configure: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> Option<PostgresStore> {
    let url = shared_url()?;
    Some(store_on(connect(url).await, &unique_table(), configure).await)
}

/// A PostgreSQL server of the tests' own, on its own data directory.
pub(crate) struct Server {
    dir: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    port: u16,
    postgres: PathBuf,
    run_as: Option<&'static str>,
    watchdog: Option<Child>,
}

impl Server {
    /// Creates a cluster and starts it, or returns `None` (after the skip
    /// notice) when the PostgreSQL binaries or a user to run them as are
    /// missing.
    pub(crate) fn start() -> Option<Self> {
        let (initdb, postgres, run_as) = match server_binaries() {
            Ok(found) => found,
            Err(why) => return backend::unavailable(BACKEND, &why),
        };

        let dir = backend::scratch_dir("postgres");
        let data = dir.join("data");
        let socket = dir.join("socket");
        let log = dir.join("postgres.log");
        std::fs::create_dir_all(&socket).expect("socket dir");
        remove_when_gone(&dir);
        if let Some(user) = run_as {
            run(Command::new("chown").arg("-R").arg(user).arg(&dir), &log);
        }

        let mut initdb_command = as_user(run_as, &initdb);
        initdb_command
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&dir);
        run(&mut initdb_command, &log);

        let mut server = Self {
            dir,
            data,
            socket,
            log,
            port: backend::free_port().port(),
            postgres,
            run_as,
            watchdog: None,
        };
        server.start_again();
        Some(server)
    }

    /// The URL of the server's `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its data directory and port, and waits
    /// until it accepts connections.
    pub(crate) fn start_again(&mut self) {
        assert!(self.watchdog.is_none(), "the server is already running");
        let args: Vec<String> = [
            "-D",
            &self.data.to_string_lossy(),
            "-k",
            &self.socket.to_string_lossy(),
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            // Throwaway data: durability is not what these tests check.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        self.watchdog = Some(backend::spawn_supervised(
            &self.postgres,
            &args,
            &self.log,
            self.run_as,
        ));
        let addr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        backend::wait_for_port(addr, Duration::from_secs(60), &self.log);
    }

    /// Stops the server now ("fast" shutdown: open sessions are ended, as
    /// in a real outage) and waits until it is gone.
    pub(crate) fn stop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        // SIGINT to the postmaster. The watchdog's own SIGTERM would be a
        // "smart" shutdown, which waits for every client (our pools) to
        // disconnect first.
        let pid_file = self.data.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backend::stop_supervised(&mut watchdog);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `initdb`, `postgres` and the user to run them as (PostgreSQL refuses to
/// run as root), or why a server cannot be started.
fn server_binaries() -> Result<(PathBuf, PathBuf, Option<&'static str>), String> {
    backend::hidden("postgres")?;
    let (initdb, postgres) = find_binaries().ok_or(
        "`initdb`/`postgres` not found on PATH or in /usr/lib/postgresql/*/bin \
         (install PostgreSQL or set DATABASE_URL)",
    )?;
    let run_as = if running_as_root() {
        if !user_exists("postgres") {
            return Err(
                "running as root and there is no `postgres` user to run the server as".to_owned(),
            );
        }
        Some("postgres")
    } else {
        None
    };
    Ok((initdb, postgres, run_as))
}

/// `initdb` and `postgres` from one directory: `PATH` first, then
/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn find_binaries() -> Option<(PathBuf, PathBuf)> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let extra: Vec<PathBuf> = versions.into_iter().map(|(_, dir)| dir).collect();
    let postgres = backend::find_binary("postgres", &extra)?;
    let beside = postgres.with_file_name("initdb");
    let initdb = if beside.is_file() {
        beside
    } else {
        backend::find_binary("initdb", &extra)?
    };
    Some((initdb, postgres))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        None => Command::new(program),
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
                .arg(program);
            command
        }
    }
}

/// Runs a set-up command, with its output in `log`.
///
/// # Panics
///
/// When it fails, with the log in the message.
fn run(command: &mut Command, log: &Path) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::write(log, &text);
    assert!(out.status.success(), "{command:?} failed:\n{text}");
}

/// Removes `dir` once this test process has exited and the server in it
/// has stopped (the watchdog stops it; its pid file then goes away, or
/// after at most 30 s the files go regardless).
fn remove_when_gone(dir: &Path) {
    let script = r#"
parent=$1; dir=$2
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
i=0
while [ -e "$dir/data/postmaster.pid" ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done
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
