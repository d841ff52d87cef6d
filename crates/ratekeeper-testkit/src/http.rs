//! The HTTP behaviour suite: one table of scenarios that every framework
//! adapter runs against its own real server, through a real HTTP client.
//!
//! An adapter implements [`HttpHarness`] (start a server applying a policy to
//! the suite's routes) and calls [`http_behaviour_tests!`](crate::http_behaviour_tests)
//! with it; every scenario becomes a test. Any difference between adapters is
//! a bug in an adapter, fixed by moving logic into the core's policy.
//!
//! The routes every harness serves, all behind the policy:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | 200 `ok` |
//! | `GET /health` | 200 `ok` |
//! | `GET /users/{id}`, `POST /users/{id}` | 200 `user` (route pattern `/users/{id}`) |
//! | `GET /decision` | 200 `remaining=N` from the handler's view of the decision, or `none` |
//! | `GET /counted` | 200 `counted=N`: the handler counts its calls (one counter per server) |
//! | `GET /calls` | 200 `calls=N`: how many times `/counted`'s handler ran |
//! | `GET /login` | 200 `welcome` with `x-password: good`, else 401 `wrong password` ([`login`]) |
//! | `GET /slow?ms=N` | 200 `slow` after N ms (at most 10 s), counted in the server's [`InFlight`] meanwhile ([`slow`]) |
//! | `GET /most` | 200 `most=N`: the most `/slow` handlers that ran at once ([`most_body`]) |
//! | `GET /panic` | the handler panics |
//! | `GET /stream?ms=N` | 200, a body streamed in two chunks: `first ` at once, `second` N ms later ([`stream_delay`]) |
//!
//! The harness's app plays the part of the application's own authentication:
//! a request's `x-user` header (and `x-tier`) becomes the
//! [`Identity`] the policy sees.
//! [`suite_identity`], [`decision_body`], [`count_call`], [`calls_body`],
//! [`login`], [`slow`], [`most_body`] and [`stream_delay`] are those pieces,
//! for a harness to call from its framework's handlers.
//!
//! One file on purpose: the scenarios form one table that every adapter runs,
//! and reading them in one place is how a reviewer sees what is covered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratekeeper_config::{LivePolicy, Loader, PolicyCode};
use ratekeeper_core::{Algorithm, Decision, Limiter, Rule, Storage};
use ratekeeper_http::{
    AutoBlock, ClientIpPolicy, ErrorMode, HeaderStyle, HttpPolicy, Identity, KeyExtractor,
    KeySource, Limits, MissingKey, RequestView, ResetFormat, RouteTable, SharedPolicy, Tiers,
    tier_resolver_fn,
};

/// A running server of the framework under test; stopped when dropped.
pub struct Server {
    /// Where it listens (127.0.0.1 and an ephemeral port).
    pub addr: SocketAddr,
    /// Whatever keeps the server alive (a task handle, a shutdown sender).
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

/// Starts real servers of one framework for the suite.
#[async_trait]
pub trait HttpHarness: Send + Sync + 'static {
    /// A server on `127.0.0.1:0` serving the suite's routes (see the
    /// [module docs](self)) behind `policy`, with `x-user` / `x-tier` turned
    /// into the request's identity before the policy runs.
    async fn serve(&self, policy: SharedPolicy) -> Server;

    /// A new, empty store for one scenario's policy (the memory store, or
    /// any other: the suite runs the same over each).
    async fn store(&self) -> Arc<dyn Storage>;
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The headers (names lower-case).
    pub headers: http::HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP/1.1 client (hyper's).
#[derive(Clone, Debug)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl TestClient {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `method path` with `headers` and reads the whole response.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let bytes: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        self.send_bytes(method, path, &bytes).await
    }

    /// Sends `method path` with header values as raw bytes (invalid UTF-8
    /// among them) and reads the whole response.
    pub async fn send_bytes(&self, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Reply {
        self.try_send_bytes(method, path, headers)
            .await
            .expect("the server answers")
    }

    /// [`send_bytes`](Self::send_bytes), with the server closing the
    /// connection instead of answering as an error.
    pub async fn try_send_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> Result<Reply, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            let value = http::HeaderValue::from_bytes(value).expect("a header value");
            request = request.header(*name, value);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::new())).expect("a request"))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `GET path`, read up to its body's first chunk: the status, that
    /// chunk, and the rest of the body, still arriving (dropped, the
    /// connection goes with it).
    pub async fn first_chunk(&self, path: &str) -> (u16, String, hyper::body::Incoming) {
        let request = http::Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = self.client.request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut first = String::new();
        while first.is_empty() {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        first.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => break,
            }
        }
        (status, first, body)
    }

    /// `GET path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers).await
    }

    /// The status of `GET path` with `headers`.
    pub async fn status(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        self.get(path, headers).await.status
    }

    /// Sends `requests` concurrent `GET /` and counts the answers: `(200s,
    /// 429s)`. Any other status panics. With `new_connections`, each request
    /// opens its own connection (and closes it), so they spread over a
    /// server's workers.
    pub async fn burst(&self, requests: usize, new_connections: bool) -> (usize, usize) {
        let tasks: Vec<_> = (0..requests)
            .map(|_| {
                let c = if new_connections {
                    Self::new(self.addr)
                } else {
                    self.clone()
                };
                let headers: &[(&str, &str)] = if new_connections {
                    &[("connection", "close")]
                } else {
                    &[]
                };
                tokio::spawn(async move { c.status("/", headers).await })
            })
            .collect();
        let (mut ok, mut limited) = (0, 0);
        for t in tasks {
            match t.await.expect("a request task") {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        (ok, limited)
    }
}

/// The suite's authentication: `x-user` (and `x-tier`), read through
/// `header`, become the caller's identity.
pub fn suite_identity<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Identity> {
    header("x-user").map(|user| match header("x-tier") {
        Some(tier) => Identity::new(user).with_tier(tier),
        None => Identity::new(user),
    })
}

/// The body of `GET /decision`: what the handler saw of the decision.
pub fn decision_body(decision: Option<&Decision>) -> String {
    decision.map_or_else(
        || "none".to_owned(),
        |d| format!("remaining={}", d.remaining()),
    )
}

/// The body of `GET /counted`, counting this call in `calls`.
pub fn count_call(calls: &AtomicU64) -> String {
    format!("counted={}", calls.fetch_add(1, Ordering::SeqCst) + 1)
}

/// The body of `GET /calls`: how many times `/counted` ran.
pub fn calls_body(calls: &AtomicU64) -> String {
    format!("calls={}", calls.load(Ordering::SeqCst))
}

/// `GET /login`'s answer to a request whose `x-password` header is
/// `password`: 200 `welcome` for `good`, 401 `wrong password` otherwise.
pub fn login(password: Option<&str>) -> (u16, &'static str) {
    if password == Some("good") {
        (200, "welcome")
    } else {
        (401, "wrong password")
    }
}

/// The `/slow` handlers running at once on one server, and the most there
/// have been.
#[derive(Debug, Default)]
pub struct InFlight {
    now: AtomicU64,
    most: AtomicU64,
}

/// Counts one handler out of [`InFlight`] when it ends, however it ends
/// (its future dropped when the client went away).
struct Running<'a>(&'a InFlight);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The wait a query string asks for (`ms=N`): at most 10 s, none without.
fn wait_of(query: Option<&str>) -> std::time::Duration {
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0)
        .min(10_000);
    std::time::Duration::from_millis(ms)
}

