//! A thread-per-connection TCP echo server, written as plain blocking code,
//! run on green threads and then, unchanged, on OS threads.
//!
//! `cargo run --release --example echo [CONNECTIONS] [SECONDS]` (defaults
//! 100 connections, 3 seconds per server) starts the server, opens
//! CONNECTIONS client connections that each send a 64-byte message and wait
//! for its echo in a loop, and counts round trips per second. The same
//! server function runs twice: once with `green::spawn` per connection,
//! once with `std::thread::spawn`. The load client is identical for both: a
//! separate one-carrier green runtime with a green thread per connection.
//! The last line is `connections: C, green: X req/s, std threads: Y req/s`.
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use green::net::{TcpListener, TcpStream};

const MESSAGE: usize = 64;

/// A way to start a thread: `green::spawn` or `std::thread::spawn`.
type Spawn = fn(Box<dyn FnOnce() + Send>);

/// The server: accepts `conns` connections and echoes each on its own
/// thread until the client closes it. Ordinary blocking code: which kind of
/// thread runs it is the caller's choice.
fn serve(listener: TcpListener, conns: usize, spawn: Spawn) {
    for _ in 0..conns {
        let (mut stream, _) = listener.accept().expect("accept");
        spawn(Box::new(move || {
            stream.set_nodelay(true).expect("set_nodelay");
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
}

/// Runs the server on threads made by `spawn` and the load client against
/// it for `secs`; returns round trips per second.
fn measure(client: &green::Runtime, conns: usize, secs: f64, spawn: Spawn) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    // The accept loop runs on the same kind of thread as the handlers; its
    // handlers finish when the client closes its connections.
    spawn(Box::new(move || serve(listener, conns, spawn)));

    let start = Arc::new(green::sync::Barrier::new(conns + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..conns)
        .map(|i| {
            let (start, stop, total) = (start.clone(), stop.clone(), total.clone());
            client.spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("set_nodelay");
                let msg = [i as u8; MESSAGE];
                let mut back = [0u8; MESSAGE];
                start.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(&msg).expect("write");
                    s.read_exact(&mut back).expect("read");
                    assert_eq!(back, msg, "echo mismatch");
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let elapsed = began.elapsed().as_secs_f64();
    total.load(Ordering::Relaxed) as f64 / elapsed
}

fn main() {
    let mut args = std::env::args().skip(1);
    let conns: usize = args
        .next()
        .map(|a| a.parse().expect("CONNECTIONS must be a number"))
        .unwrap_or(100);
    let secs: f64 = args
        .next()
        .map(|a| a.parse().expect("SECONDS must be a number"))
        .unwrap_or(3.0);
    let client = green::Runtime::builder()
        .carriers(1)
        .name("echo-client")
        .build()
        .expect("start the client runtime");

    let green_rate = measure(&client, conns, secs, |f| {
        green::spawn(f);
    });
    println!("green threads:  {green_rate:>10.0} req/s");
    let std_rate = measure(&client, conns, secs, |f| {
        std::thread::spawn(f);
    });
    println!("std threads:    {std_rate:>10.0} req/s");
    println!(
        "connections: {conns}, green: {green_rate:.0} req/s, std threads: {std_rate:.0} req/s"
    );
}
