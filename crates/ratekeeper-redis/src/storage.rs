//! The Redis store.
//!
//! One file on purpose: the builder and the `Storage` methods share the call,
//! deadline and script helpers; split, each part would need the others open
//! beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use ratekeeper_core::{
    AdjustRequest, Adjustment, CasOp, DecideRequest, Decision, Error, ErrorKind, Result, Rule,
    Storage, StorageStats, Timestamp, kit,
};
use redis::{Cmd, Value};

use crate::config::{RedisConfig, TimeSource, Topology};
use crate::connection::Backend;
use crate::error::{invalid, redis as redis_error, timeout};
use crate::keys::{prefix_pattern, redis_key, slot, tagged};
use crate::scripts::{Engine, Library, LuaScript, SCRIPTS};

/// Keys read per `SCAN` step.
const SCAN_COUNT: u64 = 1_000;

/// The Redis store: every app instance shares its limits through Redis.
///
/// A decision is one Lua script call (`EVALSHA`) that reads every rule's
/// state, runs the same algorithms as the core, and writes the new states with
/// their TTL, atomically: any number of tasks, processes and machines sharing
/// the server never admit more than a rule allows. The time comes from the
/// server's `TIME` by default, so app servers with skewed clocks share one
/// timeline. Standalone servers, Sentinel-monitored masters (followed across
/// failovers) and Redis Cluster are supported, over TCP or TLS.
///
/// Connections are multiplexed: concurrent calls share one connection and are
/// pipelined automatically. They reconnect by themselves; while they cannot,
/// calls fail within the response timeout with a transient error.
///
/// ```no_run
/// use ratekeeper_core::{Algorithm, Limiter, Rule};
/// use ratekeeper_redis::RedisStorage;
/// use std::sync::Arc;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStorage::connect("redis://127.0.0.1:6379/0?prefix=myapp:").await?;
/// let limiter = Limiter::new(Arc::new(store));
/// let rule = Rule::new("api", Algorithm::Gcra, "100/minute".parse()?)?;
/// let decision = limiter.check(&rule, "user-42").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
    prefix: Arc<str>,
}

#[derive(Debug)]
struct Inner {
    /// `None` once closed.
    backend: RwLock<Option<Arc<Backend>>>,
    config: RedisConfig,
    next: AtomicUsize,
    /// Whether decisions go through the function library (`FCALL`): until
    /// the server shows it has no functions or does not let this user load
    /// or call them; then through the scripts (`EVALSHA`), for good.
    functions: AtomicBool,
}

/// Builds a [`RedisStorage`].
#[derive(Debug)]
#[must_use]
pub struct RedisStorageBuilder {
    config: RedisConfig,
}

impl RedisStorageBuilder {
    /// All settings at once.
    pub fn config(mut self, config: RedisConfig) -> Self {
        self.config = config;
        self
    }

    /// The prefix of every key (default `ratelimit:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long one connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The longest any call waits for its answer (default 100 ms).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// Multiplexed connections per server (1 to 64; default 1).
    pub fn connections(mut self, connections: usize) -> Self {
        self.config.connections = connections.clamp(1, crate::config::MAX_CONNECTIONS);
        self
    }

    /// Where decisions take their time from (default: the server's `TIME`).
    pub fn time_source(mut self, source: TimeSource) -> Self {
        self.config.time_source = source;
        self
    }