/// `GET /stream`'s pause between its two chunks, from the request's query
/// string.
pub fn stream_delay(query: Option<&str>) -> std::time::Duration {
    wait_of(query)
}

/// `GET /slow`'s handler, given the request's query string: waits `ms`
/// milliseconds (at most 10 s; none without it), counted in `flight`
/// meanwhile, and answers `slow`.
pub async fn slow(query: Option<&str>, flight: &InFlight) -> &'static str {
    let wait = wait_of(query);
    let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
    flight.most.fetch_max(now, Ordering::SeqCst);
    let _running = Running(flight);
    tokio::time::sleep(wait).await;
    "slow"
}

/// The body of `GET /most`: the most `/slow` handlers that ran at once.
pub fn most_body(flight: &InFlight) -> String {
    format!("most={}", flight.most.load(Ordering::SeqCst))
}

fn rule(name: &str, quota: &str) -> Rule {
    Rule::new(
        name,
        Algorithm::FixedWindow,
        quota.parse().expect("a quota"),
    )
    .expect("a rule")
}

/// A policy over a fresh store of the harness.
async fn policy(h: &Arc<dyn HttpHarness>, routes: RouteTable, keys: KeyExtractor) -> HttpPolicy {
    HttpPolicy::new(Limiter::new(h.store().await), routes, keys)
}

fn default_limit(quota: &str) -> RouteTable {
    RouteTable::new().default_limits(Limits::new(vec![rule("api", quota)]))
}

async fn start(h: &Arc<dyn HttpHarness>, policy: impl Into<SharedPolicy>) -> (Server, TestClient) {
    let server = h.serve(policy.into()).await;
    let client = TestClient::new(server.addr);
    (server, client)
}

/// Limit reached: 429 with `Retry-After`, the JSON body, and the rate-limit
/// headers; the handler is not called.
pub async fn limit_reached(h: Arc<dyn HttpHarness>) {
    let p = policy(
        &h,
        default_limit("2/minute"),
        KeyExtractor::new(KeySource::Ip),
    )
    .await
    .headers(HeaderStyle::Both, ResetFormat::Seconds);
    let (_server, c) = start(&h, p).await;
    for remaining in ["1", "0"] {
        let r = c.get("/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
    }
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.body.contains("\"error\":\"rate_limited\"")
            && r.body.contains(&format!("\"retry_after\":{retry}")),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        r.header("ratelimit-policy")
            .is_some_and(|v| v.contains("q=2"))
    );
    assert!(r.header("ratelimit").is_some_and(|v| v.contains("r=0")));
}

/// Each header style on allowed responses: legacy (seconds or Unix time),
/// IETF, both, none.
pub async fn header_styles(h: Arc<dyn HttpHarness>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (style, reset, legacy, ietf) in [
        (HeaderStyle::Legacy, ResetFormat::Seconds, true, false),
        (HeaderStyle::Legacy, ResetFormat::UnixTime, true, false),
        (HeaderStyle::Ietf, ResetFormat::Seconds, false, true),
        (HeaderStyle::Both, ResetFormat::Seconds, true, true),
        (HeaderStyle::None, ResetFormat::Seconds, false, false),
    ] {
        let p = policy(
            &h,
            default_limit("5/minute"),
            KeyExtractor::new(KeySource::Ip),
        )
        .await
        .headers(style, reset);
        let (_server, c) = start(&h, p).await;
        let r = c.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit").is_some(), legacy, "{style:?}");
        assert_eq!(r.header("ratelimit").is_some(), ietf, "{style:?}");
        assert_eq!(r.header("ratelimit-policy").is_some(), ietf, "{style:?}");
        if legacy {
            assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
            let reset_value: u64 = r
                .header("x-ratelimit-reset")
                .and_then(|v| v.parse().ok())
                .expect("a numeric reset");
            if reset == ResetFormat::UnixTime {
                assert!(
                    reset_value >= now && reset_value <= now + 61,
                    "{reset_value} vs {now}"
                );
            } else {
                assert!(reset_value <= 60, "{reset_value}");
            }
        }
        if ietf {
            assert_eq!(
                r.header("ratelimit-policy"),
                Some("\"api\";q=5;w=60"),
                "{style:?}"
            );
            assert!(
                r.header("ratelimit")
                    .is_some_and(|v| v.starts_with("\"api\";r=4;t=")),
                "{:?}",
                r.header("ratelimit")
            );
        }
    }
}

