//! Settings of the Redis store, from code or from one URL.
//!
//! One file on purpose (its tests make up a fifth of it): every form of Redis
//! URL is parsed by one reader, so that a setting means the same in each
//! topology.

use ratekeeper_core::storage::redact_url;
use std::time::Duration;

use ratekeeper_core::{Error, parse_duration};

use crate::error::invalid;

/// The prefix every key of a store starts with, unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "ratelimit:";
/// The default deadline of every store call: a slow or unreachable Redis
/// costs a request at most this, then the rule's error mode answers.
pub const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// The most connections one store opens per server.
pub const MAX_CONNECTIONS: usize = 64;
/// The port a Sentinel listens on when its address names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Which Redis deployment the store talks to.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server, by a URL the `redis` crate reads:
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS),
    /// `redis+unix:///path/to/socket[?db=N]`.
    Standalone(String),
    /// A Redis Cluster, by the URLs of some of its nodes (`redis://host:port`
    /// or `rediss://…`); the others are discovered.
    Cluster(Vec<String>),
    /// The master of a Sentinel-monitored group, followed across failovers.
    Sentinel(SentinelConfig),
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(url) => f.debug_tuple("Standalone").field(&redact_url(url)).finish(),
            Self::Cluster(nodes) => f
                .debug_tuple("Cluster")
                .field(&nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>())
                .finish(),
            Self::Sentinel(s) => f.debug_tuple("Sentinel").field(s).finish(),
        }
    }
}

/// Where to find a master through Sentinel, and how to log in to each.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The Sentinels (`host:port`; at least one must answer).
    pub sentinels: Vec<(String, u16)>,
    /// The monitored group's name (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The database on the master.
    pub db: i64,
    /// User on the master (Redis 6 ACLs), if any.
    pub username: Option<String>,
    /// Password on the master, if any.
    pub password: Option<String>,
    /// User on the Sentinels, if any.
    pub sentinel_username: Option<String>,
    /// Password on the Sentinels, if any.
    pub sentinel_password: Option<String>,
    /// Whether both the Sentinels and the master speak TLS.
    pub tls: bool,
    /// With TLS: accept any certificate (tests only; `#insecure` in a URL).
    pub insecure: bool,
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl SentinelConfig {
    /// The group `master_name` monitored by `sentinels`, database 0, no passwords, no TLS.
    pub fn new(sentinels: Vec<(String, u16)>, master_name: impl Into<String>) -> Self {
        Self {
            sentinels,
            master_name: master_name.into(),
            db: 0,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            tls: false,
            insecure: false,
        }
    }
}

/// Where a decision's "now" comes from.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The script reads the Redis server's `TIME`: every app server shares one
    /// timeline, whatever its own clock says (the default).
    Server,
    /// The script uses the time the limiter passes (its clock). For tests with
    /// a manual clock, and for deployments that trust their clocks. Every TTL
    /// written by a decision gets `skew_allowance` added, so a client whose
    /// clock runs that far behind the one that wrote a state still finds it.
    Client {
        /// Extra lifetime of every rule state written.
        skew_allowance: Duration,
    },
}

/// Certificates for `rediss://` connections, in PEM.
#[non_exhaustive]
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsCertificates {
    /// CA certificate(s) to trust instead of the system's roots.
    pub root_certificate: Option<Vec<u8>>,
    /// Client certificate chain and private key, for servers that require
    /// client authentication (`tls-auth-clients yes`).
    pub client_certificate: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificates")
            .field("root_certificate", &self.root_certificate.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .finish()
    }
}

/// Settings of a [`RedisStorage`](crate::RedisStorage).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The deployment.
    pub topology: Topology,
    /// Every key of the store starts with this (default `ratelimit:`); `clear`
    /// removes only keys with it. A prefix holding a hash tag (`{app}:`) puts
    /// every key of the store in one Cluster slot.
    pub prefix: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The longest any store call waits for its answer, including time spent
    /// waiting for a connection to come back; then it fails with a transient
    /// [`Timeout`](ratekeeper_core::ErrorKind::Timeout) error.
    pub response_timeout: Duration,
    /// Multiplexed connections per server (each pipelines every concurrent
    /// request it carries); 1 is usually best.
    pub connections: usize,
    /// Where decisions take their time from.
    pub time_source: TimeSource,
    /// Certificates for TLS connections.
    pub tls: TlsCertificates,
}

