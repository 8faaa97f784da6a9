//! Real Redis servers for the tests: `REDIS_URL` / `REDIS_CLUSTER_URLS`
//! when set, otherwise throwaway `redis-server` processes (see
//! `redis_server.rs`; a 3-master cluster built with `redis-cli --cluster
//! create`), and what the tests do to them: restart, freeze, record the
//! commands sent, hold one back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cloakroom::{store::RedisConnection, store::RedisStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::backend::{find_binary, hidden, unavailable};
use super::proxy::TcpRecorder;
use super::redis_server::{self, redis_dirs, url_or_start, RedisServer};

impl RedisServer {
    /// Starts it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// A plain connection to the server, for tests that look at or change
    /// what is stored behind the store's back.
    pub(crate) async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test server")
    }

    /// The ID of the `redis-server` process itself (not of its watchdog),
    /// as the server reports it.
    pub(crate) async fn process_id(&self) -> u32 {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.connection().await)
            .await
            .expect("INFO server");
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("INFO server names the process ID")
    }

    /// Freezes the server with `SIGSTOP`: its connections stay open but
    /// nothing is answered, as with a server stuck in a long command or a
    /// machine that stopped responding. The server runs again when the
    /// returned guard is dropped (even if the test fails) or resumed.
    pub(crate) async fn pause(&self) -> Paused {
        let pid = self.process_id().await;
        assert!(signal("STOP", pid), "kill -STOP {pid} failed");
        Paused { pid: Some(pid) }
    }
}

/// A server frozen by [`RedisServer::pause`]; resumed when dropped.
pub(crate) struct Paused {
    pid: Option<u32>,
}

impl Paused {
    /// Lets the server run again.
    pub(crate) fn resume(mut self) {
        if let Some(pid) = self.pid.take() {
            assert!(signal("CONT", pid), "kill -CONT {pid} failed");
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        if let Some(pid) = self.pid.take() {
            signal("CONT", pid);
        }
    }
}

/// Sends `SIGname` to `pid`; whether that worked.
fn signal(name: &str, pid: u32) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}

/// A random key prefix, so tests sharing a server never see each other.
fn prefix() -> String {
    format!(
        "test-{}:",
        cloakroom::id::SessionId::generate()
            .unwrap()
            .store_key()
            .short()
    )
}

/// Why there is no Redis server to share (neither `REDIS_URL` nor
/// `redis-server`), if so. Starts nothing.
pub(crate) fn missing() -> Option<String> {
    hidden("redis").err().or_else(|| {
        if std::env::var_os("REDIS_URL").is_some() {
            None
        } else {
            redis_server::binary().err()
        }
    })
}

/// Why no `redis-server` of a test's own can be started, if so.
pub(crate) fn server_missing() -> Option<String> {
    redis_server::binary().err()
}

/// Why there is no Redis Cluster to share (neither `REDIS_CLUSTER_URLS`
/// nor `redis-server` and `redis-cli` to build one), if so. Starts
/// nothing.
pub(crate) fn cluster_missing() -> Option<String> {
    if let Err(why) = hidden("redis") {
        return Some(why);
    }
    if std::env::var_os("REDIS_CLUSTER_URLS").is_some() {
        return None;
    }
    redis_server::binary().and_then(|_| cli()).err()
}

/// The `redis-cli` binary, or why there is none.
fn cli() -> Result<std::path::PathBuf, String> {
    find_binary("redis-cli", &redis_dirs())
        .ok_or_else(|| "redis-cli is not installed (apt-get install redis-tools)".to_owned())
}

/// The URL of the Redis server shared by this test binary.
fn shared_url() -> Option<String> {
    static SHARED: OnceLock<Option<(String, Option<RedisServer>)>> = OnceLock::new();
    SHARED
        .get_or_init(url_or_start)
        .as_ref()
        .map(|(url, _)| url.clone())
}

/// A store on the shared standalone server, with its own key prefix.
pub(crate) async fn store() -> Option<RedisStore> {
    Some(standalone(&shared_url()?, &prefix(), None).await)
}

/// How many sessions the tests' cached stores keep.
pub(crate) const CACHE_CAPACITY: usize = 10_000;

/// [`store`], with a local cache.
pub(crate) async fn cached_store() -> Option<RedisStore> {
    Some(standalone(&shared_url()?, &prefix(), Some(CACHE_CAPACITY)).await)
}