/// Exempt paths and the exemption predicate are never limited.
pub async fn exemptions(h: Arc<dyn HttpHarness>) {
    let routes = default_limit("1/minute")
        .exempt("/health")
        .expect("a pattern")
        .exempt_when(Arc::new(|v: &RequestView<'_>| {
            v.headers.get("x-internal") == Some(b"yes".as_slice())
        }));
    let (_server, c) = start(
        &h,
        policy(&h, routes, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    for _ in 0..4 {
        let r = c.get("/health", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_none(), "exempt: no headers");
        assert_eq!(c.status("/", &[("x-internal", "yes")]).await, 200);
    }
    assert_eq!(c.status("/", &[]).await, 200);
    assert_eq!(c.status("/", &[]).await, 429);
}

/// A route's limit holds however its path is spelled: percent-encoded
/// letters, doubled, trailing and dot segments, a query, and `HEAD` for a
/// `GET` route. Each spelling the framework dispatches to the handler is
/// decided by that route's rule, never by the relaxed default; the handler
/// runs once, for the one request the strict rule allows.
pub async fn path_spellings(h: Arc<dyn HttpHarness>) {
    let routes = default_limit("1000/hour")
        .route(
            "/counted",
            &["GET"],
            Limits::new(vec![rule("strict", "1/hour")]),
        )
        .expect("a pattern");
    let (_server, c) = start(
        &h,
        policy(&h, routes, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    assert_eq!(c.get("/counted", &[]).await.body, "counted=1");
    let spellings = [
        ("GET", "/counted"),
        ("HEAD", "/counted"),
        ("GET", "/c%6Funted"),
        ("GET", "/%63ounted"),
        ("GET", "/%63%6F%75%6E%74%65%64"),
        ("GET", "//counted"),
        ("GET", "/counted/"),
        ("GET", "/counted//"),
        ("GET", "///counted///"),
        ("GET", "/./counted"),
        ("GET", "/counted?page=2"),
        ("GET", "/counted%2F"),
        ("GET", "/%2Fcounted"),
        ("GET", "/COUNTED"),
    ];
    for (method, path) in spellings {
        let r = c.send(method, path, &[]).await;
        assert_ne!(
            r.status, 200,
            "{method} {path} got past the strict rule: {} {:?}",
            r.status, r.body
        );
        if r.status == 429 {
            assert!(
                r.header("ratelimit")
                    .is_some_and(|v| v.starts_with("\"strict\"")),
                "{method} {path} was decided by another rule: {:?}",
                r.header("ratelimit")
            );
        }
    }
    assert_eq!(
        c.get("/calls", &[]).await.body,
        "calls=1",
        "no other spelling reached the handler"
    );
}

/// The deny list answers 403 before anything else; the allow list is never
/// limited; both see the client behind a trusted proxy.
pub async fn allow_and_deny_lists(h: Arc<dyn HttpHarness>) {
    let denied = default_limit("5/minute")
        .deny(["127.0.0.1"])
        .expect("a CIDR");
    let (server, c) = start(
        &h,
        policy(&h, denied, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    for path in ["/", "/health", "/users/1"] {
        let r = c.get(path, &[]).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("forbidden"), "{}", r.body);
    }
    drop(server);

    let allowed = default_limit("1/minute")
        .allow(["127.0.0.0/8"])
        .expect("a CIDR");
    let (server, c) = start(
        &h,
        policy(&h, allowed, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    for _ in 0..3 {
        let r = c.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_none());
    }
    drop(server);

    // Behind a trusted proxy the lists apply to the forwarded client.
    let proxies = ClientIpPolicy::new().trust(["127.0.0.1"]).expect("a CIDR");
    let routes = default_limit("5/minute")
        .deny(["203.0.113.0/24"])
        .expect("a CIDR")
        .allow(["198.51.100.7"])
        .expect("an address");
    let keys = KeyExtractor::new(KeySource::Ip).proxies(proxies);
    let (_server, c) = start(&h, policy(&h, routes, keys).await).await;
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.9")]).await,
        403
    );
    let r = c.get("/", &[("x-forwarded-for", "198.51.100.7")]).await;
    assert!(r.status == 200 && r.header("ratelimit").is_none());
    let r = c.get("/", &[("x-forwarded-for", "192.0.2.1")]).await;
    assert!(r.status == 200 && r.header("ratelimit").is_some());
    drop(_server);

    // Entries spelled IPv4-mapped match the IPv4 clients they stand for.
    let mapped = default_limit("5/minute")
        .deny(["::ffff:127.0.0.1"])
        .expect("an address");
    let (_server, c) = start(
        &h,
        policy(&h, mapped, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    assert_eq!(c.status("/", &[]).await, 403);
}

/// Behind a proxy that appends `X-Forwarded-For`, whatever other forwarding
/// headers a client sends are its own: rotating `Forwarded: for=…` gains no
/// fresh key, naming a victim spends nothing of the victim's, and
/// `for=unknown` lands on the proxy, which is never blocked automatically.
/// Exempt paths answer before automatic blocks: a blocked client's, or the
/// load balancer's, health check still gets through.
pub async fn forged_forwarding_headers_behind_a_proxy(h: Arc<dyn HttpHarness>) {
    let routes = default_limit("3/minute")
        .exempt("/health")
        .expect("a pattern");
    let keys = KeyExtractor::new(KeySource::Ip).proxies(
        ClientIpPolicy::new()
            .trust(["127.0.0.1"])
            .expect("an address"),
    );
    let p = policy(&h, routes, keys).await.auto_block(AutoBlock::new(
        2,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(900),
    ));
    let (_server, c) = start(&h, p).await;
    let attacker = ("x-forwarded-for", "203.0.113.50");
    let mut admitted = 0;
    for i in 0..20 {
        let forged = format!("for=198.51.100.{i}");
        let r = c
            .get(
                "/",
                &[
                    ("forwarded", &forged),
                    ("x-real-ip", &format!("192.0.2.{i}")),
                    attacker,
                ],
            )
            .await;
        assert!(
            matches!(r.status, 200 | 429 | 403),
            "{} {}",
            r.status,
            r.body
        );
        admitted += usize::from(r.status == 200);
    }
    assert_eq!(admitted, 3, "forged headers rotated the key");
    // The attacker named 198.51.100.7 above; that client's quota is whole.
    for _ in 0..3 {
        assert_eq!(
            c.status("/", &[("x-forwarded-for", "198.51.100.7")]).await,
            200
        );
    }
    // The attacker is blocked now (403), yet its health check gets through.
    assert_eq!(c.status("/", &[attacker]).await, 403);
    assert_eq!(c.status("/health", &[attacker]).await, 200);
    // No X-Forwarded-For: the client is the proxy itself. Its denials never
    // block it, so everyone behind it is limited, not locked out.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(c.status("/", &[("forwarded", "for=unknown")]).await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        !statuses.contains(&403),
        "the proxy was blocked: {statuses:?}"
    );
    assert_eq!(c.status("/health", &[]).await, 200);
}

/// Rules per route and method, several rules on one route, a cost per route.
pub async fn routes_and_methods(h: Arc<dyn HttpHarness>) {
    let routes = RouteTable::new()
        .route(
            "/users/{id}",
            &["POST"],
            Limits::new(vec![rule("user-writes", "1/minute")]),
        )
        .expect("a pattern")
        .route(
            "/users/{id}",
            &["GET"],
            Limits::new(vec![
                rule("user-reads-minute", "3/minute"),
                rule("user-reads-hour", "4/hour"),
            ]),
        )
        .expect("a pattern")
        .route(
            "/decision",
            &[],
            Limits::new(vec![rule("expensive", "4/minute")]).cost(2),
        )
        .expect("a pattern")
        .default_limits(Limits::new(vec![rule("api", "10/minute")]));
    let p = policy(&h, routes, KeyExtractor::new(KeySource::Ip))
        .await
        .headers(HeaderStyle::Ietf, ResetFormat::Seconds);
    let (_server, c) = start(&h, p).await;
    assert_eq!(c.send("POST", "/users/1", &[]).await.status, 200);
    // The route's limit covers every id: the pattern is limited, not the path.
    assert_eq!(c.send("POST", "/users/2", &[]).await.status, 429);
    // GET on the same pattern has its own rules: all must pass, the most
    // restrictive is reported.
    for remaining in ["2", "1", "0"] {
        let r = c.get("/users/1", &[]).await;
        assert_eq!(r.status, 200);
        assert!(
            r.header("ratelimit")
                .is_some_and(|v| v.contains("\"user-reads-minute\";r=")
                    && v.contains(&format!("r={remaining}"))),
            "{:?}",
            r.header("ratelimit")
        );
    }
    let r = c.get("/users/1", &[]).await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("ratelimit")
            .is_some_and(|v| v.contains("user-reads-minute"))
    );
    // A cost of 2 against 4 per minute: two requests.
    assert_eq!(c.status("/decision", &[]).await, 200);
    assert_eq!(c.status("/decision", &[]).await, 200);
    assert_eq!(c.status("/decision", &[]).await, 429);
    // Other routes get the default.
    assert_eq!(c.status("/", &[]).await, 200);
}

/// A client that sends its own `X-Forwarded-For` to a server that trusts no
/// proxy gains nothing; behind a trusted proxy, forwarded clients are told
/// apart, walking from the right past trusted hops.
pub async fn forwarded_for_only_from_trusted_proxies(h: Arc<dyn HttpHarness>) {
    let (server, c) = start(
        &h,
        policy(
            &h,
            default_limit("1/minute"),
            KeyExtractor::new(KeySource::Ip),
        )
        .await,
    )
    .await;
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.1")]).await,
        200
    );
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.2")]).await,
        429
    );
    assert_eq!(
        c.status("/", &[("forwarded", "for=203.0.113.3")]).await,
        429
    );
    drop(server);

    let proxies = ClientIpPolicy::new()
        .trust(["127.0.0.1", "10.0.0.0/8"])
        .expect("CIDRs");
    let keys = KeyExtractor::new(KeySource::Ip).proxies(proxies);
    let (_server, c) = start(&h, policy(&h, default_limit("1/minute"), keys).await).await;
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.1")]).await,
        200
    );
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.2")]).await,
        200
    );
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "203.0.113.1")]).await,
        429
    );
    // A spoofed leftmost entry behind a real chain: the client is the first
    // untrusted hop from the right (203.0.113.4), not what it claimed.
    assert_eq!(
        c.status(
            "/",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.4, 10.1.1.1")]
        )
        .await,
        200
    );
    assert_eq!(
        c.status(
            "/",
            &[("x-forwarded-for", "7.7.7.7, 203.0.113.4, 10.1.1.1")]
        )
        .await,
        429
    );
}