impl RedisConfig {
    /// Defaults for `topology`: prefix `ratelimit:`, connect timeout 1 s,
    /// response timeout [`DEFAULT_RESPONSE_TIMEOUT`] (100 ms), one connection,
    /// server time.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connections: 1,
            time_source: TimeSource::Server,
            tls: TlsCertificates::default(),
        }
    }

    /// Reads a store URL. Forms:
    ///
    /// - standalone: `redis://[[user]:password@]host[:port][/db]`, `rediss://…`
    ///   (TLS; `#insecure` skips certificate checks), `redis+unix:///path.sock[?db=N]`;
    /// - Cluster: `redis+cluster://[[user]:password@]host:port,host:port,…`
    ///   (`rediss+cluster://` for TLS), or `redis://` with several hosts;
    /// - Sentinel: `redis+sentinel://[[user]:password@]host:port,host:port,…/master_name[/db]`
    ///   (`rediss+sentinel://` for TLS; Sentinels default to port 26379), or
    ///   `redis://host:port,…/db?sentinel_master=name`. The user and password
    ///   are the master's; `sentinel_username` / `sentinel_password` log in to
    ///   the Sentinels.
    ///
    /// Options (query parameters): `prefix`, `connect_timeout`,
    /// `response_timeout` (durations such as `500ms`), `connections` (1–64),
    /// `time` (`server` or `client`), `skew_allowance` (with `time=client`;
    /// default 1s), `tls_ca_file`, `tls_cert_file` and `tls_key_file` (PEM
    /// files, read now), `protocol` (`resp2` or `resp3`), and for Sentinel
    /// `sentinel_master`, `sentinel_username`, `sentinel_password`.
    ///
    /// ```
    /// use ratekeeper_redis::{RedisConfig, Topology};
    ///
    /// let c = RedisConfig::from_url("redis://:secret@cache:6379/2?prefix=api:&connections=2")?;
    /// assert_eq!(c.prefix, "api:");
    /// assert_eq!(c.connections, 2);
    ///
    /// let c = RedisConfig::from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000")?;
    /// assert!(matches!(c.topology, Topology::Cluster(ref nodes) if nodes.len() == 3));
    ///
    /// let c = RedisConfig::from_url("redis+sentinel://s1,s2:26380,s3/mymaster/1")?;
    /// let Topology::Sentinel(s) = c.topology else { unreachable!() };
    /// assert_eq!((s.master_name.as_str(), s.db), ("mymaster", 1));
    /// assert_eq!(s.sentinels[0], ("s1".to_owned(), 26379));
    ///
    /// assert!(RedisConfig::from_url("redis://cache?pool=3").is_err());
    /// # Ok::<(), ratekeeper_core::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let parts = UrlParts::split(url)?;
        let mut options = Options::default();
        let unix = matches!(parts.scheme, "redis+unix" | "valkey+unix" | "unix");
        for (name, value) in url::form_urlencoded::parse(parts.query.as_bytes()) {
            // A socket URL carries its database and credentials in the query.
            if unix && matches!(name.as_ref(), "db" | "user" | "pass") {
                continue;
            }
            options.set(&name, &value)?;
        }
        let topology = match parts.scheme {
            "redis+cluster" | "rediss+cluster" | "valkey+cluster" | "valkeys+cluster" => {
                if options.sentinel_master.is_some() {
                    return Err(invalid(
                        "sentinel_master does not apply to a Cluster URL".to_owned(),
                    ));
                }
                Topology::Cluster(parts.node_urls(options.protocol.as_deref())?)
            }
            "redis+sentinel" | "rediss+sentinel" | "valkey+sentinel" | "valkeys+sentinel" => {
                let mut segments = parts.path.trim_matches('/').splitn(2, '/');
                let master = segments.next().unwrap_or_default();
                if master.is_empty() {
                    return Err(invalid(
                        "a Sentinel URL names the master after the hosts: \
                         redis+sentinel://host:26379,host:26379/mymaster[/db]"
                            .to_owned(),
                    ));
                }
                let db = parse_db(segments.next().unwrap_or_default())?;
                Topology::Sentinel(parts.sentinel(master, db, &options)?)
            }
            "redis" | "rediss" | "valkey" | "valkeys" => {
                if let Some(master) = &options.sentinel_master {
                    let db = parse_db(parts.path.trim_matches('/'))?;
                    Topology::Sentinel(parts.sentinel(master, db, &options)?)
                } else if parts.hosts.len() > 1 {
                    Topology::Cluster(parts.node_urls(options.protocol.as_deref())?)
                } else {
                    Topology::Standalone(parts.standalone_url(options.protocol.as_deref())?)
                }
            }
            "redis+unix" | "valkey+unix" | "unix" => {
                Topology::Standalone(parts.standalone_url(options.protocol.as_deref())?)
            }
            other => {
                return Err(invalid(format!(
                    "unsupported Redis URL scheme {:?} (expected redis, rediss, redis+unix, \
                     redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel)",
                    cut(other)
                )));
            }
        };
        let mut config = Self::new(topology);
        options.apply(&mut config)?;
        Ok(config)
    }
}

