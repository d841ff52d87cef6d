//! Connections to each kind of deployment, behind one small interface.
//!
//! Everything here is the `redis` crate's: multiplexed connections that
//! pipeline concurrent requests, `ConnectionManager`'s reconnects, the async
//! Cluster client's slot map and redirections. This module only picks a
//! connection, sends a command, and (for Sentinel) reports failures so the
//! master is looked up again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, RedisResult, Value};

use crate::config::{RedisConfig, TlsCertificates, Topology};
use crate::sentinel::{SentinelMaster, describe};

/// The live connections of a store.
pub(crate) enum Backend {
    Standalone {
        managers: Vec<ConnectionManager>,
        address: String,
    },
    Cluster {
        connections: Vec<ClusterConnection>,
    },
    Sentinel(Arc<SentinelMaster>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone { address, managers } => f
                .debug_struct("Standalone")
                .field("address", address)
                .field("connections", &managers.len())
                .finish(),
            Self::Cluster { connections } => f
                .debug_struct("Cluster")
                .field("connections", &connections.len())
                .finish(),
            Self::Sentinel(master) => master.fmt(f),
        }
    }
}

/// One connection, picked for one call.
pub(crate) enum Handle {
    Direct(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(ConnectionManager, Arc<SentinelMaster>, u64),
}

impl Handle {
    /// Sends `cmd` and reads its reply; an error reply is an `Err`.
    pub(crate) async fn send(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Direct(c) => c.send_packed_command(cmd).await?.extract_error(),
            Self::Cluster(c) => redis::aio::ConnectionLike::req_packed_command(c, cmd)
                .await?
                .extract_error(),
            Self::Sentinel(c, master, generation) => {
                let result = c
                    .send_packed_command(cmd)
                    .await
                    .and_then(Value::extract_error);
                if let Err(e) = &result {
                    master.on_error(e, *generation);
                }
                result
            }
        }
    }
}

/// The `rustls` crypto provider the TLS connections use, installed once for
/// the process unless the application installed one. With one provider
/// compiled in (ours: `ring`) rustls finds it by itself; this matters when
/// the application's other dependencies compile in a second one, which the
/// tests here do not (mutation testing: excluded as equivalent in
/// `.cargo/mutants.toml`).
#[cfg(feature = "tls")]
fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(feature = "tls")]
fn certificates(tls: &TlsCertificates) -> Option<redis::TlsCertificates> {
    if tls.root_certificate.is_none() && tls.client_certificate.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tls
            .client_certificate
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.root_certificate.clone(),
    })
}

// Without TLS there are no certificates to give (compiled out of the tested
// build, which has TLS: its mutants are excluded in `.cargo/mutants.toml`).
#[cfg(not(feature = "tls"))]
fn certificates(tls: &TlsCertificates) -> Option<redis::TlsCertificates> {
    let _ = tls;
    None
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    // Few, quick reconnect attempts: a call waiting on a reconnect is cut off
    // by the response timeout anyway, and the next call starts a new attempt.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200))
}

fn client(url: &str, tls: &TlsCertificates) -> RedisResult<Client> {
    match certificates(tls) {
        #[cfg(feature = "tls")]
        Some(certs) => Client::build_with_tls(url, certs),
        _ => Client::open(url),
    }
}

