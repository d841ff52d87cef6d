//! The HTTP JSON API and the admin API of the real binary, through a real
//! HTTP client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{Server, TempDir, http, write};

const CONFIG: &str = r#"
[rules.api]
algorithm = "fixed_window"
limit = 3
window = "1h"

[rules.exports]
algorithm = "concurrency"
limit = 2
window = "10m"

[rules.line]
algorithm = "gcra"
limit = 2
window = "1h"
wait = "1h"

[[domains]]
domain = "web"
[[domains.descriptors]]
key = "user"
rate_limit = { requests_per_unit = 2, unit = "hour", algorithm = "fixed_window" }
"#;

fn body(user: &str) -> String {
    format!(
        r#"{{"domain":"web","descriptors":[{{"entries":[{{"key":"user","value":"{user}"}}]}}]}}"#
    )
}

#[tokio::test]
async fn every_endpoint_and_its_errors() {
    let dir = TempDir::new("http");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();

    // check, in envoyproxy/ratelimit's /json form too; camelCase accepted.
    let (status, v) = http(api, "POST", "/v1/check", &body("ann"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["overallCode"], "OK");
    assert_eq!(v["statuses"][0]["limitRemaining"], 1);
    assert_eq!(v["statuses"][0]["currentLimit"]["requestsPerUnit"], 2);
    assert_eq!(v["statuses"][0]["currentLimit"]["unit"], "HOUR");
    let (_, v) = http(api, "POST", "/json", &body("ann"), None).await;
    assert_eq!(v["statuses"][0]["limitRemaining"], 0);
    let (_, v) = http(api, "POST", "/v1/check", &body("ann"), None).await;
    assert_eq!(v["overallCode"], "OVER_LIMIT");
    assert!(
        v["statuses"][0]["retryAfter"]
            .as_str()
            .unwrap()
            .ends_with('s')
    );
    // peek: looks without charging.
    let (_, v) = http(api, "POST", "/v1/peek", &body("bob"), None).await;
    assert_eq!(
        (
            v["overallCode"].as_str(),
            v["statuses"][0]["limitRemaining"].as_u64()
        ),
        (Some("OK"), Some(2))
    );
    let (_, v) = http(api, "POST", "/v1/peek", &body("bob"), None).await;
    assert_eq!(v["statuses"][0]["limitRemaining"], 2);
    // hits, snake or camel case.
    let hits = r#"{"domain":"web","hitsAddend":2,"descriptors":[{"entries":[{"key":"user","value":"cy"}]}]}"#;
    let (_, v) = http(api, "POST", "/v1/check", hits, None).await;
    assert_eq!(v["statuses"][0]["limitRemaining"], 0);
    // A named rule and a key.
    for left in [2, 1, 0] {
        let (status, v) = http(
            api,
            "POST",
            "/v1/check",
            r#"{"rule":"api","key":"k1"}"#,
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["statuses"][0]["limitRemaining"], left);
    }
    let (_, v) = http(
        api,
        "POST",
        "/v1/check",
        r#"{"rule":"api","key":"k1"}"#,
        None,
    )
    .await;
    assert_eq!(v["overallCode"], "OVER_LIMIT");

    // Bad requests: 400 with what was wrong.
    for (bad, says) in [
        ("{", "invalid request body"),
        (r#"{"domain":"web"}"#, "no descriptors"),
        (
            r#"{"domain":"","descriptors":[{"entries":[{"key":"a","value":"b"}]}]}"#,
            "domain is empty",
        ),
        (
            r#"{"domain":"web","descriptors":[{"entries":[]}]}"#,
            "has no entries",
        ),
        (
            r#"{"domain":"web","descriptors":[{"entries":[{"key":"a"}]}],"extra":1}"#,
            "unknown field",
        ),
        (r#"{"rule":"nope","key":"k"}"#, "no rule named"),
        (r#"{"rule":"api"}"#, "needs a key"),
        (r#"{"rule":"api","key":"k","hits":4}"#, "capacity"),
        (r#"{"rule":"exports","key":"k"}"#, "requests in flight"),
        (
            r#"{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"x"}],"limit":{"requests_per_unit":1,"unit":"fortnight"}}]}"#,
            "not second",
        ),
    ] {
        let (status, v) = http(api, "POST", "/v1/check", bad, None).await;
        assert_eq!(status, 400, "{bad}: {v}");
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
    // A rule whose requests wait in line is decided here without its line
    // (the third request over 2 an hour is refused at once), and takes no
    // refund.
    for code in ["OK", "OK", "OVER_LIMIT"] {
        let (_, v) = http(
            api,
            "POST",
            "/v1/check",
            r#"{"rule":"line","key":"k"}"#,
            None,
        )
        .await;
        assert_eq!(v["overallCode"], code, "{v}");
    }
    let refund = r#"{"rule":"line","key":"k","is_negative_hits":true}"#;
    let (status, v) = http(api, "POST", "/v1/report", refund, None).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("takes no refund"),
        "{v}"
    );
    let big = format!(r#"{{"domain":"{}"}}"#, "d".repeat(100_000));
    let (status, _) = http(api, "POST", "/v1/check", &big, None).await;
    assert_eq!(status, 413, "over max_request_bytes");

    // The loaded limits, health, readiness, metrics.
    let (status, v) = http(api, "GET", "/v1/limits", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["domains"][0], "web");
    assert_eq!(v["descriptors"][0]["descriptor"], "web.user");
    assert_eq!(v["rules"][0]["rule"], "api");
    assert_eq!(http(api, "GET", "/health", "", None).await.0, 200);
    assert_eq!(http(api, "GET", "/ready", "", None).await.0, 200);
    let (status, v) = http(api, "GET", "/metrics", "", None).await;
    assert_eq!(status, 200);
    let text = v.as_str().unwrap();
    assert!(
        text.contains("ratelimit_server_descriptors_total"),
        "{text}"
    );
    assert!(text.contains(r#"outcome="over_limit""#), "{text}");
    // The admin API is not on the public port.
    assert_eq!(http(api, "POST", "/v1/reset", "{}", None).await.0, 404);
}

#[tokio::test]
async fn reports_charge_after_the_fact_and_give_back() {
    let dir = TempDir::new("http-report");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let refused = Server::start(&["--config", &file]);
    let back = r#"{"rule":"api","key":"r1","hits":1,"is_negative_hits":true}"#;
    let (status, v) = http(refused.http.unwrap(), "POST", "/v1/report", back, None).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("refunds"), "{v}");
    drop(refused);
    let file = write(
        &dir.0,
        "limits.toml",
        &format!("[server]\nrefunds = true\n{CONFIG}"),
    );
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    let with = |user: &str, extra: &str| {
        format!(
            r#"{{"domain":"web"{extra},"descriptors":[{{"entries":[{{"key":"user","value":"{user}"}}]}}]}}"#
        )
    };
    let remaining = |v: &serde_json::Value| v["statuses"][0]["limitRemaining"].as_u64();
    let (_, v) = http(api, "POST", "/v1/check", &body("dan"), None).await;
    assert_eq!(remaining(&v), Some(1));
    // Charged after the fact, past the limit: never refused, and owed.
    let (status, v) = http(
        api,
        "POST",
        "/v1/report",
        &with("dan", r#","hits":3"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["overallCode"], "OVER_LIMIT");
    assert!(v["statuses"][0]["retryAfter"].is_string());
    let (_, v) = http(api, "POST", "/v1/check", &body("dan"), None).await;
    assert_eq!(v["overallCode"], "OVER_LIMIT");
    // Given back: 4 used, 3 back, 1 left.
    let back = with("dan", r#","hits":3,"is_negative_hits":true"#);
    let (_, v) = http(api, "POST", "/v1/report", &back, None).await;
    assert_eq!(
        (v["overallCode"].as_str(), remaining(&v)),
        (Some("OK"), Some(1))
    );
    let (_, v) = http(api, "POST", "/v1/check", &body("dan"), None).await;
    assert_eq!(
        (v["overallCode"].as_str(), remaining(&v)),
        (Some("OK"), Some(0))
    );
    // Per descriptor, in a check: given back, then the rest decided.
    let mixed = r#"{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"dan"}],"hits_addend":"2","is_negative_hits":true},{"entries":[{"key":"user","value":"eve"}]}]}"#;
    let (_, v) = http(api, "POST", "/v1/check", mixed, None).await;
    assert_eq!(v["overallCode"], "OK", "{v}");
    assert_eq!(v["statuses"][0]["limitRemaining"], 2);
    assert_eq!(v["statuses"][1]["limitRemaining"], 1);
    // A named rule and a key.
    let rule = |extra: &str| format!(r#"{{"rule":"api","key":"r1"{extra}}}"#);
    let (_, v) = http(api, "POST", "/v1/check", &rule(r#","hits":2"#), None).await;
    assert_eq!(remaining(&v), Some(1));
    let (_, v) = http(api, "POST", "/v1/report", &rule(r#","hits":3"#), None).await;
    assert_eq!(v["overallCode"], "OVER_LIMIT");
    let back = rule(r#","hits":4,"is_negative_hits":true"#);
    let (_, v) = http(api, "POST", "/v1/report", &back, None).await;
    assert_eq!(
        (v["overallCode"].as_str(), remaining(&v)),
        (Some("OK"), Some(2))
    );
    // Giving back is for reports, or per descriptor.
    let (status, v) = http(api, "POST", "/v1/check", &back, None).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = http(
        api,
        "POST",
        "/v1/check",
        &with("x", r#","is_negative_hits":true"#),
        None,
    )
    .await;
    assert_eq!(status, 400);
    // An unknown domain counts nothing.
    let other = r#"{"domain":"nope","descriptors":[{"entries":[{"key":"user","value":"a"}]}]}"#;
    let (_, v) = http(api, "POST", "/v1/report", other, None).await;
    assert_eq!(v["overallCode"], "OK");
}

#[tokio::test]
async fn the_admin_api_asks_for_its_token() {
    let dir = TempDir::new("admin");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let server = Server::start_with_env(
        &["--config", &file],
        &[("RATEKEEPER_ADMIN_TOKEN", "s3cret")],
    );
    let (api, admin) = (server.http.unwrap(), server.admin.unwrap());
    for _ in 0..2 {
        http(api, "POST", "/v1/check", &body("dee"), None).await;
    }
    let reset = r#"{"domain":"web","entries":[{"key":"user","value":"dee"}]}"#;
    for token in [None, Some("wrong"), Some("s3cret-but-longer")] {
        let (status, _) = http(admin, "POST", "/v1/reset", reset, token).await;
        assert_eq!(status, 401, "{token:?}");
    }
    let (status, v) = http(admin, "POST", "/v1/reset", reset, Some("s3cret")).await;
    assert_eq!(
        (status, &v["reset"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    let (_, v) = http(api, "POST", "/v1/peek", &body("dee"), None).await;
    assert_eq!(v["statuses"][0]["limitRemaining"], 2, "counters forgotten");
    let (status, v) = http(
        admin,
        "POST",
        "/v1/reset",
        r#"{"rule":"api","key":"zz"}"#,
        Some("s3cret"),
    )
    .await;
    assert_eq!((status, &v["reset"]), (200, &serde_json::json!(false)));
    let (status, v) = http(
        admin,
        "POST",
        "/v1/reset",
        r#"{"domain":"web"}"#,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = http(admin, "GET", "/v1/status", "", Some("s3cret")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["ready"].as_str(), v["store"]["backend"].as_str()),
        (Some("ready"), Some("memory")),
        "{v}"
    );
    assert_eq!(v["domains"][0], "web");
    assert_eq!(v["maxInFlight"], 4096);
    assert_eq!(http(admin, "GET", "/v1/status", "", None).await.0, 401);
    let (status, v) = http(admin, "GET", "/v1/lists", "", Some("s3cret")).await;
    assert_eq!(status, 400, "runtime lists are off: {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("[lists] runtime = true")
    );
    let (status, v) = http(admin, "POST", "/v1/reload", "", Some("s3cret")).await;
    assert_eq!((status, &v["reloaded"]), (200, &serde_json::json!(true)));
    assert_eq!(http(admin, "POST", "/v1/reload", "", None).await.0, 401);
}

#[tokio::test]
async fn an_admin_port_off_loopback_needs_a_token() {
    let dir = TempDir::new("admin-bind");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let (code, stderr) = Server::fail(&[
        "--config",
        &file,
        "--admin",
        "0.0.0.0:0",
        "--grpc",
        "off",
        "--http",
        "off",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("needs a token"), "{stderr}");
    // The file opens the admin API to every interface; the token comes from
    // the environment, as the docs advise: accepted.
    let open = write(
        &dir.0,
        "open.toml",
        &format!("[server]\nadmin = \"0.0.0.0:0\"\n{CONFIG}"),
    );
    let (_, stderr) = Server::fail(&["--config", &open, "--grpc", "off", "--http", "off"]);
    assert!(stderr.contains("needs a token"), "{stderr}");
    let server = Server::start_with_env(
        &["--config", &open, "--admin", "0.0.0.0:0"],
        &[("RATEKEEPER_ADMIN_TOKEN", "from-env")],
    );
    let admin = server.admin.unwrap();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()));
    assert_eq!(http(local, "GET", "/v1/status", "", None).await.0, 401);
    assert_eq!(
        http(local, "GET", "/v1/status", "", Some("from-env"))
            .await
            .0,
        200
    );
    let (_, stderr) = Server::fail(&["--config", &file, "--grpc", "nowhere"]);
    assert!(
        stderr.contains("--grpc \"nowhere\" is not host:port"),
        "{stderr}"
    );
    // An empty token would let every request in: refused.
    let (_, stderr) = Server::fail(&["--config", &file, "--admin-token", " "]);
    assert!(stderr.contains("the admin token is empty"), "{stderr}");
    // Approximate mode cannot answer per descriptor: refused, not ignored.
    let approx = write(
        &dir.0,
        "approx.toml",
        // (Without the line, which approximate mode refuses first.)
        &format!(
            "[storage.approximate]\n{}",
            CONFIG.replace("wait = \"1h\"\n", "")
        ),
    );
    let (_, stderr) = Server::fail(&["--config", &approx]);
    assert!(
        stderr.contains("approximate mode does not apply"),
        "{stderr}"
    );
    // A directory with no limits files is a mistake, not "no limits".
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, stderr) = Server::fail(&["--config", empty.to_str().unwrap()]);
    assert!(stderr.contains("no .yaml or .yml files"), "{stderr}");
}

/// Protobuf JSON as other clients write it: 64-bit integers as strings,
/// enums as numbers, `isNegativeHits`.
#[tokio::test]
async fn protobuf_json_spellings() {
    let dir = TempDir::new("pbjson");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"pb"}],"hitsAddend":"2","isNegativeHits":false}]}"#;
    let (status, v) = http(api, "POST", "/json", body, None).await;
    assert_eq!(
        (status, &v["statuses"][0]["limitRemaining"]),
        (200, &serde_json::json!(0)),
        "{v}"
    );
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"other","value":"x"}],"limit":{"requestsPerUnit":1,"unit":2}}]}"#;
    let (_, v) = http(api, "POST", "/json", body, None).await;
    assert_eq!(v["statuses"][0]["currentLimit"]["unit"], "MINUTE", "{v}");
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"pb"}],"isNegativeHits":true}]}"#;
    let (status, v) = http(api, "POST", "/json", body, None).await;
    assert_eq!(status, 400, "refunds are off by default: {v}");
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"user","value":"pb"}],"hitsAddend":"two"}]}"#;
    assert_eq!(http(api, "POST", "/json", body, None).await.0, 400);
}