/// Query options of a store URL.
#[derive(Default)]
struct Options {
    prefix: Option<String>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    connections: Option<usize>,
    time: Option<String>,
    skew_allowance: Option<Duration>,
    tls_ca_file: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    protocol: Option<String>,
    sentinel_master: Option<String>,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

const KNOWN_OPTIONS: &str = "prefix, connect_timeout, response_timeout, connections, time, \
     skew_allowance, tls_ca_file, tls_cert_file, tls_key_file, protocol, sentinel_master, \
     sentinel_username, sentinel_password";

impl Options {
    fn set(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let duration = || {
            let d = parse_duration(value).map_err(|e| invalid(format!("{name}: {e}")))?;
            if d.is_zero() {
                return Err(invalid(format!("{name} must be above 0")));
            }
            Ok(d)
        };
        let text = || Some(value.to_owned());
        match name {
            "prefix" => self.prefix = text(),
            "connect_timeout" => self.connect_timeout = Some(duration()?),
            "response_timeout" => self.response_timeout = Some(duration()?),
            "skew_allowance" => {
                self.skew_allowance =
                    Some(parse_duration(value).map_err(|e| invalid(format!("{name}: {e}")))?);
            }
            "connections" => {
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "connections must be a whole number from 1 to {MAX_CONNECTIONS}, not {:?}",
                            cut(value)
                        ))
                    })?;
                self.connections = Some(n);
            }
            "time" => self.time = text(),
            "tls_ca_file" => self.tls_ca_file = text(),
            "tls_cert_file" => self.tls_cert_file = text(),
            "tls_key_file" => self.tls_key_file = text(),
            "protocol" => {
                if !matches!(value, "2" | "3" | "resp2" | "resp3") {
                    return Err(invalid(format!(
                        "protocol must be resp2 or resp3, not {:?}",
                        cut(value)
                    )));
                }
                self.protocol = text();
            }
            "sentinel_master" => self.sentinel_master = text(),
            "sentinel_username" => self.sentinel_username = text(),
            "sentinel_password" => self.sentinel_password = text(),
            other => {
                return Err(invalid(format!(
                    "unknown Redis store option {:?} (expected {KNOWN_OPTIONS})",
                    cut(other)
                )));
            }
        }
        Ok(())
    }

    fn apply(self, config: &mut RedisConfig) -> Result<(), Error> {
        if let Some(prefix) = self.prefix {
            config.prefix = prefix;
        }
        if let Some(d) = self.connect_timeout {
            config.connect_timeout = d;
        }
        if let Some(d) = self.response_timeout {
            config.response_timeout = d;
        }
        if let Some(n) = self.connections {
            config.connections = n;
        }
        config.time_source = match (self.time.as_deref(), self.skew_allowance) {
            (None | Some("server"), None) => TimeSource::Server,
            (Some("client"), skew) => TimeSource::Client {
                skew_allowance: skew.unwrap_or(Duration::from_secs(1)),
            },
            (None | Some("server"), Some(_)) => {
                return Err(invalid(
                    "skew_allowance applies only with time=client".to_owned(),
                ));
            }
            (Some(other), _) => {
                return Err(invalid(format!(
                    "time must be server or client, not {:?}",
                    cut(other)
                )));
            }
        };
        let read = |path: &str, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::new(
                    ratekeeper_core::ErrorKind::InvalidInput,
                    format!("cannot read the {what} file {path:?}"),
                )
                .with_source(e)
            })
        };
        if let Some(path) = &self.tls_ca_file {
            config.tls.root_certificate = Some(read(path, "TLS CA certificate")?);
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                config.tls.client_certificate = Some((
                    read(cert, "TLS client certificate")?,
                    read(key, "TLS client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "tls_cert_file and tls_key_file go together".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// A store URL cut into its parts, before any part is interpreted.
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: &'a str,
    query: &'a str,
    fragment: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Result<Self, Error> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid(format!(
                "a Redis store URL starts with redis://, rediss://, redis+cluster:// or \
                 redis+sentinel://, not {:?}",
                redact_url(url)
            ))
        })?;
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let hosts: Vec<&str> = if hostlist.is_empty() {
            Vec::new()
        } else {
            hostlist.split(',').map(str::trim).collect()
        };
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(invalid(format!(
                "an empty host in the Redis URL {:?}",
                redact_url(url)
            )));
        }
        Ok(Self {
            scheme,
            userinfo,
            hosts,
            path,
            query,
            fragment,
        })
    }

    fn base_scheme(&self) -> &'static str {
        if self.scheme.starts_with("rediss") || self.scheme.starts_with("valkeys") {
            "rediss"
        } else {
            "redis"
        }
    }

    /// `?protocol=…#fragment` for a URL the `redis` crate reads.
    fn tail(&self, protocol: Option<&str>) -> String {
        let mut tail = String::new();
        if let Some(p) = protocol {
            tail.push_str("?protocol=");
            tail.push_str(p);
        }
        if let Some(f) = self.fragment {
            tail.push('#');
            tail.push_str(f);
        }
        tail
    }

    fn auth(&self) -> String {
        self.userinfo.map(|u| format!("{u}@")).unwrap_or_default()
    }

    fn standalone_url(&self, protocol: Option<&str>) -> Result<String, Error> {
        let mut url = format!("{}://{}", self.scheme, self.auth());
        url.push_str(self.hosts.first().copied().unwrap_or_default());
        url.push_str(self.path);
        // The unix form carries its database in the query.
        if matches!(self.scheme, "redis+unix" | "valkey+unix" | "unix") {
            let extra: Vec<String> = url::form_urlencoded::parse(self.query.as_bytes())
                .filter(|(k, _)| matches!(k.as_ref(), "db" | "user" | "pass"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !extra.is_empty() || protocol.is_some() {
                url.push('?');
                url.push_str(&extra.join("&"));
                if let Some(p) = protocol {
                    if !extra.is_empty() {
                        url.push('&');
                    }
                    url.push_str("protocol=");
                    url.push_str(p);
                }
            }
        } else {
            url.push_str(&self.tail(protocol));
        }
        check(&url)?;
        Ok(url)
    }

    fn node_urls(&self, protocol: Option<&str>) -> Result<Vec<String>, Error> {
        if self.hosts.is_empty() {
            return Err(invalid("a Cluster URL names at least one node".to_owned()));
        }
        if !matches!(self.path.trim_matches('/'), "" | "0") {
            return Err(invalid(
                "Redis Cluster has only database 0: remove the path from the URL".to_owned(),
            ));
        }
        self.hosts
            .iter()
            .map(|host| {
                let url = format!(
                    "{}://{}{host}{}",
                    self.base_scheme(),
                    self.auth(),
                    self.tail(protocol)
                );
                check(&url)?;
                Ok(url)
            })
            .collect()
    }

    fn sentinel(&self, master: &str, db: i64, options: &Options) -> Result<SentinelConfig, Error> {
        if self.hosts.is_empty() {
            return Err(invalid(
                "a Sentinel URL names at least one Sentinel".to_owned(),
            ));
        }
        let sentinels = self
            .hosts
            .iter()
            .map(|host| {
                let with_port = if has_port(host) {
                    (*host).to_owned()
                } else {
                    format!("{host}:{DEFAULT_SENTINEL_PORT}")
                };
                let url = format!("redis://{with_port}");
                let info = check(&url)?;
                match info.addr() {
                    redis::ConnectionAddr::Tcp(h, p) => Ok((h.clone(), *p)),
                    _ => Err(invalid(format!(
                        "Sentinel address {:?} is not host:port",
                        cut(host)
                    ))),
                }
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Let the `redis` crate read the master's credentials.
        let probe = check(&format!("redis://{}localhost", self.auth()))?;
        let settings = probe.redis_settings();
        let tls = self.base_scheme() == "rediss";
        let insecure = match self.fragment {
            None => false,
            Some("insecure") if tls => true,
            Some(other) => {
                return Err(invalid(format!(
                    "unsupported URL fragment #{} (only #insecure, with TLS)",
                    cut(other)
                )));
            }
        };
        Ok(SentinelConfig {
            sentinels,
            master_name: master.to_owned(),
            db,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            sentinel_username: options.sentinel_username.clone(),
            sentinel_password: options.sentinel_password.clone(),
            tls,
            insecure,
        })
    }
}

fn has_port(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, rest)| rest.starts_with(':')),
        None => host.contains(':'),
    }
}