impl Backend {
    /// Connections for `config`, made lazily: nothing is sent until the first
    /// call. Must run inside a tokio runtime.
    pub(crate) fn new(config: &RedisConfig) -> RedisResult<Self> {
        #[cfg(feature = "tls")]
        ensure_crypto_provider();
        let connections = config.connections.max(1);
        Ok(match &config.topology {
            Topology::Standalone(url) => {
                let client = client(url, &config.tls)?;
                let address = describe(client.get_connection_info().addr());
                let managers = (0..connections)
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config(
                            client.clone(),
                            manager_config(config),
                        )
                    })
                    .collect::<RedisResult<Vec<_>>>()?;
                Self::Standalone { managers, address }
            }
            Topology::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(4)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
                if let Some(certs) = certificates(&config.tls) {
                    builder = builder.certs(certs);
                }
                let client = builder.build()?;
                let cluster_config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(config.connect_timeout)
                    .set_response_timeout(config.response_timeout);
                let connections = (0..connections)
                    .map(|_| {
                        client.get_pending_async_connection_with_config(cluster_config.clone())
                    })
                    .collect();
                Self::Cluster { connections }
            }
            Topology::Sentinel(sentinel) => Self::Sentinel(Arc::new(SentinelMaster::new(
                sentinel,
                certificates(&config.tls),
                manager_config(config),
                connections,
                config.connect_timeout.saturating_mul(2),
            )?)),
        })
    }

    /// A connection for one call (round robin over the store's connections).
    pub(crate) async fn handle(&self, next: &AtomicUsize) -> RedisResult<Handle> {
        let i = next.fetch_add(1, Ordering::Relaxed);
        Ok(match self {
            Self::Standalone { managers, .. } => Handle::Direct(pick(managers, i).clone()),
            Self::Cluster { connections } => Handle::Cluster(pick(connections, i).clone()),
            Self::Sentinel(master) => {
                let handle = master.handle().await?;
                Handle::Sentinel(handle.connection, Arc::clone(master), handle.generation)
            }
        })
    }

    /// The deployment's kind, for stats.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Standalone { .. } => "standalone",
            Self::Cluster { .. } => "cluster",
            Self::Sentinel(_) => "sentinel",
        }
    }

    /// Where the store's data lives, for stats: the server, the Sentinel
    /// master, or (for a Cluster) nothing until the nodes are listed.
    pub(crate) fn address(&self) -> Option<String> {
        match self {
            Self::Standalone { address, .. } => Some(address.clone()),
            Self::Cluster { .. } => None,
            Self::Sentinel(master) => master.address(),
        }
    }

    /// The Cluster's masters (`host`, `port`), from `CLUSTER NODES`; `None`
    /// for other deployments.
    pub(crate) async fn cluster_masters(&self) -> RedisResult<Option<Vec<(String, u16)>>> {
        let Self::Cluster { connections } = self else {
            return Ok(None);
        };
        let Some(connection) = connections.first() else {
            return Ok(Some(Vec::new()));
        };
        let mut connection = connection.clone();
        let reply = connection
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let text: String = redis::FromRedisValue::from_redis_value(reply)?;
        Ok(Some(parse_cluster_masters(&text)))
    }

    /// Sends `cmd` to the Cluster node at `host:port` and reads its reply;
    /// an error reply is an `Err`, as from [`Handle::send`].
    pub(crate) async fn send_to_node(&self, host: &str, port: u16, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Self::Cluster { connections } => {
                let mut connection = pick(connections, 0).clone();
                connection
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.to_owned(),
                            port,
                        }),
                    )
                    .await?
                    .extract_error()
            }
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "not a Cluster",
            ))),
        }
    }
}

fn pick<T>(items: &[T], i: usize) -> &T {
    // Backends always hold at least one connection.
    #[allow(clippy::indexing_slicing, reason = "the length is at least 1")]
    &items[i % items.len()]
}

/// The live masters that serve slots, as `CLUSTER NODES` lists them.
fn parse_cluster_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            let is_live_master = flags.split(',').any(|f| f == "master")
                && !flags
                    .split(',')
                    .any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake"));
            // Fields after the link state are the node's slot ranges: a
            // master without slots holds no keys.
            let has_slots = fields.nth(5).is_some();
            if !is_live_master || !has_slots {
                return None;
            }
            // host:port@cport[,hostname]
            let host_port = address.split('@').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_output_lists_live_masters() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 0 1426238316232 5 connected
5a1c0ffee0ddba11c0ffee0ddba11c0ffee0ddb 127.0.0.1:30007@31007 master,fail? - 0 1426238316232 7 connected 16000-16100
5a1c0ffee0ddba11c0ffee0ddba11c0ffee0ddc 127.0.0.1:30008@31008 master,noaddr - 0 1426238316232 8 disconnected 16101-16200
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master - 0 1426238316232 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            parse_cluster_masters(text),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }
}