/// `[server] shadow_mode` holds for checks by rule and key too.
#[tokio::test]
async fn shadow_mode_covers_checks_by_rule() {
    let dir = TempDir::new("shadow-rule");
    let file = write(
        &dir.0,
        "limits.toml",
        &format!("[server]\nshadow_mode = true\n{CONFIG}"),
    );
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    for _ in 0..3 {
        http(
            api,
            "POST",
            "/v1/check",
            r#"{"rule":"api","key":"s"}"#,
            None,
        )
        .await;
    }
    let (status, v) = http(
        api,
        "POST",
        "/v1/check",
        r#"{"rule":"api","key":"s"}"#,
        None,
    )
    .await;
    assert_eq!(
        (status, v["overallCode"].as_str()),
        (200, Some("OK")),
        "{v}"
    );
    assert_eq!(v["statuses"][0]["shadowOverLimit"], true);
    assert!(v["statuses"][0].get("retryAfter").is_none());
}

/// `[server] on_store_error = "degraded"`, the store unreachable: checks
/// by rule and by descriptors decide in memory on this instance's share
/// (limits of 3 and 2 over 2 instances: 1 each), reports answer an error.
#[tokio::test]
async fn degraded_mode_decides_checks_locally_while_the_store_fails() {
    let dir = TempDir::new("degraded");
    let file = write(
        &dir.0,
        "limits.toml",
        &format!(
            "[storage]
url = \"redis://127.0.0.1:9\"
timeout = \"200ms\"
             [server]
on_store_error = \"degraded\"
degraded_instances = 2
{CONFIG}"
        ),
    );
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    let by_rule = r#"{"rule":"api","key":"d"}"#;
    let mut codes = Vec::new();
    for body in [by_rule, by_rule, &body("dee"), &body("dee")] {
        let (status, v) = http(api, "POST", "/v1/check", body, None).await;
        assert_eq!(status, 200, "{v}");
        codes.push(v["overallCode"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes, ["OK", "OVER_LIMIT", "OK", "OVER_LIMIT"]);
    let (status, v) = http(api, "POST", "/v1/report", by_rule, None).await;
    assert_eq!(status, 503, "{v}");
}

/// A token changed in the file applies after a reload.
#[tokio::test]
async fn a_reload_rotates_the_admin_token() {
    let dir = TempDir::new("rotate");
    let file = write(
        &dir.0,
        "limits.toml",
        &format!("[server]\nadmin_token = \"old\"\nwatch = false\n{CONFIG}"),
    );
    let server = Server::start(&["--config", &file]);
    let admin = server.admin.unwrap();
    write(
        &dir.0,
        "limits.toml",
        &format!("[server]\nadmin_token = \"new\"\nwatch = false\n{CONFIG}"),
    );
    let (status, _) = http(admin, "POST", "/v1/reload", "", Some("old")).await;
    assert_eq!(status, 200);
    assert_eq!(
        http(admin, "POST", "/v1/reload", "", Some("old")).await.0,
        401
    );
    assert_eq!(
        http(admin, "POST", "/v1/reload", "", Some("new")).await.0,
        200
    );
}

/// A request denied by one of its descriptors counts no admission for the
/// others (they consumed nothing).
#[tokio::test]
async fn a_denied_request_counts_no_admission() {
    let dir = TempDir::new("metrics-denied");
    let file = write(
        &dir.0,
        "limits.yaml",
        "domain: m\ndescriptors:\n  - key: small\n    rate_limit: {unit: hour, requests_per_unit: 1}\n  - key: big\n    rate_limit: {unit: hour, requests_per_unit: 100}\n",
    );
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    let both = r#"{"domain":"m","descriptors":[{"entries":[{"key":"small","value":"s"}]},{"entries":[{"key":"big","value":"b"}]}]}"#;
    for expect in ["OK", "OVER_LIMIT", "OVER_LIMIT"] {
        let (_, v) = http(api, "POST", "/v1/check", both, None).await;
        assert_eq!(v["overallCode"], expect, "{v}");
    }
    let (_, v) = http(api, "GET", "/metrics", "", None).await;
    let text = v.as_str().unwrap();
    let count = |rule: &str, outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("ratelimit_decisions_total{")
                    && l.contains(&format!("rule=\"{rule}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("rls.m.big", "allowed"), 1, "{text}");
    assert_eq!(count("rls.m.small", "allowed"), 1);
    assert_eq!(count("rls.m.small", "denied"), 2);
}

/// `detailed_metric`: a descriptor's decisions are also counted by their
/// entries, for the first 1 000 distinct ones; the rest share `_other_`, so
/// clients cannot grow the series without bound.
#[tokio::test]
async fn detailed_metrics_label_entries_up_to_a_bound() {
    let dir = TempDir::new("detailed");
    let file = write(
        &dir.0,
        "limits.toml",
        "[[domains]]\ndomain = \"web\"\n[[domains.descriptors]]\nkey = \"user\"\ndetailed_metric = true\nrate_limit = { requests_per_unit = 5000, unit = \"hour\" }\n[[domains.descriptors]]\nkey = \"plain\"\nrate_limit = { requests_per_unit = 5000, unit = \"hour\" }\n",
    );
    let server = Server::start(&["--config", &file]);
    let api = server.http.unwrap();
    let ask = |key: &str, value: &str| {
        format!(
            r#"{{"domain":"web","descriptors":[{{"entries":[{{"key":"{key}","value":"{value}"}}]}}]}}"#
        )
    };
    for i in 0..1_005 {
        let (status, v) = http(
            api,
            "POST",
            "/v1/check",
            &ask("user", &format!("u{i}")),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    http(api, "POST", "/v1/check", &ask("plain", "p1"), None).await;
    let (_, v) = http(api, "GET", "/metrics", "", None).await;
    let text = v.as_str().unwrap();
    let detailed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ratelimit_server_detailed_total{"))
        .collect();
    assert!(
        detailed.iter().any(|l| l.contains(r#"entries="user=u0""#)),
        "{detailed:?}"
    );
    assert!(
        detailed
            .iter()
            .any(|l| l.contains(r#"entries="_other_""#) && l.ends_with(" 5")),
        "{detailed:?}"
    );
    assert_eq!(detailed.len(), 1_001, "1 000 entries and _other_");
    assert!(!text.contains(r#"entries="plain=p1""#), "not detailed");
}

/// `/v1/acquire` and `/v1/release` on a concurrency rule, with two replicas
/// on one SQLite file and one secret: places taken and given back through
/// either; a lease id released twice, changed, or signed by a server with
/// another secret frees nothing; what is not a concurrency rule is refused.
#[tokio::test]
async fn places_in_flight_through_acquire_and_release() {
    let dir = TempDir::new("leases");
    let db = dir.0.join("limits.db");
    let file = write(
        &dir.0,
        "limits.toml",
        &format!("[storage]\nurl = \"sqlite://{}\"\n{CONFIG}", db.display()),
    );
    let secret = [("RATEKEEPER_LEASE_SECRET", "one secret for every replica")];
    let a = Server::start_with_env(&["--config", &file], &secret);
    let b = Server::start_with_env(&["--config", &file], &secret);
    let other = Server::start_with_env(
        &["--config", &file],
        &[("RATEKEEPER_LEASE_SECRET", "another secret, another fleet")],
    );
    let (a, b, other) = (a.http.unwrap(), b.http.unwrap(), other.http.unwrap());
    let acquire = |at, key: &str| {
        let body = format!(r#"{{"rule":"exports","key":"{key}"}}"#);
        async move { http(at, "POST", "/v1/acquire", &body, None).await }
    };
    let release = |at, lease: &str| {
        let body = serde_json::json!({ "lease": lease }).to_string();
        async move { http(at, "POST", "/v1/release", &body, None).await }
    };
    let lease_of = |v: &serde_json::Value| v["lease"].as_str().unwrap().to_owned();

    // Two places; the third is refused, with no lease.
    let (status, first) = acquire(a, "team").await;
    assert_eq!(
        (status, first["overallCode"].as_str()),
        (200, Some("OK")),
        "{first}"
    );
    assert_eq!(first["limitRemaining"], 1);
    let (_, second) = acquire(b, "team").await;
    assert_eq!(second["overallCode"], "OK", "{second}");
    let (status, third) = acquire(a, "team").await;
    assert_eq!(status, 200);
    assert_eq!(third["overallCode"], "OVER_LIMIT", "{third}");
    assert!(
        third["retryAfter"].is_string() && third.get("lease").is_none(),
        "{third}"
    );

    // Released through the other replica: the place comes back.
    let (status, v) = release(b, &lease_of(&first)).await;
    assert_eq!((status, v["released"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["limitRemaining"], 1);
    let (_, again) = acquire(a, "team").await;
    assert_eq!(again["overallCode"], "OK", "{again}");

    // A replay frees nothing, nor does a lease changed or signed elsewhere.
    let (status, v) = release(a, &lease_of(&first)).await;
    assert_eq!(status, 409, "{v}");
    let second = lease_of(&second);
    let (payload, tag) = second.split_once('.').unwrap();
    // The tag changed: the payload still reads, the signature does not.
    let mut changed = tag.as_bytes().to_vec();
    changed[0] = if changed[0] == b'A' { b'B' } else { b'A' };
    let changed = format!("{payload}.{}", String::from_utf8(changed).unwrap());
    let (_, elsewhere) = acquire(other, "other-team").await;
    for forged in [changed.as_str(), &lease_of(&elsewhere), "made.up", ""] {
        let (status, v) = release(a, forged).await;
        assert_eq!(status, 400, "{forged}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not a lease id"),
            "{v}"
        );
    }
    let (_, full) = acquire(a, "team").await;
    assert_eq!(
        full["overallCode"], "OVER_LIMIT",
        "nothing was freed: {full}"
    );
    let (status, _) = release(a, &second).await;
    assert_eq!(status, 200);
    assert_eq!(acquire(b, "team").await.1["overallCode"], "OK");

    // Not a place: refused.
    for (bad, says) in [
        (r#"{"rule":"api","key":"k"}"#, "limits a rate"),
        (r#"{"rule":"nope","key":"k"}"#, "no rule named"),
        (r#"{"rule":"exports","key":"k","hits":0}"#, "at least 1"),
        (r#"{"rule":"exports","key":"k","hits":3}"#, "capacity"),
        (r#"{"rule":"exports"}"#, "missing field"),
    ] {
        let (status, v) = http(a, "POST", "/v1/acquire", bad, None).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{bad}: {v}");
    }
    let (status, v) = http(a, "POST", "/v1/release", r#"{"id":"x"}"#, None).await;
    assert_eq!(status, 400, "{v}");
}

/// A lease secret shorter than 16 characters, or with spaces around it, is
/// refused, from a flag, the environment and the file, without echoing it.
#[tokio::test]
async fn a_short_lease_secret_is_refused() {
    let dir = TempDir::new("short-secret");
    let file = write(&dir.0, "limits.toml", CONFIG);
    let (_, says) = Server::fail(&["--config", &file, "--lease-secret", "hunter2"]);
    assert!(says.contains("lease secret is too short"), "{says}");
    assert!(!says.contains("hunter2"), "{says}");
    let padded = "a secret long enough, and a line break\n";
    let (_, says) =
        Server::fail_with_env(&["--config", &file], &[("RATEKEEPER_LEASE_SECRET", padded)]);
    assert!(says.contains("surrounded by spaces"), "{says}");
    assert!(!says.contains("long enough"), "{says}");
    let file = write(
        &dir.0,
        "short.toml",
        &format!("[server]\nlease_secret = \"hunter2\"\n{CONFIG}"),
    );
    let (_, says) = Server::fail(&["--config", &file]);
    assert!(says.contains("server.lease_secret: too short"), "{says}");
    assert!(!says.contains("hunter2"), "{says}");
}
