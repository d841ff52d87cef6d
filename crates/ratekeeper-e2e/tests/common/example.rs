//! The facade's examples as operators run them: built as programs, started
//! as processes on a free port, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running example; killed when dropped.
pub(crate) struct Example {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The line it printed once listening.
    #[allow(dead_code, reason = "read by some of the tests that share this module")]
    pub(crate) banner: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Example {
    /// Builds example `name` and starts it with `args` and
    /// `--listen 127.0.0.1:0`; returns once it prints where it listens.
    pub(crate) fn start(name: &str, args: &[&str]) -> Self {
        let program = build(name);
        let mut child = Command::new(&program)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Whatever it prints later (Rocket announces its launch) is read and
        // dropped: a closed pipe would make its next print fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("{name} did not start: {line:?}");
        };
        Self {
            child,
            addr,
            banner: line,
        }
    }

    /// The process id (for signals).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Builds example `name` as a program and returns its path. `cargo test
/// --all-targets` compiles examples only as test harnesses, so the program
/// an operator runs is built here, with the workspace-wide feature set the
/// test run itself uses (its dependencies are then already built).
fn build(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--all-features",
            "--example",
            name,
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --example {name} failed");
    // CARGO_TARGET_TMPDIR is <target>/tmp; cargo puts examples next to it.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    target.parent().unwrap().join("debug/examples").join(name)
}
