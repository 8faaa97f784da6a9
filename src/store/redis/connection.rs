//! [`RedisConnection`]: one Redis server or a Redis Cluster, and which of
//! their errors mean "unavailable".

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::store::StoreError;

/// Timeouts used by [`RedisConnection::connect`] and
/// [`RedisConnection::connect_cluster`]: a session store must fail fast, so
/// that a Redis outage becomes a quick `503` rather than hung requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection a [`RedisStore`](super::RedisStore) talks through: one
/// Redis server (through a [`ConnectionManager`], which reconnects by
/// itself) or a Redis Cluster (through the redis crate's async cluster
/// client).
///
/// Open one with [`connect`](Self::connect) or
/// [`connect_cluster`](Self::connect_cluster), or convert a
/// [`ConnectionManager`] or [`ClusterConnection`] the application already
/// has with [`From`]; then hand it to
/// [`RedisStoreBuilder::build`](super::RedisStoreBuilder::build). Clones
/// share the underlying connection.
#[derive(Clone)]
pub struct RedisConnection {
    connection: Connection,
    /// The URLs it was opened with, for a local cache's own subscription;
    /// empty when made from a connection the application already had.
    urls: Arc<[String]>,
}

/// What a [`RedisConnection`] holds; private, so that the public type
/// promises nothing about its variants or about being a redis-crate
/// connection itself.
#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects to one Redis server, e.g. `redis://127.0.0.1:6379/`, with
    /// short timeouts (1 s to connect, 2 s per command) and automatic
    /// reconnection.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the URL is invalid or the server cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(store_error)?;
        Ok(Self {
            connection: Connection::Standalone(manager),
            urls: Arc::from([url.to_owned()]),
        })
    }

    /// Connects to a Redis Cluster given one or more of its nodes, with the
    /// same short timeouts as [`RedisConnection::connect`].
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a URL is invalid or the cluster cannot be
    /// reached.
    pub async fn connect_cluster<I, U>(urls: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(StoreError::backend)?;
        let connection = client.get_async_connection().await.map_err(store_error)?;
        Ok(Self {
            connection: Connection::Cluster(connection),
            urls: Arc::from(urls),
        })
    }

    /// A handle to run commands and scripts on (a clone sharing the
    /// connection).
    pub(super) fn handle(&self) -> Connection {
        self.connection.clone()
    }

    /// The URLs it was opened with (none when made with [`From`]).
    pub(super) fn urls(&self) -> &Arc<[String]> {
        &self.urls
    }

    /// Publishes `payload` on `channel`: on one server, or on a cluster on
    /// every master (so that it travels every node's path to a
    /// subscriber). Returns on how many nodes it was published.
    pub(super) async fn publish_everywhere(
        &self,
        channel: &str,
        payload: &[u8],
    ) -> Result<usize, RedisError> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        match self.connection.clone() {
            Connection::Standalone(mut manager) => {
                let _receivers: i64 = command.query_async(&mut manager).await?;
                Ok(1)
            }
            Connection::Cluster(mut cluster) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                // Without a response policy the reply maps each node to its
                // own answer.
                match cluster.route_command(command, routing).await? {
                    Value::Map(replies) => {
                        if replies
                            .iter()
                            .any(|(_, reply)| matches!(reply, Value::ServerError(_)))
                        {
                            return Err(RedisError::from(std::io::Error::other(
                                "a cluster node refused the heartbeat",
                            )));
                        }
                        Ok(replies.len())
                    }
                    _ => Err(RedisError::from(std::io::Error::other(
                        "unexpected reply to a PUBLISH on every master",
                    ))),
                }
            }
        }
    }

    /// The nodes whose keys a scan of the whole store must visit: the one
    /// server, or every master of a cluster.
    ///
    /// On a cluster, the masters are those the client is connected to
    /// (asked for their node IDs with `CLUSTER MYID`), checked against the
    /// masters the cluster itself names in `CLUSTER SLOTS`: if the client
    /// cannot reach one of them (a failover it has not caught up with, a
    /// node it lost), the answer is an error, never a scan that would skip
    /// the keys of that node and report success.
    pub(super) async fn key_nodes(&self) -> Result<Vec<Node>, RedisError> {
        let Connection::Cluster(mut cluster) = self.connection.clone() else {
            return Ok(vec![Node::Server]);
        };
        let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let mut myid = redis::cmd("CLUSTER");
        myid.arg("MYID");
        let Value::Map(replies) = cluster.route_command(myid, all_masters).await? else {
            return Err(unexpected("CLUSTER MYID on every master"));
        };
        let mut nodes = Vec::with_capacity(replies.len());
        let mut reached = std::collections::HashSet::new();
        for (address, reply) in replies {
            let address: String = redis::from_redis_value(address)?;
            let id: String = redis::from_redis_value(reply)?;
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                .ok_or_else(|| unexpected("a cluster node address"))?;
            reached.insert(id);
            nodes.push(Node::Master { host, port });
        }
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let masters = master_ids(cluster.route_command(slots, random).await?)?;
        if !masters.is_subset(&reached) {
            return Err(RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "not every master of the cluster is reachable to scan",
            )));
        }
        Ok(nodes)
    }

    /// One `SCAN` step on `node`: the next cursor (0 when the scan is
    /// over) and up to about `count` keys matching `pattern`.
    pub(super) async fn scan(
        &self,
        node: &Node,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), RedisError> {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        match (self.connection.clone(), node) {
            (Connection::Standalone(mut manager), _) => command.query_async(&mut manager).await,
            (Connection::Cluster(mut cluster), Node::Master { host, port }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = cluster.route_command(command, routing).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            (Connection::Cluster(_), Node::Server) => Err(unexpected("a cluster node to scan")),
        }
    }

    /// `"standalone"` or `"cluster"`, for `Debug`.
    pub(super) fn mode(&self) -> &'static str {
        match self.connection {
            Connection::Standalone(_) => "standalone",
            Connection::Cluster(_) => "cluster",
        }
    }
}

