//! Real `redis-server` processes on free loopback ports, for tests: a
//! standalone server, a Redis Cluster, a Sentinel group, and a TLS server
//! with certificates made on the spot.
//!
//! Every server runs in its own directory under the system's temporary
//! directory, logs there, persists nothing, and is killed when its value is
//! dropped. A watchdog process kills it too if the test process dies first,
//! so shared servers kept in statics never outlive the test run.
//!
//! Tests that need Redis never skip: if `redis-server` is not installed,
//! [`redis_server`] panics with the command that installs it (`cargo xtask
//! test` installs it by itself).
//!
//! ```text
//! let server = RedisServer::start();
//! let store = RedisStorage::connect(&server.url()).await?;
//! ```
//!
//! One file on purpose: the four topologies share the process handling (free
//! ports, readiness, cleanup on drop), which reads best beside them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to start, a cluster to agree, a failover to finish.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `redis-server` binary. Panics, with the command that installs it, if
/// it is missing.
pub fn redis_server() -> PathBuf {
    find("redis-server")
}

fn find(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&dirs)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
    {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{name} is not installed, and the Redis tests need it. Install it with \
         `sudo apt-get install -y redis-server` (Debian/Ubuntu), or run `cargo xtask test`, \
         which installs it when it can."
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; servers retry if it was taken).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn scratch_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join("ratekeeper-redis-tests");
    // Directories of runs whose process is gone are left-overs.
    if NEXT.load(Ordering::Relaxed) == 0
        && let Ok(entries) = std::fs::read_dir(&base)
    {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_string_lossy()
                .split('-')
                .next()
                .unwrap_or_default()
                .to_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("{}-{kind}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory for redis-server");
    dir
}

/// A reply in the Redis protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$…` (`None`: the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*…` (`None`: the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status, bulk or integer); panics on anything else.
    pub fn text(&self) -> String {
        match self {
            Self::Status(s) => s.clone(),
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Self::Int(n) => n.to_string(),
            other => panic!("expected a text reply, got {other:?}"),
        }
    }
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_owned()))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => {
            let n = number()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                reader.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = number()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(reader)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a Redis reply: {line:?}"),
            ));
        }
    })
}

