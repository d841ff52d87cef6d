//! `cargo xtask accuracy`: what each algorithm admits on realistic traffic,
//! beside the exact sliding log on the same requests.
//!
//! 2 000 clients each send a Poisson stream for 30 simulated minutes against
//! one rule of 100 requests per minute, at rates from 0.3 to 3 times the
//! limit spread geometrically (as many clients between 0.3x and 0.6x as
//! between 1.5x and 3x). Every algorithm decides every
//! request of every client (its own state per client, through the core's
//! pure decision step, so the run is exact and takes seconds), and the
//! sliding log decides them too. For each algorithm it prints:
//!
//! - **admitted vs log**: how many requests it admitted, relative to the log;
//! - **over-limit admissions**: the share of its admissions after which the
//!   client's last 60 s held more than 100 admitted requests (the windows a
//!   strict reader of "100 per minute" would object to);
//! - **worst window**: the most admissions any client got in any 60 s;
//! - **decided differently**: the share of all requests the algorithm
//!   decided otherwise than the log (each on its own history: once one
//!   admits a request the other denied, their states differ),
//!   over every client, over the clients sending below the limit, and over
//!   those sending below half of it.
//!
//! The run is seeded: the same figures every time (`accuracy SEED` to draw
//! other streams). The log must come out exact (no over-limit admission, a
//! worst window of exactly 100); the program fails otherwise.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ratekeeper_core::kit::{RuleState, decide_one};
use ratekeeper_core::{Algorithm, Quota, Rule, Timestamp};

const CLIENTS: u32 = 2_000;
const LIMIT: u64 = 100;
const WINDOW: Duration = Duration::from_secs(60);
const MINUTES: u64 = 30;
const SLOWEST: f64 = 0.3;
const FASTEST: f64 = 3.0;
/// The simulation starts here (any instant not aligned to a window does).
const START_US: u64 = 1_700_000_000_123_457;

/// The algorithms compared, the exact log last.
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowCounter,
    Algorithm::TokenBucket,
    Algorithm::LeakyBucket,
    Algorithm::Gcra,
    Algorithm::SlidingWindowLog,
];
const LOG: usize = ALGORITHMS.len() - 1;

/// One algorithm's tally over all clients.
#[derive(Default, Clone)]
struct Tally {
    admitted: u64,
    over_limit: u64,
    worst: usize,
    differ: u64,
    /// Requests and disagreements of clients sending below the limit, and
    /// below half of it.
    below_requests: u64,
    below_differ: u64,
    half_requests: u64,
    half_differ: u64,
}

/// One algorithm's state for one client.
struct Lane {
    rule: Rule,
    state: Option<RuleState>,
    /// Admission times within the last window, oldest first.
    recent: VecDeque<u64>,
}

impl Lane {
    /// Decides the request at `now`; records it when admitted. Returns
    /// whether it was admitted, and the number of admissions the window
    /// ending at `now` holds once it is counted.
    fn decide(&mut self, now: u64) -> Result<(bool, usize), String> {
        let (decision, write) = decide_one(
            &self.rule,
            self.state.as_ref(),
            Timestamp::from_micros(now),
            1,
        )
        .map_err(|e| format!("{}: {e}", self.rule.name()))?;
        if let Some(w) = write {
            self.state = Some(w.state);
        }
        if !decision.is_allowed() {
            return Ok((false, 0));
        }
        let window = u64::try_from(WINDOW.as_micros()).unwrap_or(u64::MAX);
        // The window is (now - 60 s, now]: what the sliding log counts.
        while self.recent.front().is_some_and(|t| *t + window <= now) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        Ok((true, self.recent.len()))
    }
}

fn main() -> ExitCode {
    let seed = std::env::args()
        .nth(1)
        .map_or(Ok(1), |s| s.parse::<u64>())
        .map_err(|e| format!("accuracy takes a seed (a whole number): {e}"));
    match seed.and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(seed: u64) -> Result<(), String> {
    let quota = Quota::new(LIMIT, WINDOW).map_err(|e| e.to_string())?;
    let rules = ALGORITHMS
        .iter()
        .map(|a| Rule::new(a.as_str(), *a, quota).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tallies = vec![Tally::default(); ALGORITHMS.len()];
    // A generator whose stream is fixed by its definition, so a seed gives
    // the same figures on every machine and version.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = START_US + MINUTES * 60 * 1_000_000;
    let mut requests = 0u64;
    for client in 0..CLIENTS {
        // Geometric: each client's rate a fixed factor above the last's.
        let share = f64::from(client) / f64::from(CLIENTS - 1);
        let multiple = SLOWEST * (FASTEST / SLOWEST).powf(share);
        // Requests per microsecond.
        let rate = multiple * LIMIT as f64 / WINDOW.as_micros() as f64;
        let below = multiple < 1.0;
        let half = multiple < 0.5;
        let mut lanes: Vec<Lane> = rules
            .iter()
            .map(|rule| Lane {
                rule: rule.clone(),
                state: None,
                recent: VecDeque::new(),
            })
            .collect();
        let mut now = START_US as f64;
        loop {
            // Exponential gaps: a Poisson stream.
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            now += -u.ln() / rate;
            let at = now as u64;
            if at >= end {
                break;
            }
            requests += 1;
            let mut verdicts = [(false, 0usize); ALGORITHMS.len()];
            for (verdict, lane) in verdicts.iter_mut().zip(lanes.iter_mut()) {
                *verdict = lane.decide(at)?;
            }
            let log_admits = verdicts.get(LOG).is_some_and(|v| v.0);
            for ((admitted, held), tally) in verdicts.iter().zip(tallies.iter_mut()) {
                if *admitted {
                    tally.admitted += 1;
                    tally.worst = tally.worst.max(*held);
                    if *held as u64 > LIMIT {
                        tally.over_limit += 1;
                    }
                }
                let differs = *admitted != log_admits;
                tally.differ += u64::from(differs);
                if below {
                    tally.below_requests += 1;
                    tally.below_differ += u64::from(differs);
                }
                if half {
                    tally.half_requests += 1;
                    tally.half_differ += u64::from(differs);
                }
            }
        }
    }
    let log = tallies.get(LOG).cloned().unwrap_or_default();
    println!(
        "{CLIENTS} clients, Poisson streams at {SLOWEST}-{FASTEST}x a limit of {LIMIT} per minute, \
         {MINUTES} simulated minutes, seed {seed}: {requests} requests, the log admitted {}.\n",
        log.admitted
    );
    println!(
        "| algorithm | admitted vs log | over-limit admissions | worst 60 s | decided differently: all clients / below the limit / below half of it |"
    );
    println!("|---|---|---|---|---|");
    for (algorithm, t) in ALGORITHMS.iter().zip(&tallies) {
        let relative = (t.admitted as f64 / log.admitted as f64 - 1.0) * 100.0;
        println!(
            "| {} | {relative:+.2}% | {:.1}% | {} | {:.1}% / {:.2}% / {:.4}% |",
            algorithm.as_str(),
            t.over_limit as f64 * 100.0 / t.admitted as f64,
            t.worst,
            t.differ as f64 * 100.0 / requests as f64,
            t.below_differ as f64 * 100.0 / t.below_requests.max(1) as f64,
            t.half_differ as f64 * 100.0 / t.half_requests.max(1) as f64,
        );
    }
    if log.over_limit != 0 || log.worst as u64 != LIMIT {
        return Err(format!(
            "the sliding log is not exact here: {} over-limit admissions, worst window {}",
            log.over_limit, log.worst
        ));
    }
    Ok(())
}
