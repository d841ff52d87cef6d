//! The `ratekeeper` binary, run as an operator runs it, against real stores:
//! memory, a SQLite file and a real redis-server. The application's side
//! (decisions, runtime lists) is played by the library in this process.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ratekeeper::http::RuntimeLists;
use ratekeeper::{Algorithm, Limiter, Quota, Rule, Storage};
use ratekeeper_testkit::redis::RedisServer;

/// Runs `ratekeeper ARGS` with `env` (and no other RATELIMIT__ variables).
fn ratekeeper(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ratekeeper"));
    for (name, _) in std::env::vars() {
        if name.starts_with("RATELIMIT__") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ratekeeper")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ratekeeper-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_config_prints_every_problem_and_fails() {
    let dir = Scratch::new("check");
    let file = dir.file(
        "bad.toml",
        "[rules.api]\nlimit = 0\nwindow = \"1 fortnight\"\n[[routes]]\npath = \"/x\"\nrules = [\"ghost\"]\n[proxies]\ntrusted = [\"10.0.0.0/99\"]\n",
    );
    let o = ratekeeper(&["check-config", &file], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "invalid configuration (4 problems):\n  \
             {file}: rules.api.limit: 0 is out of range (expected a whole number from 1)\n  \
             {file}: rules.api.window: invalid duration \"1 fortnight\": unknown unit (expected e.g. \"500ms\", \"30s\", \"1m\", \"1h\", \"1d\" or \"1h30m\")\n  \
             {file}: routes[0].rules[0]: no rule named `ghost` (expected one of the rules of [rules]: api)\n  \
             {file}: proxies.trusted[0]: invalid address or CIDR block \"10.0.0.0/99\": expected e.g. 203.0.113.7, 10.0.0.0/8 or fd00::/8\n"
        )
    );
}

/// A limits file of envoyproxy/ratelimit's format is recognised by its
/// top-level `domain` and checked as that format: its limits listed, or
/// every problem with its path.
#[test]
fn check_config_reads_envoy_ratelimit_files() {
    let dir = Scratch::new("envoy");
    let file = dir.file(
        "edge.yaml",
        "domain: edge\n\
         descriptors:\n\
         \x20 - key: remote_address\n\
         \x20   rate_limit: {unit: second, requests_per_unit: 10}\n\
         \x20 - key: remote_address\n\
         \x20   value: 198.51.100.5\n\
         \x20   rate_limit: {unit: second, requests_per_unit: 0}\n\
         \x20 - key: user\n\
         \x20   shadow_mode: true\n\
         \x20   rate_limit: {unit: minute, requests_per_unit: 100}\n",
    );
    let o = ratekeeper(&["check-config", &file], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{file}: ok: envoyproxy/ratelimit format, domain \"edge\", 3 limits\n  \
             limit edge.remote_address: fixed_window, 10 per 1s\n  \
             limit edge.remote_address_198.51.100.5: every request denied\n  \
             limit edge.user: fixed_window, 100 per 1m, shadow mode\n"
        )
    );
    let bad = dir.file(
        "bad.yaml",
        "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 5}\n",
    );
    let o = ratekeeper(&["check-config", &bad], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "{bad}: descriptors[0].rate_limit.unit: unknown unit \"fortnight\""
        )),
        "{}",
        stderr(&o)
    );
}

/// The help lists the store URLs of every store this build opens (from the
/// stores' own registrations), and a configuration naming another store is
/// refused by `check-config` with that list.
#[test]
fn the_help_and_the_check_know_the_stores_of_this_build() {
    let o = ratekeeper(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for url in [
        "memory://",
        "sqlite:///absolute/path/limits.db",
        "redis://host:6379/0",
        "redis+cluster://h1:7000,h2:7001",
        "redis+sentinel://s1:26379/mymaster",
    ] {
        assert!(help.contains(url), "{url} missing from:\n{help}");
    }
    let dir = Scratch::new("stores");
    let file = dir.file(
        "pg.toml",
        "[storage]\nurl = \"postgres://u:pw@db/limits\"\n",
    );
    let o = ratekeeper(&["check-config", &file], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{file}: storage.url: unsupported store URL scheme \"postgres\" (this build opens memory://"
        )) && err.contains("redis+sentinel://s1:26379/mymaster)")
            && !err.contains("pw@"),
        "{err}"
    );
}

