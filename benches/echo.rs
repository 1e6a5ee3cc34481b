//! Loopback TCP echo: green threads (blocking API), green async API, tokio
//! current_thread, monoio (io_uring driver), may, and std thread per
//! connection.
//!
//! Each peer runs the same echo server (a task or thread per connection,
//! reading up to 4 KiB and writing back what it read) pinned to CPU 0 with
//! one scheduler thread. One client drives every peer: a one-carrier green
//! runtime pinned to CPU 1 with a green thread per connection, each doing
//! round trips of one message (write it, read the echo back in full, check
//! it). Throughput is round trips per second over all connections.
//!
//! `cargo bench --bench echo` runs it (a few minutes); `cargo test
//! --benches` runs each case once with 10 connections.
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Round trips per iteration over all connections.
const ROUND_TRIPS: usize = 10_000;
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

/// Whether criterion measures (`cargo bench`) rather than test-runs each
/// case once (`cargo test --benches`).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Pins the calling thread to `cpu` (threads it creates inherit the mask),
/// or to every CPU with None. A machine with one CPU is left unpinned.
fn pin(cpu: Option<usize>) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    match cpu {
        Some(c) => set.set(c),
        None => (0..n).for_each(|c| set.set(c)),
    }
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Runs `f` with the calling thread pinned to `cpu`, so threads `f` starts
/// are pinned there too.
fn pinned<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    pin(Some(cpu));
    let r = f();
    pin(None);
    r
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    GreenBlocking,
    GreenAsync,
    Tokio,
    Monoio,
    May,
    Std,
}

impl Peer {
    const ALL: [Peer; 6] = [
        Peer::GreenBlocking,
        Peer::GreenAsync,
        Peer::Tokio,
        Peer::Monoio,
        Peer::May,
        Peer::Std,
    ];

    fn name(self) -> &'static str {
        match self {
            Peer::GreenBlocking => "green",
            Peer::GreenAsync => "green_async",
            Peer::Tokio => "tokio",
            Peer::Monoio => "monoio",
            Peer::May => "may",
            Peer::Std => "std_threads",
        }
    }
}

/// What keeps a server alive: its runtime (if any) and its thread.
enum Server {
    Green(green::Runtime),
    Thread(std::thread::JoinHandle<()>),
    Detached,
}