/// Sends one command to `127.0.0.1:port` on a fresh plain-TCP connection.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `redis-server` process (a server or a Sentinel).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    sentinel: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra configuration lines (`"maxmemory 10mb"`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch("server", extra, false)
    }

    fn launch(kind: &str, extra: &[&str], sentinel: bool) -> Self {
        let mut last_log = String::new();
        // A free port can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = scratch_dir(kind);
            let config = dir.join("redis.conf");
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile {log}\n\
                 daemonize no\nsave \"\"\nappendonly no\nrepl-diskless-sync-delay 0\n",
                dir = dir.display(),
                log = dir.join("redis.log").display(),
            );
            for line in extra {
                // `{free}` stands for another free port (a Cluster bus port).
                text.push_str(&line.replace("{free}", &free_port().to_string()));
                text.push('\n');
            }
            std::fs::write(&config, text).expect("write redis.conf");
            let mut server = Self {
                port,
                dir,
                config,
                sentinel,
                child: None,
            };
            if server.spawn() {
                return server;
            }
            last_log = server.log();
        }
        panic!("redis-server did not start; its last log:\n{last_log}");
    }

    /// Starts the process on this server's port and configuration; `false`
    /// if it exited instead of answering.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(redis_server());
        cmd.arg(&self.config);
        if self.sentinel {
            cmd.arg("--sentinel");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        watchdog(child.id());
        let start = Instant::now();
        loop {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if matches!(command(self.port, &["PING"]), Ok(Reply::Status(s)) if s == "PONG") {
                self.child = Some(child);
                return true;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's directory (configuration, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Sends a command; panics if the server cannot be reached.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        command(self.port, args)
            .unwrap_or_else(|e| panic!("redis-server on port {} did not answer: {e}", self.port))
    }

    /// How many scripts and functions (`EVAL`, `EVALSHA`, `FCALL`) the
    /// server has run so far, from `INFO commandstats`.
    pub fn script_calls(&self) -> u64 {
        self.script_totals().0
    }

    /// How many scripts and functions (`EVAL`, `EVALSHA`, `FCALL`) the
    /// server has run so far, and the microseconds it spent in them, from
    /// `INFO commandstats`.
    pub fn script_totals(&self) -> (u64, u64) {
        let field = |line: &str, name: &str| {
            line.split(name)
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.cmd(&["INFO", "commandstats"])
            .text()
            .lines()
            .filter(|l| {
                ["cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_fcall:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .fold((0, 0), |(calls, usec), l| {
                (calls + field(l, "calls="), usec + field(l, "usec="))
            })
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing is
    /// answered, as with a server stalled by the machine or a long fork.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) process run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Kills the process (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        while !self.spawn() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server did not restart on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills `pid` when this test process is gone, so a server kept in a static
/// (never dropped) does not outlive the run.
fn watchdog(pid: u32) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -9 {pid} 2>/dev/null",
        parent = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> Option<String> {
    let text = command(server.port, &["INFO", section]).ok()?.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// A Redis Cluster on loopback: `masters` masters, each with `replicas`
/// replicas, made with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let count = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::launch(
                    "cluster",
                    &[
                        "cluster-enabled yes",
                        "cluster-config-file nodes.conf",
                        "cluster-node-timeout 1000",
                        "cluster-port {free}",
                    ],
                    false,
                )
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new(find("redis-cli"))
            .args(&args)
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, masters };
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every running node sees the cluster as ok, with every
    /// slot served, and every replica is in sync with its master (a replica
    /// that never synced cannot take over).
    pub fn wait_healthy(&self) {
        for node in &self.nodes {
            wait_until("the cluster to be ok", || {
                let Ok(reply) = command(node.port, &["CLUSTER", "INFO"]) else {
                    return false;
                };
                let text = reply.text();
                text.contains("cluster_state:ok") && text.contains("cluster_slots_ok:16384")
            });
            wait_until("the replicas to sync", || {
                info_field(node, "replication", "role").as_deref() != Some("slave")
                    || info_field(node, "replication", "master_link_status").as_deref()
                        == Some("up")
            });
        }
    }

    /// The nodes (masters first, as created; roles change after failovers).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// How many masters the cluster was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` (every node).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A Sentinel group on loopback: a master, one replica, three Sentinels
/// watching them under the name `mymaster` (quorum 2).
#[derive(Debug)]
pub struct RedisSentinel {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
}

/// The name the Sentinels know the group by.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";

impl RedisSentinel {
    /// Starts the master, the replica and the Sentinels, and waits until the
    /// replica is in sync and every Sentinel knows the replica and the other
    /// Sentinels (so a failover can be authorised).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(&[&format!("replicaof 127.0.0.1 {}", master.port)]);
        wait_until("the replica to sync", || {
            info_field(&replica, "replication", "master_link_status").as_deref() == Some("up")
        });
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::launch(
                    "sentinel",
                    &[
                        &format!(
                            "sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {} 2",
                            master.port
                        ),
                        &format!("sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000"),
                        &format!("sentinel failover-timeout {SENTINEL_MASTER_NAME} 10000"),
                        &format!("sentinel parallel-syncs {SENTINEL_MASTER_NAME} 1"),
                    ],
                    true,
                )
            })
            .collect();
        let group = Self {
            master,
            replica,
            sentinels,
        };
        group.wait_ready();
        group
    }

    fn wait_ready(&self) {
        for sentinel in &self.sentinels {
            wait_until("the Sentinels to know each other and the replica", || {
                let replicas = command(
                    sentinel.port,
                    &["SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME],
                );
                let known_replica =
                    matches!(replicas, Ok(Reply::Array(Some(ref r))) if !r.is_empty());
                let quorum = matches!(
                    command(sentinel.port, &["SENTINEL", "CKQUORUM", SENTINEL_MASTER_NAME]),
                    Ok(Reply::Status(ref s)) if s.contains("3 usable")
                );
                known_replica && quorum
            });
        }
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://{}/{SENTINEL_MASTER_NAME}",
            hosts.join(",")
        )
    }

    /// The port of the master as the Sentinels name it now.
    pub fn master_port(&self) -> u16 {
        let reply =
            self.sentinels[0].cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME]);
        match reply {
            Reply::Array(Some(items)) if items.len() == 2 => {
                items[1].text().parse().expect("a port")
            }
            other => panic!("no master address from the Sentinel: {other:?}"),
        }
    }

    /// The two data servers (the first started as master).
    pub fn servers(&self) -> [&RedisServer; 2] {
        [&self.master, &self.replica]
    }

    /// Forces a failover (`SENTINEL FAILOVER`) and waits until every Sentinel
    /// names the new master, the new master accepts writes, and the old one
    /// replicates from it. Returns the new master's port.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let reply = self.sentinels[0].cmd(&["SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME]);
        assert!(
            matches!(reply, Reply::Status(_)),
            "SENTINEL FAILOVER: {reply:?}"
        );
        for sentinel in &self.sentinels {
            wait_until("the Sentinels to name the new master", || {
                matches!(
                    command(sentinel.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME]),
                    Ok(Reply::Array(Some(ref items))) if items.len() == 2 && items[1].text() != old.to_string()
                )
            });
        }
        let new = self.master_port();
        let [a, b] = self.servers();
        let (promoted, demoted) = if a.port == new { (a, b) } else { (b, a) };
        wait_until("the new master to take writes", || {
            info_field(promoted, "replication", "role").as_deref() == Some("master")
        });
        wait_until("the old master to follow the new one", || {
            info_field(demoted, "replication", "role").as_deref() == Some("slave")
        });
        new
    }
}

