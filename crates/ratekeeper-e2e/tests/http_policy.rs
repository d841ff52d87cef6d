//! The framework-free HTTP policy end to end: real limiter, memory store,
//! manual clock; a closed store for the error modes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ratekeeper::http::{
    ErrorMode, HeaderStyle, HttpPolicy, Identity, KeyExtractor, KeySource, Limits, MissingKey,
    Outcome, RequestView, ResetFormat, RouteTable,
};
use ratekeeper::memory::MemoryStorage;
use ratekeeper::{Algorithm, ErrorKind, Limiter, ManualClock, Rule, Storage, Timestamp};

const NONE: &[(&str, &[u8])] = &[];

fn view<'a>(
    path: &'a str,
    headers: &'a &'a [(&'a str, &'a [u8])],
    identity: Option<&'a Identity>,
) -> RequestView<'a> {
    RequestView {
        method: "GET",
        path,
        route: None,
        peer: "198.51.100.7".parse().unwrap(),
        headers,
        identity,
    }
}

fn policy(routes: RouteTable) -> (HttpPolicy, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let store = MemoryStorage::builder()
        .clock(Arc::new(clock.clone()))
        .build();
    let limiter = Limiter::builder(Arc::new(store))
        .clock(clock.clone())
        .build();
    (
        HttpPolicy::new(limiter, routes, KeyExtractor::new(KeySource::Ip)),
        clock,
    )
}

fn header<'a>(headers: &'a [(http::HeaderName, http::HeaderValue)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_str().unwrap())
}

/// An answer's body as JSON text.
fn json(body: Option<ratekeeper::http::ErrorBody>) -> String {
    String::from_utf8(body.expect("a JSON body").to_json().to_vec()).unwrap()
}

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(name, Algorithm::FixedWindow, quota.parse().unwrap()).unwrap()
}

#[tokio::test]
async fn limit_reached_gives_429_with_retry_after_and_headers() {
    let (p, clock) =
        policy(RouteTable::new().default_limits(Limits::new(vec![rule("api", "2/minute")])));
    let p = p.headers(HeaderStyle::Both, ResetFormat::Seconds);
    for remaining in ["1", "0"] {
        match p.check(&view("/", &NONE, None)).await {
            Outcome::Proceed { headers, admission } => {
                assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(remaining));
                assert!(
                    header(&headers, "ratelimit")
                        .is_some_and(|v| v.contains(&format!("r={remaining}")))
                );
                assert!(admission.unwrap().decision().is_allowed());
            }
            other => panic!("{other:?}"),
        }
    }
    match p.check(&view("/", &NONE, None)).await {
        Outcome::Respond {
            status,
            headers,
            body,
            ..
        } => {
            assert_eq!(status, 429);
            let body = json(body);
            let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            assert!(
                body.contains("\"error\":\"rate_limited\"")
                    && body.contains(&format!("\"retry_after\":{retry}")),
                "{body}"
            );
            assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("0"));
        }
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(60));
    assert!(matches!(
        p.check(&view("/", &NONE, None)).await,
        Outcome::Proceed { .. }
    ));
}