/// Hostile forwarding headers from behind a trusted proxy: thousands of
/// hops, invalid UTF-8, malformed `Forwarded`, a giant value. The server
/// answers every one (a framework may refuse an oversized head with its
/// own 4xx), the walk stays bounded, and the key stays sane: garbage stops
/// the walk at the nearest trusted hop (here the proxy itself), so it never
/// makes a new key per request.
pub async fn hostile_forwarding_headers(h: Arc<dyn HttpHarness>) {
    let proxies = ClientIpPolicy::new()
        .trust(["127.0.0.1", "10.0.0.0/8"])
        .expect("CIDRs");
    let keys = KeyExtractor::new(KeySource::Ip).proxies(proxies);
    let (_server, c) = start(&h, policy(&h, default_limit("3/minute"), keys).await).await;

    // Two thousand hops, the client on the right: one key per client.
    let hops = |client: &str| {
        let mut v = "1.1.1.1, ".repeat(2_000);
        v.push_str(client);
        v
    };
    let long_a = hops("198.51.100.7");
    let xff_a = [("x-forwarded-for", long_a.as_str())];
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(c.status("/", &xff_a).await);
    }
    assert_eq!(seen, [200, 200, 200, 429]);
    let long_b = hops("198.51.100.8");
    assert_eq!(
        c.status("/", &[("x-forwarded-for", long_b.as_str())]).await,
        200
    );

    // Garbage on the right: every one of these is keyed by the proxy.
    let garbage: [(&str, &[u8]); 5] = [
        ("x-forwarded-for", b"198.51.100.9, \xff\xfe\x80"),
        ("x-forwarded-for", b"198.51.100.9, 999.1.1.1"),
        ("forwarded", b"for=\"[2001:db8::1"),
        ("forwarded", b"for=198.51.100.9;;;,for=_hidden"),
        ("forwarded", b"for=unknown"),
    ];
    let mut seen = Vec::new();
    for header in garbage {
        seen.push(c.send_bytes("GET", "/", &[header]).await.status);
    }
    assert_eq!(seen, [200, 200, 200, 429, 429]);
    // A well-formed client is still told apart.
    assert_eq!(
        c.status("/", &[("x-forwarded-for", "198.51.100.20")]).await,
        200
    );

    // A giant value: answered (by the limiter, or refused by the
    // framework's own bound on a request head), and the server lives on.
    // (actix-web closes the connection instead).
    let giant = "9".repeat(256 * 1024);
    let giant = c
        .try_send_bytes("GET", "/", &[("x-forwarded-for", giant.as_bytes())])
        .await;
    if let Ok(reply) = giant {
        assert!(
            matches!(reply.status, 200 | 429 | 400 | 413 | 431),
            "giant header: {}",
            reply.status
        );
    }
    let fresh = TestClient::new(c.addr());
    assert_eq!(
        fresh
            .status("/", &[("x-forwarded-for", "198.51.100.21")])
            .await,
        200
    );
}

/// IPv6 clients share their /64 (configurable).
pub async fn ipv6_prefix_grouping(h: Arc<dyn HttpHarness>) {
    let proxies = ClientIpPolicy::new().trust(["127.0.0.1"]).expect("a CIDR");
    let keys = KeyExtractor::new(KeySource::Ip).proxies(proxies.clone());
    let (server, c) = start(&h, policy(&h, default_limit("1/minute"), keys).await).await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(c.status("/", &xff("2001:db8:1:2::1")).await, 200);
    assert_eq!(c.status("/", &xff("2001:db8:1:2:ffff::9")).await, 429);
    assert_eq!(c.status("/", &xff("2001:db8:1:3::1")).await, 200);
    drop(server);

    let keys = KeyExtractor::new(KeySource::Ip)
        .proxies(proxies)
        .ipv6_prefix(48);
    let (_server, c) = start(&h, policy(&h, default_limit("1/minute"), keys).await).await;
    assert_eq!(c.status("/", &xff("2001:db8:1:2::1")).await, 200);
    assert_eq!(c.status("/", &xff("2001:db8:1:3::1")).await, 429);
}

/// Keys from the application's identity and from a header (an API key), with
/// the fallback for requests without one: the client address, or a refusal.
pub async fn identity_and_header_keys(h: Arc<dyn HttpHarness>) {
    let (server, c) = start(
        &h,
        policy(
            &h,
            default_limit("1/minute"),
            KeyExtractor::new(KeySource::User),
        )
        .await,
    )
    .await;
    assert_eq!(c.status("/", &[("x-user", "alice")]).await, 200);
    assert_eq!(c.status("/", &[("x-user", "alice")]).await, 429);
    assert_eq!(c.status("/", &[("x-user", "bob")]).await, 200);
    // Anonymous requests fall back to the client address.
    assert_eq!(c.status("/", &[]).await, 200);
    assert_eq!(c.status("/", &[]).await, 429);
    drop(server);

    let strict = KeyExtractor::new(KeySource::Header("x-api-key".into()))
        .on_missing(MissingKey::Reject(http::StatusCode::UNAUTHORIZED));
    let (_server, c) = start(&h, policy(&h, default_limit("1/minute"), strict).await).await;
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("missing_key"), "{}", r.body);
    assert_eq!(c.status("/", &[("x-api-key", "k1")]).await, 200);
    assert_eq!(c.status("/", &[("x-api-key", "k1")]).await, 429);
    assert_eq!(c.status("/", &[("x-api-key", "k2")]).await, 200);
}

