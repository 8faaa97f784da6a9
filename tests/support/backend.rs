//! Throwaway backend servers for tests: find the binary, pick a free
//! loopback port, start the server so that it dies with the test process,
//! and wait until it accepts connections.
//!
//! Whether a backend can be had is decided once per test binary, before
//! any test runs (see `harness.rs`): the tests of a missing one are
//! reported ignored, with a notice saying why, unless
//! `CLOAKROOM_REQUIRE_BACKENDS=1` is set (as `.ci/run` does), in which case
//! they fail. Outside that harness (the benchmarks), a missing backend
//! prints a notice and the caller skips.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a missing backend must fail the tests that need it instead of
/// having them ignored.
pub(crate) fn backends_required() -> bool {
    std::env::var("CLOAKROOM_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// `Err` when `CLOAKROOM_HIDE_BACKENDS` (a comma-separated list of
/// `redis`, `postgres`, `chromium`, or `all`) names `backend`: the tests
/// then treat it as not installed and its URL variables as unset, which
/// shows what a run on a machine without it reports.
pub(crate) fn hidden(backend: &str) -> Result<(), String> {
    let list = std::env::var("CLOAKROOM_HIDE_BACKENDS").unwrap_or_default();
    if list
        .split(',')
        .map(str::trim)
        .any(|name| name == backend || name == "all")
    {
        Err(format!("hidden by CLOAKROOM_HIDE_BACKENDS={list}"))
    } else {
        Ok(())
    }
}

/// Reports a backend that cannot be used: a skip notice, or a panic when
/// backends are required. Returns `None` for the caller to pass on.
pub(crate) fn unavailable<T>(backend: &str, why: &str) -> Option<T> {
    if backends_required() {
        panic!("{backend} is required (CLOAKROOM_REQUIRE_BACKENDS=1) but unavailable: {why}");
    }
    eprintln!("NOTICE: skipping {backend} tests: {why}");
    None
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Looks for `name` on `PATH` and then in `extra_dirs` (globs are not
/// expanded; pass concrete directories).
pub(crate) fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Starts `program args...` under a small shell watchdog that stops it
/// (SIGTERM, then SIGKILL) as soon as this test process is gone, so no
/// server outlives the test run even when the process is killed.
/// Output goes to `log`.
pub(crate) fn spawn_supervised(
    program: &Path,
    args: &[String],
    log: &Path,
    run_as: Option<&str>,
) -> Child {
    // $1 = parent PID, $2 = log file, rest = the command.
    let script = r#"
parent=$1; log=$2; shift 2
"$@" >>"$log" 2>&1 &
child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
  sleep 0.2
done
kill -TERM "$child" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || exit 0; sleep 0.3; done
kill -KILL "$child" 2>/dev/null
"#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(log);
    if let Some(user) = run_as {
        command.args([
            "setpriv",
            "--reuid",
            user,
            "--regid",
            user,
            "--clear-groups",
            "--",
        ]);
    }
    command.arg(program).args(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

/// Stops a supervised server: the watchdog forwards SIGTERM and waits.
pub(crate) fn stop_supervised(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `addr` accepts TCP connections.
///
/// # Panics
///
/// After `timeout`, with the tail of `log` in the message.
pub(crate) fn wait_for_port(addr: SocketAddr, timeout: Duration, log: &Path) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("server on {addr} did not start; log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory for one server's files, removed by the caller (or left
/// in the system temp dir, which is cleaned by the OS).
pub(crate) fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cloakroom-{prefix}-{}-{}",
        std::process::id(),
        free_port().port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
