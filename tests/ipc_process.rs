//! Green IPC against a server in a child process (this test binary
//! re-executed with GREEN_IPC_SERVE set): round trips at many sizes with
//! the data verified, many concurrent callers over one connection, ring
//! and arena limits, and the server killed with SIGKILL mid-call.
use std::io::{self, Write};
use std::path::PathBuf;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use green::ipc::{ArenaFullPolicy, Client, ClientConfig, Server, ServerConfig};

mod common;
use common::{spawn_server, watchdog};

/// Runs as the server when re-executed: echoes each request; a request
/// that starts with `SLEEP` waits 300 ms first (`SLEEPLONG`: 5 s).
const ASKED_TO_PANIC: &str = "the handler was asked to panic";

#[test]
fn child_server() {
    let Some(path) = std::env::var_os("GREEN_IPC_SERVE") else {
        return;
    };
    // The panics the tests ask for are expected: keep them off stderr.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&ASKED_TO_PANIC) {
            report(info);
        }
    }));
    let env = |k: &str, d: u64| std::env::var(k).ok().map_or(d, |v| v.parse().unwrap());
    let config = ServerConfig::default()
        .ring_entries(env("GREEN_IPC_RING", 256) as u32)
        .client_arena(env("GREEN_IPC_CLIENT_ARENA", 4 << 20))
        .server_arena(env("GREEN_IPC_SERVER_ARENA", 4 << 20))
        .max_handlers(env("GREEN_IPC_MAX_HANDLERS", 1024) as usize)
        .max_connections(env("GREEN_IPC_MAX_CONNECTIONS", u64::MAX) as usize);
    // Handlers running now, and the most seen at once.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    let server = Server::bind_with(path, config).unwrap();
    if let Ok(spare) = std::env::var("GREEN_IPC_SPARE_FDS") {
        // Room for a few connections' descriptors beyond what the
        // listener and the running runtime hold.
        green::spawn(|| ()).join().unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as libc::rlim_t;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for getrlimit to fill in and
        // setrlimit to read.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = open + spare.parse::<libc::rlim_t>().unwrap();
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    server
        .serve(|req, resp| {
            let body = req.to_vec();
            if body == b"PANIC" {
                resp.write_all(&[1; 4000])?; // in place, then abandoned
                std::panic::panic_any(ASKED_TO_PANIC);
            }
            if body == b"NOENT" {
                resp.write_all(&[1; 4000])?;
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            if body == b"CPU" {
                let cpu = rustix::thread::sched_getcpu() as u32;
                return resp.write_all(&cpu.to_le_bytes());
            }
            if body == b"CARRIER" {
                // The serving carrier's thread name, `{prefix}-{index}`.
                let name = std::thread::current().name().unwrap_or("").to_owned();
                return resp.write_all(name.as_bytes());
            }
            if body == b"WHO" {
                let p = req.peer();
                let who = [
                    p.pid.to_le_bytes(),
                    p.uid.to_le_bytes(),
                    p.gid.to_le_bytes(),
                ];
                return resp.write_all(&who.concat());
            }
            if body == b"PEAK" {
                return resp.write_all(&PEAK.load(Ordering::SeqCst).to_le_bytes());
            }
            if let Some(n) = body.strip_prefix(b"GATHER ") {
                // Blocks until `n` GATHER calls have arrived: they all
                // complete only if that many handlers wait side by side.
                static ARRIVED: AtomicUsize = AtomicUsize::new(0);
                let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
                ARRIVED.fetch_add(1, Ordering::SeqCst);
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while ARRIVED.load(Ordering::SeqCst) < n {
                    if std::time::Instant::now() > deadline {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    green::thread::sleep(Duration::from_millis(1));
                }
                return resp.write_all(b"gathered");
            }
            if body.starts_with(b"NAP") {
                let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                PEAK.fetch_max(now, Ordering::SeqCst);
                green::thread::sleep(Duration::from_millis(20));
                RUNNING.fetch_sub(1, Ordering::SeqCst);
            } else if body.starts_with(b"SLEEPLONG") {
                green::thread::sleep(Duration::from_secs(5));
            } else if body.starts_with(b"SLEEP") {
                green::thread::sleep(Duration::from_millis(300));
            } else if body.starts_with(b"PIECES") {
                // Reserved up front (in place in the arena), then written
                // in pieces of mixed sizes, short ones among them.
                resp.reserve(body.len());
                let mut rest = &body[..];
                for k in [4, 3, 40, 1, 100, 31, 32, 33, 4096].into_iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let k = k.min(rest.len());
                    resp.write_all(&rest[..k])?;
                    rest = &rest[k..];
                }
                return Ok(());
            } else if body.starts_with(b"INPLACE") {
                // Reserved, a short write (staged), then the rest written
                // in place in two parts.
                resp.reserve(body.len());
                resp.write_all(&body[..7])?;
                let rest = &body[7..];
                let half = rest.len() / 2;
                resp.write_in_place(half).copy_from_slice(&rest[..half]);
                resp.write_in_place(rest.len() - half)
                    .copy_from_slice(&rest[half..]);
                return Ok(());
            } else if body.starts_with(b"GROWING") {
                // In place without a reserve: pieces that outgrow the
                // inline buffer, then the first arena block.
                let mut rest = &body[..];
                for k in [3, 20, 1000, 70_000].into_iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let k = k.min(rest.len());
                    resp.write_in_place(k).copy_from_slice(&rest[..k]);
                    rest = &rest[k..];
                }
                return Ok(());
            } else if body.starts_with(b"SPLIT") {
                // A byte at a time: the body grows past what a descriptor
                // carries inline while the handler writes.
                for b in &body {
                    resp.write_all(std::slice::from_ref(b))?;
                }
                return Ok(());
            }
            resp.write_all(&body)
        })
        .unwrap();
}

