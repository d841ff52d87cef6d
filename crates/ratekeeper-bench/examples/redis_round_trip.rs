//! One task's round trips to Redis, the same script call on the `redis`
//! crate's multiplexed connection (requests handed to its driver task) and
//! on a plain socket the task writes and reads itself: what the hand-off
//! costs a single caller.
//! `cargo run --release -p ratekeeper-bench --example redis_round_trip -- [SECONDS]`
//! (starts its own `redis-server`; prints calls per second, three rounds
//! taking turns).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(3, |s| s.parse().unwrap());
    let span = Duration::from_secs(seconds);
    let server = ratekeeper_testkit::redis::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        let mut multiplexed = client.get_multiplexed_async_connection().await.unwrap();
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg("return redis.call('INCR', KEYS[1])")
            .query_async(&mut multiplexed)
            .await
            .unwrap();
        let mut call = redis::cmd("EVALSHA");
        call.arg(&sha).arg(1).arg("k");
        let packed = call.get_packed_command();
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        socket.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 4096];
        for round in 1..=3 {
            let (start, mut calls) = (Instant::now(), 0u64);
            while start.elapsed() < span {
                std::hint::black_box(multiplexed.send_packed_command(&call).await.unwrap());
                calls += 1;
            }
            let mux = calls as f64 / span.as_secs_f64();
            let (start, mut calls) = (Instant::now(), 0u64);
            while start.elapsed() < span {
                socket.write_all(&packed).await.unwrap();
                let mut len = 0;
                // A reply is whole once it parses (each fits one read here).
                loop {
                    socket.readable().await.unwrap();
                    match socket.try_read(&mut buf[len..]) {
                        Ok(0) => panic!("the server closed the connection"),
                        Ok(n) => len += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                    if let Ok(reply) = redis::parse_redis_value(&buf[..len]) {
                        std::hint::black_box(reply);
                        break;
                    }
                }
                calls += 1;
            }
            let plain = calls as f64 / span.as_secs_f64();
            println!(
                "round {round}: multiplexed {mux:.0} calls/s, plain socket {plain:.0} calls/s"
            );
        }
    });
}