/// A node whose keys [`RedisConnection::scan`] visits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    /// The one server of a standalone connection.
    Server,
    /// A cluster master, by the address the cluster client knows it by.
    Master { host: String, port: u16 },
}

/// The node IDs of the masters in a `CLUSTER SLOTS` reply: each entry is
/// `[start, end, [host, port, id, ...], replicas...]`.
fn master_ids(reply: Value) -> Result<std::collections::HashSet<String>, RedisError> {
    let Value::Array(ranges) = reply else {
        return Err(unexpected("CLUSTER SLOTS"));
    };
    let mut ids = std::collections::HashSet::new();
    for range in ranges {
        let Value::Array(mut parts) = range else {
            return Err(unexpected("a CLUSTER SLOTS range"));
        };
        if parts.len() < 3 {
            return Err(unexpected("a CLUSTER SLOTS range"));
        }
        let Value::Array(mut master) = parts.swap_remove(2) else {
            return Err(unexpected("a CLUSTER SLOTS master"));
        };
        if master.len() < 3 {
            return Err(unexpected("a CLUSTER SLOTS master without its node ID"));
        }
        ids.insert(redis::from_redis_value(master.swap_remove(2))?);
    }
    Ok(ids)
}

/// A reply of a shape the store does not expect.
fn unexpected(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::other(format!("unexpected reply: {what}")))
}

impl From<ConnectionManager> for RedisConnection {
    /// One Redis server, through a connection manager the application
    /// already has (with its own timeouts and retries).
    fn from(manager: ConnectionManager) -> Self {
        Self {
            connection: Connection::Standalone(manager),
            urls: Arc::from([]),
        }
    }
}

impl From<ClusterConnection> for RedisConnection {
    /// A Redis Cluster, through a cluster connection the application
    /// already has.
    fn from(connection: ClusterConnection) -> Self {
        Self {
            connection: Connection::Cluster(connection),
            urls: Arc::from([]),
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisConnection")
            .field(&self.mode())
            .finish()
    }
}

/// Lets the store run commands and scripts on either kind of connection.
impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connection-level failures, and the replies of a server that cannot serve
/// right now (still loading its dataset, a replica cut off from its master,
/// a cluster that is down or resharding, a master demoted to read-only
/// replica during a failover), mean "unavailable": they pass by themselves,
/// like an outage. The rest are backend errors. The Redis error stays
/// attached as the source.
pub(super) fn store_error(error: RedisError) -> StoreError {
    if is_outage(&error) {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis error as the client makes it from a reply on the wire.
    fn reply_error(reply: &str) -> RedisError {
        let value = redis::parse_redis_value(reply.as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn a_server_that_cannot_serve_now_is_unavailable_not_broken() {
        for reply in [
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
            "-MOVED 3999 127.0.0.1:6381\r\n",
        ] {
            assert!(
                matches!(store_error(reply_error(reply)), StoreError::Unavailable(_)),
                "{reply}"
            );
        }
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(store_error(refused).is_unavailable());
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(store_error(timed_out).is_unavailable());
    }

    #[test]
    fn other_server_errors_are_backend_errors() {
        for reply in [
            "-ERR Error running script\r\n",
            "-NOSCRIPT No matching script.\r\n",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-NOPERM this user has no permissions to run the 'evalsha' command\r\n",
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        ] {
            assert!(
                matches!(store_error(reply_error(reply)), StoreError::Backend(_)),
                "{reply}"
            );
        }
    }
}
