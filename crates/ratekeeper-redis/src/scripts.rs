//! The Lua scripts, composed from `scripts/*.lua` at compile time.
//!
//! A decision script is the shared prelude (number helpers, the state codec),
//! one algorithm's step, and the engine (`decide.lua`). Requests whose rules
//! all use one algorithm run that algorithm's script; a request mixing
//! algorithms runs the script holding all seven. Either way, all rules of a
//! request are decided by one call.
//!
//! The same engine, with every step, is also a function library (Redis 7
//! and later: `FUNCTION LOAD`, `FCALL`), with one function per decision
//! script. A script call makes every helper and step again (Lua allocates
//! each function and table as it runs the chunk: a few microseconds of the
//! server's time per call); a library makes them once, when it is loaded.
//! The store calls the functions where the server has them and falls back
//! to the scripts where it cannot (an older server, a user whose ACL allows
//! no functions).

use std::sync::LazyLock;

use ratekeeper_core::Algorithm;

/// One script: its source and its SHA-1 (what `EVALSHA` names it by).
#[derive(Debug)]
pub(crate) struct LuaScript {
    pub(crate) code: &'static str,
    pub(crate) sha: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// The engine with the steps of `$algorithm`s, as a chunk that defines
/// `decide` (and, with the sliding log's step, sets `HAS_LOG`).
macro_rules! engine {
    ($($algorithm:literal),+) => {
        concat!(
            include_str!("scripts/prelude.lua"),
            $(include_str!(concat!("scripts/", $algorithm, ".lua")),)+
            include_str!("scripts/decide.lua")
        )
    };
}

/// The engine as a script: it decides `KEYS` with `ARGV`.
macro_rules! decision_script {
    ($($algorithm:literal),+) => {
        concat!(engine!($($algorithm),+), "return decide(KEYS, ARGV, HAS_LOG)\n")
    };
}

/// [`decision_script!`] or [`engine!`] with every step, in tag order.
macro_rules! every_step {
    ($with:ident) => {
        $with!(
            "fixed_window",
            "sliding_window_log",
            "sliding_window_counter",
            "token_bucket",
            "leaky_bucket",
            "gcra",
            "concurrency"
        )
    };
}

/// The engine with every step: the library's.
const ENGINE: &str = every_step!(engine);

/// One decision script and the library function that does what it does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Engine<'a> {
    pub(crate) script: &'a LuaScript,
    pub(crate) function: &'a str,
}

/// The engine as a Redis function library.
#[derive(Debug)]
pub(crate) struct Library {
    /// The `FUNCTION LOAD` source. The library's name is `ratekeeper_` and
    /// the first 16 hex digits of the SHA-1 of its source (with the name
    /// itself left out): each version of the library is a library of its
    /// own, so processes of two versions sharing a server (a rolling
    /// upgrade) never replace each other's functions.
    pub(crate) code: String,
    /// Function names, by algorithm tag − 1, then the mixed one.
    functions: [String; 8],
}

impl Library {
    fn new() -> Self {
        // The name is the hash of everything but itself: the engine and the
        // registrations, with a stand-in for the name.
        const NAME: &str = "@NAME@";
        let mut code = format!("#!lua name={NAME}\n{ENGINE}");
        let mut functions: [String; 8] = Default::default();
        let names = Algorithm::ALL.map(|a| a.as_str()).into_iter();
        for (slot, kind) in functions.iter_mut().zip(names.chain(["mixed"])) {
            *slot = format!("{NAME}_{kind}");
            // The steps whose states can be longer than a first read takes.
            let has_log = matches!(kind, "sliding_window_log" | "concurrency" | "mixed");
            code.push_str(&format!(
                "redis.register_function('{slot}', function(keys, args) \
                 return decide(keys, args, {has_log}) end)\n"
            ));
        }
        let hash = redis::Script::new(&code).get_hash().to_owned();
        let name = format!("ratekeeper_{}", hash.get(..16).unwrap_or(&hash));
        for slot in &mut functions {
            *slot = slot.replace(NAME, &name);
        }
        Self {
            code: code.replace(NAME, &name),
            functions,
        }
    }

    /// The `FUNCTION LOAD` command that loads the library. Without
    /// `REPLACE`: a library of this name is this very code (the name is its
    /// hash), so where one is loaded already the server answers at once
    /// that it exists, without compiling it again
    /// ([`already_loaded`](Self::already_loaded)).
    pub(crate) fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg(self.code.as_str());
        cmd
    }

    /// Whether `e` is the server's answer that the library is loaded
    /// already (another call or process loaded it first).
    pub(crate) fn already_loaded(e: &redis::RedisError) -> bool {
        e.detail().is_some_and(|d| d.contains("already exists"))
    }
}

