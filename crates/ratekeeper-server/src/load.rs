//! Reading the configuration (this project's format and envoyproxy/ratelimit's
//! limits files), the flags over it, and watching its files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ratekeeper::config::domains::{DomainConfig, Domains, is_envoy_yaml};
use ratekeeper::config::{Config, Loader, ServerConfig};
use ratekeeper::layer::Breaker;

use crate::App;
use crate::service::Limits;

/// What the flags set over the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    pub(crate) storage: Option<String>,
    pub(crate) grpc: Option<String>,
    pub(crate) http: Option<String>,
    pub(crate) admin: Option<String>,
    pub(crate) admin_token: Option<String>,
    pub(crate) lease_secret: Option<String>,
    pub(crate) json_logs: bool,
}

/// Where the configuration comes from: the paths given, and the flags.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    paths: Vec<PathBuf>,
    flags: Flags,
}

/// A configuration read whole.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    pub(crate) storage_url: String,
}

/// How long the server waits for its store by default, and when a
/// failing store is left alone for a while.
pub(crate) const DEFAULT_STORE_DEADLINE: Duration = Duration::from_secs(1);
const DEFAULT_BREAKER: (u32, Duration) = (5, Duration::from_secs(1));

impl Sources {
    pub(crate) fn new(paths: Vec<PathBuf>, flags: Flags) -> Self {
        Self { paths, flags }
    }

    /// The files the paths name: a directory stands for its `.yaml` and
    /// `.yml` files, in name order.
    fn files(&self) -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_yaml(p) && p.is_file())
                    .collect();
                // A directory that lost its files (mid-rename, an unmounted
                // volume) is a mistake, not "no limits".
                if inside.is_empty() {
                    return Err(format!("{}: no .yaml or .yml files", path.display()));
                }
                inside.sort();
                files.extend(inside);
            } else {
                files.push(path.clone());
            }
        }
        Ok(files)
    }

    /// Reads every file, checks the whole, applies the flags. Every problem
    /// at once.
    pub(crate) fn load(&self) -> Result<Loaded, String> {
        let mut own: Option<(PathBuf, Config)> = None;
        let mut envoy = Vec::new();
        let mut problems = Vec::new();
        for file in self.files()? {
            let shown = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{shown}: {e}"));
                    continue;
                }
            };
            if is_yaml(&file) && is_envoy_yaml(&text) {
                match DomainConfig::from_envoy_yaml(&text, &shown) {
                    Ok(d) => envoy.push(d),
                    Err(e) => problems.push(e.to_string()),
                }
                continue;
            }
            if let Some((first, _)) = &own {
                problems.push(format!(
                    "{shown}: a second configuration of this project's format (the first is {}); \
                     give one, and any number of envoyproxy/ratelimit files",
                    first.display()
                ));
                continue;
            }
            match Loader::file(&file).stores(ratekeeper::STORES).load() {
                Ok(c) => own = Some((file, c)),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut config = own.map(|(_, c)| c).unwrap_or_default();
        config.domains.extend(envoy);
        if let Some(url) = &self.flags.storage {
            config.storage.url = url.clone();
        }
        if config.storage.url.trim().is_empty() {
            config.storage.url = "memory://".to_owned();
        }
        if config.storage.timeout.is_none() {
            config.storage.timeout = Some(DEFAULT_STORE_DEADLINE);
        }
        if config.storage.breaker.is_none() {
            config.storage.breaker = Some(Breaker::new(DEFAULT_BREAKER.0, DEFAULT_BREAKER.1));
        }
        if config.storage.approximate.is_some() {
            problems.push(
                "[storage.approximate]: the server decides every descriptor exactly (one \
                 decision per descriptor); approximate mode does not apply to it, remove it"
                    .to_owned(),
            );
        }
        let domains = Domains::compile(&config.domains, config.defaults.algorithm);
        let rules = config.built_rules();
        let mut server = config.server.clone();
        if let Err(e) = apply_flags(&self.flags, &mut server) {
            problems.push(e);
        }
        let (domains, rules) = match (domains, rules) {
            (Ok(d), Ok(r)) if problems.is_empty() => (d, r),
            (d, r) => {
                for e in [d.err(), r.err()].into_iter().flatten() {
                    problems.push(e.to_string());
                }
                return Err(problems.join("\n"));
            }
        };
        let storage_url = config.storage.full_url();
        // Checked by the configuration's reader: every entry parses.
        let nets = |list: &[String]| -> Vec<ipnet::IpNet> {
            list.iter()
                .filter_map(|n| ratekeeper::http::parse_net(n).ok())
                .collect()
        };
        Ok(Loaded {
            limits: Limits {
                domains,
                allow: nets(&config.lists.allow),
                deny: nets(&config.lists.deny),
                rules,
                server,
            },
            config,
            storage_url,
        })
    }

    /// Whether a change at `path` may change the configuration.
    fn relevant(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Kubernetes swaps a mounted directory through `..data`.
        name.starts_with("..")
            || self.paths.iter().any(|p| {
                if p.is_dir() {
                    path.parent() == Some(p.as_path()) && is_yaml(path)
                } else {
                    p.file_name() == path.file_name()
                }
            })
    }

    /// The directories to watch: each directory given, and the directory of
    /// each file (editors replace files; watching the file alone would lose
    /// it).
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .paths
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    match p.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                        _ => PathBuf::from("."),
                    }
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Applies the flags that override `[server]`.
fn apply_flags(flags: &Flags, server: &mut ServerConfig) -> Result<(), String> {
    let address = |flag: &str, text: &str| -> Result<Option<SocketAddr>, String> {
        if text == "off" {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("--{flag} {text:?} is not host:port with an IP address, or off"))
    };
    if let Some(a) = &flags.grpc {
        server.grpc = address("grpc", a)?;
    }
    if let Some(a) = &flags.http {
        server.http = address("http", a)?;
    }
    if let Some(a) = &flags.admin {
        server.admin = address("admin", a)?;
    }
    if let Some(t) = &flags.admin_token {
        if t.trim().is_empty() {
            return Err("the admin token is empty (leave it out, or set a secret)".to_owned());
        }
        server.admin_token = Some(t.clone());
    }
    if let Some(s) = &flags.lease_secret {
        if let Some(problem) = ratekeeper::config::lease_secret_problem(s) {
            return Err(format!("the lease secret is {problem}"));
        }
        server.lease_secret = Some(s.clone());
    }
    if flags.json_logs {
        server.json_logs = true;
    }
    if let Some(admin) = server.admin
        && !admin.ip().is_loopback()
        && server.admin_token.is_none()
    {
        return Err(format!(
            "the admin API on {admin} (not a loopback address) needs a token: set \
             RATEKEEPER_ADMIN_TOKEN or [server] admin_token"
        ));
    }
    Ok(())
}

/// Reloads when a configuration file changes. The watcher stops when the
/// returned value is dropped.
pub(crate) fn watch(app: Arc<App>) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let sources = app.sources.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
            && event.paths.iter().any(|p| sources.relevant(p))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| e.to_string())?;
    for dir in app.sources.directories() {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // An editor's save is several events: wait for them to settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let _ = app.reload().await;
        }
    });
    Ok(watcher)
}