/// Two cached stores on the shared standalone server, each on connections
/// of its own, with the same key prefix: two instances of one app.
pub(crate) async fn cached_pair() -> Option<(RedisStore, RedisStore)> {
    let url = shared_url()?;
    let prefix = prefix();
    Some((
        standalone(&url, &prefix, Some(CACHE_CAPACITY)).await,
        standalone(&url, &prefix, Some(CACHE_CAPACITY)).await,
    ))
}

/// A store on the server at `url`, under `prefix`, with a local cache of
/// `cache` sessions if given.
pub(crate) async fn standalone(url: &str, prefix: &str, cache: Option<usize>) -> RedisStore {
    let connection = RedisConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    build(connection, prefix, cache)
}

fn build(connection: RedisConnection, prefix: &str, cache: Option<usize>) -> RedisStore {
    let builder = RedisStore::builder(connection).key_prefix(prefix);
    match cache {
        Some(capacity) => builder.local_cache(capacity),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The node URLs of the Redis Cluster shared by this test binary.
pub(crate) fn cluster_urls() -> Option<Vec<String>> {
    static CLUSTER: OnceLock<Option<(Vec<String>, Vec<RedisServer>)>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if let Some(why) = cluster_missing() {
                return unavailable("Redis Cluster", &why);
            }
            if let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") {
                let urls = urls.split(',').map(|u| u.trim().to_owned()).collect();
                return Some((urls, Vec::new()));
            }
            let cli = cli().expect("checked by cluster_missing");
            let mut nodes = Vec::new();
            for _ in 0..3 {
                let node = RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])?;
                nodes.push(node);
            }
            create_cluster(&cli, &nodes);
            let urls = nodes.iter().map(RedisServer::url).collect();
            Some((urls, nodes))
        })
        .as_ref()
        .map(|(urls, _)| urls.clone())
}

fn create_cluster(cli: &Path, nodes: &[RedisServer]) {
    let mut command = Command::new(cli);
    command.arg("--cluster").arg("create");
    for node in nodes {
        command.arg(node.addr.to_string());
    }
    let output = command
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        output.status.success(),
        "redis-cli --cluster create failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every node must agree that all slots are served before tests start.
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        loop {
            let info = Command::new(cli)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &node.addr.port().to_string(),
                    "cluster",
                    "info",
                ])
                .output()
                .expect("redis-cli cluster info");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster on {} never became ok",
                node.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A store on the shared Redis Cluster, with its own key prefix.
pub(crate) async fn cluster_store() -> Option<RedisStore> {
    Some(on_cluster(&cluster_urls()?, &prefix(), None).await)
}

/// [`cluster_store`], with a local cache.
pub(crate) async fn cached_cluster_store() -> Option<RedisStore> {
    Some(on_cluster(&cluster_urls()?, &prefix(), Some(CACHE_CAPACITY)).await)
}

/// [`cached_pair`] on the shared Redis Cluster.
pub(crate) async fn cached_cluster_pair() -> Option<(RedisStore, RedisStore)> {
    let urls = cluster_urls()?;
    let prefix = prefix();
    Some((
        on_cluster(&urls, &prefix, Some(CACHE_CAPACITY)).await,
        on_cluster(&urls, &prefix, Some(CACHE_CAPACITY)).await,
    ))
}

/// [`cached_pair`], or with `cluster` [`cached_cluster_pair`], and the key
/// prefix the two stores share, for a test that reaches their keys itself
/// (see [`delete_quietly`]).
pub(crate) async fn cached_pair_and_prefix(
    cluster: bool,
) -> Option<((RedisStore, RedisStore), String)> {
    let prefix = prefix();
    let pair = if cluster {
        let urls = cluster_urls()?;
        (
            on_cluster(&urls, &prefix, Some(CACHE_CAPACITY)).await,
            on_cluster(&urls, &prefix, Some(CACHE_CAPACITY)).await,
        )
    } else {
        let url = shared_url()?;
        (
            standalone(&url, &prefix, Some(CACHE_CAPACITY)).await,
            standalone(&url, &prefix, Some(CACHE_CAPACITY)).await,
        )
    };
    Some((pair, prefix))
}

/// Deletes `key` from the shared standalone server (or, with `cluster`,
/// from the shared cluster) behind the stores' backs: no script runs, so
/// nothing is announced to any cache. Returns whether the key was there.
pub(crate) async fn delete_quietly(cluster: bool, key: &str) -> bool {
    let mut command = redis::cmd("DEL");
    command.arg(key);
    let deleted: i64 = if cluster {
        let urls = cluster_urls().expect("the shared cluster");
        let client = redis::cluster::ClusterClient::new(urls).expect("cluster URLs");
        let mut connection = client
            .get_async_connection()
            .await
            .expect("connect to the cluster");
        command.query_async(&mut connection).await.expect("DEL")
    } else {
        let url = shared_url().expect("the shared server");
        let mut connection = redis::Client::open(url)
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the server");
        command.query_async(&mut connection).await.expect("DEL")
    };
    deleted == 1
}