/// A server that speaks TLS on one port (and plain TCP on another, for the
/// test's own commands), with a CA and certificates made for it.
#[derive(Debug)]
pub struct RedisTls {
    server: RedisServer,
    certificates: PathBuf,
    tls_port: u16,
    ca_pem: String,
    client: Option<(String, String)>,
}

impl RedisTls {
    /// Starts the server. With `require_client_certificate`, it refuses
    /// clients without a certificate from the CA, and [`client_certificate`](Self::client_certificate)
    /// holds one.
    pub fn start(require_client_certificate: bool) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ratelimit test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let sign = |names: Vec<String>| {
            let key = KeyPair::generate().expect("a key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = sign(vec!["localhost".into(), "127.0.0.1".into()]);
        let client = require_client_certificate.then(|| sign(vec!["client".into()]));

        let dir = scratch_dir("tls-certs");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a certificate");
            path.display().to_string()
        };
        let ca_file = write("ca.pem", &ca_cert.pem());
        let cert_file = write("server.pem", &server_cert);
        let key_file = write("server.key", &server_key);
        let tls_port = free_port();
        let server = RedisServer::start_with(&[
            &format!("tls-port {tls_port}"),
            &format!("tls-cert-file {cert_file}"),
            &format!("tls-key-file {key_file}"),
            &format!("tls-ca-cert-file {ca_file}"),
            if require_client_certificate {
                "tls-auth-clients yes"
            } else {
                "tls-auth-clients no"
            },
        ]);
        Self {
            server,
            certificates: dir,
            tls_port,
            ca_pem: ca_cert.pem(),
            client,
        }
    }

    /// `rediss://localhost:TLS_PORT`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }

    /// The TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate and key (PEM) the server accepts, when it
    /// requires one.
    pub fn client_certificate(&self) -> Option<(&str, &str)> {
        self.client.as_ref().map(|(c, k)| (c.as_str(), k.as_str()))
    }

    /// The server (its plain port serves the test's own commands).
    pub fn server(&self) -> &RedisServer {
        &self.server
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certificates);
    }
}