/// Tiers: `x-tier` (or the resolver, for `x-user: paying-…` without one)
/// picks per-path limits keyed by user; anonymous callers, unknown tiers and
/// uncovered paths get the default per IP. The resolver's path makes even a
/// store that decides at once wait once, so adapters take both paths.
pub async fn tiers(h: Arc<dyn HttpHarness>) {
    let tiers = Tiers::new()
        .rule(
            "free",
            "/users/{id}",
            &["POST"],
            Limits::new(vec![rule("users-free", "1/hour")]),
        )
        .expect("a tier rule")
        .rule(
            "pro",
            "/users/{id}",
            &["POST"],
            Limits::new(vec![rule("users-pro", "3/hour")]),
        )
        .expect("a tier rule")
        .resolver(tier_resolver_fn(|who: Identity| async move {
            Ok(who.user().starts_with("paying-").then(|| "pro".into()))
        }));
    let p = policy(
        &h,
        default_limit("2/minute"),
        KeyExtractor::new(KeySource::Ip),
    )
    .await
    .tiers(tiers);
    let (_server, c) = start(&h, p).await;
    let free = [("x-user", "fiona"), ("x-tier", "free")];
    assert_eq!(c.send("POST", "/users/1", &free).await.status, 200);
    assert_eq!(c.send("POST", "/users/2", &free).await.status, 429);
    let pro = [("x-user", "paying-paul")];
    for expected in [200, 200, 200, 429] {
        assert_eq!(c.send("POST", "/users/1", &pro).await.status, expected);
    }
    // The same user under another id shares the tier's count.
    let r = c
        .send("POST", "/users/9", &[("x-user", "paying-paul")])
        .await;
    assert_eq!(r.status, 429);
    // Uncovered path, unknown tier, anonymous: the default, per IP (one
    // client address here, so they share it).
    assert_eq!(c.status("/", &pro).await, 200);
    assert_eq!(
        c.send(
            "POST",
            "/users/1",
            &[("x-user", "gina"), ("x-tier", "gold")]
        )
        .await
        .status,
        200
    );
    assert_eq!(c.status("/", &[]).await, 429);
}

/// The policy replaced while the server runs: requests from then on get the
/// new one, through every worker of the server.
pub async fn policy_replaced_while_serving(h: Arc<dyn HttpHarness>) {
    let shared = SharedPolicy::new(
        policy(
            &h,
            default_limit("1/minute"),
            KeyExtractor::new(KeySource::Ip),
        )
        .await,
    );
    let (_server, c) = start(&h, shared.clone()).await;
    assert_eq!(c.status("/", &[]).await, 200);
    assert_eq!(c.status("/", &[]).await, 429);
    let looser = policy(
        &h,
        RouteTable::new().default_limits(Limits::new(vec![rule("api-v2", "3/minute")])),
        KeyExtractor::new(KeySource::Ip),
    )
    .await;
    shared.replace(looser);
    // New connections, so that every worker is asked.
    assert_eq!(TestClient::new(c.addr).burst(5, true).await, (3, 2));
}