async fn on_cluster(urls: &[String], prefix: &str, cache: Option<usize>) -> RedisStore {
    let connection = RedisConnection::connect_cluster(urls)
        .await
        .unwrap_or_else(|e| panic!("connect to cluster {urls:?}: {e}"));
    build(connection, prefix, cache)
}

/// A recording proxy in front of a Redis server, so a test can see exactly
/// which commands (round trips) an operation cost. Commands run inside Lua
/// scripts never cross the wire and are not counted.
pub(crate) struct CommandRecorder {
    recorder: TcpRecorder,
}

impl CommandRecorder {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        Self {
            recorder: TcpRecorder::start(upstream).await,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/", self.recorder.addr)
    }

    /// Forgets what was sent so far.
    pub(crate) fn reset(&self) {
        self.recorder.reset();
    }

    /// The names of the commands sent since the last reset, in order.
    pub(crate) fn commands(&self) -> Vec<String> {
        use tokio_util::codec::Decoder as _;
        let mut bytes = bytes::BytesMut::from(self.recorder.sent().as_slice());
        let mut codec = redis::ValueCodec::default();
        let mut names = Vec::new();
        while let Some(value) = codec.decode(&mut bytes).expect("clients send valid RESP") {
            match value {
                redis::Value::Array(parts) => match parts.first() {
                    Some(redis::Value::BulkString(name)) => {
                        names.push(String::from_utf8_lossy(name).to_uppercase())
                    }
                    other => panic!("unexpected command head {other:?}"),
                },
                other => panic!("unexpected request {other:?}"),
            }
        }
        assert!(bytes.is_empty(), "a partial command was recorded");
        names
    }
}

/// A proxy in front of a Redis server that can hold one command back until
/// the test releases it, so a test can act between two calls that one store
/// operation makes (say, a load's read and its touch).
pub(crate) struct CommandGate {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<Hold>>>,
}

/// The proxy's side of a held command.
struct Hold {
    command: String,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's side of a held command.
pub(crate) struct HeldCommand {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl HeldCommand {
    /// Waits until the command has reached the proxy (and not Redis).
    pub(crate) async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), &mut self.reached)
            .await
            .expect("the held command never came")
            .expect("the proxy dropped the held command");
    }

    /// Lets the command through to Redis.
    pub(crate) fn release(self) {
        let _ = self.release.send(());
    }
}

impl CommandGate {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed: Arc<Mutex<Option<Hold>>> = Arc::default();
        let gate = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(forward_through_gate(client, server, gate.clone()));
            }
        });
        Self { addr, armed }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Holds back the next command named `command` (upper case) that any
    /// connection sends, until the returned handle releases it.
    pub(crate) fn hold_next(&self, command: &str) -> HeldCommand {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some(Hold {
            command: command.to_owned(),
            reached: reached_tx,
            release: release_rx,
        });
        HeldCommand {
            reached: reached_rx,
            release: release_tx,
        }
    }
}

/// Copies one connection both ways, a whole command at a time towards
/// Redis, waiting before the command the gate is armed for.
async fn forward_through_gate(
    client: TcpStream,
    server: TcpStream,
    gate: Arc<Mutex<Option<Hold>>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::codec::Decoder as _;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut pending = bytes::BytesMut::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut codec = redis::ValueCodec::default();
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            pending.extend_from_slice(&buf[..n]);
            loop {
                let mut rest = pending.clone();
                let Some(value) = codec.decode(&mut rest).expect("clients send valid RESP") else {
                    break;
                };
                let command = pending.split_to(pending.len() - rest.len());
                let name = match value {
                    redis::Value::Array(parts) => match parts.first() {
                        Some(redis::Value::BulkString(name)) => {
                            String::from_utf8_lossy(name).to_uppercase()
                        }
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                let hold = {
                    let mut armed = gate.lock().unwrap();
                    match armed.as_ref() {
                        Some(hold) if hold.command == name => armed.take(),
                        _ => None,
                    }
                };
                if let Some(hold) = hold {
                    let _ = hold.reached.send(());
                    let _ = hold.release.await;
                }
                if server_write.write_all(&command).await.is_err() {
                    return;
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    let _ = tokio::join!(upstream, downstream);
}
