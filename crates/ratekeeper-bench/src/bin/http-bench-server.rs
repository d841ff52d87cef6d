//! The server `cargo xtask bench http` loads with wrk:
//! `http-bench-server none|ours|governor PORT`. `GET /` answers "hello"
//! behind no limiter, our layer (memory store), or tower_governor, all with
//! the same quota (GCRA, 1 000 000 per second, burst 1 000 000: high enough
//! that nothing is denied, so the figures compare per-request overhead).
//!
//! One runtime worker thread: `cargo xtask bench http` pins the server to
//! one core and wrk to the other, so the two do not fight over the same
//! cores and every mode gets the same conditions.

use std::net::SocketAddr;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let port: u16 = args.next().unwrap_or_else(|| "0".to_owned()).parse()?;
    let app = ratekeeper_bench::http_app(&mode)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
