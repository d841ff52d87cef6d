//! The Lua scripts, composed from `scripts/*.lua` at compile time.
//!
//! A decision script is the shared prelude (number helpers, the state codec),
//! one algorithm's step, and the engine (`decide.lua`). Requests whose rules
//! all use one algorithm run that algorithm's script; a request mixing
//! algorithms runs the script holding all seven. Either way, all rules of a
//! request are decided by one call.

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

macro_rules! decision_script {
    ($($algorithm:literal),+) => {
        concat!(
            include_str!("scripts/prelude.lua"),
            $(include_str!(concat!("scripts/", $algorithm, ".lua")),)+
            include_str!("scripts/decide.lua")
        )
    };
}

pub(crate) struct Scripts {
    /// By algorithm tag − 1.
    per_algorithm: [LuaScript; 7],
    mixed: LuaScript,
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
    mixed: LuaScript::new(decision_script!(
        "fixed_window",
        "sliding_window_log",
        "sliding_window_counter",
        "token_bucket",
        "leaky_bucket",
        "gcra",
        "concurrency"
    )),
    increment: LuaScript::new(include_str!("scripts/increment.lua")),
    compare_and_swap: LuaScript::new(include_str!("scripts/compare_and_swap.lua")),
});

impl Scripts {
    /// The script deciding rules of these algorithms.
    pub(crate) fn decision(&self, mut algorithms: impl Iterator<Item = Algorithm>) -> &LuaScript {
        let Some(first) = algorithms.next() else {
            return &self.mixed;
        };
        if algorithms.any(|a| a != first) {
            return &self.mixed;
        }
        self.per_algorithm
            .get(usize::from(first.state_tag()).wrapping_sub(1))
            .unwrap_or(&self.mixed)
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
            let script = SCRIPTS.decision(std::iter::once(a));
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