#[test]
fn environment_overrides_beat_the_file_and_are_named_in_errors() {
    let dir = Scratch::new("env");
    let file = dir.file(
        "limits.toml",
        "[storage]\nurl = \"memory://\"\n[rules.api]\nlimit = 5\nwindow = \"1m\"\n",
    );
    let o = ratekeeper(&["check-config", &file], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().take(2).collect::<Vec<_>>(),
        [
            format!("{file}: ok: store memory://, 1 rules, 0 routes, 0 tiers").as_str(),
            "  rule api: sliding_window_counter, 5 per 1m",
        ]
    );
    let env = [
        ("RATELIMIT__RULES__API__LIMIT", "7"),
        ("RATELIMIT__RULES__API__ALGORITHM", "gcra"),
        ("RATELIMIT__STORAGE__URL", "sqlite::memory:"),
    ];
    let o = ratekeeper(&["check-config", &file], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().take(2).collect::<Vec<_>>(),
        [
            format!("{file}: ok: store sqlite::memory:, 1 rules, 0 routes, 0 tiers").as_str(),
            "  rule api: gcra, 7 per 1m, burst 7 (from environment variable RATELIMIT__RULES__API__LIMIT, environment variable RATELIMIT__RULES__API__ALGORITHM)",
        ]
    );
    // --no-env: the file alone.
    let o = ratekeeper(&["check-config", "--no-env", &file], &env);
    assert!(stdout(&o).contains("rule api: sliding_window_counter, 5 per 1m\n"));
    // A bad override is reported against the variable, not the file.
    let o = ratekeeper(
        &["check-config", &file],
        &[("RATELIMIT__RULES__API__WINDOW", "soon")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "invalid configuration: environment variable RATELIMIT__RULES__API__WINDOW: rules.api.window: \
         invalid duration \"soon\": each part must start with a whole number (expected e.g. \"500ms\", \"30s\", \"1m\", \"1h\", \"1d\" or \"1h30m\")\n"
    );
}

#[test]
fn usage_errors_say_what_is_missing() {
    let o = ratekeeper(&["inspect", "ip:1.2.3.4"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: which store? give --storage URL or --config FILE\n"
    );
    let o = ratekeeper(&["deny", "add"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<NET>"), "{}", stderr(&o));
    let o = ratekeeper(
        &["test-rule", "--limit", "5", "--window", "eventually"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid duration \"eventually\""),
        "{}",
        stderr(&o)
    );
    let o = ratekeeper(&["stats", "--storage", "ftp://x"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: cannot open the store: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn test_rule_simulates_time_on_the_memory_store() {
    let o = ratekeeper(
        &[
            "test-rule",
            "--algorithm",
            "fixed_window",
            "--limit",
            "3",
            "--window",
            "1s",
            "-n",
            "8",
            "--interval",
            "250ms",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let verdicts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            if l.contains("allowed") {
                "allowed"
            } else {
                "denied"
            }
        })
        .collect();
    // The fixed window is aligned to the second: 3 of the 4 requests in each
    // second pass, whatever the wall clock says (the time is simulated).
    assert_eq!(
        verdicts,
        [
            "allowed", "allowed", "allowed", "denied", "allowed", "allowed", "allowed", "denied"
        ]
    );
    assert!(out.ends_with("6 of 8 allowed\n"), "{out}");
    assert!(
        out.starts_with("rule test: fixed_window, 3 per 1s\n"),
        "{out}"
    );
    let o = ratekeeper(&["stats", "--storage", "memory://"], &[]);
    assert!(
        stdout(&o).starts_with("store: memory\nkeys: 0\n"),
        "{}",
        stdout(&o)
    );
}

/// A concurrency rule: each admitted request holds its place `--hold`
/// long; without it, to the end of the run.
#[test]
fn test_rule_holds_places_of_a_concurrency_rule() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "test-rule",
            "--algorithm",
            "concurrency",
            "--limit",
            "2",
            "--window",
            "1m",
            "-n",
            "6",
            "--interval",
            "100ms",
        ];
        args.extend_from_slice(extra);
        let o = ratekeeper(&args, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let verdicts: String = out
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| if l.contains("allowed") { 'A' } else { 'D' })
            .collect();
        (verdicts, out)
    };
    // Held 250 ms: two run at once, and a place comes back every 100 ms
    // once the first are done.
    let (held, out) = run(&["--hold", "250ms"]);
    assert_eq!(held, "AADAAD", "{out}");
    assert!(out.contains("retry in"), "{out}");
    // Never released within the run: two places, then nothing.
    let (kept, _) = run(&[]);
    assert_eq!(kept, "AADDDD");
}

/// Waiting for a place: 2 places, each held 300 ms, a request every 50 ms
/// waiting up to 150 ms (one after another: one that waits delays the next).
#[test]
fn test_rule_shows_requests_waiting_for_a_place() {
    let o = ratekeeper(
        &[
            "test-rule",
            "--algorithm",
            "concurrency",
            "--limit",
            "2",
            "--window",
            "1m",
            "--hold",
            "300ms",
            "--interval",
            "50ms",
            "-n",
            "6",
            "--wait",
            "150ms",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    // The third comes when the first place is released 200 ms later: past
    // its wait. The fourth waits 150 ms for it; the sixth comes while both
    // places are held 200 ms more at least.
    let expected = [
        ("#1    t=0s ", "allowed"),
        ("#2    t=50ms ", "allowed"),
        ("#3    t=100ms ", "denied"),
        (
            "#4    t=300ms ",
            "allowed, 0 of 2 left, full again in 1m after waiting 150ms for a place",
        ),
        ("#5    t=350ms ", "allowed"),
        ("#6    t=400ms ", "denied"),
    ];
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (line, (start, decision)) in lines.iter().zip(expected) {
        assert!(line.starts_with(start) && line.contains(decision), "{out}");
    }
    assert!(out.ends_with("4 of 6 allowed\n"), "{out}");
}

/// Waiting in line: with 10/s (a burst of 10), waiting up to 300 ms, 13
/// requests at once: 10 at once, 3 after their turns, the rest denied; a
/// token bucket cannot wait (a clear error).
#[test]
fn test_rule_shows_requests_waiting_in_line() {
    let mut args = vec![
        "test-rule",
        "--algorithm",
        "gcra",
        "--limit",
        "10",
        "--window",
        "1s",
        "-n",
        "15",
        "--wait",
        "300ms",
    ];
    let o = ratekeeper(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("rule test: gcra, 10 per 1s, burst 10, waits up to 300ms\n"),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        lines[..10]
            .iter()
            .all(|l| l.contains("allowed") && !l.contains("waiting")),
        "{out}"
    );
    for (line, waited) in lines[10..13].iter().zip(["100ms", "200ms", "300ms"]) {
        assert!(
            line.ends_with(&format!("after waiting {waited} in line")),
            "{out}"
        );
    }
    assert!(
        lines[13..]
            .iter()
            .all(|l| l.contains("denied, retry in 100ms")),
        "{out}"
    );
    assert!(out.ends_with("13 of 15 allowed\n"), "{out}");
    args.extend(["--waiters", "1"]);
    let out = stdout(&ratekeeper(&args, &[]));
    assert!(out.ends_with("11 of 15 allowed\n"), "{out}");
    let o = ratekeeper(
        &[
            "test-rule",
            "--algorithm",
            "token_bucket",
            "--limit",
            "10",
            "--window",
            "1s",
            "--wait",
            "1s",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("token_bucket cannot make requests wait in line"),
        "{}",
        stderr(&o)
    );
}

/// Everything an operator does on a shared store, checked against what the
/// application (this process) sees in the same store.
async fn operate(url: &str, app_store: Arc<dyn Storage>) {
    let limiter = Limiter::new(app_store.clone());
    let rule = Rule::new(
        "api",
        Algorithm::SlidingWindowLog,
        Quota::new(5, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap();
    for _ in 0..2 {
        assert!(
            limiter
                .check(&rule, "ip:198.51.100.7")
                .await
                .unwrap()
                .is_allowed()
        );
    }
    let dir = Scratch::new(&format!("op-{}", url.len()));
    let config = dir.file(
        "limits.toml",
        &format!("[storage]\nurl = \"{url}\"\n[rules.api]\nalgorithm = \"sliding_window_log\"\nlimit = 5\nwindow = \"1h\"\n[rules.other]\nlimit = 1\nwindow = \"1s\"\n"),
    );
    let flags = [
        "--storage",
        url,
        "--rule",
        "api",
        "--algorithm",
        "sliding_window_log",
        "--limit",
        "5",
        "--window",
        "1h",
    ];
    let run = |args: &[&str]| {
        let o = ratekeeper(args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };

    // Inspect twice: it shows the state and consumes nothing.
    for _ in 0..2 {
        let out = run(&[&["inspect"][..], &flags, &["ip:198.51.100.7"]].concat());
        assert!(out.starts_with("rule api: sliding_window_log, 5 per 1h\nkey ip:198.51.100.7 (stored as api:ip:198.51.100.7)\nstate: RuleState"), "{out}");
        assert!(out.contains("now: allowed, 3 of 5 left"), "{out}");
    }
    // The same through the configuration file.
    let out = run(&[
        "inspect",
        "--config",
        &config,
        "--rule",
        "api",
        "ip:198.51.100.7",
    ]);
    assert!(out.contains("now: allowed, 3 of 5 left"), "{out}");
    assert!(
        limiter
            .check(&rule, "ip:198.51.100.7")
            .await
            .unwrap()
            .remaining()
            == 2
    );

    let out = run(&["stats", "--storage", url]);
    assert!(out.contains("keys: 1\n"), "{out}");

    // Reset every rule of the file for the key.
    let out = run(&["reset", "--config", &config, "ip:198.51.100.7"]);
    assert_eq!(
        out,
        "reset ip:198.51.100.7 for rule api: its state was removed\nreset ip:198.51.100.7 for rule other: nothing was stored\n"
    );
    assert_eq!(
        limiter
            .peek(&rule, "ip:198.51.100.7")
            .await
            .unwrap()
            .remaining(),
        5
    );
    let out = run(&[&["inspect"][..], &flags, &["ip:198.51.100.7"]].concat());
    assert!(
        out.contains("state: none (never seen, expired or reset)\nnow: allowed, 5 of 5 left"),
        "{out}"
    );

    // The runtime deny list: added here, seen by the application.
    assert_eq!(
        run(&[
            "deny",
            "add",
            "203.0.113.0/24",
            "--ttl",
            "1h",
            "--storage",
            url
        ]),
        "added 203.0.113.0/24 to the deny list for 1h\n"
    );
    assert_eq!(
        run(&["allow", "add", "192.0.2.1", "--storage", url]),
        "added 192.0.2.1 to the allow list\n"
    );
    let out = run(&["deny", "list", "--storage", url]);
    assert!(out.starts_with("203.0.113.0/24  (expires in 59m5"), "{out}");
    assert_eq!(run(&["allow", "list", "--storage", url]), "192.0.2.1/32\n");
    let lists = RuntimeLists::load(app_store.clone()).await.unwrap();
    assert!(lists.is_denied("203.0.113.9".parse().unwrap()));
    assert!(lists.is_allowed("192.0.2.1".parse().unwrap()));
    assert_eq!(
        run(&["deny", "remove", "203.0.113.0/24", "--storage", url]),
        "removed 203.0.113.0/24 from the deny list\n"
    );
    let o = ratekeeper(&["deny", "remove", "203.0.113.0/24", "--storage", url], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: 203.0.113.0/24 is not on the deny list\n"
    );
    lists.refresh().await.unwrap();
    assert!(!lists.is_denied("203.0.113.9".parse().unwrap()));
    assert_eq!(
        run(&["deny", "list", "--storage", url]),
        "the deny list is empty\n"
    );

    // test-rule in real time against the store leaves nothing behind.
    let out = run(&[
        "test-rule",
        "--limit",
        "2",
        "--window",
        "1h",
        "-n",
        "3",
        "--storage",
        url,
    ]);
    assert!(out.ends_with("2 of 3 allowed\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operates_a_sqlite_store() {
    let dir = Scratch::new("sqlite");
    let url = format!("sqlite://{}", dir.0.join("limits.db").display());
    let store = ratekeeper::from_url(&url).unwrap();
    operate(&url, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operates_a_redis_store() {
    let server = RedisServer::start();
    let url = server.url();
    let store: Arc<dyn Storage> = Arc::new(
        ratekeeper::redis::RedisStorage::connect(&url)
            .await
            .unwrap(),
    );
    operate(&url, store).await;
    // Nothing left but the two lists' keys: reset and test-rule removed theirs.
    assert_eq!(server.cmd(&["DBSIZE"]).text(), "2");
}