/// Runs `f` with the path of a fresh server child (`name`, its extra
/// environment), under [`watchdog`]; does nothing in the child itself.
fn with_server(name: &str, env: &[(&str, &str)], f: impl FnOnce(PathBuf) + Send + 'static) {
    if std::env::var_os("GREEN_IPC_SERVE").is_some() {
        return;
    }
    let server = spawn_server("GREEN_IPC_SERVE", name, env);
    let path = server.path.clone();
    watchdog(move || f(path));
    drop(server);
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) + seed) as u8)
        .collect()
}

/// Runs `f(client, i)` for `i` in `0..n`, each on a green thread of its
/// own, all at once; returns the results in order.
fn on_green_threads<T: Send + 'static>(
    client: &Arc<Client>,
    n: usize,
    f: impl Fn(&Client, usize) -> T + Send + Clone + 'static,
) -> Vec<T> {
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (c, f) = (client.clone(), f.clone());
            green::spawn(move || f(&c, i))
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn round_trips_at_every_size() {
    with_server("sizes", &[], move |path| {
        green::spawn(move || {
            let client = Client::connect(&path).unwrap();
            // 0 to 16 bytes travel inside the descriptor, 17 and up in
            // the arenas.
            for (i, size) in [0usize, 1, 4, 15, 16, 17, 64, 4096, 65536, 1 << 20]
                .into_iter()
                .enumerate()
            {
                for round in 0..3 {
                    let req = pattern(size, i + round);
                    let resp = client.call(&req).unwrap();
                    assert_eq!(resp.len(), size);
                    assert_eq!(resp.to_vec(), req, "size {size}");
                    let mut buf = vec![0u8; size];
                    assert_eq!(resp.read_into(&mut buf), size);
                    assert_eq!(buf, req);
                    // In pieces.
                    let mut pieces = Vec::new();
                    let mut chunk = [0u8; 4093];
                    loop {
                        let n = resp.read_at(pieces.len(), &mut chunk);
                        if n == 0 {
                            break;
                        }
                        pieces.extend_from_slice(&chunk[..n]);
                    }
                    assert_eq!(pieces, req);
                    assert_eq!(resp.read_at(size + 1, &mut chunk), 0);
                }
                // In place.
                let req = pattern(size, 99);
                let mut b = client.request_builder(size).unwrap();
                b.write_at(0, &req).unwrap();
                assert_eq!(b.call().unwrap().to_vec(), req);
                // Built in place, answered in place.
                let mut req = pattern(size.max(7), 9);
                req[..7].copy_from_slice(b"INPLACE");
                let mut b = client.request_builder(req.len()).unwrap();
                b.as_mut_bytes().copy_from_slice(&req);
                assert_eq!(b.call().unwrap().to_vec(), req, "in place {size}");
                let mut req = pattern(size.max(7), 10);
                req[..7].copy_from_slice(b"GROWING");
                assert_eq!(client.call(&req).unwrap().to_vec(), req, "growing {size}");
                // Written by the handler a byte at a time.
                let mut req = pattern(size.max(5), 7);
                req[..5].copy_from_slice(b"SPLIT");
                assert_eq!(client.call(&req).unwrap().to_vec(), req, "split {size}");
                // Written by the handler in pieces of mixed sizes.
                let mut req = pattern(size.max(6), 8);
                req[..6].copy_from_slice(b"PIECES");
                assert_eq!(client.call(&req).unwrap().to_vec(), req, "pieces {size}");
            }
        })
        .join()
        .unwrap();
    });
}

#[test]
fn handler_threads_per_connection_are_capped() {
    // 4 handlers at most and a 16-entry ring: 300 calls from 100 callers
    // queue on the server and then on the ring, and all complete.
    with_server(
        "cap",
        &[("GREEN_IPC_MAX_HANDLERS", "4"), ("GREEN_IPC_RING", "16")],
        move |path| {
            // One lane: one connection, whose cap is counted.
            let client =
                Arc::new(Client::connect_with(&path, ClientConfig::default().lanes(1)).unwrap());
            on_green_threads(&client, 100, |c, i| {
                for round in 0..3 {
                    let req = format!("NAP {i} {round}");
                    assert_eq!(c.call(req.as_bytes()).unwrap().to_vec(), req.as_bytes());
                }
            });
            let peak = client.call(b"PEAK").unwrap().to_vec();
            let peak = usize::from_le_bytes(peak.try_into().unwrap());
            assert_eq!(peak, 4, "handlers at once");
        },
    );
}

/// A `NAP` request of `len` bytes (in the arena), tagged `i`.
fn nap(len: usize, i: usize) -> Vec<u8> {
    let mut v = format!("NAP {i} ").into_bytes();
    v.resize(len, i as u8);
    v
}

/// The most `NAP` handlers the server has run at once.
fn peak(client: &Client) -> usize {
    usize::from_le_bytes(client.call(b"PEAK").unwrap().to_vec().try_into().unwrap())
}

#[test]
fn request_bodies_in_flight_are_held_to_max_in_flight() {
    // 100 KB: two 40 KB bodies fit, a third waits for one to be answered.
    // Blocking callers and futures share the wait, and all complete.
    with_server("window", &[], move |path| {
        let config = ClientConfig::default().lanes(1).max_in_flight(100_000);
        let client = Arc::new(Client::connect_with(&path, config).unwrap());
        let async_calls: Vec<_> = (0..8)
            .map(|i| {
                let c = client.clone();
                green::spawn_async(async move {
                    for round in 0..3 {
                        let req = nap(40_000, 100 + i * 3 + round);
                        assert_eq!(c.call_async(&req).await.unwrap().to_vec(), req);
                    }
                })
            })
            .collect();
        on_green_threads(&client, 16, |c, i| {
            for round in 0..3 {
                let req = nap(40_000, i * 3 + round);
                assert_eq!(c.call(&req).unwrap().to_vec(), req);
            }
        });
        for h in async_calls {
            h.join().unwrap();
        }
        assert_eq!(peak(&client), 2, "calls with 40 KB bodies at once");
    });
    // A limit below one body: still two at a time, never none.
    with_server("window-small", &[], move |path| {
        let config = ClientConfig::default().lanes(1).max_in_flight(10_000);
        let client = Arc::new(Client::connect_with(&path, config).unwrap());
        on_green_threads(&client, 8, |c, i| {
            for round in 0..2 {
                let req = nap(40_000, i * 2 + round);
                assert_eq!(c.call(&req).unwrap().to_vec(), req);
            }
        });
        assert_eq!(peak(&client), 2, "calls with 40 KB bodies at once");
    });
}

#[test]
fn calls_waiting_for_a_full_arena_each_get_their_turn() {
    // A 64 KiB client arena holds one 40 KB body: 12 callers and 4 futures
    // queue for it, each takes its turn, and all are answered.
    with_server(
        "arena-queue",
        &[("GREEN_IPC_CLIENT_ARENA", "65536")],
        move |path| {
            let config = ClientConfig::default()
                .lanes(1)
                .max_in_flight(u64::MAX)
                .arena_full(ArenaFullPolicy::Wait(Duration::from_secs(20)));
            let client = Arc::new(Client::connect_with(&path, config).unwrap());
            let futures: Vec<_> = (0..4)
                .map(|i| {
                    let c = client.clone();
                    green::spawn_async(async move {
                        let req = nap(40_000, 100 + i);
                        assert_eq!(c.call_async(&req).await.unwrap().to_vec(), req);
                    })
                })
                .collect();
            on_green_threads(&client, 12, |c, i| {
                let req = nap(40_000, i);
                assert_eq!(c.call(&req).unwrap().to_vec(), req);
            });
            for f in futures {
                f.join().unwrap();
            }
            assert_eq!(peak(&client), 1, "calls with 40 KB bodies at once");
        },
    );
}

#[test]
fn the_in_flight_limit_holds_back_only_arena_bodies_and_never_fails() {
    with_server("window-inline", &[], move |path| {
        // Fail when the arena is full: the in-flight limit is not a
        // shortage and waits anyway.
        let config = ClientConfig::default()
            .lanes(1)
            .max_in_flight(10_000)
            .arena_full(ArenaFullPolicy::Fail);
        let client = Arc::new(Client::connect_with(&path, config).unwrap());
        let long = |c: Arc<Client>, tag: u8| {
            green::spawn(move || {
                let mut req = b"SLEEPLONG".to_vec();
                req.resize(40_000, tag);
                assert_eq!(c.call(&req).unwrap().to_vec(), req);
            })
        };
        let longs = [long(client.clone(), 1), long(client.clone(), 2)];
        green::thread::sleep(Duration::from_millis(100));
        // Two 40 KB bodies in flight: a third waits for one to come back.
        let c = client.clone();
        let third = green::spawn(move || {
            let req = nap(40_000, 3);
            c.call(&req).map(|r| r.to_vec() == req)
        });
        // Bodies that travel inside their descriptors go meanwhile.
        on_green_threads(&client, 10, |c, i| {
            let req = format!("NAP {i}");
            assert!(req.len() <= green::ipc::INLINE_MAX);
            assert_eq!(c.call(req.as_bytes()).unwrap().to_vec(), req.as_bytes());
        });
        assert!(
            !longs[0].is_finished() && !longs[1].is_finished() && !third.is_finished(),
            "the 5 s calls ended before the short ones, or the third did not wait"
        );
        for h in longs {
            h.join().unwrap();
        }
        assert!(third.join().unwrap().unwrap());
    });
}

#[test]
fn a_future_dropped_while_waiting_for_space_passes_its_turn_on() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    with_server("window-drop", &[], move |path| {
        let config = ClientConfig::default().lanes(1).max_in_flight(10_000);
        let client = Arc::new(Client::connect_with(&path, config).unwrap());
        let sent = |c: Arc<Client>, head: &'static [u8]| {
            green::spawn(move || {
                let mut req = head.to_vec();
                req.resize(40_000, 1);
                assert_eq!(c.call(&req).unwrap().to_vec(), req);
            })
        };
        // Two bodies in flight: the short one answered after 300 ms, the
        // long one after 5 s.
        let short = sent(client.clone(), b"SLEEP");
        let long = sent(client.clone(), b"SLEEPLONG");
        green::thread::sleep(Duration::from_millis(50));
        // First in line: a future, polled once and then left alone.
        let req = nap(40_000, 1);
        let mut fut = Box::pin(client.call_async(&req));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Pending));
        // Second in line: a blocking call.
        let c = client.clone();
        let second = green::spawn(move || {
            let req = nap(40_000, 2);
            c.call(&req).map(|r| r.to_vec() == req)
        });
        // The short call's answer gives the future its turn; dropped, it
        // hands the turn to the blocking call, which then goes before the
        // long call ends.
        short.join().unwrap();
        drop(fut);
        assert!(second.join().unwrap().unwrap());
        assert!(
            !long.is_finished(),
            "the second call waited for the long one: the turn was lost"
        );
        long.join().unwrap();
    });
}

