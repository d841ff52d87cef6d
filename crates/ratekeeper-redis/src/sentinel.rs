//! Following a Sentinel-monitored master across failovers.
//!
//! The `redis` crate asks the Sentinels for the master when a connection is
//! made, but a connection it made keeps talking to that address after a
//! failover. This keeps self-reconnecting connections to the current master
//! and, when a call fails in a way that suggests the master moved (the
//! connection dropped, a timeout, `READONLY` from a demoted master), asks the
//! Sentinels again in the background and swaps in connections to the new
//! master. Calls never wait behind that lookup: they fail fast with a
//! transient error until the new connections are in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisError, RedisResult, ServerErrorKind};

use crate::config::SentinelConfig;

/// Lookups through the Sentinels are at least this far apart.
const MIN_LOOKUP_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct SentinelMaster {
    /// Asks the Sentinels; one lookup at a time.
    sentinels: tokio::sync::Mutex<Lookup>,
    current: RwLock<Option<Arc<Current>>>,
    lookup_running: AtomicBool,
    manager_config: ConnectionManagerConfig,
    connections: usize,
    lookup_timeout: Duration,
    next: AtomicUsize,
}

struct Lookup {
    client: SentinelClient,
    last: Option<Instant>,
}

/// Connections to the master as last found.
struct Current {
    address: String,
    managers: Vec<ConnectionManager>,
    generation: u64,
}

impl std::fmt::Debug for SentinelMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelMaster")
            .field("master", &self.address())
            .finish_non_exhaustive()
    }
}

/// A connection to the master, and the generation of the lookup that found it.
pub(crate) struct MasterHandle {
    pub(crate) connection: ConnectionManager,
    pub(crate) generation: u64,
}

impl SentinelMaster {
    pub(crate) fn new(
        config: &SentinelConfig,
        certificates: Option<redis::TlsCertificates>,
        manager_config: ConnectionManagerConfig,
        connections: usize,
        lookup_timeout: Duration,
    ) -> RedisResult<Self> {
        let addresses = config.sentinels.iter().map(|(host, port)| {
            if config.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: config.insecure,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut builder =
            SentinelClientBuilder::new(addresses, &config.master_name, SentinelServerType::Master)?
                .set_client_to_redis_db(config.db);
        if let Some(user) = &config.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &config.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(user) = &config.sentinel_username {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &config.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if config.tls {
            let mode = if config.insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            };
            builder = builder
                .set_client_to_redis_tls_mode(mode)
                .set_client_to_sentinel_tls_mode(mode);
            #[cfg(feature = "tls")]
            if let Some(certs) = certificates {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs);
            }
        }
        #[cfg(not(feature = "tls"))]
        drop(certificates);
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(Lookup {
                client: builder.build()?,
                last: None,
            }),
            current: RwLock::new(None),
            lookup_running: AtomicBool::new(false),
            manager_config,
            connections: connections.max(1),
            lookup_timeout,
            next: AtomicUsize::new(0),
        })
    }

    /// The master's address, if one was found.
    pub(crate) fn address(&self) -> Option<String> {
        self.current.read().as_ref().map(|c| c.address.clone())
    }

    /// A connection to the current master, finding it first if needed.
    pub(crate) async fn handle(&self) -> RedisResult<MasterHandle> {
        if let Some(handle) = self.pick() {
            return Ok(handle);
        }
        self.lookup(None).await?;
        self.pick().ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::MasterNameNotFoundBySentinel,
                "no master found through the Sentinels",
            ))
        })
    }

    fn pick(&self) -> Option<MasterHandle> {
        let current = self.current.read();
        let current = current.as_ref()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % current.managers.len().max(1);
        Some(MasterHandle {
            connection: current.managers.get(i)?.clone(),
            generation: current.generation,
        })
    }

    /// Called with every failed call: looks the master up again, in the
    /// background, when the failure suggests it moved.
    pub(crate) fn on_error(self: &Arc<Self>, err: &RedisError, generation: u64) {
        // Every error that holds an I/O error (a timeout, a dropped or
        // refused connection) has kind `Io` in redis 1.8: the test below
        // sends each of them.
        let moved = err.is_io_error()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            );
        if !moved || self.lookup_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // A failed lookup is retried when the next call fails.
            let _ = this.lookup(Some(generation)).await;
            this.lookup_running.store(false, Ordering::Release);
        });
    }

    /// Asks the Sentinels for the master and, if it changed, swaps in new
    /// connections. `seen`: the generation the caller failed on; a newer one
    /// means another lookup already moved on.
    async fn lookup(&self, seen: Option<u64>) -> RedisResult<()> {
        let mut lookup = self.sentinels.lock().await;
        let generation = self.current.read().as_ref().map(|c| c.generation);
        if seen.is_some() && generation != seen {
            return Ok(());
        }
        if seen.is_none() && generation.is_some() {
            // Someone found the master while this call waited for the lock.
            return Ok(());
        }
        // (`<` or `<=`: the same but for one instant; `.cargo/mutants.toml`.)
        if seen.is_some()
            && lookup
                .last
                .is_some_and(|t| t.elapsed() < MIN_LOOKUP_INTERVAL)
        {
            return Ok(());
        }
        lookup.last = Some(Instant::now());
        let client = tokio::time::timeout(self.lookup_timeout, lookup.client.async_get_client())
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the Sentinels did not name a master in time",
                ))
            })??;
        let address = describe(client.get_connection_info().addr());
        if self
            .current
            .read()
            .as_ref()
            .is_some_and(|c| c.address == address)
        {
            // Same master: its connections reconnect by themselves.
            return Ok(());
        }
        let managers = (0..self.connections)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone())
            })
            .collect::<RedisResult<Vec<_>>>()?;
        self.install(address, managers);
        Ok(())
    }

    /// Swaps in connections to the master at `address`, one generation on:
    /// a call that failed on an older generation starts no lookup.
    fn install(&self, address: String, managers: Vec<ConnectionManager>) {
        let mut current = self.current.write();
        let generation = current.as_ref().map_or(0, |c| c.generation + 1);
        *current = Some(Arc::new(Current {
            address,
            managers,
            generation,
        }));
    }
}