pub(crate) struct Scripts {
    /// By algorithm tag − 1.
    per_algorithm: [LuaScript; 7],
    mixed: LuaScript,
    pub(crate) library: Library,
    pub(crate) increment: LuaScript,
    pub(crate) compare_and_swap: LuaScript,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    per_algorithm: [
        LuaScript::new(decision_script!("fixed_window")),
        LuaScript::new(decision_script!("sliding_window_log")),
        LuaScript::new(decision_script!("sliding_window_counter")),
        LuaScript::new(decision_script!("token_bucket")),
        LuaScript::new(decision_script!("leaky_bucket")),
        LuaScript::new(decision_script!("gcra")),
        // Leases are a sliding log's pairs: its step is the log's.
        LuaScript::new(decision_script!("sliding_window_log", "concurrency")),
    ],
    mixed: LuaScript::new(every_step!(decision_script)),
    library: Library::new(),
    increment: LuaScript::new(include_str!("scripts/increment.lua")),
    compare_and_swap: LuaScript::new(include_str!("scripts/compare_and_swap.lua")),
});

impl Scripts {
    /// The script (and library function) deciding rules of these
    /// algorithms.
    pub(crate) fn decision(&self, mut algorithms: impl Iterator<Item = Algorithm>) -> Engine<'_> {
        let mixed = Engine {
            script: &self.mixed,
            function: self.library.functions.get(7).map_or("", String::as_str),
        };
        let Some(first) = algorithms.next() else {
            return mixed;
        };
        if algorithms.any(|a| a != first) {
            return mixed;
        }
        let i = usize::from(first.state_tag()).wrapping_sub(1);
        match (self.per_algorithm.get(i), self.library.functions.get(i)) {
            (Some(script), Some(function)) => Engine { script, function },
            _ => mixed,
        }
    }

    /// Every script, for loading ahead of time.
    pub(crate) fn all(&self) -> impl Iterator<Item = &LuaScript> {
        self.per_algorithm
            .iter()
            .chain([&self.mixed, &self.increment, &self.compare_and_swap])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua(name: &str) -> String {
        let path = format!("{}/src/scripts/{name}.lua", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The Lua side agrees with the core's table of algorithms: one script
    /// per algorithm, by tag, holding that algorithm's step; the mixed
    /// script holding all of them; and the prelude's table of state sizes
    /// saying what `Algorithm::state_fields` says.
    #[test]
    fn the_scripts_follow_the_algorithm_table() {
        assert_eq!(SCRIPTS.per_algorithm.len(), Algorithm::ALL.len());
        for a in Algorithm::ALL {
            let step = lua(a.as_str());
            let script = SCRIPTS.decision(std::iter::once(a)).script;
            assert!(script.code.contains(&step), "{a}'s script lacks its step");
            // Concurrency's leases are a sliding log's pairs: its script
            // holds the log's step too.
            let built_on =
                |o: Algorithm| a == Algorithm::Concurrency && o == Algorithm::SlidingWindowLog;
            for other in Algorithm::ALL
                .into_iter()
                .filter(|o| *o != a && !built_on(*o))
            {
                assert!(
                    !script.code.contains(&lua(other.as_str())),
                    "{a}'s script holds {other}'s step"
                );
            }
            assert!(
                SCRIPTS.mixed.code.contains(&step),
                "the mixed script lacks {a}"
            );
        }
        // Each library function does what its script does: the same
        // engine, reading states as that script reads them.
        let library = &SCRIPTS.library.code;
        let scripts = Algorithm::ALL.map(|a| (a.as_str(), SCRIPTS.decision(std::iter::once(a))));
        let mixed = ("mixed", SCRIPTS.decision(Algorithm::ALL.into_iter()));
        for (name, engine) in scripts.into_iter().chain([mixed]) {
            assert!(engine.function.ends_with(&format!("_{name}")), "{name}");
            let has_log = engine.script.code.contains("\nHAS_LOG = true");
            let registered = format!(
                "redis.register_function('{}', function(keys, args) return decide(keys, args, {has_log}) end)",
                engine.function
            );
            assert!(library.contains(&registered), "{registered}");
            let body = engine
                .script
                .code
                .trim_end_matches("return decide(KEYS, ARGV, HAS_LOG)\n");
            assert_ne!(
                body.len(),
                engine.script.code.len(),
                "{name}: the script calls the engine"
            );
            if name == "mixed" {
                assert!(library.contains(body), "the library holds the mixed engine");
            }
        }
        assert!(library.starts_with("#!lua name=ratekeeper_"));
        assert!(!library.contains("@NAME@"));
        let prelude = lua("prelude");
        let line = prelude
            .lines()
            .find(|l| l.starts_with("local FIELDS = {"))
            .expect("the prelude's FIELDS table");
        let fields: Vec<(u8, u8)> = line
            .trim_start_matches("local FIELDS = {")
            .trim_end_matches('}')
            .split(',')
            .map(|entry| {
                let (tag, n) = entry.split_once('=').expect("[tag] = n");
                let tag = tag.trim().trim_start_matches('[').trim_end_matches(']');
                (
                    tag.parse().expect("a tag"),
                    n.trim().parse().expect("a count"),
                )
            })
            .collect();
        for a in Algorithm::ALL {
            let lua_fields = fields
                .iter()
                .find(|(t, _)| *t == a.state_tag())
                .map(|(_, n)| *n);
            assert_eq!(lua_fields, a.state_fields(), "{a}: prelude.lua's FIELDS");
        }
        assert_eq!(
            fields.len(),
            Algorithm::ALL
                .iter()
                .filter(|a| a.state_fields().is_some())
                .count()
        );
    }
}