#[test]
fn blocked_handlers_do_not_hold_up_other_calls() {
    // Each call blocks its handler until all 200 have arrived: they all
    // complete only if the server runs 200 handlers at once, however the
    // calls were batched on the ring.
    with_server("gather", &[], move |path| {
        let client = Arc::new(Client::connect(&path).unwrap());
        for r in on_green_threads(&client, 200, |c, _| c.call(b"GATHER 200")) {
            assert_eq!(r.unwrap().to_vec(), b"gathered");
        }
    });
}

#[test]
fn a_failing_or_panicking_handler_fails_only_its_call() {
    with_server(
        "panic",
        &[("GREEN_IPC_SERVER_ARENA", "65536")],
        move |path| {
            let client = Client::connect(&path).unwrap();
            // More times than the 64 KiB arena holds the 4 KB each handler
            // began writing in place: those bodies are freed.
            for _ in 0..100 {
                let err = client.call(b"NOENT").unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            }
            for _ in 0..20 {
                let err = client.call(b"PANIC").unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
            }
            let big = pattern(60_000, 3);
            assert_eq!(client.call(&big).unwrap().to_vec(), big);
            assert!(!client.is_closed());
        },
    );
}

/// Connects, retrying while the server refuses (it frees a closed
/// client's place when it notices the close).
fn connect_once_admitted(path: &std::path::Path, config: &ClientConfig) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect_with(path, config.clone()) {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "never admitted: {e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_server_out_of_file_descriptors_keeps_serving_once_some_close() {
    with_server("nofile", &[("GREEN_IPC_SPARE_FDS", "24")], |path| {
        let config = ClientConfig::default()
            .lanes(1)
            .handshake_timeout(Duration::from_millis(300));
        // Connect until the server runs out of descriptors: its accepts
        // fail (the client's handshake times out) or the connection's
        // setup does (the client sees it close before the server confirms
        // it). A connection that `connect` returned is set up, and served.
        let mut held = Vec::new();
        let refused = loop {
            match Client::connect_with(&path, config.clone()) {
                Ok(c) => {
                    assert_eq!(c.call(b"up").unwrap().to_vec(), b"up");
                    held.push(c);
                    assert!(held.len() < 64, "never ran out of descriptors");
                }
                Err(e) => break e,
            }
        };
        assert!(!held.is_empty(), "no connection at all: {refused}");
        // Sockets that connect and say nothing: each holds descriptors
        // of the server's until it goes, and past the last one the
        // server's `accept` itself fails.
        let silent: Vec<_> = (0..64)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // Those served go on being served.
        for c in &held {
            assert_eq!(c.call(b"still").unwrap().to_vec(), b"still");
        }
        // Once they close, their descriptors come back and the server,
        // still accepting, serves a new client.
        drop(held);
        drop(silent);
        let client = connect_once_admitted(&path, &config);
        assert_eq!(client.call(b"again").unwrap().to_vec(), b"again");
    });
}