#[tokio::test]
async fn lists_exemptions_and_missing_keys() {
    let routes = RouteTable::new()
        .default_limits(Limits::new(vec![rule("api", "1/minute")]))
        .route(
            "/keys",
            &[],
            Limits::new(vec![rule("keyed", "1/minute")]).key(KeySource::Header("x-api-key".into())),
        )
        .unwrap()
        .exempt("/health")
        .unwrap()
        .deny(["198.51.100.0/24"])
        .unwrap();
    let (p, _) = policy(routes.clone());
    match p.check(&view("/", &NONE, None)).await {
        Outcome::Respond { status, .. } => assert_eq!(status, 403),
        other => panic!("{other:?}"),
    }
    let (p, _) = policy(
        RouteTable::new()
            .exempt("/health")
            .unwrap()
            .default_limits(Limits::new(vec![rule("api", "1/minute")])),
    );
    for _ in 0..5 {
        assert_eq!(
            p.check(&view("/health", &NONE, None)).await,
            Outcome::Proceed {
                headers: Vec::new(),
                admission: None
            }
        );
    }
    // A route keyed by a header, rejecting requests without it.
    let clock = ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000));
    let limiter = Limiter::builder(Arc::new(MemoryStorage::new()))
        .clock(clock)
        .build();
    let strict = HttpPolicy::new(
        limiter,
        RouteTable::new()
            .route(
                "/keys",
                &[],
                Limits::new(vec![rule("keyed", "1/minute")])
                    .key(KeySource::Header("x-api-key".into())),
            )
            .unwrap(),
        KeyExtractor::new(KeySource::Ip)
            .on_missing(MissingKey::Reject(http::StatusCode::UNAUTHORIZED)),
    );
    match strict.check(&view("/keys", &NONE, None)).await {
        Outcome::Respond { status, body, .. } => {
            let body = json(body);
            assert!(status == 401 && body.contains("missing_key"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    let with_key: &[(&str, &[u8])] = &[("x-api-key", b"k1")];
    assert!(matches!(
        strict.check(&view("/keys", &with_key, None)).await,
        Outcome::Proceed { .. }
    ));
    assert!(matches!(
        strict.check(&view("/keys", &with_key, None)).await,
        Outcome::Respond {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            ..
        }
    ));
    let other_key: &[(&str, &[u8])] = &[("x-api-key", b"k2")];
    assert!(matches!(
        strict.check(&view("/keys", &other_key, None)).await,
        Outcome::Proceed { .. }
    ));
}

#[tokio::test]
async fn shadow_mode_reports_but_never_blocks() {
    let blocked = Arc::new(AtomicU32::new(0));
    let seen = blocked.clone();
    let (p, _) =
        policy(RouteTable::new().default_limits(Limits::new(vec![rule("api", "1/minute")])));
    let p = p.shadow(true).on_blocked(Arc::new(move |_, d| {
        assert!(!d.is_allowed());
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    for _ in 0..4 {
        match p.check(&view("/", &NONE, None)).await {
            Outcome::Proceed { headers, .. } => assert!(header(&headers, "ratelimit").is_some()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(blocked.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn store_failure_fails_closed_by_default_or_open_per_route() {
    let errors = Arc::new(AtomicU32::new(0));
    let seen = errors.clone();
    let routes = RouteTable::new()
        .default_limits(Limits::new(vec![rule("api", "10/minute")]))
        .route(
            "/open",
            &[],
            Limits::new(vec![rule("open", "10/minute")]).on_store_error(ErrorMode::FailOpen),
        )
        .unwrap();
    // A real store in a real failed state.
    let store = MemoryStorage::new();
    store.close().await.unwrap();
    let p = HttpPolicy::new(
        Limiter::new(Arc::new(store)),
        routes,
        KeyExtractor::new(KeySource::Ip),
    )
    .on_error(Arc::new(move |_, e| {
        assert_eq!(e.kind(), ErrorKind::Closed);
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    match p.check(&view("/", &NONE, None)).await {
        Outcome::Respond { status, body, .. } => {
            assert!(status == 503 && json(body).contains("rate_limiter_unavailable"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.check(&view("/open", &NONE, None)).await,
        Outcome::Proceed {
            headers: Vec::new(),
            admission: None
        }
    );
    let open = p.clone().on_store_error(ErrorMode::FailOpen);
    assert!(matches!(
        open.check(&view("/", &NONE, None)).await,
        Outcome::Proceed { .. }
    ));
    assert_eq!(
        errors.load(Ordering::SeqCst),
        3,
        "the hook sees every failure"
    );
}

#[tokio::test]
async fn check_now_answers_like_check_and_admissions_charge_more() {
    let (p, _) =
        policy(RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/minute")])));
    let v = view("/", &NONE, None);
    let Some(Outcome::Proceed {
        admission: Some(admission),
        ..
    }) = p.check_now(&v)
    else {
        panic!("the memory store decides at once")
    };
    assert_eq!(admission.decision().remaining(), 9);
    assert_eq!(admission.key(), "ip:198.51.100.7");
    // More units once the handler knows the real cost; all or nothing.
    let charged = admission.charge(5).await.unwrap();
    assert!(charged.is_allowed() && charged.remaining() == 4);
    let refused = admission.charge(5).await.unwrap();
    assert!(!refused.is_allowed() && refused.remaining() == 4);
    // Fewer once the work turns out cheaper: given back, never past the limit.
    assert_eq!(admission.refund(3).await.unwrap().remaining(), 7);
    match p.check(&v).await {
        Outcome::Proceed {
            admission: Some(a), ..
        } => assert_eq!(a.decision().remaining(), 6),
        other => panic!("{other:?}"),
    }
    assert_eq!(admission.refund(100).await.unwrap().remaining(), 10);
}

/// A route counting only some responses: admitted requests carry what
/// settles them, a response that does not count gives the unit back, one
/// that counts keeps it, and settling twice changes nothing. Denials carry
/// nothing to settle; a failing store gets the route's error mode.
#[tokio::test]
async fn count_when_settles_by_the_response() {
    use http::StatusCode;
    let limits =
        || Limits::new(vec![rule("logins", "2/minute")]).count_when("4xx".parse().unwrap());
    let (p, _) = policy(RouteTable::new().default_limits(limits()));
    let v = view("/login", &NONE, None);
    // Never decided at once: the reservation needs the store's time.
    assert!(p.check_now(&v).is_none());
    let admitted = || admitted_on(&p, &v);
    let first = admitted().await;
    let settlement = first.settlement().expect("a settlement").clone();
    settlement.finish(StatusCode::OK).await;
    // Once: a second finish (a clone, or the adapter's own) gives nothing more.
    first.settlement().unwrap().finish(StatusCode::OK).await;
    let second = admitted().await;
    assert_eq!(second.decision().remaining(), 1);
    second
        .settlement()
        .unwrap()
        .finish(StatusCode::FORBIDDEN)
        .await;
    let third = admitted().await;
    assert_eq!(third.decision().remaining(), 0);
    // Unsettled (the client went away): stays counted.
    drop(third);
    match p.check(&v).await {
        Outcome::Respond {
            status, decision, ..
        } => assert_eq!(
            (status.as_u16(), decision.map(|d| d.remaining())),
            (429, Some(0))
        ),
        other => panic!("{other:?}"),
    }

    let store = Arc::new(MemoryStorage::new());
    store.close().await.unwrap();
    let routes = RouteTable::new().default_limits(limits().on_store_error(ErrorMode::FailOpen));
    let open = HttpPolicy::new(
        Limiter::new(store),
        routes,
        KeyExtractor::new(KeySource::Ip),
    );
    match open.check(&v).await {
        Outcome::Proceed {
            admission: None, ..
        } => {}
        other => panic!("{other:?}"),
    }
}

/// A legacy reset written as a Unix time is the limiter's clock plus the
/// time to full: the policy reads the clock for it (and only for it).
#[tokio::test]
async fn a_unix_time_reset_is_read_from_the_limiters_clock() {
    let (p, clock) =
        policy(RouteTable::new().default_limits(Limits::new(vec![rule("api", "10/minute")])));
    let now_s = 1_700_000_000;
    clock.set(Timestamp::from_micros(now_s * 1_000_000));
    for (style, reset, expected) in [
        (HeaderStyle::Legacy, ResetFormat::UnixTime, now_s + 60),
        (HeaderStyle::Both, ResetFormat::UnixTime, now_s + 60),
        (HeaderStyle::Legacy, ResetFormat::Seconds, 60),
    ] {
        let p = p.clone().headers(style, reset);
        let Outcome::Proceed { headers, .. } = p.check(&view("/", &NONE, None)).await else {
            panic!("admitted")
        };
        let value: u64 = header(&headers, "x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        // The fixed window started at the test's first request, within 60 s.
        assert!(
            value <= expected && value + 60 > expected,
            "{style:?} {reset:?}: {value}, expected about {expected}"
        );
    }
}

/// Which policies fill [`RequestView::route`]: those whose keys or
/// exemption predicate read it, in the route table or in a tier, and those
/// with a hook (which sees the view).
#[tokio::test]
async fn reads_route_says_whether_a_key_or_predicate_reads_the_route() {
    let limits = || Limits::new(vec![rule("api", "10/minute")]);
    let by_route = || limits().key(KeySource::Route);
    let (plain, _) = policy(RouteTable::new().default_limits(limits()));
    assert!(!plain.reads_route());
    let tiers = || ratekeeper::http::Tiers::new();
    assert!(!plain.clone().tiers(tiers().tier("free")).reads_route());
    assert!(
        plain
            .clone()
            .tiers(tiers().rule("pro", "/a", &["GET"], by_route()).unwrap())
            .reads_route()
    );
    let (routed, _) = policy(
        RouteTable::new()
            .route("/a", &["GET"], by_route())
            .unwrap()
            .default_limits(limits()),
    );
    assert!(routed.reads_route());
    // Tiers that do not read the route leave it read.
    assert!(routed.tiers(tiers().tier("free")).reads_route());
    let (defaulted, _) = policy(RouteTable::new().default_limits(by_route()));
    assert!(defaulted.reads_route());
    let (exempting, _) = policy(
        RouteTable::new()
            .default_limits(limits())
            .exempt_when(Arc::new(|view: &RequestView<'_>| {
                view.route == Some("/health")
            })),
    );
    assert!(exempting.reads_route());
    let blocked: ratekeeper::http::BlockedHook = Arc::new(|_, _| {});
    assert!(plain.clone().on_blocked(blocked).reads_route());
    let failed: ratekeeper::http::ErrorHook = Arc::new(|_, _| {});
    assert!(plain.on_error(failed).reads_route());
}

/// Admissions are equal when decision, key and rules all are.
#[tokio::test]
async fn admissions_compare_decision_key_and_rules() {
    async fn admission(p: &HttpPolicy, peer: &str) -> ratekeeper::http::Admission {
        let headers = NONE;
        let mut v = view("/", &headers, None);
        v.peer = peer.parse().unwrap();
        match p.check(&v).await {
            Outcome::Proceed {
                admission: Some(a), ..
            } => a,
            other => panic!("{other:?}"),
        }
    }
    let tight = Limits::new(vec![rule("api", "10/minute")]);
    let (a, _) = policy(RouteTable::new().default_limits(tight.clone()));
    // The same tightest rule beside another: same decision, other rules.
    let (b, _) = policy(RouteTable::new().default_limits(Limits::new(vec![
        rule("api", "10/minute"),
        rule("loose", "1000/minute"),
    ])));
    let first = admission(&a, "198.51.100.1").await;
    assert_eq!(first, first.clone());
    let other_key = admission(&a, "198.51.100.2").await;
    assert_eq!(first.decision(), other_key.decision());
    assert_ne!(first, other_key);
    let other_rules = admission(&b, "198.51.100.1").await;
    assert_eq!(first.decision(), other_rules.decision());
    assert_eq!(first.key(), other_rules.key());
    assert_ne!(first, other_rules);
    let other_decision = admission(&a, "198.51.100.1").await;
    assert_eq!(first.key(), other_decision.key());
    assert_ne!(first, other_decision);
}

/// The memory store decides at once, so both fast paths answer.
#[tokio::test]
async fn check_with_now_answers_at_once_on_the_memory_store() {
    let (p, _) = policy(RouteTable::new());
    let limits = Limits::new(vec![rule("api", "1/minute")]);
    let v = view("/", &NONE, None);
    assert!(matches!(
        p.check_with_now(&v, &limits),
        Some(Outcome::Proceed {
            admission: Some(_),
            ..
        })
    ));
    assert!(matches!(
        p.check_with_now(&v, &limits),
        Some(Outcome::Respond {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            ..
        })
    ));
}

/// `SharedPolicy::update` keeps the current policy when `change` fails, and
/// says why.
#[tokio::test]
async fn a_failed_shared_update_keeps_the_policy_and_returns_the_error() {
    let (p, _) = policy(RouteTable::new());
    let shared = ratekeeper::http::SharedPolicy::new(p);
    let before = shared.current();
    let result: Result<(), &str> = shared.update(|_| Err("bad reload"));
    assert_eq!(result, Err("bad reload"));
    assert!(Arc::ptr_eq(&before, &shared.current()), "kept");
    shared
        .update(|current| {
            Ok::<_, ()>(
                current
                    .clone()
                    .denied_status(http::StatusCode::SERVICE_UNAVAILABLE),
            )
        })
        .unwrap();
    assert!(!Arc::ptr_eq(&before, &shared.current()), "replaced");
}

/// `lists` is what `runtime_lists` set.
#[tokio::test]
async fn the_policy_returns_its_runtime_lists() {
    let (p, _) = policy(RouteTable::new());
    assert!(p.lists().is_none());
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let lists = ratekeeper::http::RuntimeLists::load(store).await.unwrap();
    let p = p.runtime_lists(lists.clone());
    assert!(Arc::ptr_eq(p.lists().unwrap().store(), lists.store()));
}

/// Several rules on one request: `RateLimit-Policy` names the rule that
/// decided, with that rule's own window.
#[tokio::test]
async fn the_policy_header_carries_the_deciding_rules_window() {
    let (p, _) = policy(RouteTable::new().default_limits(Limits::new(vec![
        rule("hourly", "1000/hour"),
        rule("burst", "10/minute"),
    ])));
    let Outcome::Proceed { headers, .. } = p.check(&view("/", &NONE, None)).await else {
        panic!("admitted")
    };
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"burst\";q=10;w=60")
    );
}

/// The degraded error mode: while the store fails, a route decides on the
/// local store with its instance's share of each quota (10 per minute over
/// 3 instances: 3 each), headers included; routes failing closed still
/// answer 503, and a policy without a local store fails closed.
#[tokio::test]
async fn degraded_mode_decides_locally_with_each_instances_share() {
    let failing = Arc::new(MemoryStorage::new());
    failing.close().await.unwrap();
    let (local, clock) = policy(RouteTable::new());
    let routes = RouteTable::new()
        .route(
            "/strict",
            &[],
            Limits::new(vec![rule("strict", "10/minute")]),
        )
        .unwrap()
        .default_limits(
            Limits::new(vec![rule("api", "10/minute")]).on_store_error(ErrorMode::Degraded),
        );
    let p = HttpPolicy::new(
        Limiter::new(failing),
        routes,
        KeyExtractor::new(KeySource::Ip),
    )
    .headers(HeaderStyle::Legacy, ResetFormat::Seconds);
    let degraded = p.clone().degraded(local.limiter().clone(), 3);
    assert_eq!(degraded.degraded_instances(), Some(3));
    let v = view("/", &NONE, None);
    for remaining in ["2", "1", "0"] {
        match degraded.check(&v).await {
            Outcome::Proceed { headers, .. } => {
                assert_eq!(header(&headers, "x-ratelimit-limit"), Some("3"));
                assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(remaining));
            }
            other => panic!("{other:?}"),
        }
    }
    let status = |o: Outcome| match o {
        Outcome::Respond { status, .. } => status.as_u16(),
        Outcome::Proceed { .. } => 200,
    };
    assert_eq!(status(degraded.check(&v).await), 429);
    clock.advance(Duration::from_secs(60));
    assert_eq!(status(degraded.check(&v).await), 200);
    assert_eq!(
        status(degraded.check(&view("/strict", &NONE, None)).await),
        503
    );
    assert_eq!(status(p.check(&v).await), 503);
    assert_eq!(p.degraded_instances(), None);
    // A policy rebuilt during the outage (a reload) keeps the local counts.
    for _ in 0..2 {
        assert_eq!(status(degraded.check(&v).await), 200);
    }
    let reloaded = p
        .clone()
        .degraded(policy(RouteTable::new()).0.limiter().clone(), 3)
        .keep_degraded_counts_from(&degraded);
    assert_eq!(status(reloaded.check(&v).await), 429);
    // Rules of their own hold while degraded: a shadow rule denies nobody.
    let trial = p
        .clone()
        .shadow_rules(["api"])
        .degraded(policy(RouteTable::new()).0.limiter().clone(), 3);
    for _ in 0..5 {
        assert_eq!(status(trial.check(&v).await), 200);
    }
    assert_eq!("local".parse::<ErrorMode>().unwrap(), ErrorMode::Degraded);
}

/// A monthly quota on the Berlin calendar through the policy: the reset
/// headers count to local midnight of the 1st, an hour short across the
/// spring change and an hour long across the autumn one.
#[tokio::test]
async fn calendar_headers_tell_the_time_to_the_first_of_the_month() {
    let monthly = Rule::new(
        "monthly",
        Algorithm::FixedWindow,
        "100/month".parse().unwrap(),
    )
    .unwrap()
    .with_calendar(ratekeeper::Calendar::new("Europe/Berlin").unwrap())
    .unwrap();
    let (p, clock) = policy(RouteTable::new().default_limits(Limits::new(vec![monthly])));
    let p = p.headers(HeaderStyle::Both, ResetFormat::Seconds);
    let v = view("/", &NONE, None);
    // UTC: 2024-02-29 23:00 is March 1st's midnight in Berlin (CET);
    // 2024-10-26 22:00 is October 27th's (CEST, the clocks go back at 03:00).
    for (now_us, reset_s) in [
        (1_709_247_599_000_000_u64, 1),
        (1_709_247_600_000_000, 31 * 86_400 - 3_600),
        (1_729_980_000_000_000, 5 * 86_400 + 3_600),
    ] {
        clock.set(Timestamp::from_micros(now_us));
        let Outcome::Proceed { headers, .. } = p.check(&v).await else {
            panic!("allowed")
        };
        let reset = reset_s.to_string();
        assert_eq!(header(&headers, "x-ratelimit-reset"), Some(reset.as_str()));
        assert!(
            header(&headers, "ratelimit").is_some_and(|h| h.ends_with(&format!(";t={reset}"))),
            "{:?}",
            header(&headers, "ratelimit")
        );
    }
}

/// Rules with settings of their own: a shadow rule is counted but never
/// denies (the rules in force are charged as if it were not there, the
/// hook sees its denials) and never shows in the headers; a hidden rule
/// limits without showing.
#[tokio::test]
async fn shadow_rules_and_hidden_rules() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let routes = RouteTable::new()
        .route("/quiet", &[], Limits::new(vec![rule("quiet", "2/minute")]))
        .unwrap()
        .default_limits(Limits::new(vec![
            rule("api", "3/minute"),
            rule("trial", "1/minute"),
            rule("global", "100/minute"),
        ]));
    let (p, _) = policy(routes);
    let p = p
        .headers(HeaderStyle::Legacy, ResetFormat::Seconds)
        .shadow_rules(["trial"])
        .hide_headers_of(["global", "quiet"])
        .on_blocked(Arc::new(move |_, d| {
            hook_seen.lock().unwrap().push(d.rule().to_owned());
        }));
    let (shadow, mut hidden) = p.rule_settings();
    hidden.sort_unstable();
    assert_eq!((shadow, hidden), (vec!["trial"], vec!["global", "quiet"]));
    let v = view("/", &NONE, None);
    for remaining in ["2", "1", "0"] {
        match p.check(&v).await {
            Outcome::Proceed { headers, .. } => {
                assert_eq!(header(&headers, "x-ratelimit-limit"), Some("3"));
                assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(remaining));
            }
            other => panic!("{other:?}"),
        }
    }
    // The trial rule denied the second and third requests: seen, not applied.
    assert_eq!(*seen.lock().unwrap(), ["trial", "trial"]);
    match p.check(&v).await {
        Outcome::Respond {
            status, decision, ..
        } => {
            assert_eq!(status.as_u16(), 429);
            assert_eq!(
                decision.map(|d| d.rule().to_owned()).as_deref(),
                Some("api")
            );
        }
        other => panic!("{other:?}"),
    }
    // A route whose only rule is hidden limits without headers.
    let quiet = view("/quiet", &NONE, None);
    for expected in [200, 200, 429] {
        match p.check(&quiet).await {
            Outcome::Proceed { headers, .. } if expected == 200 => assert!(headers.is_empty()),
            Outcome::Respond {
                status, headers, ..
            } if expected == 429 => {
                assert_eq!(status.as_u16(), 429);
                assert!(header(&headers, "x-ratelimit-limit").is_none());
                assert!(header(&headers, "retry-after").is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    // A route whose only rule is in shadow mode denies nobody, even once
    // the rule is over its limit.
    let trial_only = p.clone().shadow_rules(["quiet"]);
    for _ in 0..4 {
        assert!(matches!(
            trial_only.check(&view("/quiet", &NONE, None)).await,
            Outcome::Proceed { .. }
        ));
    }
}

/// A route with a concurrency rule: each admission holds a place until its
/// places are dropped (what an adapter does once the response has been
/// sent); a full route answers 429, or the status chosen for it; the rate
/// beside it is charged once per request, and a handler's charge and
/// refund leave the places alone. With `count_when`, a response that does
/// not count gives its rate back and still holds its place.
#[tokio::test]
async fn concurrency_rules_hold_places_until_the_admission_is_dropped() {
    use http::StatusCode;
    let two = Rule::concurrency("two", 2, Duration::from_secs(60)).unwrap();
    let limits = Limits::new(vec![rule("calls", "10/minute"), two.clone()]);
    let (p, _) = policy(RouteTable::new().default_limits(limits));
    let p = p.in_flight_status(StatusCode::SERVICE_UNAVAILABLE);
    let v = view("/export", &NONE, None);
    assert!(
        p.check_now(&v).is_none(),
        "places are taken by a reservation"
    );
    let first = admitted_on(&p, &v).await;
    let second = admitted_on(&p, &v).await;
    assert!(first.places().is_some() && second.places().is_some());
    match p.check(&v).await {
        Outcome::Respond {
            status, decision, ..
        } => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(decision.unwrap().rule(), "two");
        }
        other => panic!("{other:?}"),
    }
    // A handler's charge takes rate only.
    assert_eq!(first.charge(3).await.unwrap().remaining(), 10 - 2 - 3);
    assert_eq!(first.refund(3).await.unwrap().remaining(), 10 - 2);
    // The places go with the last clone of the admission's places.
    let kept = first.places().unwrap().clone();
    drop(first);
    assert!(matches!(p.check(&v).await, Outcome::Respond { .. }));
    drop(kept);
    let mut third = None;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if let Outcome::Proceed {
            admission: Some(a), ..
        } = p.check(&v).await
        {
            third = Some(a);
            break;
        }
    }
    let third = third.expect("a dropped admission's place comes back");
    // Two denials and three admissions: rate charged for the admitted only.
    assert_eq!(third.decision().remaining(), 0, "{:?}", third.decision());
    drop((second, third));

    // A route of places alone has no rate for a handler to charge.
    let (p, _) = policy(RouteTable::new().default_limits(Limits::new(vec![two.clone()])));
    let only = admitted_on(&p, &v).await;
    let error = only.charge(1).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(only.refund(1).await.is_err());

    // Counting only failures: a success gives its rate back, not its place.
    let limits =
        Limits::new(vec![rule("logins", "5/minute"), two]).count_when("4xx".parse().unwrap());
    let (p, _) = policy(RouteTable::new().default_limits(limits));
    let ok = admitted_on(&p, &v).await;
    ok.settlement().unwrap().finish(StatusCode::OK).await;
    let next = admitted_on(&p, &v).await;
    assert_eq!(next.decision().rule(), "two", "the place is the scarcer");
    assert_eq!(next.decision().remaining(), 0);
    match p.check(&v).await {
        Outcome::Respond { decision, .. } => assert_eq!(decision.unwrap().rule(), "two"),
        other => panic!("{other:?}"),
    }
    drop(ok);
    drop(next);
}

async fn admitted_on(p: &HttpPolicy, v: &RequestView<'_>) -> ratekeeper::http::Admission {
    match p.check(v).await {
        Outcome::Proceed {
            admission: Some(a), ..
        } => a,
        other => panic!("{other:?}"),
    }
}

/// Without the decision for handlers, an admitted request carries none
/// (on the fast path and the slow one), while it is still limited as
/// before; a route whose handler is followed (counting by response,
/// holding places) still carries it, since what follows needs it.
#[tokio::test]
async fn without_the_decision_for_handlers_only_followed_routes_carry_one() {
    use http::StatusCode;
    let routes = RouteTable::new()
        .route(
            "/login",
            &[],
            Limits::new(vec![rule("logins", "5/minute")]).count_when("4xx".parse().unwrap()),
        )
        .unwrap()
        .route(
            "/export",
            &[],
            Limits::new(vec![
                Rule::concurrency("one", 1, Duration::from_secs(60)).unwrap(),
            ]),
        )
        .unwrap()
        .default_limits(Limits::new(vec![rule("api", "2/minute")]));
    let (p, _) = policy(routes);
    assert!(p.gives_decision_to_handlers(), "on by default");
    let p = p.decision_for_handlers(false);
    assert!(!p.gives_decision_to_handlers());
    let v = view("/", &NONE, None);
    let fast = p.check_now(&v).expect("the memory store decides at once");
    assert!(
        matches!(
            fast,
            Outcome::Proceed {
                admission: None,
                ..
            }
        ),
        "{fast:?}"
    );
    let slow = p.check(&v).await;
    assert!(
        matches!(
            slow,
            Outcome::Proceed {
                admission: None,
                ..
            }
        ),
        "{slow:?}"
    );
    match p.check(&v).await {
        Outcome::Respond { status, .. } => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        other => panic!("still limited: {other:?}"),
    }

    let login = admitted_on(&p, &view("/login", &NONE, None)).await;
    assert!(login.settlement().is_some());
    let export = admitted_on(&p, &view("/export", &NONE, None)).await;
    assert!(export.places().is_some());
}
