//! An application that keeps the rate limiter's configuration as one
//! section of its own serde configuration.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct AppConfig {
    service: Service,
    ratelimit: ratekeeper_config::Config,
}

#[derive(Debug, Deserialize)]
struct Service {
    name: String,
    port: u16,
}

#[test]
fn the_ratelimit_section_of_an_application_config_is_read_and_checked() {
    let app: AppConfig = toml::from_str(
        r#"
        [service]
        name = "orders"
        port = 8080

        [ratelimit.defaults]
        rules = ["api"]

        [ratelimit.rules.api]
        limit = 100
        window = "1m"
        algorithm = "gcra"

        [[ratelimit.routes]]
        path = "/login"
        methods = ["POST"]
        rules = ["login"]

        [ratelimit.rules.login]
        limit = 5
        window = "15m"
        "#,
    )
    .unwrap();
    assert_eq!(
        (app.service.name.as_str(), app.service.port),
        ("orders", 8080)
    );
    assert_eq!(app.ratelimit.rules["api"].limit, 100);
    assert_eq!(app.ratelimit.routes.len(), 1);
    assert_eq!(
        app.ratelimit.built_rules().unwrap()["login"]
            .quota()
            .limit(),
        5
    );
}

#[test]
fn a_problem_inside_the_section_is_reported_with_its_path() {
    let e = toml::from_str::<AppConfig>(
        r#"
        [service]
        name = "orders"
        port = 8080

        [ratelimit.rules.api]
        limt = 100
        window = "soon"
        "#,
    )
    .unwrap_err()
    .to_string();
    // Every problem at once, each with its path inside the section.
    assert!(e.contains("rules.api.limt"), "{e}");
    assert!(e.contains("limit"), "a suggestion: {e}");
    assert!(e.contains("rules.api.window"), "{e}");
}