#[test]
fn connections_past_the_limit_are_refused_until_one_closes() {
    with_server("maxconn", &[("GREEN_IPC_MAX_CONNECTIONS", "2")], |path| {
        let one = ClientConfig::default().lanes(1);
        let a = Client::connect_with(&path, one.clone()).unwrap();
        let b = Client::connect_with(&path, one.clone()).unwrap();
        assert_eq!(a.call(b"a").unwrap().to_vec(), b"a");
        let e = Client::connect_with(&path, one.clone()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        drop(a);
        let c = connect_once_admitted(&path, &one);
        assert_eq!(c.call(b"c").unwrap().to_vec(), b"c");
        assert_eq!(b.call(b"b").unwrap().to_vec(), b"b");
        // A client of two lanes needs two places.
        let e = Client::connect_with(&path, ClientConfig::default().lanes(2)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    });
}

#[test]
fn the_handler_knows_the_calling_process() {
    with_server("who", &[], |path| {
        let client = Client::connect(&path).unwrap();
        let who = client.call(b"WHO").unwrap().to_vec();
        let field = |i: usize| u32::from_le_bytes(who[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(field(0), std::process::id());
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((field(1), field(2)), (uid, gid));
    });
}

#[test]
fn calls_from_a_plain_os_thread() {
    with_server("os", &[], move |path| {
        let client = Client::connect(&path).unwrap();
        for i in 0..100 {
            let req = pattern(100, i);
            assert_eq!(client.call(&req).unwrap().to_vec(), req);
        }
    });
}

#[test]
fn lanes_serve_every_carrier_and_plain_threads_and_take_back_their_own_bodies() {
    with_server("lanes", &[], move |path| {
        for lanes in [1, 3] {
            let client = Arc::new(
                Client::connect_with(&path, ClientConfig::default().lanes(lanes)).unwrap(),
            );
            assert_eq!(client.lanes(), lanes);
            // Responses from green threads on every carrier and from a
            // plain thread, all dropped here: each RELEASE must go back
            // over the lane its body came from, or the server closes that
            // lane as a protocol violation and the calls below fail.
            let c = client.clone();
            let plain = std::thread::spawn(move || {
                let req = pattern(300, 1);
                let r = c.call(&req).unwrap();
                assert_eq!(r.to_vec(), req);
                r
            });
            let mut held = on_green_threads(&client, 64, |c, i| {
                let req = pattern(100 + i, i);
                let r = c.call(&req).unwrap();
                assert_eq!(r.to_vec(), req);
                r
            });
            held.push(plain.join().unwrap());
            drop(held);
            on_green_threads(&client, 64, |c, i| {
                for r in 0..20 {
                    let req = pattern(100 + i, r);
                    assert_eq!(c.call(&req).unwrap().to_vec(), req);
                }
            });
            assert!(!client.is_closed());
        }
    });
}

#[test]
fn pinned_lanes_are_served_on_their_callers_cpu() {
    // The server's default runtime pins its carriers; so does the client's.
    with_server("pinned", &[("GREEN_PIN_CARRIERS", "1")], move |path| {
        let rt = green::Runtime::builder()
            .pin_carriers(true)
            .build()
            .unwrap();
        let cpus = rt.pinned_cpus().unwrap().to_vec();
        let client = Arc::new(rt.block_on(move || Client::connect(&path)).unwrap());
        assert_eq!(client.lanes(), cpus.len());
        // Callers on every carrier: each lane's handlers run on the CPU
        // of the carrier that calls over it.
        let hs: Vec<_> = (0..4 * cpus.len())
            .map(|_| {
                let c = client.clone();
                rt.spawn(move || {
                    let mine = rustix::thread::sched_getcpu();
                    for _ in 0..10 {
                        let r = c.call(b"CPU").unwrap();
                        let mut b = [0u8; 4];
                        assert_eq!(r.read_into(&mut b), 4);
                        assert_eq!(u32::from_le_bytes(b) as usize, mine);
                    }
                    mine
                })
            })
            .collect();
        let mut seen: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut want = cpus.clone();
        want.sort_unstable();
        want.dedup();
        assert_eq!(seen, want, "callers ran on every pinned CPU");
    });
}

#[test]
fn floating_lanes_are_served_by_the_carrier_with_their_callers_home() {
    // Neither side pins; both have one carrier per CPU, so carrier i of
    // each is at home on the i-th allowed CPU, and lane i, which carrier
    // i's callers use, is served by the server's carrier i.
    with_server("homes", &[("GREEN_PIN_CARRIERS", "0")], move |path| {
        let rt = green::Runtime::builder()
            .pin_carriers(false)
            .build()
            .unwrap();
        let n = rt.carriers();
        // One lane first, named for carrier 0's home: the server's
        // carrier 0 now serves a connection more than the others, so
        // placing by load alone would put the next lane 0 elsewhere.
        let p = path.clone();
        let _first = rt
            .block_on(move || Client::connect_with(&p, ClientConfig::default().lanes(1)))
            .unwrap();
        let client = Arc::new(rt.block_on(move || Client::connect(&path)).unwrap());
        assert_eq!(client.lanes(), n);
        let hs: Vec<_> = (0..4 * n)
            .map(|_| {
                let c = client.clone();
                rt.spawn(move || {
                    let mine = std::thread::current().name().unwrap().to_owned();
                    let index = |name: &str| name.rsplit('-').next().unwrap().to_owned();
                    for _ in 0..10 {
                        let theirs = c.call(b"CARRIER").unwrap().to_vec();
                        let theirs = String::from_utf8(theirs).unwrap();
                        if n > 1 {
                            assert_eq!(index(&theirs), index(&mine), "{mine} served by {theirs}");
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut seen: Vec<String> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "callers ran on every carrier");
    });
}

#[test]
fn thousand_concurrent_callers_over_one_connection() {
    with_server("many", &[], move |path| {
        let client = Arc::new(Client::connect(&path).unwrap());
        on_green_threads(&client, 1000, |client, c| {
            for r in 0..5 {
                let req = pattern(64 + c % 512, c * 7 + r);
                assert_eq!(client.call(&req).unwrap().to_vec(), req);
            }
        });
    });
}

#[test]
fn ring_full_backpressure_all_calls_complete() {
    // 4-entry rings, 200 concurrent slow calls, then 100 futures and 100
    // blocking calls at once: bodies placed in the arena wait for a free
    // ring entry, and every call gets its own response.
    with_server("ringfull", &[("GREEN_IPC_RING", "4")], move |path| {
        let client = Arc::new(Client::connect(&path).unwrap());
        let req = |c: usize| {
            let mut req = b"SLEEP".to_vec();
            req.extend(pattern(32, c));
            req
        };
        on_green_threads(&client, 200, move |client, c| {
            assert_eq!(client.call(&req(c)).unwrap().to_vec(), req(c));
        });
        let futures: Vec<_> = (0..100)
            .map(|c| {
                let client = client.clone();
                green::spawn_async(async move {
                    let req = req(1000 + c);
                    assert_eq!(client.call_async(&req).await.unwrap().to_vec(), req);
                })
            })
            .collect();
        on_green_threads(&client, 100, move |client, c| {
            assert_eq!(client.call(&req(2000 + c)).unwrap().to_vec(), req(2000 + c));
        });
        for f in futures {
            f.join().unwrap();
        }
    });
}

/// A client with one lane (one arena for all its calls) and `policy`.
fn one_lane(path: &std::path::Path, policy: ArenaFullPolicy) -> Arc<Client> {
    let config = ClientConfig::default().arena_full(policy).lanes(1);
    Arc::new(Client::connect_with(path, config).unwrap())
}

/// A 40 KB request starting with `tag`: two do not fit a 64 KiB arena.
fn big(tag: &[u8]) -> Vec<u8> {
    let mut v = tag.to_vec();
    v.resize(40_000, 7);
    v
}

#[test]
fn arena_full_fail_policy_and_wait_policy() {
    with_server(
        "arena",
        &[("GREEN_IPC_CLIENT_ARENA", "65536")],
        move |path| {
            // One lane: the calls below, from green threads on any
            // carrier, share one arena.
            let connect = |policy| one_lane(&path, policy);
            // Fail: a second 40 KB call while a first holds the arena (a
            // request being built in place holds its space until sent).
            let fail = connect(ArenaFullPolicy::Fail);
            let mut first = fail.request_builder(40_000).unwrap();
            first.as_mut_bytes().copy_from_slice(&big(b"first"));
            let err = fail.call(&big(b"x")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            assert_eq!(first.call().unwrap().to_vec(), big(b"first"));
            // Larger than the whole arena: fails at once, whatever the policy.
            let err = fail.call(&vec![0; 1 << 20]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            // Freed after the response: works again.
            assert_eq!(fail.call(&big(b"y")).unwrap().len(), 40_000);
            // With the whole arena held, bodies of up to INLINE_MAX bytes still
            // go (inside their descriptors); one byte more needs arena space.
            let mut all = fail.request_builder(65536).unwrap();
            all.as_mut_bytes().fill(1);
            let short = [9u8; green::ipc::INLINE_MAX];
            for _ in 0..100 {
                assert_eq!(fail.call(&short).unwrap().to_vec(), short);
            }
            let err = fail.call(&[9u8; green::ipc::INLINE_MAX + 1]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            assert_eq!(all.call().unwrap().len(), 65536);

            // Wait: the second call proceeds once the first's space frees.
            let wait = connect(ArenaFullPolicy::Wait(Duration::from_secs(20)));
            let c = wait.clone();
            let first = green::spawn(move || c.call(&big(b"SLEEP")).map(|r| r.len()));
            green::thread::sleep(Duration::from_millis(100));
            let req = big(b"second");
            assert_eq!(wait.call(&req).unwrap().to_vec(), req);
            assert_eq!(first.join().unwrap().unwrap(), 40_000);

            // The same as futures: one waits for the space the other frees.
            let c = wait.clone();
            let first =
                green::spawn_async(
                    async move { c.call_async(&big(b"SLEEP")).await.map(|r| r.len()) },
                );
            green::thread::sleep(Duration::from_millis(100));
            let c = wait.clone();
            let req = big(b"async second");
            let second =
                green::spawn_async(async move { c.call_async(&req).await.map(|r| r.to_vec()) });
            assert_eq!(second.join().unwrap().unwrap(), big(b"async second"));
            assert_eq!(first.join().unwrap().unwrap(), 40_000);

            // A wait that outlasts its limit fails, blocking or async.
            let short = connect(ArenaFullPolicy::Wait(Duration::from_millis(50)));
            let mut first = short.request_builder(40_000).unwrap();
            first.as_mut_bytes().copy_from_slice(&big(b"first"));
            let err = short.call(&big(b"x")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            let c = short.clone();
            let err =
                green::spawn_async(async move { c.call_async(&big(b"y")).await.map(|r| r.len()) })
                    .join()
                    .unwrap()
                    .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            assert_eq!(first.call().unwrap().to_vec(), big(b"first"));
        },
    );
}

#[test]
fn a_full_server_arena_waits_for_the_client_to_release_a_response() {
    with_server(
        "srvarena",
        &[("GREEN_IPC_SERVER_ARENA", "65536")],
        move |path| {
            // One lane: the server arena is per lane, and the two calls
            // below come from a plain thread and a green thread on any
            // carrier.
            let client =
                Arc::new(Client::connect_with(&path, ClientConfig::default().lanes(1)).unwrap());
            let first = client.call(&pattern(40_000, 1)).unwrap();
            // The second response does not fit while the first is held.
            let c = client.clone();
            let second = green::spawn(move || c.call(&pattern(40_000, 2)).map(|r| r.to_vec()));
            green::thread::sleep(Duration::from_millis(100));
            assert!(
                !second.is_finished(),
                "placed a response with no room for it"
            );
            assert_eq!(first.to_vec(), pattern(40_000, 1));
            drop(first); // RELEASE: the handler waiting for space goes on
            assert_eq!(second.join().unwrap().unwrap(), pattern(40_000, 2));
        },
    );
}

#[test]
fn server_killed_mid_call_fails_pending_and_later_calls() {
    if std::env::var_os("GREEN_IPC_SERVE").is_some() {
        return;
    }
    let mut server = spawn_server("GREEN_IPC_SERVE", "kill", &[]);
    let path = server.path.clone();
    let client = Arc::new(Client::connect(&path).unwrap());
    // Warm up.
    assert_eq!(client.call(b"hi").unwrap().to_vec(), b"hi");
    let c2 = client.clone();
    let callers = std::thread::spawn(move || {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let c = c2.clone();
                green::spawn(move || c.call(b"SLEEPLONG").map(|r| r.len()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    server.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    server.child.wait().unwrap();
    let results = watchdog(move || callers.join().unwrap());
    eprintln!("pending calls failed {:?} after the kill", killed.elapsed());
    for r in results {
        let e = r.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
    }
    let t = Instant::now();
    let e = client.call(b"late").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(client.is_closed());
}

#[test]
fn async_calls_on_the_same_rings() {
    with_server("async", &[], move |path| {
        let client = Arc::new(Client::connect(&path).unwrap());
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let client = client.clone();
                green::spawn_async(async move {
                    let req = pattern(1000, i);
                    let resp = client.call_async(&req).await.unwrap();
                    assert_eq!(resp.to_vec(), req);
                })
            })
            .collect();
        for t in tasks {
            t.join().unwrap();
        }
        // Mixed with blocking calls on the same connection.
        assert_eq!(client.call(b"blocking").unwrap().to_vec(), b"blocking");
    });
}

#[test]
fn requests_built_in_place_from_async_tasks() {
    with_server("async-built", &[], move |path| {
        let client = Arc::new(Client::connect(&path).unwrap());
        // 0 to 16 bytes inside the descriptor, the rest in the arena.
        let tasks: Vec<_> = [0usize, 1, 16, 17, 4096, 1 << 20]
            .into_iter()
            .enumerate()
            .map(|(i, size)| {
                let client = client.clone();
                green::spawn_async(async move {
                    let req = pattern(size, i);
                    let mut b = client.request_builder_async(size).await.unwrap();
                    assert_eq!(b.len(), size);
                    b.as_mut_bytes().copy_from_slice(&req);
                    let resp = b.call_async().await.unwrap();
                    assert_eq!(resp.to_vec(), req, "size {size}");
                })
            })
            .collect();
        for t in tasks {
            t.join().unwrap();
        }
    });
}

#[test]
fn async_in_place_requests_wait_for_space_and_give_it_back() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    with_server(
        "async-built-space",
        &[("GREEN_IPC_CLIENT_ARENA", "65536")],
        move |path| {
            // One lane: every request below shares one 64 KiB arena.
            let connect = |policy| one_lane(&path, policy);
            let built = |c: Arc<Client>, req: Vec<u8>| {
                green::spawn_async(async move {
                    let mut b = c.request_builder_async(req.len()).await?;
                    b.as_mut_bytes().copy_from_slice(&req);
                    b.call_async().await.map(|r| r.to_vec() == req)
                })
            };

            // Fail: no room while a request being built holds the arena.
            let fail = connect(ArenaFullPolicy::Fail);
            let first = fail.request_builder(40_000).unwrap();
            let err = built(fail.clone(), big(b"x")).join().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            drop(first);
            // A built request whose call future is dropped before it is
            // sent gives its space back: the whole arena is free again.
            let c = fail.clone();
            green::spawn_async(async move {
                let b = c.request_builder_async(60_000).await.unwrap();
                drop(b.call_async());
            })
            .join()
            .unwrap();
            let mut all = fail.request_builder(65536).unwrap();
            all.as_mut_bytes().fill(3);
            assert_eq!(all.call().unwrap().to_vec(), vec![3; 65536]);

            // Wait: the builder gets its space once the holder's call
            // frees it.
            let wait = connect(ArenaFullPolicy::Wait(Duration::from_secs(5)));
            let mut first = wait.request_builder(40_000).unwrap();
            first.as_mut_bytes().copy_from_slice(&big(b"first"));
            let second = built(wait.clone(), big(b"second"));
            green::thread::sleep(Duration::from_millis(100));
            assert!(!second.is_finished(), "built with no room for it");
            assert_eq!(first.call().unwrap().to_vec(), big(b"first"));
            assert!(second.join().unwrap().unwrap());

            // A waiting builder dropped passes its turn on: the blocking
            // call behind it gets the room. (Were the turn lost with the
            // builder, the call would wait behind it until the policy's
            // 5 s ran out, and fail.)
            // (Polled on a green thread: its timer needs a carrier.)
            let c = wait.clone();
            green::spawn(move || {
                let holder = c.request_builder(40_000).unwrap();
                let mut fut = Box::pin(c.request_builder_async(40_000));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Pending));
                let c2 = c.clone();
                let behind = green::spawn(move || {
                    let req = big(b"behind");
                    c2.call(&req).map(|r| r.to_vec() == req)
                });
                green::thread::sleep(Duration::from_millis(50));
                drop(fut);
                drop(holder);
                assert!(behind.join().unwrap().unwrap());
            })
            .join()
            .unwrap();

            // A wait that outlasts its limit fails.
            let short = connect(ArenaFullPolicy::Wait(Duration::from_millis(50)));
            let first = short.request_builder(40_000).unwrap();
            let err = built(short.clone(), big(b"y")).join().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            drop(first);
        },
    );
}