/// A configuration file reloaded while clients hammer the server: a valid
/// change applies, an invalid one is refused with its problems while the
/// previous policy keeps serving, and no request fails because of a swap.
/// Counters of a rule that keeps its name and algorithm survive a change of
/// its limit.
pub async fn config_reloaded_under_load(h: Arc<dyn HttpHarness>) {
    let file = ConfigFile::new();
    let config = |limit: u32| {
        format!(
            "[defaults]\nkey = \"header:x-client\"\nrules = [\"api\"]\n\
             [rules.api]\nalgorithm = \"sliding_window_log\"\nlimit = {limit}\nwindow = \"1h\"\n\
             [exempt]\npaths = [\"/health\"]\n"
        )
    };
    file.write(&config(5));
    let loader = Loader::file(&file.path).env_prefix(None);
    let live = LivePolicy::start_from(
        loader.load().expect("a valid file"),
        loader,
        h.store().await,
        PolicyCode::new(),
    )
    .await
    .expect("a valid policy");
    let (_server, c) = start(&h, live.policy()).await;
    let keep = [("x-client", "keep")];
    for expected in [200, 200, 200, 200, 200, 429] {
        assert_eq!(c.status("/", &keep).await, expected);
    }

    // Clients keep sending while the file changes underneath.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..6)
        .map(|i| {
            let (c, stop) = (TestClient::new(c.addr), stop.clone());
            tokio::spawn(async move {
                let client = format!("load-{i}");
                let mut answered = 0_u32;
                while !stop.load(Ordering::Relaxed) {
                    let status = c.status("/", &[("x-client", &client)]).await;
                    assert!(
                        status == 200 || status == 429,
                        "a request failed during a reload: {status}"
                    );
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(60));
    pause().await;
    file.write(&config(8));
    live.reload().await.expect("a valid change applies");
    pause().await;
    file.write(
        "[rules.api]\nlimit = 0\nwindow = \"1h\"\n[defaults]\nrules = [\"api\", \"nope\"]\n",
    );
    let refused = live
        .reload()
        .await
        .expect_err("an invalid change is refused");
    let listed: Vec<String> = refused
        .errors()
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    assert_eq!(
        listed,
        [
            "rules.api.limit: 0 is out of range (expected a whole number from 1)",
            "defaults.rules[1]: no rule named `nope` (expected one of the rules of [rules]: api)",
        ]
    );
    pause().await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        assert!(
            task.await.expect("a load task") > 0,
            "every client was answered"
        );
    }
    // The refused file changed nothing: still 8, and `keep`'s 5 still count.
    assert_eq!(
        live.config().await.rules.get("api").map(|r| r.limit),
        Some(8)
    );
    for expected in [200, 200, 200, 429] {
        assert_eq!(c.status("/", &keep).await, expected);
    }
}

/// A configuration file in the temporary directory, removed when dropped.
struct ConfigFile {
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ratelimit-suite-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Self { path }
    }

    /// Replaces the file whole (written aside, then renamed, as editors and
    /// deployment tools do), so a reload never reads half a file.
    fn write(&self, text: &str) {
        let aside = self.path.with_extension("toml.new");
        std::fs::write(&aside, text).expect("write the configuration");
        std::fs::rename(&aside, &self.path).expect("replace the configuration");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A failing store: 503 by default (fail closed), the request passes where
/// the route fails open; the error hook sees every failure.
pub async fn store_failures(h: Arc<dyn HttpHarness>) {
    // A real store in a real failed state: closed.
    let store = h.store().await;
    store.close().await.expect("close");
    let errors = Arc::new(AtomicU32::new(0));
    let seen = errors.clone();
    let routes = default_limit("10/minute")
        .route(
            "/health",
            &[],
            Limits::new(vec![rule("open", "10/minute")]).on_store_error(ErrorMode::FailOpen),
        )
        .expect("a pattern");
    let p = HttpPolicy::new(
        Limiter::new(store),
        routes,
        KeyExtractor::new(KeySource::Ip),
    )
    .on_error(Arc::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let (_server, c) = start(&h, p.clone()).await;
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("rate_limiter_unavailable"), "{}", r.body);
    assert_eq!(c.status("/health", &[]).await, 200);
    assert_eq!(errors.load(Ordering::SeqCst), 2);
    drop(_server);

    let open = p.on_store_error(ErrorMode::FailOpen);
    let (_server, c) = start(&h, open).await;
    let r = c.get("/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(errors.load(Ordering::SeqCst), 3);
}

/// The plainest policy (one limit by client address and nothing else,
/// which the policy decides on a direct plan): every spelling of every
/// path, with any method, counts against the client's one key, and a
/// failed store answers by the policy's error mode.
pub async fn the_plainest_policy(h: Arc<dyn HttpHarness>) {
    let p = policy(
        &h,
        default_limit("4/hour"),
        KeyExtractor::new(KeySource::Ip),
    )
    .await;
    let (_server, c) = start(&h, p).await;
    let admitted = [
        ("GET", "/counted"),
        ("HEAD", "//counted/"),
        ("GET", "/%2Fcounted"),
        ("POST", "/COUNTED?page=2"),
    ];
    for (method, path) in admitted {
        let r = c.send(method, path, &[]).await;
        assert_ne!(r.status, 429, "{method} {path} was refused early: {r:?}");
    }
    let refused = [
        ("GET", "/"),
        ("HEAD", "/counted"),
        ("GET", "/c%6Funted"),
        ("DELETE", "/./counted//"),
        ("GET", "/no-such-page"),
    ];
    for (method, path) in refused {
        let r = c.send(method, path, &[]).await;
        assert_eq!(r.status, 429, "{method} {path} got past the limit: {r:?}");
    }
    drop(_server);

    // A real store in a real failed state: closed.
    let store = h.store().await;
    store.close().await.expect("close");
    let closed = HttpPolicy::new(
        Limiter::new(store),
        default_limit("10/minute"),
        KeyExtractor::new(KeySource::Ip),
    );
    let (_server, c) = start(&h, closed.clone()).await;
    let r = c.get("/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("rate_limiter_unavailable"), "{}", r.body);
    assert_eq!(c.send("HEAD", "/counted", &[]).await.status, 503);
    drop(_server);
    let (_server, c) = start(&h, closed.on_store_error(ErrorMode::FailOpen)).await;
    let r = c.get("/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

/// Shadow mode decides and reports (headers, the blocked hook) but never blocks.
pub async fn shadow_mode(h: Arc<dyn HttpHarness>) {
    let blocked = Arc::new(AtomicU32::new(0));
    let seen = blocked.clone();
    let p = policy(
        &h,
        default_limit("1/minute"),
        KeyExtractor::new(KeySource::Ip),
    )
    .await
    .shadow(true)
    .on_blocked(Arc::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let (_server, c) = start(&h, p).await;
    for _ in 0..4 {
        let r = c.get("/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert!(r.header("ratelimit").is_some_and(|v| v.contains("r=0")));
    }
    assert_eq!(blocked.load(Ordering::SeqCst), 3);
}

/// 150 concurrent requests against a limit of 100: exactly 100 pass.
pub async fn concurrent_requests(h: Arc<dyn HttpHarness>) {
    let (_server, c) = start(
        &h,
        policy(
            &h,
            default_limit("100/hour"),
            KeyExtractor::new(KeySource::Ip),
        )
        .await,
    )
    .await;
    assert_eq!(c.burst(150, false).await, (100, 50));
}

/// A refused request never reaches its handler: not on a denial, not on the
/// deny list, not when the store fails closed.
pub async fn refused_requests_never_reach_the_handler(h: Arc<dyn HttpHarness>) {
    let calls = |c: TestClient| async move { c.get("/calls", &[]).await.body };
    let routes = default_limit("2/minute")
        .exempt("/calls")
        .expect("a pattern");
    let (_server, c) = start(
        &h,
        policy(&h, routes, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    assert_eq!(c.get("/counted", &[]).await.body, "counted=1");
    assert_eq!(c.get("/counted", &[]).await.body, "counted=2");
    assert_eq!(c.status("/counted", &[]).await, 429);
    assert_eq!(c.status("/counted", &[]).await, 429);
    assert_eq!(calls(c.clone()).await, "calls=2");

    // The denied client comes through a trusted proxy; the test reads the
    // counter as the proxy itself.
    let denied = default_limit("5/minute")
        .exempt("/calls")
        .expect("a pattern")
        .deny(["203.0.113.0/24"])
        .expect("a CIDR");
    let keys = KeyExtractor::new(KeySource::Ip)
        .proxies(ClientIpPolicy::new().trust(["127.0.0.1"]).expect("a CIDR"));
    let (_server, c) = start(&h, policy(&h, denied, keys).await).await;
    let r = c
        .get("/counted", &[("x-forwarded-for", "203.0.113.9")])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(calls(c.clone()).await, "calls=0");

    let store = h.store().await;
    store.close().await.expect("close");
    let routes = default_limit("5/minute")
        .exempt("/calls")
        .expect("a pattern");
    let failing = HttpPolicy::new(
        Limiter::new(store),
        routes,
        KeyExtractor::new(KeySource::Ip),
    );
    let (_server, c) = start(&h, failing).await;
    assert_eq!(c.status("/counted", &[]).await, 503);
    assert_eq!(calls(c).await, "calls=0");
}

/// Handlers see the decision; routes the policy does not limit have none,
/// and neither does any route of a policy that hands handlers no decision.
pub async fn handlers_see_the_decision(h: Arc<dyn HttpHarness>) {
    let routes = default_limit("10/minute")
        .exempt("/health")
        .expect("a pattern");
    let (_server, c) = start(
        &h,
        policy(&h, routes, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    assert_eq!(c.get("/decision", &[]).await.body, "remaining=9");
    assert_eq!(c.get("/decision", &[]).await.body, "remaining=8");
    let allowed = default_limit("10/minute")
        .allow(["127.0.0.1"])
        .expect("a CIDR");
    let (_server, c) = start(
        &h,
        policy(&h, allowed, KeyExtractor::new(KeySource::Ip)).await,
    )
    .await;
    assert_eq!(c.get("/decision", &[]).await.body, "none");

    // A policy that hands handlers no decision limits as before; a route
    // counting only some responses still settles by them.
    let routes = default_limit("2/minute")
        .route(
            "/login",
            &[],
            Limits::new(vec![rule("logins", "1/hour")])
                .count_when("401".parse().expect("a status")),
        )
        .expect("a pattern");
    let lean = policy(&h, routes, KeyExtractor::new(KeySource::Ip))
        .await
        .decision_for_handlers(false);
    let (_server, c) = start(&h, lean).await;
    assert_eq!(c.get("/decision", &[]).await.body, "none");
    assert_eq!(c.get("/decision", &[]).await.body, "none");
    assert_eq!(c.status("/decision", &[]).await, 429);
    let good = [("x-password", "good")];
    for _ in 0..3 {
        assert_eq!(
            c.status("/login", &good).await,
            200,
            "good logins never count"
        );
    }
    let bad = [("x-password", "guess")];
    assert_eq!(c.status("/login", &bad).await, 401);
    assert_eq!(c.status("/login", &bad).await, 429);
}

/// A login route counting only failed logins (401s), 3 per window: good
/// logins never count and the fourth failure is refused before the
/// handler. Failures sent all at once cannot pass the limit while their
/// answers are unknown, and the good logins among them give back what they
/// took.
pub async fn counting_only_failed_logins(h: Arc<dyn HttpHarness>) {
    let failures = |when: &str| {
        RouteTable::new()
            .route(
                "/login",
                &[],
                Limits::new(vec![rule("logins", "3/hour")])
                    .count_when(when.parse().expect("statuses to count")),
            )
            .expect("a pattern")
    };
    let keys = || KeyExtractor::new(KeySource::Ip);
    let good = [("x-password", "good")];
    let bad = [("x-password", "guess")];
    let (_server, c) = start(&h, policy(&h, failures("401"), keys()).await).await;
    for _ in 0..10 {
        let r = c.get("/login", &good).await;
        assert_eq!((r.status, r.body.as_str()), (200, "welcome"));
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(c.status("/login", &bad).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // The key is limited, not the failures: once over, a good login waits too.
    assert_eq!(c.status("/login", &good).await, 429);
    // HEAD is not a way around: whatever the framework answers it (401 as
    // a GET, or 404/405), those answers count as client errors.
    let (_server, c) = start(&h, policy(&h, failures("4xx"), keys()).await).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.send("HEAD", "/login", &bad).await.status);
    }
    assert!(
        statuses[..3].iter().all(|s| (400..429).contains(s)) && statuses[3] == 429,
        "{statuses:?}"
    );

    // Sixteen failures and sixteen good logins at once.
    let (_server, c) = start(&h, policy(&h, failures("!2xx"), keys()).await).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let password = if i % 2 == 0 { "good" } else { "guess" };
                c.status("/login", &[("x-password", password)]).await
            })
        })
        .collect();
    let mut failed = 0_usize;
    for task in tasks {
        match task.await.expect("a request task") {
            401 => failed += 1,
            200 | 429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(failed <= 3, "{failed} failures reached the handler");
    // What is left is exactly what the failures did not use: every good
    // login gave its unit back.
    for _ in failed..3 {
        assert_eq!(c.status("/login", &bad).await, 401);
    }
    assert_eq!(c.status("/login", &bad).await, 429);
}

/// Requests in flight: `/slow` and `/panic` share a limit of 5 at once per
/// client (`/slow` also 1 000 an hour). Twenty requests at once on the slow
/// handler: never more than 5 handlers run, the others are refused at once
/// with the body and `Retry-After` of any denial, and every place comes
/// back once the responses are sent. Clients that go away mid-request, and
/// handlers that panic, give their places back too.
pub async fn requests_in_flight(h: Arc<dyn HttpHarness>) {
    let five = Rule::concurrency("five", 5, std::time::Duration::from_secs(60)).expect("a rule");
    let routes = RouteTable::new()
        .route(
            "/slow",
            &[],
            Limits::new(vec![rule("hourly", "1000/hour"), five.clone()]),
        )
        .and_then(|t| t.route("/panic", &[], Limits::new(vec![five])))
        .expect("patterns");
    let keys = KeyExtractor::new(KeySource::Ip);
    let (_server, c) = start(&h, policy(&h, routes, keys).await).await;
    let at_once = |path: &'static str, n: usize| {
        let c = c.clone();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(async move { c.get(path, &[]).await })
                })
                .collect();
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.expect("a request task"));
            }
            replies
        }
    };
    let replies = at_once("/slow?ms=300", 20).await;
    let mut admitted = 0;
    for r in &replies {
        match r.status {
            200 => admitted += 1,
            429 => {
                assert!(r.body.contains("\"rate_limited\""), "{}", r.body);
                assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
            }
            other => panic!("unexpected status {other}: {}", r.body),
        }
    }
    let most = c.get("/most", &[]).await.body;
    let most: u64 = most
        .strip_prefix("most=")
        .and_then(|n| n.parse().ok())
        .expect("most=N");
    assert!(most <= 5, "{most} handlers ran at once");
    assert!(admitted >= 5, "only {admitted} admitted");
    // Every place comes back once its response has been sent.
    let all_back = async || {
        for _ in 0..100 {
            if at_once("/slow", 5).await.iter().all(|r| r.status == 200) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    };
    assert!(all_back().await, "the places came back after the responses");

    // Clients that go away while their handlers run: each gives up after
    // 200 ms, once admitted (a place of the probe above may still be on its
    // way back: a 429 asks again).
    let gone: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let ask = c.get("/slow?ms=1500", &[]);
                    match tokio::time::timeout(std::time::Duration::from_millis(200), ask).await {
                        Err(_) => return true,
                        Ok(r) if r.status == 429 => {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        Ok(r) => panic!("answered early: {} {}", r.status, r.body),
                    }
                }
                false
            })
        })
        .collect();
    for task in gone {
        assert!(task.await.expect("a request task"), "never admitted");
    }
    // Its place is back at the latest when its handler ends (a handler
    // still running after its client left is still in flight).
    assert!(
        all_back().await,
        "a client gone mid-request gave its place back"
    );

    // HEAD, whose answer has no body (the framework may drop it unread),
    // ten times over the five places: none is kept. (A place comes back a
    // moment after its answer: a HEAD may have to ask again, never for
    // long.)
    for _ in 0..10 {
        let mut admitted = false;
        for _ in 0..100 {
            if c.send("HEAD", "/slow", &[]).await.status != 429 {
                admitted = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(admitted, "HEAD requests kept their places");
    }
    assert!(all_back().await, "HEAD requests gave their places back");

    // Handlers that panic (each admitted: a 429, a place of the probe
    // above still on its way back, asks again).
    for _ in 0..5 {
        let mut panicked = false;
        for _ in 0..100 {
            let answer = c.try_send_bytes("GET", "/panic", &[]).await;
            if answer.as_ref().is_ok_and(|r| r.status == 429) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
            assert!(
                answer.as_ref().map_or(true, |r| r.status == 500),
                "{answer:?}"
            );
            panicked = true;
            break;
        }
        assert!(panicked, "a handler that panics was never admitted");
    }
    assert!(
        all_back().await,
        "a handler that panicked gave its place back"
    );
}

/// Requests in flight, held while their bodies are sent: `/stream` limited
/// to one at once. While a body is being sent, the next request is
/// refused; once it has been, or once its client has gone away in the
/// middle of it, the place is back.
pub async fn bodies_hold_their_places(h: Arc<dyn HttpHarness>) {
    let one = Rule::concurrency("one", 1, std::time::Duration::from_secs(60)).expect("a rule");
    let routes = RouteTable::new()
        .route("/stream", &[], Limits::new(vec![one]))
        .expect("a pattern");
    let keys = KeyExtractor::new(KeySource::Ip);
    let (_server, c) = start(&h, policy(&h, routes, keys).await).await;
    let back = async || {
        for _ in 0..200 {
            if c.status("/stream", &[]).await == 200 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        false
    };
    let (status, first, body) = c.first_chunk("/stream?ms=700").await;
    assert_eq!((status, first.as_str()), (200, "first "));
    assert_eq!(
        c.status("/stream", &[]).await,
        429,
        "held while the body is sent"
    );
    let rest = body
        .collect()
        .await
        .expect("the rest of the body")
        .to_bytes();
    assert_eq!(&rest[..], b"second");
    assert!(back().await, "given back once the body was sent");
    // The client goes away in the middle of the body. (The probe above
    // took the place too, and gives it back a moment after its body ended:
    // the stream may have to ask again.)
    let mut streaming = None;
    for _ in 0..200 {
        let (status, _, body) = c.first_chunk("/stream?ms=700").await;
        if status == 200 {
            streaming = Some(body);
            break;
        }
        assert_eq!(status, 429);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let body = streaming.expect("the place came back for a new stream");
    assert_eq!(c.status("/stream", &[]).await, 429);
    drop(body);
    assert!(back().await, "given back once the client went away");
}

/// `n` requests for `path` at once: how many were answered (200); the
/// others must be refused with `Retry-After` (429).
async fn answered_at_once(c: &TestClient, path: &'static str, n: usize) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get(path, &[]).await })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        let r = task.await.expect("a request task");
        match r.status {
            200 => answered += 1,
            429 => assert!(r.header("retry-after").is_some(), "{:?}", r.headers),
            other => panic!("unexpected status {other}: {}", r.body),
        }
    }
    answered
}

/// A GCRA rule of `limit` per `window` whose requests wait up to `up_to`
/// for their turn, `waiters` at most.
fn waiting(name: &str, (limit, window): (u64, u64), (up_to, waiters): (u64, u64)) -> Rule {
    let ms = std::time::Duration::from_millis;
    let quota = ratekeeper_core::Quota::new(limit, ms(window)).expect("a quota");
    Rule::new(name, Algorithm::Gcra, quota)
        .and_then(|r| r.with_wait(ratekeeper_core::Wait::new(ms(up_to), waiters)))
        .expect("a rule")
}

/// Waiting in line: one request a second (a burst of 2), waiting up to
/// 2 s, 2 at most; six requests at once: four answered (two at once,
/// two after their turn), two refused at once with `Retry-After`, and the
/// handler ran four times. A client that goes away while it waits keeps
/// its place (the next request is refused until a place opens). In
/// shadow mode nothing waits: what would have waited is reported blocked.
pub async fn requests_wait_their_turn(h: Arc<dyn HttpHarness>) {
    // One request every 2 s: one place, its turn 2 s away.
    let gone_rule = waiting("gone", (2, 4_000), (2_000, 1));
    let routes = RouteTable::new()
        .route(
            "/counted",
            &[],
            Limits::new(vec![waiting("line", (2, 2_000), (2_000, 2))]),
        )
        .and_then(|t| t.route("/decision", &[], Limits::new(vec![gone_rule.clone()])))
        .expect("patterns");
    let keys = KeyExtractor::new(KeySource::Ip);
    // The store seen from outside, to know when a request has its place.
    let limiter = Limiter::new(h.store().await);
    let p = HttpPolicy::new(limiter.clone(), routes.clone(), keys.clone());
    let (_server, c) = start(&h, p).await;
    let answered = answered_at_once(&c, "/counted", 6).await;
    assert_eq!(answered, 4, "two at once, two after their turn");
    assert_eq!(c.get("/calls", &[]).await.body, "calls=4");

    // A waiter whose client goes away.
    for _ in 0..2 {
        assert_eq!(c.status("/decision", &[]).await, 200);
    }
    let gone = tokio::spawn({
        let c = c.clone();
        async move { c.get("/decision", &[]).await }
    });
    // Once it has its place (its turn is 2 s away), it goes.
    let mut placed = false;
    for _ in 0..200 {
        placed = !limiter
            .peek(&gone_rule, "ip:127.0.0.1")
            .await
            .expect("a peek")
            .is_allowed();
        if placed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(placed, "the request took its place in line");
    gone.abort();
    let r = c.get("/decision", &[]).await;
    assert_eq!(
        r.status, 429,
        "the place of a client gone is kept: {}",
        r.body
    );

    // Shadow mode: nothing waits (a wait of a minute would fail this).
    let blocked = Arc::new(AtomicU32::new(0));
    let seen = blocked.clone();
    let routes = RouteTable::new()
        .route(
            "/",
            &[],
            Limits::new(vec![waiting("shadow", (2, 60_000), (60_000, 5))]),
        )
        .expect("a pattern");
    let p = policy(&h, routes, keys)
        .await
        .shadow(true)
        .on_blocked(Arc::new(move |_, _| {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
    let (_shadow, c) = start(&h, p).await;
    let four = async {
        for _ in 0..4 {
            assert_eq!(c.status("/", &[]).await, 200);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), four)
        .await
        .expect("no request waits in shadow mode");
    assert_eq!(blocked.load(Ordering::SeqCst), 2);
}

/// Waiting for a place in flight: `/slow` limited to 2 at once per client,
/// a request waiting up to 20 s for a place, 3 at most. Eight requests at
/// once on a handler that takes 1.5 s: five answered (two at once,
/// three as places come back), three refused at once with `Retry-After`,
/// and never more than two handlers at once.
pub async fn requests_wait_for_a_place(h: Arc<dyn HttpHarness>) {
    let ms = std::time::Duration::from_millis;
    let two = Rule::concurrency("two", 2, ms(60_000))
        .and_then(|r| r.with_wait(ratekeeper_core::Wait::new(ms(20_000), 3)))
        .expect("a rule");
    let routes = RouteTable::new()
        .route("/slow", &[], Limits::new(vec![two]))
        .expect("a pattern");
    let keys = KeyExtractor::new(KeySource::Ip);
    let (_server, c) = start(&h, policy(&h, routes, keys).await).await;
    let answered = answered_at_once(&c, "/slow?ms=1500", 8).await;
    assert_eq!(answered, 5, "two at once, three after waiting for a place");
    assert_eq!(c.get("/most", &[]).await.body, "most=2");
}

/// Runs the whole HTTP behaviour suite against a [`HttpHarness`]: one
/// `#[tokio::test]` per scenario.
#[macro_export]
macro_rules! http_behaviour_tests {
    ($harness:expr) => {
        fn __http_harness() -> ::std::sync::Arc<dyn $crate::http::HttpHarness> {
            ::std::sync::Arc::new($harness)
        }
        $crate::http_behaviour_tests!(@cases
            limit_reached, header_styles, exemptions, allow_and_deny_lists,
            routes_and_methods, path_spellings, forged_forwarding_headers_behind_a_proxy, forwarded_for_only_from_trusted_proxies,
            hostile_forwarding_headers, ipv6_prefix_grouping, identity_and_header_keys, store_failures,
            the_plainest_policy,
            shadow_mode, concurrent_requests, handlers_see_the_decision,
            refused_requests_never_reach_the_handler, tiers, policy_replaced_while_serving,
            config_reloaded_under_load, counting_only_failed_logins, requests_in_flight,
            bodies_hold_their_places, requests_wait_their_turn,
            requests_wait_for_a_place
        );
    };
    (@cases $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::http::$case(__http_harness()).await;
            }
        )*
    };
}
