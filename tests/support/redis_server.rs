//! Throwaway `redis-server` processes on free loopback ports: the one Redis
//! starter of the tests and the benchmarks (`benches/redis.rs`,
//! `benches/load`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use super::backend::{
    find_binary, free_port, hidden, scratch_dir, spawn_supervised, stop_supervised, unavailable,
    wait_for_port,
};

/// Where Debian and `make install` put the Redis binaries, beside `PATH`.
pub(crate) fn redis_dirs() -> [PathBuf; 2] {
    [PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]
}

/// The `redis-server` binary, or why there is none to be had.
pub(crate) fn binary() -> Result<PathBuf, String> {
    hidden("redis")?;
    find_binary("redis-server", &redis_dirs())
        .ok_or_else(|| "redis-server is not installed (apt-get install redis-server)".to_owned())
}

/// One `redis-server` process on a loopback port, stopped when dropped
/// (and by its watchdog when the process that started it ends).
pub(crate) struct RedisServer {
    binary: PathBuf,
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with these extra arguments; `None` (after a skip
    /// notice) when Redis is not installed.
    pub(crate) fn start(extra: &[&str]) -> Option<Self> {
        let binary = match binary() {
            Ok(binary) => binary,
            Err(why) => return unavailable("Redis", &why),
        };
        let mut server = Self {
            binary,
            addr: free_port(),
            dir: scratch_dir("redis"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.run();
        Some(server)
    }

    /// Runs the server on its port and directory, and waits until it
    /// accepts connections.
    pub(crate) fn run(&mut self) {
        let mut args: Vec<String> = [
            "--port",
            &self.addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            &self.dir.display().to_string(),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.extra.iter().cloned());
        let log = self.dir.join("redis.log");
        self.child = Some(spawn_supervised(&self.binary, &args, &log, None));
        wait_for_port(self.addr, Duration::from_secs(20), &log);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Stops the server (as in an outage).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_supervised(&mut child);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `REDIS_URL` when set, otherwise a throwaway server (kept running as long
/// as the returned server is). `None`, after the skip notice, when neither
/// is to be had.
pub(crate) fn url_or_start() -> Option<(String, Option<RedisServer>)> {
    match std::env::var("REDIS_URL") {
        Ok(url) if hidden("redis").is_ok() => Some((url, None)),
        _ => RedisServer::start(&[]).map(|server| (server.url(), Some(server))),
    }
}