/// Starts `peer`'s echo server pinned to SERVER_CPU; it accepts exactly
/// `conns` connections and its handlers end when the client closes them.
fn start_server(peer: Peer, conns: usize) -> (SocketAddr, Server) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let server = pinned(SERVER_CPU, || match peer {
        Peer::GreenBlocking => {
            let rt = green_rt("echo-server");
            let l = green::net::TcpListener::from(listener);
            rt.spawn(move || {
                for _ in 0..conns {
                    let (mut s, _) = l.accept().expect("accept");
                    green::spawn(move || {
                        s.set_nodelay(true).unwrap();
                        let mut buf = [0u8; 4096];
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            Server::Green(rt)
        }
        Peer::GreenAsync => {
            let rt = green_rt("echo-server-async");
            let l = green::aio::net::TcpListener::from(listener);
            rt.spawn_async(async move {
                for _ in 0..conns {
                    let (s, _) = l.accept().await.expect("accept");
                    green::spawn_async(async move {
                        s.set_nodelay(true).unwrap();
                        let mut buf = Vec::with_capacity(4096);
                        loop {
                            let (r, b) = s.read(buf).await;
                            match r {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let (r, b) = s.write_all(b).await;
                            if r.is_err() {
                                return;
                            }
                            buf = b;
                        }
                    });
                }
            });
            Server::Green(rt)
        }
        Peer::Tokio => Server::Thread(std::thread::spawn(move || {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut handlers = Vec::with_capacity(conns);
                for _ in 0..conns {
                    let (mut s, _) = l.accept().await.expect("accept");
                    handlers.push(tokio::spawn(async move {
                        s.set_nodelay(true).unwrap();
                        let mut buf = vec![0u8; 4096];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }));
                }
                for h in handlers {
                    let _ = h.await;
                }
            });
        })),
        Peer::Monoio => Server::Thread(std::thread::spawn(move || {
            use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(256)
                .build()
                .expect("monoio io_uring runtime");
            rt.block_on(async move {
                let l = monoio::net::TcpListener::from_std(listener).unwrap();
                let mut handlers = Vec::with_capacity(conns);
                for _ in 0..conns {
                    let (mut s, _) = l.accept().await.expect("accept");
                    handlers.push(monoio::spawn(async move {
                        s.set_nodelay(true).unwrap();
                        let mut buf = Vec::with_capacity(4096);
                        loop {
                            let (r, b) = s.read(buf).await;
                            match r {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let (r, b) = s.write_all(b).await;
                            if r.is_err() {
                                return;
                            }
                            buf = b;
                            buf.clear();
                        }
                    }));
                }
                for h in handlers {
                    h.await;
                }
            });
        })),
        Peer::May => {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the fd is an open listening socket whose ownership
            // moves from `listener` to may's listener.
            let l = unsafe { may::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
            may::go!(move || {
                for _ in 0..conns {
                    let (mut s, _) = l.accept().expect("accept");
                    may::go!(move || {
                        s.set_nodelay(true).unwrap();
                        let mut buf = [0u8; 4096];
                        loop {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            Server::Detached
        }
        Peer::Std => Server::Thread(std::thread::spawn(move || {
            let handlers: Vec<_> = (0..conns)
                .map(|_| {
                    let (mut s, _) = listener.accept().expect("accept");
                    std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            s.set_nodelay(true).unwrap();
                            let mut buf = [0u8; 4096];
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        })
                        .expect("spawn")
                })
                .collect();
            for h in handlers {
                let _ = h.join();
            }
        })),
    });
    (addr, server)
}

fn green_rt(name: &str) -> green::Runtime {
    green::Runtime::builder()
        .carriers(1)
        .name(name)
        .build()
        .expect("green runtime (io_uring)")
}

/// The load client: connections on a one-carrier green runtime pinned to
/// CLIENT_CPU.
struct Client {
    rt: green::Runtime,
    conns: Arc<Vec<green::net::TcpStream>>,
}

impl Client {
    fn connect(rt: green::Runtime, addr: SocketAddr, conns: usize) -> Client {
        let conns = rt.block_on(move || {
            (0..conns)
                .map(|_| {
                    let s = green::net::TcpStream::connect(addr).expect("connect");
                    s.set_nodelay(true).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        });
        Client {
            rt,
            conns: Arc::new(conns),
        }
    }

    /// `per_conn` round trips of `size` bytes on every connection at once.
    fn run(&self, size: usize, per_conn: u64) -> Duration {
        let conns = self.conns.clone();
        self.rt.block_on(move || {
            let start = Instant::now();
            let handles: Vec<_> = (0..conns.len())
                .map(|i| {
                    let conns = conns.clone();
                    green::spawn(move || {
                        let mut s = &conns[i];
                        let msg = vec![i as u8; size];
                        let mut back = vec![0u8; size];
                        for _ in 0..per_conn {
                            s.write_all(&msg).expect("write");
                            s.read_exact(&mut back).expect("read");
                            assert_eq!(back[size - 1], i as u8, "echo mismatch");
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("client");
            }
            start.elapsed()
        })
    }

    /// Closes the connections (the server's handlers see EOF and end);
    /// returns the runtime for the next case.
    fn close(self) -> green::Runtime {
        drop(self.conns);
        self.rt
    }
}

fn echo(c: &mut Criterion) {
    let measuring = measuring();
    let mut client_rt = Some(pinned(CLIENT_CPU, || green_rt("echo-client")));
    // may's workers start at its first spawn (pinned to SERVER_CPU then,
    // like the other servers); one worker, like one carrier.
    may::config().set_workers(1);
    let mut group = c.benchmark_group("echo");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in [64usize, 1024] {
        for conns in [100usize, 1000] {
            // Under `cargo test --benches` each case runs once, small.
            let real_conns = if measuring { conns } else { 10 };
            let per_conn = (ROUND_TRIPS / real_conns) as u64;
            let per_conn = if measuring { per_conn } else { 10 };
            group.throughput(Throughput::Elements(per_conn * real_conns as u64));
            for peer in Peer::ALL {
                let (addr, server) = start_server(peer, real_conns);
                let client = Client::connect(client_rt.take().unwrap(), addr, real_conns);
                let id = BenchmarkId::new(format!("{size}_{conns}"), peer.name());
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| client.run(size, per_conn * iters));
                });
                client_rt = Some(client.close());
                match server {
                    Server::Thread(t) => t.join().expect("server thread"),
                    Server::Green(rt) => {
                        // Let the handlers see EOF before the carrier stops.
                        std::thread::sleep(Duration::from_millis(50));
                        drop(rt);
                    }
                    Server::Detached => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
