//! An actix-web server protected by ratekeeper: `GET /`, `GET /login` and
//! `GET /slow?ms=N` are limited, `GET /health` is exempt. The same flags and behaviour as
//! `axum_server`:
//!
//! ```text
//! cargo run -p ratekeeper-e2e --example actix_server -- \
//!     --listen 127.0.0.1:8080 --storage memory:// --algorithm gcra \
//!     --limit 100 --window 60s --key ip --headers ietf --trust 10.0.0.0/8,127.0.0.1
//! ```
//!
//! actix-web starts one app per worker thread; the middleware is built once,
//! outside the app factory, so every worker counts against the same limit.

#[path = "common/server.rs"]
mod server;

use std::error::Error;

use actix_web::{App, HttpResponse, HttpServer, web};
use ratekeeper::actix::RateLimit;

async fn login(request: actix_web::HttpRequest) -> HttpResponse {
    let password = request
        .headers()
        .get("x-password")
        .and_then(|v| v.to_str().ok());
    let (status, body) = server::login(password);
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::UNAUTHORIZED);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let o = server::parse_args()?;
    let limit = RateLimit::new(server::policy(&o).await?);
    let http = HttpServer::new(move || {
        App::new()
            .wrap(limit.clone())
            .route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(server::HELLO)
                }),
            )
            .route("/health", web::get().to(|| async { "ok" }))
            .route("/login", web::get().to(login))
            .route(
                "/slow",
                web::get().to(|request: actix_web::HttpRequest| async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(server::slow(Some(request.query_string())).await)
                }),
            )
    })
    .bind(o.listen)?;
    for addr in http.addrs() {
        println!("{}", server::describe(&o, addr));
    }
    // actix-web stops gracefully on Ctrl-C by itself.
    http.run().await?;
    println!("shut down");
    Ok(())
}