fn parse_db(text: &str) -> Result<i64, Error> {
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| invalid(format!("invalid database number {:?}", cut(text))))
}

/// Lets the `redis` crate read a URL we built, so its errors surface now.
fn check(url: &str) -> Result<redis::ConnectionInfo, Error> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        Error::new(
            ratekeeper_core::ErrorKind::InvalidInput,
            format!("invalid Redis URL {:?}", redact_url(url)),
        )
        .with_source(e)
    })
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_urls_keep_what_the_redis_crate_reads() {
        let c = RedisConfig::from_url("rediss://u:p@h:6380/3?protocol=resp3#insecure").unwrap();
        assert_eq!(
            c.topology,
            Topology::Standalone("rediss://u:p@h:6380/3?protocol=resp3#insecure".to_owned())
        );
        let c = RedisConfig::from_url("redis+unix:///tmp/r.sock?db=2&prefix=x:").unwrap();
        assert_eq!(
            c.topology,
            Topology::Standalone("redis+unix:///tmp/r.sock?db=2".to_owned())
        );
        assert_eq!(c.prefix, "x:");
    }

    #[test]
    fn options_are_read_and_checked() {
        let c = RedisConfig::from_url(
            "redis://h?connect_timeout=2s&response_timeout=50ms&time=client&skew_allowance=5s",
        )
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.response_timeout, Duration::from_millis(50));
        assert_eq!(
            c.time_source,
            TimeSource::Client {
                skew_allowance: Duration::from_secs(5)
            }
        );
        for (bad, needle) in [
            ("redis://h?connections=0", "from 1 to 64"),
            ("redis://h?connections=65", "from 1 to 64"),
            ("redis://h?response_timeout=soon", "response_timeout"),
            ("redis://h?response_timeout=0s", "above 0"),
            ("redis://h?time=sundial", "server or client"),
            ("redis://h?skew_allowance=1s", "time=client"),
            ("redis://h?tls_cert_file=/x", "go together"),
            ("redis://h?tls_ca_file=/nonexistent/ca.pem", "cannot read"),
            ("redis://h?protocol=resp9", "resp2 or resp3"),
            ("redis://h?pool_size=3", "unknown Redis store option"),
            ("ftp://h", "unsupported Redis URL scheme"),
            ("cache:6379", "starts with redis://"),
            ("redis://h,,i", "empty host"),
            ("redis+cluster://a:1,b:2/4", "only database 0"),
            ("redis+sentinel://s1,s2", "names the master"),
            ("redis+sentinel://s1/m/x", "invalid database"),
            ("redis://h:notaport", "invalid Redis URL"),
        ] {
            let err = RedisConfig::from_url(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn several_hosts_make_a_cluster_unless_a_master_is_named() {
        let c = RedisConfig::from_url("redis://:pw@a:7000,b:7001").unwrap();
        assert_eq!(
            c.topology,
            Topology::Cluster(vec![
                "redis://:pw@a:7000".to_owned(),
                "redis://:pw@b:7001".to_owned()
            ])
        );
        let c = RedisConfig::from_url(
            "redis://u:pw@s1:26379,s2:26379/4?sentinel_master=main&sentinel_password=sp",
        )
        .unwrap();
        let Topology::Sentinel(s) = c.topology else {
            panic!("not sentinel")
        };
        assert_eq!(s.master_name, "main");
        assert_eq!(s.db, 4);
        assert_eq!(
            (s.username.as_deref(), s.password.as_deref()),
            (Some("u"), Some("pw"))
        );
        assert_eq!(s.sentinel_password.as_deref(), Some("sp"));
        assert!(!s.tls);
        let c = RedisConfig::from_url("rediss+sentinel://[::1]:5000,h/m#insecure").unwrap();
        let Topology::Sentinel(s) = c.topology else {
            panic!("not sentinel")
        };
        assert!(s.tls && s.insecure);
        assert_eq!(
            s.sentinels,
            vec![
                ("::1".to_owned(), 5000),
                ("h".to_owned(), DEFAULT_SENTINEL_PORT)
            ]
        );
    }

    #[test]
    fn errors_never_show_passwords() {
        let err = RedisConfig::from_url("redis://user:hunter2@h:bad/0")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("user:***@"), "{err}");
    }

    /// What mutation testing found unpinned: a client certificate read
    /// from files, a unix URL with nothing to carry, `#insecure` without
    /// TLS, and the fragment named in its error.
    #[test]
    fn tls_files_unix_urls_and_fragments() {
        let dir = std::env::temp_dir().join(format!("ratekeeper-redis-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
        std::fs::write(&cert, b"CERT").unwrap();
        std::fs::write(&key, b"KEY").unwrap();
        let c = RedisConfig::from_url(&format!(
            "rediss://h?tls_cert_file={}&tls_key_file={}",
            cert.display(),
            key.display()
        ))
        .unwrap();
        assert_eq!(
            c.tls.client_certificate,
            Some((b"CERT".to_vec(), b"KEY".to_vec()))
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let c = RedisConfig::from_url("redis+unix:///tmp/r.sock").unwrap();
        assert_eq!(
            c.topology,
            Topology::Standalone("redis+unix:///tmp/r.sock".to_owned())
        );
        let c = RedisConfig::from_url("redis+unix:///tmp/r.sock?protocol=resp3").unwrap();
        assert_eq!(
            c.topology,
            Topology::Standalone("redis+unix:///tmp/r.sock?protocol=resp3".to_owned())
        );

        let err = RedisConfig::from_url("redis+sentinel://s1/m#insecure")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("#insecure") && err.contains("with TLS"),
            "{err}"
        );
        let err = RedisConfig::from_url("rediss+sentinel://s1/m#weird")
            .unwrap_err()
            .to_string();
        assert!(err.contains("#weird"), "{err}");
        let Topology::Sentinel(s) = RedisConfig::from_url("rediss+sentinel://s1/m#insecure")
            .unwrap()
            .topology
        else {
            panic!("not sentinel")
        };
        assert!(s.tls && s.insecure);
    }
}