/// `host:port` of a connection address.
pub(crate) fn describe(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master that no Sentinel will ever name: its one Sentinel's port
    /// is closed, so a lookup fails at once.
    fn unreachable_master() -> Arc<SentinelMaster> {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let config = SentinelConfig::new(vec![("127.0.0.1".to_owned(), closed)], "m");
        let master = SentinelMaster::new(
            &config,
            None,
            ConnectionManagerConfig::new(),
            1,
            Duration::from_secs(2),
        );
        Arc::new(master.unwrap_or_else(|e| panic!("{e}")))
    }

    fn io_error(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::from(kind))
    }

    #[tokio::test]
    async fn only_a_failure_that_suggests_a_move_starts_a_lookup() {
        let master = unreachable_master();
        let script_error = RedisError::from((redis::ErrorKind::Client, "a script failed"));
        master.on_error(&script_error, 0);
        assert!(!master.lookup_running.load(Ordering::Acquire));
        // Each sign of a move on its own: any I/O error, a timeout, a
        // dropped or refused connection, a demoted or lost master.
        use std::io::ErrorKind as Io;
        for error in [
            io_error(Io::Other),
            io_error(Io::TimedOut),
            io_error(Io::ConnectionReset),
            io_error(Io::ConnectionRefused),
            RedisError::from((
                redis::ErrorKind::Server(ServerErrorKind::ReadOnly),
                "READONLY",
            )),
            RedisError::from((
                redis::ErrorKind::Server(ServerErrorKind::MasterDown),
                "MASTERDOWN",
            )),
        ] {
            let master = unreachable_master();
            master.on_error(&error, 0);
            assert!(master.lookup_running.load(Ordering::Acquire), "{error}");
            // The failed lookup ends, and the next failure may start another.
            let mut waited = 0;
            while master.lookup_running.load(Ordering::Acquire) {
                assert!(waited < 200, "the lookup never ended");
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
        }
    }

    #[tokio::test]
    async fn one_lookup_at_a_time() {
        let master = unreachable_master();
        // A lookup is running: another failure starts none (which would end
        // and clear the flag while the first still runs).
        master.lookup_running.store(true, Ordering::Release);
        master.on_error(&io_error(std::io::ErrorKind::ConnectionReset), 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(master.lookup_running.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn lookups_after_a_failure_are_spaced() {
        let master = unreachable_master();
        master.install("127.0.0.1:1".to_owned(), Vec::new());
        // The first lookup asks the (unreachable) Sentinels and fails; one
        // right after it is skipped; one a lookup interval later asks again.
        assert!(master.lookup(Some(0)).await.is_err());
        assert!(master.lookup(Some(0)).await.is_ok());
        tokio::time::sleep(MIN_LOOKUP_INTERVAL).await;
        assert!(master.lookup(Some(0)).await.is_err());
        // A caller that failed on another generation has nothing to do.
        assert!(master.lookup(Some(7)).await.is_ok());
    }

    #[tokio::test]
    async fn each_master_found_is_a_new_generation() {
        let master = unreachable_master();
        master.install("10.0.0.1:6379".to_owned(), Vec::new());
        master.install("10.0.0.2:6379".to_owned(), Vec::new());
        assert_eq!(master.address().as_deref(), Some("10.0.0.2:6379"));
        let generation = master.current.read().as_ref().map(|c| c.generation);
        assert_eq!(generation, Some(1));
        // A call that failed on the first master starts no lookup; one that
        // failed on the second does (and fails: no Sentinel answers).
        assert!(master.lookup(Some(0)).await.is_ok());
        assert!(master.lookup(Some(1)).await.is_err());
    }

    #[test]
    fn addresses_are_described_as_host_port_or_path() {
        let tcp = ConnectionAddr::Tcp("10.0.0.1".to_owned(), 6379);
        assert_eq!(describe(&tcp), "10.0.0.1:6379");
        let v6 = ConnectionAddr::Tcp("::1".to_owned(), 26379);
        assert_eq!(describe(&v6), "[::1]:26379");
        let unix = ConnectionAddr::Unix("/run/redis.sock".into());
        assert_eq!(describe(&unix), "/run/redis.sock");
    }
}