    /// CA certificate(s), in PEM, to trust for `rediss://` instead of the
    /// system's roots.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls.root_certificate = Some(pem.into());
        self
    }

    /// A client certificate chain and its private key, in PEM, for servers
    /// that authenticate clients.
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.config.tls.client_certificate = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// The store, connecting lazily: nothing is sent before the first call,
    /// so a server that is down shows up as errors of the first calls. Must
    /// be called inside a tokio runtime (with its timer enabled).
    pub fn build(self) -> Result<RedisStorage> {
        let config = &self.config;
        if config.connect_timeout.is_zero() || config.response_timeout.is_zero() {
            return Err(invalid(
                "the connect and response timeouts of a Redis store must be above 0".to_owned(),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(invalid(
                "a Redis store must be created inside a tokio runtime".to_owned(),
            ));
        }
        let backend = Backend::new(&self.config).map_err(|e| redis_error(e, "set-up"))?;
        Ok(RedisStorage {
            prefix: Arc::from(self.config.prefix.as_str()),
            inner: Arc::new(Inner {
                backend: RwLock::new(Some(Arc::new(backend))),
                config: self.config,
                next: AtomicUsize::new(0),
                functions: AtomicBool::new(true),
            }),
        })
    }

    /// The store, connected: reaches the server (every Cluster master, the
    /// Sentinels' current master) and loads the scripts there, so a wrong
    /// address or password is an error now rather than later.
    pub async fn connect(self) -> Result<RedisStorage> {
        let store = self.build()?;
        // Boxed: the redis crate's connection futures nest deeply, and an
        // application future holding them inline can pass the compiler's
        // query depth limit.
        // Loading the scripts is the check: it reaches every node the store
        // decides on.
        let check: std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> =
            Box::pin(store.load_scripts());
        check.await?;
        Ok(store)
    }
}

/// One argument of a script call.
#[derive(Clone)]
enum Arg<'a> {
    Int(u64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Owned(String),
}

impl Arg<'_> {
    fn write(&self, cmd: &mut Cmd) {
        match self {
            Self::Int(n) => cmd.arg(*n),
            Self::Text(s) => cmd.arg(*s),
            Self::Bytes(b) => cmd.arg(*b),
            Self::Owned(s) => cmd.arg(s.as_str()),
        };
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros().div_ceil(1_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisStorage {
    /// A builder with default settings for `topology`.
    pub fn builder(topology: Topology) -> RedisStorageBuilder {
        RedisStorageBuilder {
            config: RedisConfig::new(topology),
        }
    }

    /// A builder with the settings a URL gives (see [`RedisConfig::from_url`]
    /// for the forms and options), to adjust in code before building.
    pub fn builder_from_url(url: &str) -> Result<RedisStorageBuilder> {
        Ok(RedisStorageBuilder {
            config: RedisConfig::from_url(url)?,
        })
    }

    /// A store for a URL (see [`RedisConfig::from_url`] for the forms and
    /// options), connecting lazily; inside a tokio runtime.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::builder_from_url(url)?.build()
    }

    /// A store for a URL, connected and checked (see [`RedisStorageBuilder::connect`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder_from_url(url)?.connect().await
    }

    /// The same connections with another key prefix: a separate keyspace
    /// (its own `clear`) on the same servers. Closing either closes both.
    pub fn with_prefix(&self, prefix: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            prefix: Arc::from(prefix),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The settings the store was built with (a [`with_prefix`](Self::with_prefix)
    /// view keeps them, but for its own [`prefix`](Self::prefix)).
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key that holds store key `key` (see the key layout in
    /// `docs/distributed.md`): `<prefix><rule>:{<key>}` for `rule:key`.
    pub fn redis_key(&self, key: &str) -> String {
        redis_key(&self.prefix, key)
    }

    fn backend(&self) -> Result<Arc<Backend>> {
        self.inner.backend.read().clone().ok_or_else(Error::closed)
    }

    /// Sends one command within the response timeout.
    async fn call(&self, what: &str, cmd: &Cmd) -> Result<Value> {
        let backend = self.backend()?;
        let exchange = async {
            let mut handle = backend.handle(&self.inner.next).await?;
            handle.send(cmd).await
        };
        self.deadline(what, exchange).await
    }

    async fn deadline<T>(
        &self,
        what: &str,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        let limit = self.inner.config.response_timeout;
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result.map_err(|e| redis_error(e, what)),
            Err(_) => Err(timeout(what, limit)),
        }
    }

    /// [`deadline`](Self::deadline), leaving the server's answer (an error
    /// too) to the caller.
    async fn deadline_raw<T>(
        &self,
        what: &str,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        let limit = self.inner.config.response_timeout;
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| timeout(what, limit))
    }

    /// Runs a script by its SHA-1; if the server does not know it (a restart
    /// or failover flushed the script cache), sends the source, which also
    /// caches it again.
    async fn eval(
        &self,
        what: &str,
        script: &LuaScript,
        keys: &[String],
        args: &[Arg<'_>],
    ) -> Result<Value> {
        let backend = self.backend()?;
        let exchange = async {
            let mut handle = backend.handle(&self.inner.next).await?;
            match handle.send(&call("EVALSHA", &script.sha, keys, args)).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    handle.send(&call("EVAL", script.code, keys, args)).await
                }
                other => other,
            }
        };
        self.deadline(what, exchange).await
    }

    /// Runs the decision engine: its library function (`FCALL`) where the
    /// server has functions, loading the library first if the server does
    /// not know it (a new node, a `FUNCTION FLUSH`); else its script
    /// ([`eval`](Self::eval)). A server without functions, or a user not
    /// allowed to load or call them, sends this store to the scripts for
    /// good.
    async fn run_engine(
        &self,
        what: &str,
        engine: Engine<'_>,
        keys: &[String],
        args: &[Arg<'_>],
    ) -> Result<Value> {
        if self.inner.functions.load(Ordering::Relaxed) {
            let backend = self.backend()?;
            let exchange = async {
                let mut handle = backend.handle(&self.inner.next).await?;
                let fcall = call("FCALL", engine.function, keys, args);
                match handle.send(&fcall).await {
                    Err(e) if function_missing(&e) => {
                        match handle.send(&SCRIPTS.library.load()).await {
                            Err(e) if no_functions(&e) => Ok(None),
                            Err(e) if !Library::already_loaded(&e) => Err(e),
                            _ => handle.send(&fcall).await.map(Some),
                        }
                    }
                    Err(e) if no_functions(&e) => Ok(None),
                    other => other.map(Some),
                }
            };
            match self.deadline(what, exchange).await? {
                Some(reply) => return Ok(reply),
                None => self.scripts_only(),
            }
        }
        self.eval(what, engine.script, keys, args).await
    }

    /// From now on, decisions go through the scripts.
    fn scripts_only(&self) {
        if self.inner.functions.swap(false, Ordering::Relaxed) {
            tracing::info!(
                target: "ratekeeper",
                "the Redis server has no functions for this store (an older server, or an ACL \
                 without FUNCTION LOAD or FCALL): decisions run as scripts (EVALSHA)"
            );
        }
    }

    /// Loads the function library and every script on the server (every
    /// Cluster master), so the first decisions need no extra round trip.
    async fn load_scripts(&self) -> Result<()> {
        let backend = self.backend()?;
        let masters = backend
            .cluster_masters()
            .await
            .map_err(|e| redis_error(e, "CLUSTER NODES"))?;
        let nodes: Vec<Option<&(String, u16)>> = match &masters {
            Some(masters) => masters.iter().map(Some).collect(),
            None => vec![None],
        };
        for &node in &nodes {
            if !self.inner.functions.load(Ordering::Relaxed) {
                break;
            }
            let loaded = self
                .deadline_raw(
                    "FUNCTION LOAD",
                    self.send_to(&backend, node, SCRIPTS.library.load()),
                )
                .await?;
            // Any other refusal (a full or read-only server) leaves the
            // library to the first decision, which loads it or reports why
            // it cannot: connecting checks what it checked before.
            if let Err(e) = loaded
                && no_functions(&e)
            {
                self.scripts_only();
            }
        }
        for script in SCRIPTS.all() {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(script.code);
            for &node in &nodes {
                self.deadline("SCRIPT LOAD", self.send_to(&backend, node, cmd.clone()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends `cmd` to a Cluster master, or (`None`) to the one server.
    async fn send_to(
        &self,
        backend: &Backend,
        node: Option<&(String, u16)>,
        cmd: Cmd,
    ) -> redis::RedisResult<Value> {
        match node {
            Some((host, port)) => backend.send_to_node(host, *port, cmd).await,
            None => {
                let mut handle = backend.handle(&self.inner.next).await?;
                handle.send(&cmd).await
            }
        }
    }

    /// The nodes holding the store's keys: every Cluster master, or `None`
    /// for the one server.
    async fn masters(&self, backend: &Backend) -> Result<Option<Vec<(String, u16)>>> {
        backend
            .cluster_masters()
            .await
            .map_err(|e| redis_error(e, "CLUSTER NODES"))
    }

    /// One `SCAN` step on a node (or the one server): the next cursor and keys.
    async fn scan_step(
        &self,
        backend: &Backend,
        node: Option<&(String, u16)>,
        cursor: u64,
    ) -> Result<(u64, Vec<String>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(prefix_pattern(&self.prefix))
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = match node {
            Some((host, port)) => {
                self.deadline("SCAN", backend.send_to_node(host, *port, cmd))
                    .await?
            }
            None => self.call("SCAN", &cmd).await?,
        };
        parse(reply, "SCAN")
    }

    /// Walks every key under the prefix (on every Cluster master) with
    /// `SCAN`, counting them or removing them a batch at a time; returns how
    /// many were counted or removed.
    async fn sweep(&self, remove: bool) -> Result<u64> {
        let backend = self.backend()?;
        let nodes: Vec<Option<(String, u16)>> = match self.masters(&backend).await? {
            Some(masters) => masters.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut total = 0;
        for node in &nodes {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_step(&backend, node.as_ref(), cursor).await?;
                total += if remove {
                    self.unlink(keys).await?
                } else {
                    keys.len() as u64
                };
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(total)
    }

    async fn unlink(&self, keys: Vec<String>) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        // Multi-key commands must stay within one Cluster slot.
        let mut by_slot: std::collections::HashMap<_, Vec<String>> = Default::default();
        for key in keys {
            by_slot.entry(slot(&key)).or_default().push(key);
        }
        let mut removed = 0;
        for group in by_slot.into_values() {
            let mut cmd = redis::cmd("UNLINK");
            for key in &group {
                cmd.arg(key.as_str());
            }
            let reply = self.call("UNLINK", &cmd).await?;
            removed += parse::<u64>(reply, "UNLINK")?;
        }
        Ok(removed)
    }

    fn check_one_slot(&self, backend: &Backend, keys: &[String]) -> Result<()> {
        if !matches!(backend, Backend::Cluster { .. }) {
            return Ok(());
        }
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let first_slot = slot(first);
        if let Some(other) = keys.iter().find(|k| slot(k) != first_slot) {
            return Err(invalid(format!(
                "the keys of one request must share a Redis Cluster slot, but {first:?} and \
                 {other:?} do not: use one key for every rule of a request, keys that share a \
                 hash tag (text up to a '}}'), or a prefix with a hash tag such as \"{{app}}:\" \
                 (see docs/distributed.md)"
            )));
        }
        Ok(())
    }
}

/// Reads a reply as a `T`.
fn parse<T: redis::FromRedisValue>(reply: Value, what: &str) -> Result<T> {
    redis::from_redis_value(reply).map_err(|e| redis_error(e.into(), what))
}

/// `verb` (`EVAL`, `EVALSHA`, `FCALL`) of `body` (the source, its SHA-1,
/// the function's name) on `keys` with `args`.
fn call(verb: &str, body: &str, keys: &[String], args: &[Arg<'_>]) -> Cmd {
    let mut cmd = redis::cmd(verb);
    cmd.arg(body).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_str());
    }
    for arg in args {
        arg.write(&mut cmd);
    }
    cmd
}

/// The server has functions but not this one: the library is not loaded
/// there (a new node, a `FUNCTION FLUSH`).
fn function_missing(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// The server has no functions for this store: an older server or another
/// server speaking the protocol (no `FCALL`, no `FUNCTION` or no `FUNCTION
/// LOAD`), commands renamed away, or an ACL that does not let this user
/// call or load them.
fn no_functions(e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    match e.code() {
        // Not a refusal of a key (`No permissions to access a key`): that
        // is the answer.
        Some("NOPERM") => detail.contains("'fcall'") || detail.contains("'function"),
        Some("ERR") => {
            detail.starts_with("unknown command")
                || detail.starts_with("unknown subcommand")
                || detail.contains("not supported")
                || detail.contains("unsupported")
        }
        _ => false,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn unexpected(what: &str, reply: &Value) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("unexpected reply to the Redis {what}: {reply:?}"),
    )
}

#[async_trait]
impl Storage for RedisStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let reply = self
            .call("GET", redis::cmd("GET").arg(self.redis_key(key)))
            .await?;
        parse(reply, "GET")
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl));
        self.call("SET", &cmd).await.map(drop)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let reply = self
            .call("DEL", redis::cmd("DEL").arg(self.redis_key(key)))
            .await?;
        Ok(parse::<u64>(reply, "DEL")? > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let reply = self
            .call("EXISTS", redis::cmd("EXISTS").arg(self.redis_key(key)))
            .await?;
        Ok(parse::<u64>(reply, "EXISTS")? > 0)
    }

    async fn increment(&self, key: &str, amount: i64, ttl: Duration) -> Result<i64> {
        let keys = [self.redis_key(key)];
        let amount = amount.to_string();
        let reply = self
            .eval(
                "increment",
                &SCRIPTS.increment,
                &keys,
                &[Arg::Text(&amount), Arg::Int(ttl_ms(ttl))],
            )
            .await?;
        let Value::Array(items) = &reply else {
            return Err(unexpected("increment", &reply));
        };
        match (int(items.first()), items.get(1)) {
            (Some(1), Some(Value::Int(n))) => Ok(*n),
            (Some(0), Some(why)) => Err(Error::new(
                ErrorKind::WrongType,
                format!("the value at {key:?} cannot be incremented: {why:?}"),
            )),
            _ => Err(unexpected("increment", &reply)),
        }
    }

    async fn clear(&self) -> Result<u64> {
        self.sweep(true).await
    }

    async fn close(&self) -> Result<()> {
        // Dropping the connections ends their background tasks.
        self.inner.backend.write().take();
        Ok(())
    }

    async fn stats(&self) -> Result<StorageStats> {
        let backend = self.backend()?;
        let mut stats = StorageStats::new("redis");
        let config = &self.inner.config;
        stats
            .details
            .push(("topology".to_owned(), backend.kind().to_owned()));
        if let Some(address) = backend.address() {
            stats.details.push(("address".to_owned(), address));
        }
        stats
            .details
            .push(("prefix".to_owned(), self.prefix.to_string()));
        stats.details.push((
            "time_source".to_owned(),
            match config.time_source {
                TimeSource::Server => "server".to_owned(),
                TimeSource::Client { skew_allowance } => {
                    format!("client (skew allowance {skew_allowance:?})")
                }
            },
        ));
        // Whether the servers answer, then what they hold.
        let probe = async {
            let masters = self.masters(&backend).await?;
            let mut memory = 0u64;
            let nodes: Vec<Option<(String, u16)>> = match &masters {
                Some(m) => m.iter().cloned().map(Some).collect(),
                None => vec![None],
            };
            for node in &nodes {
                let mut cmd = redis::cmd("INFO");
                cmd.arg("memory");
                let reply = match node {
                    Some((host, port)) => {
                        self.deadline("INFO", backend.send_to_node(host, *port, cmd))
                            .await?
                    }
                    None => self.call("INFO", &cmd).await?,
                };
                let text: String = parse(reply, "INFO")?;
                memory += text
                    .lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
            let keys = self.sweep(false).await?;
            Ok::<_, Error>((masters.map(|m| m.len()), memory, keys))
        };
        match probe.await {
            Ok((masters, memory, keys)) => {
                stats.keys = Some(keys);
                stats
                    .details
                    .push(("connection".to_owned(), "ok".to_owned()));
                stats
                    .details
                    .push(("used_memory".to_owned(), memory.to_string()));
                if let Some(n) = masters {
                    stats
                        .details
                        .push(("cluster_masters".to_owned(), n.to_string()));
                }
            }
            Err(e) => stats
                .details
                .push(("connection".to_owned(), format!("unavailable: {e}"))),
        }
        Ok(stats)
    }

    async fn compare_and_swap(&self, ops: &[CasOp<'_>]) -> Result<bool> {
        if ops.is_empty() {
            return Ok(true);
        }
        let keys: Vec<String> = ops.iter().map(|op| self.redis_key(op.key)).collect();
        self.check_one_slot(&*self.backend()?, &keys)?;
        let ttls: Vec<u64> = ops.iter().map(|op| ttl_ms(op.ttl)).collect();
        let mut args = Vec::with_capacity(ops.len() * 4);
        for (op, ttl) in ops.iter().zip(&ttls) {
            args.push(Arg::Text(if op.expected.is_some() { "1" } else { "0" }));
            args.push(Arg::Bytes(op.expected.unwrap_or_default()));
            args.push(Arg::Bytes(op.new_value));
            args.push(Arg::Int(*ttl));
        }
        let reply = self
            .eval("compare-and-swap", &SCRIPTS.compare_and_swap, &keys, &args)
            .await?;
        match reply {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(unexpected("compare-and-swap", &other)),
        }
    }

    async fn decide(&self, request: &DecideRequest<'_>) -> Result<Decision> {
        let entries = request.entries;
        let reply = self.run_decision(request, false).await?;
        let Value::Array(items) = &reply else {
            return Err(unexpected("decision", &reply));
        };
        let field = |i: usize| int(items.get(i));
        let entry = field(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| entries.get(i))
            .ok_or_else(|| unexpected("decision", &reply))?;
        let rule = entry.rule;
        let count = |i: usize| {
            field(i)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| unexpected("decision", &reply))
        };
        let us = |i: usize| count(i).map(Duration::from_micros);
        match field(0) {
            Some(1) => Ok(Decision::allow_by(rule, count(2)?, us(3)?)),
            Some(0) => Ok(Decision::deny_by(rule, count(2)?, us(3)?, us(4)?)),
            _ => Err(unexpected("decision", &reply)),
        }
    }

    async fn decide_each(&self, request: &DecideRequest<'_>) -> Result<Vec<Decision>> {
        self.decide_each_at(request).await.map(|(_, each)| each)
    }

    /// The script's time: the server's `TIME` by default, so that a
    /// reservation's refunds name instants on the timeline its units were
    /// counted on.
    async fn decide_each_at(
        &self,
        request: &DecideRequest<'_>,
    ) -> Result<(Timestamp, Vec<Decision>)> {
        let reply = self.run_decision(request, true).await?;
        let each = each_decision(&reply, request.entries.iter().map(|e| e.rule), 1)?;
        let now = match &reply {
            Value::Array(items) => int(items.last()).and_then(|t| u64::try_from(t).ok()),
            _ => None,
        }
        .ok_or_else(|| unexpected("decision", &reply))?;
        Ok((Timestamp::from_micros(now), each))
    }

    async fn adjust(&self, request: &AdjustRequest<'_>) -> Result<Vec<Decision>> {
        let entries = request.entries;
        if entries.is_empty() {
            return Err(invalid("a change needs at least one rule".to_owned()));
        }
        // Past 2^52 units a change means no more than at 2^52 (every
        // algorithm caps what a charge owes), and the script counts
        // exactly below 2^53.
        let units = |n: u64| n.min(1 << 52);
        let tails = entries.iter().map(|e| match e.adjustment {
            Adjustment::Charge(n) => vec![Arg::Text("c"), Arg::Int(units(n)), Arg::Text("")],
            Adjustment::Refund { units: n, taken_at } => vec![
                Arg::Text("r"),
                Arg::Int(units(n)),
                taken_at.map_or(Arg::Text(""), |t| Arg::Int(t.as_micros())),
            ],
        });
        let pairs: Vec<_> = entries.iter().map(|e| (e.rule, e.key)).collect();
        let reply = self
            .run_script("adjustment", &pairs, request.now, "2", tails)
            .await?;
        each_decision(&reply, entries.iter().map(|e| e.rule), 0)
    }
}

/// One decision per rule from a reply of the script's per-rule form:
/// a flag, then allowed, remaining, reset_after µs and retry_after µs of
/// each rule, then `trailing` more values.
fn each_decision<'a>(
    reply: &Value,
    rules: impl ExactSizeIterator<Item = &'a Rule>,
    trailing: usize,
) -> Result<Vec<Decision>> {
    let Value::Array(items) = reply else {
        return Err(unexpected("decision", reply));
    };
    if items.len() != 1 + 4 * rules.len() + trailing {
        return Err(unexpected("decision", reply));
    }
    let count = |i: usize| {
        int(items.get(i))
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| unexpected("decision", reply))
    };
    let us = |i: usize| count(i).map(Duration::from_micros);
    rules
        .enumerate()
        .map(|(i, rule)| {
            let at = 1 + 4 * i;
            match int(items.get(at)) {
                Some(1) => Ok(Decision::allow_by(rule, count(at + 1)?, us(at + 2)?)),
                Some(0) => Ok(Decision::deny_by(
                    rule,
                    count(at + 1)?,
                    us(at + 2)?,
                    us(at + 3)?,
                )),
                _ => Err(unexpected("decision", reply)),
            }
        })
        .collect()
}

impl RedisStorage {
    /// Runs the decision script: one decision per entry if `each`, else
    /// the combined one. A reply that reports corrupt state is that error.
    async fn run_decision(&self, request: &DecideRequest<'_>, each: bool) -> Result<Value> {
        let entries = request.entries;
        if entries.is_empty() {
            return Err(invalid("a decision needs at least one rule".to_owned()));
        }
        for entry in entries {
            kit::check_cost(entry.rule, entry.cost)?;
        }
        let pairs: Vec<_> = entries.iter().map(|e| (e.rule, e.key)).collect();
        let tails = entries.iter().map(|e| [Arg::Int(e.cost)]);
        let mode = if each { "1" } else { "0" };
        self.run_script("decision", &pairs, request.now, mode, tails)
            .await
    }

    /// Runs the script in `mode` over `pairs` (each rule and key), each
    /// rule's arguments followed by its `tails`. A reply that reports
    /// corrupt state is that error.
    async fn run_script<'a, T: IntoIterator<Item = Arg<'a>>>(
        &self,
        what: &'static str,
        pairs: &[(&Rule, &str)],
        now: Timestamp,
        mode: &'static str,
        tails: impl Iterator<Item = T>,
    ) -> Result<Value> {
        let keys: Vec<String> = pairs
            .iter()
            .map(|(rule, key)| tagged(&self.prefix, rule.name(), key))
            .collect();
        self.check_one_slot(&*self.backend()?, &keys)?;
        // A rule on a calendar gets the window boundaries around this
        // process's time (no time zone database in Lua); the script picks
        // the window its own time falls in among them.
        let window = |rule: &Rule| match rule.calendar_boundaries(now.as_micros()) {
            Some(bounds) => Arg::Owned(bounds.map(|b| b.to_string()).join(",")),
            None => Arg::Int(rule.quota().window_micros()),
        };
        let (now, pad) = match self.inner.config.time_source {
            TimeSource::Server => (None, 0),
            TimeSource::Client { skew_allowance } => (
                Some(now.as_micros()),
                u64::try_from(skew_allowance.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX),
            ),
        };
        let mut args = Vec::with_capacity(3 + pairs.len() * 9);
        args.push(now.map_or(Arg::Text(""), Arg::Int));
        args.push(Arg::Text(mode));
        args.push(Arg::Int(pad));
        for ((rule, _), tail) in pairs.iter().zip(tails) {
            let quota = rule.quota();
            args.extend([
                Arg::Int(u64::from(rule.algorithm().state_tag())),
                Arg::Int(quota.limit()),
                window(rule),
                Arg::Int(quota.burst()),
                Arg::Int(quota.emission_interval_us()),
                Arg::Int(rule.penalty().map_or(0, micros)),
            ]);
            args.extend(tail);
        }
        let engine = SCRIPTS.decision(pairs.iter().map(|(rule, _)| rule.algorithm()));
        let reply = self.run_engine(what, engine, &keys, &args).await?;
        let Value::Array(items) = &reply else {
            return Err(unexpected(what, &reply));
        };
        if int(items.first()) != Some(-1) {
            return Ok(reply);
        }
        let (rule, key) = int(items.get(1))
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| pairs.get(i))
            .ok_or_else(|| unexpected(what, &reply))?;
        let why = match items.get(2) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        Err(Error::new(
            ErrorKind::CorruptState,
            format!(
                "the value at {:?} is not rate-limit state",
                kit::state_key(rule, key)
            ),
        )
        .with_source(format!("stored rate-limit state is corrupt: {why}")))
    }
}
