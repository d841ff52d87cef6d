#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::time::Duration;

use super::tree::rule_name;
use super::*;

fn domains(yaml: &str) -> Domains {
    let d = DomainConfig::from_envoy_yaml(yaml, "test.yaml").unwrap();
    // Files of that format keep fixed_window whatever the default.
    Domains::compile(&[d], Algorithm::Gcra).unwrap()
}

fn rule_of(m: Option<Matched<'_>>) -> Option<(u64, Duration, String)> {
    match m?.limit() {
        Limit::Rule(rule) => Some((
            rule.quota().limit(),
            rule.quota().window(),
            rule.name().to_owned(),
        )),
        other => panic!("{other:?}"),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    DomainConfig::from_envoy_yaml(yaml, "f.yaml")
        .unwrap_err()
        .errors()
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

#[test]
fn the_most_specific_node_of_a_level_wins() {
    // A generic limit per address, and one address refused outright.
    let d = domains(
        "
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 198.51.100.5
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: path
    value: /api/admin/*
    rate_limit: {unit: minute, requests_per_unit: 2}
",
    );
    let (limit, window, _) =
        rule_of(d.resolve("edge", &[("remote_address", "203.0.113.1")])).unwrap();
    let Limit::Rule(rule) = d
        .resolve("edge", &[("remote_address", "203.0.113.1")])
        .unwrap()
        .limit()
    else {
        panic!()
    };
    assert_eq!(rule.algorithm(), Algorithm::FixedWindow);
    assert_eq!((limit, window), (10, Duration::from_secs(1)));
    assert_eq!(
        d.resolve("edge", &[("remote_address", "198.51.100.5")])
            .unwrap()
            .limit(),
        &Limit::Deny
    );
    // Wildcards: the first in the file's order that the value starts with
    // (as envoyproxy/ratelimit picks), so the broader one declared first
    // wins; no match at all for other paths.
    assert_eq!(
        rule_of(d.resolve("edge", &[("path", "/api/users")]))
            .unwrap()
            .0,
        20
    );
    assert_eq!(
        rule_of(d.resolve("edge", &[("path", "/api/admin/x")]))
            .unwrap()
            .0,
        20
    );
    assert!(d.resolve("edge", &[("path", "/public")]).is_none());
    // Unknown keys and domains, and empty descriptors, match nothing.
    assert!(d.resolve("edge", &[("user", "a")]).is_none());
    assert!(
        d.resolve("other", &[("remote_address", "203.0.113.1")])
            .is_none()
    );
    assert!(d.resolve("edge", &[]).is_none());
}

#[test]
fn a_limit_applies_only_at_the_depth_of_its_node() {
    let d = domains(
        "
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 100}
  - key: key
    value: value
    rate_limit: {unit: second, requests_per_unit: 300}
",
    );
    let nested = rule_of(d.resolve(
        "messaging",
        &[("message_type", "marketing"), ("to_number", "2061111111")],
    ))
    .unwrap();
    assert_eq!((nested.0, nested.1), (5, Duration::from_secs(86_400)));
    assert_eq!(
        rule_of(d.resolve("messaging", &[("to_number", "2061111111")]))
            .unwrap()
            .0,
        100
    );
    // The placeholder alone has no limit; a longer descriptor than the tree
    // has none either.
    assert!(
        d.resolve("messaging", &[("message_type", "marketing")])
            .is_none()
    );
    assert!(
        d.resolve("messaging", &[("key", "value"), ("subkey", "subvalue")])
            .is_none()
    );
    assert!(
        d.resolve(
            "messaging",
            &[("message_type", "transactional"), ("to_number", "1")]
        )
        .is_none()
    );
    // Each node has its own rule, so its own counters.
    assert_ne!(
        nested.2,
        rule_of(d.resolve("messaging", &[("to_number", "1")]))
            .unwrap()
            .2
    );
}

#[test]
fn replaces_drops_the_replaced_limit_only_when_both_apply() {
    let d = domains(
        "
domain: example
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: alice
        rate_limit: {name: specific, unit: second, requests_per_unit: 5}
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: alice
        rate_limit:
          replaces: [{name: specific}]
          unit: second
          requests_per_unit: 10
",
    );
    let one = d
        .resolve("example", &[("key_1", "value_1"), ("user", "alice")])
        .unwrap();
    let two = d
        .resolve("example", &[("key_2", "value_2"), ("user", "alice")])
        .unwrap();
    let mut both = vec![one.clone(), two];
    Domains::apply_replaces(&mut both);
    assert_eq!(both.len(), 1);
    assert_eq!(rule_of(Some(both[0].clone())).unwrap().0, 10);
    let mut alone = vec![one];
    Domains::apply_replaces(&mut alone);
    assert_eq!(alone.len(), 1);
}

#[test]
fn shadow_mode_unlimited_and_our_extensions_are_read() {
    let d = domains(
        "
domain: internal
descriptors:
  - key: ldap
    rate_limit: {unlimited: true}
  - key: user
    value: soft
    shadow_mode: true
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: tokens
    rate_limit:
      algorithm: gcra
      requests_per_unit: 1000
      window: 90s
      burst: 50
      penalty: 5m
",
    );
    assert_eq!(
        d.resolve("internal", &[("ldap", "x")]).unwrap().limit(),
        &Limit::Unlimited
    );
    let soft = d.resolve("internal", &[("user", "soft")]).unwrap();
    assert!(soft.shadow_mode() && soft.detailed_metric());
    assert_eq!(soft.path(), "internal.user_soft");
    let Limit::Rule(rule) = d.resolve("internal", &[("tokens", "t")]).unwrap().limit() else {
        panic!()
    };
    assert_eq!(rule.algorithm(), Algorithm::Gcra);
    assert_eq!(rule.quota().window(), Duration::from_secs(90));
    assert_eq!(rule.quota().burst(), 50);
    assert_eq!(rule.penalty(), Some(Duration::from_secs(300)));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let found = errors(
        "
domain: ''
descriptors:
  - key: a
    rate_limit: {unit: fortnight, requests_per_unit: 5}
  - key: a
    rate_limit: {unit: month, requests_per_unit: -1, colour: red}
  - value: v
    descriptors:
      - key: b
        rate_limit: {unlimited: true, unit: second}
  - key: c
    rate_limit: {replaces: [{name: nobody}], unit: second, window: 1s, requests_per_unit: 1}
  - key: d
    rate_limit: {unit: second, requests_per_unit: 20000, algorithm: sliding_window_log}
",
    );
    let expected = [
        "domain: empty",
        "descriptors[0].rate_limit.unit: unknown unit \"fortnight\"",
        "descriptors[1].rate_limit.requests_per_unit:",
        "descriptors[1].rate_limit.colour: unknown field",
        "descriptors[2].key: missing",
        "descriptors[2].descriptors[0].rate_limit.unit: an unlimited descriptor",
        "descriptors[3].rate_limit.window: give `unit` or `window`, not both",
        "descriptors[4].rate_limit:",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "{e} not in {found:#?}"
        );
    }
    // The duplicate is reported once the tree reads cleanly.
    let dup = errors(
        "
domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: a
    rate_limit: {unit: second, requests_per_unit: 6}
  - key: b
    rate_limit: {replaces: [{name: nobody}], unit: second, requests_per_unit: 1}
",
    );
    assert!(
        dup.iter()
            .any(|e| e.starts_with("descriptors[1]: a second descriptor for key \"a\"")),
        "{dup:#?}"
    );
    assert!(
        dup.iter().any(|e| e.contains("replaces \"nobody\"")),
        "{dup:#?}"
    );
}

#[test]
fn two_domains_with_one_name_are_refused() {
    let d = DomainConfig::from_envoy_yaml("domain: a\n", "a.yaml").unwrap();
    let e = Domains::compile(&[d.clone(), d], Algorithm::FixedWindow).unwrap_err();
    assert!(e.to_string().contains("a second domain named \"a\""), "{e}");
}

#[test]
fn descriptor_keys_never_collide() {
    assert_eq!(descriptor_key(&[("a", "b")]), "a=b");
    assert_eq!(descriptor_key(&[("a", "b"), ("c", "d")]), "a=b|c=d");
    // One entry whose value holds the separators is not two entries.
    assert_ne!(
        descriptor_key(&[("a", "b|c=d")]),
        descriptor_key(&[("a", "b"), ("c", "d")])
    );
    assert_ne!(
        descriptor_key(&[("a=b", "c")]),
        descriptor_key(&[("a", "b=c")])
    );
    assert_ne!(
        descriptor_key(&[("a", "%7C")]),
        descriptor_key(&[("a", "|")])
    );
}

#[test]
fn rule_names_are_valid_for_any_key_and_value() {
    // IPv6 addresses, spaces, braces, very long values.
    let long = "v".repeat(500);
    let d = domains(&format!(
        "
domain: d
descriptors:
  - key: remote_address
    value: '2001:db8::1'
    rate_limit: {{unit: second, requests_per_unit: 1}}
  - key: 'with space'
    value: '{{x}}'
    rate_limit: {{unit: second, requests_per_unit: 1}}
  - key: long
    value: {long}
    rate_limit: {{unit: second, requests_per_unit: 1}}
"
    ));
    let a = rule_of(d.resolve("d", &[("remote_address", "2001:db8::1")]))
        .unwrap()
        .2;
    let b = rule_of(d.resolve("d", &[("with space", "{x}")])).unwrap().2;
    let c = rule_of(d.resolve("d", &[("long", &long)])).unwrap().2;
    assert!(a.starts_with("rls~") && b.starts_with("rls~") && c.starts_with("rls~"));
    assert_ne!(a, b);
    assert_eq!(rule_name("d.key=value"), "rls.d.key=value");
    // Keys and values holding the separators of the metric-style path do not
    // make one rule of two nodes.
    let d = domains(
        "
domain: d
descriptors:
  - key: a
    value: b_c
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: a_b
    value: c
    rate_limit: {unit: second, requests_per_unit: 1}
",
    );
    let one = rule_of(d.resolve("d", &[("a", "b_c")])).unwrap().2;
    let two = rule_of(d.resolve("d", &[("a_b", "c")])).unwrap().2;
    assert_ne!(one, two);
}

#[test]
fn not_yaml_is_one_clear_error() {
    let found = errors("domain: [unclosed\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("not valid YAML"), "{found:?}");
}

#[test]
fn a_deeply_nested_file_is_an_error_not_a_crash() {
    let depth = 1_000;
    let mut yaml = String::from("domain: d\ndescriptors: ");
    for _ in 0..depth {
        yaml.push_str("[{key: a, descriptors: ");
    }
    yaml.push_str("[]");
    for _ in 0..depth {
        yaml.push_str("}]");
    }
    let found = errors(&yaml);
    assert!(!found.is_empty());
    // Within the parser's own bound, a deep tree reads and matches.
    let mut yaml = String::from("domain: d\ndescriptors:\n");
    let levels = 40;
    for i in 0..levels {
        let indent = "  ".repeat(i * 2);
        yaml.push_str(&format!("{indent}- key: k{i}\n"));
        if i + 1 == levels {
            yaml.push_str(&format!(
                "{indent}  rate_limit: {{unit: second, requests_per_unit: 1}}\n"
            ));
        } else {
            yaml.push_str(&format!("{indent}  descriptors:\n"));
        }
    }
    let d = domains(&yaml);
    let names: Vec<String> = (0..levels).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|k| (k.as_str(), "v")).collect();
    assert!(d.resolve("d", &entries).is_some());
}

#[test]
fn unlimited_and_denying_limits_replace_and_are_replaced() {
    let d = domains(
        "
domain: d
descriptors:
  - key: remote_address
    rate_limit: {name: per_ip, unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 203.0.113.1
    rate_limit: {name: banned, unit: second, requests_per_unit: 0}
  - key: partner
    rate_limit:
      unlimited: true
      requests_per_unit: 5
      replaces: [{name: per_ip}, {name: banned}]
",
    );
    // An exemption: the unlimited partner descriptor drops the per-address
    // limit and the ban of the same request.
    let ip = d
        .resolve("d", &[("remote_address", "198.51.100.1")])
        .unwrap();
    let banned = d
        .resolve("d", &[("remote_address", "203.0.113.1")])
        .unwrap();
    let partner = d.resolve("d", &[("partner", "acme")]).unwrap();
    assert_eq!(partner.limit(), &Limit::Unlimited);
    assert_eq!(banned.name(), Some("banned"));
    assert_eq!(banned.limit(), &Limit::Deny);
    let mut all = vec![ip, banned, partner];
    Domains::apply_replaces(&mut all);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].limit(), &Limit::Unlimited);
}

#[test]
fn a_limit_cannot_replace_itself() {
    let found = errors(
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {name: x, replaces: [{name: x}], unit: second, requests_per_unit: 1}\n",
    );
    assert_eq!(
        found,
        ["descriptors[0].rate_limit.replaces[0].name: a limit cannot replace itself"]
    );
}

#[test]
fn plain_scalars_month_and_year_are_read_as_there() {
    let d = domains(
        "
domain: d
descriptors:
  - key: status
    value: 200
    rate_limit: {unit: month, requests_per_unit: 1000}
  - key: internal
    value: true
    rate_limit: {unit: YEAR, requests_per_unit: 1}
",
    );
    let (limit, window, _) = rule_of(d.resolve("d", &[("status", "200")])).unwrap();
    assert_eq!((limit, window), (1000, Duration::from_secs(30 * 86_400)));
    let (_, window, _) = rule_of(d.resolve("d", &[("internal", "true")])).unwrap();
    assert_eq!(window, Duration::from_secs(365 * 86_400));
}

#[test]
fn share_threshold_gives_a_wildcard_one_counter() {
    let d = domains(
        "
domain: d
descriptors:
  - key: path
    value: /files/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: path
    value: /pages/*
    rate_limit: {unit: minute, requests_per_unit: 10}
",
    );
    let a = d.resolve("d", &[("path", "/files/a")]).unwrap();
    let b = d.resolve("d", &[("path", "/files/b")]).unwrap();
    assert_eq!(a.key(), b.key());
    assert_eq!(a.key(), "path=/files/*");
    let c = d.resolve("d", &[("path", "/pages/a")]).unwrap();
    let e = d.resolve("d", &[("path", "/pages/b")]).unwrap();
    assert_ne!(c.key(), e.key());
    assert_eq!(c.key(), descriptor_key(&[("path", "/pages/a")]));
    // A request whose value is literally `*` never lands on the shared key.
    assert_eq!(descriptor_key(&[("path", "/files/*")]), "path=/files/%2A");
    let found =
        errors("domain: d\ndescriptors:\n  - key: p\n    value: x\n    share_threshold: true\n");
    assert_eq!(
        found,
        [
            "descriptors[0].share_threshold: only a wildcard value (ending in `*`) has matches to share a counter"
        ]
    );
}
