//! IPC between two processes, 200 concurrent callers: green::ipc (blocking
//! calls from green threads, and `call_async` from async tasks) against
//! tokio, tokio-uring, monoio and std threads over Unix sockets, and the
//! shmipc crate. The ipc-benchmark of the evering report, plus green.
//!
//! The server is always a child process: this binary re-executes itself
//! with [`SERVER_ENV`] set, the child binds the socket, prints `ready` and
//! serves until it is killed (it also asks the kernel for SIGKILL when the
//! bench process dies, so no server outlives a crashed run).
//!
//! Every request is an `i32` header and a body of `buf_size` bytes, each
//! equal to [`body_byte`] of the header; the server checks every byte,
//! answers with the header `!h` and a `buf_size` body of `body_byte(!h)`,
//! and the caller checks every byte of that. Both sides write and read the
//! data on every call.
//!
//! - **green**, **green_async**: one `green::ipc::Client` shared by all
//!   callers (one lane per carrier); `Client::call` from 200 green
//!   threads, or `call_async` from 200 async tasks, on a runtime with the
//!   default settings (one floating carrier per CPU). Request bytes are
//!   filled in a caller's buffer and copied in by `call`; responses are
//!   copied out with `read_into` (the safe API).
//! - **green_pinned**: green with pinned carriers on both sides
//!   (`Builder::pin_carriers`): the server serves each lane on the CPU of
//!   the client carrier that calls over it.
//! - **green_in_place**: as green, with the safe API's in-place calls:
//!   the request is filled in place in the client arena
//!   (`request_builder` + `RequestBuilder::as_mut_bytes`, safe: the
//!   client arena is sealed against every writer but the client), the
//!   response read back with `Response::read_at` through a 1 KiB buffer
//!   and checked piece by piece (the server could still write it, so the
//!   safe API copies).
//! - **green_zero_copy**: as green_in_place, but the response is checked
//!   in place (`Response::as_bytes_unchecked`): the `unsafe` accessor for
//!   a trusted peer, as shmipc works.
//! - The green server (`Server::serve`, 1024-entry rings, 1.25 GiB arenas:
//!   room for 200 calls of 4 MiB in flight each way) checks the request in
//!   place (`Request::as_bytes_unchecked`) and writes the response in
//!   place in the server arena (`ResponseWriter::reserve` +
//!   `write_in_place`).
//! - **tokio_uds**, **tokio_uring_uds**, **monoio_uds**, **std_uds**: one
//!   Unix stream per caller (200 connections). A connection opens with a
//!   `u32` buf_size, then carries fixed-size frames (header + body) with no
//!   length prefix, so each message is one `write` and usually one `read`.
//!   tokio: multi-thread runtimes (one worker per CPU) on both sides;
//!   tokio-uring and monoio (io_uring driver): one thread per side; std:
//!   200 client threads, a thread per connection in the server.
//! - **shmipc**: one `SessionManager` (one session), one stream per caller;
//!   frames written in place with `Stream::reserve`, read with
//!   `read_exact_bytes`; shared memory sized for 200 calls in flight each
//!   way; tokio multi-thread runtimes.
//!
//! Time per call is the wall time of a run divided by the calls of all
//! callers in it. Only green_pinned's runtimes are pinned. At each size
//! the systems take turns in rounds (9 up to 16 KiB, 5 above), each turn
//! a fresh server process and connection with one untimed run (three at
//! 1 MiB and up, so that first touches of freshly mapped memory are not
//! timed; see BENCHMARKS.md) and one timed run of the same length; a
//! system's figure is the median of its timed runs. Taking turns keeps
//! the runs compared at a size close together in time: this VM's speed
//! drifts between minutes. Each round
//! begins by measuring the round trip of one cache line between CPU 0 and
//! CPU 1 (two pinned threads taking turns to write it): the floor under
//! every shared-memory call, which on a VM changes with where the host
//! runs the vCPUs (100-600 ns seen within minutes); its median goes in the
//! table's `line rtt` column and the CSV (group `cacheline`).
//!
//! The single-caller round trip is one caller doing 20,000 calls of 4 B
//! (after 5,000 warm-up calls) per session, with the server process
//! pinned to CPU 0 and the client's threads to CPU 1 (the usual setup for
//! a latency measurement; unpinned, where the kernel puts the two spinning
//! threads varies between sessions): 5 rounds, in each of which every
//! system does one session on a fresh connection, after a line round trip
//! measurement (group `cacheline`, size 0, in the CSV). A session's p50
//! and p99 are printed; the median, lowest and highest session p50 go to
//! the CSV. The client's green runtime is started before any pinning, so
//! it has one carrier per CPU throughout.
//!
//! `cargo bench --bench ipc [-- SYSTEM...]` runs it (several minutes),
//! prints `ipc/<size>/<system>` lines and a table, and writes
//! `target/ipc-bench.csv` (or `$IPC_BENCH_CSV`) for `cargo run --example
//! ipc_plot`; `IPC_BENCH_SIZES=4,65536` measures only those buf_sizes;
//! `IPC_BENCH_ROUNDS=N` runs N rounds at every size;
//! `IPC_BENCH_WINDOW_KIB=N` sets the green clients'
//! `ClientConfig::max_in_flight` to N KiB (default: the library's).
//! `cargo test --benches` runs every system once with 8 callers and two
//! calls each, as a smoke test.
use std::io::{self, BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Set in the child: `<server kind> <socket path>`.
const SERVER_ENV: &str = "GREEN_IPC_BENCH_SERVER";
const SIZES: [usize; 10] = [
    4,
    64,
    512,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
];
const CALLERS: usize = 200;
/// Bytes each way per run: calls per caller shrink with buf_size.
const RUN_BYTES: usize = 1 << 30;
const MIN_CALLS_PER_CALLER: usize = 2;
/// 200,000 calls per run up to 4 KiB: a green run then lasts about 0.1 s
/// (at 250 it lasted 25 ms, where one 4 ms scheduler tick of the server
/// process being preempted moved the result by a sixth).
const MAX_CALLS_PER_CALLER: usize = 1000;
/// Rounds at buf_size `size`: 9 up to 16 KiB, where a round takes
/// seconds and the ratios the targets name (10x tokio from 4 B to 4 KiB,
/// blocking within 15% of async) are close enough to a line that 5 noisy
/// rounds left them to one draw; 5 above, where a round takes minutes.
/// `IPC_BENCH_ROUNDS=N` sets it at every size.
fn timed_runs(size: usize) -> usize {
    if let Ok(v) = std::env::var("IPC_BENCH_ROUNDS") {
        let n: usize = v.parse().expect("IPC_BENCH_ROUNDS: a count");
        assert!(n > 0, "IPC_BENCH_ROUNDS: at least 1");
        return n;
    }
    if size <= 16 << 10 {
        9
    } else {
        5
    }
}
/// Untimed runs before them at 1 MiB and up (one below).
const WARMUP_RUNS_LARGE: usize = 3;
/// Single-caller round trips at 4 B, per session.
const RTT_CALLS: usize = 20_000;
const RTT_SESSIONS: usize = 5;
/// Each green arena: 200 bodies of 4 MiB + 4 B, with room to spare.
const GREEN_ARENA: u64 = 1280 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Green,
    GreenPinned,
    GreenAsync,
    GreenInPlace,
    GreenZeroCopy,
    Tokio,
    Std,
    Monoio,
    Shmipc,
    TokioUring,
}

impl System {
    /// In the order they run (and appear in the table).
    const ALL: [System; 10] = [
        System::Green,
        System::GreenPinned,
        System::GreenAsync,
        System::GreenInPlace,
        System::GreenZeroCopy,
        System::Tokio,
        System::Std,
        System::Monoio,
        System::Shmipc,
        System::TokioUring,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Green => "green",
            System::GreenPinned => "green_pinned",
            System::GreenAsync => "green_async",
            System::GreenInPlace => "green_in_place",
            System::GreenZeroCopy => "green_zero_copy",
            System::Tokio => "tokio_uds",
            System::Std => "std_uds",
            System::Monoio => "monoio_uds",
            System::Shmipc => "shmipc",
            System::TokioUring => "tokio_uring_uds",
        }
    }

    /// The server the child runs: the green front ends call the same one
    /// (its carriers pinned for green_pinned).
    fn server(self) -> &'static str {
        match self {
            System::GreenAsync | System::GreenInPlace | System::GreenZeroCopy => {
                System::Green.name()
            }
            s => s.name(),
        }
    }
}

// ---------------------------------------------------------------- payload

// `body_byte`, `fill`, `check`: shared with `examples/ipc_floor.rs`, which
// does the same work per call with no library.
mod ipc_payload;
use ipc_payload::{check, check_in_pieces, fill};

/// The server's work: check the request, write the response.
fn answer(req: &[u8], resp: &mut [u8]) {
    let hdr = check(req).unwrap_or_else(|e| die(&e));
    fill(resp, !hdr);
}

fn die(msg: &str) -> ! {
    eprintln!("ipc bench server: {msg}");
    std::process::exit(2)
}

/// One caller's buffers and, when asked, its per-call latencies.
struct Caller {
    id: usize,
    req: Vec<u8>,
    resp: Vec<u8>,
    lat: Vec<u32>,
}

impl Caller {
    fn new(id: usize, size: usize) -> Caller {
        Caller {
            id,
            req: vec![0; 4 + size],
            resp: vec![0; 4 + size],
            lat: Vec::new(),
        }
    }

    /// Fills the request of call `i`; returns its header.
    fn begin(&mut self, i: usize) -> i32 {
        let hdr = ((self.id as i32) << 20) ^ i as i32;
        fill(&mut self.req, hdr);
        hdr
    }

    /// Checks the response in `resp` to the call with header `hdr`.
    fn end(&mut self, hdr: i32, started: Option<Instant>) {
        verify(&self.resp, hdr);
        self.record(started);
    }

    fn record(&mut self, started: Option<Instant>) {
        if let Some(t) = started {
            self.lat
                .push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
    }
}

/// Checks that `msg` answers the call with header `hdr`.
fn verify(msg: &[u8], hdr: i32) {
    let got = check(msg).unwrap_or_else(|e| panic!("response: {e}"));
    assert_eq!(got, !hdr, "response to another call");
}

/// What one client session measured: the wall time of each run, and the
/// latencies of the last run's calls if they were recorded.
struct Measured {
    runs: Vec<Duration>,
    lat: Vec<u32>,
}

fn collect(callers: &mut [Caller], runs: Vec<Duration>) -> Measured {
    let mut lat: Vec<u32> = callers.iter_mut().flat_map(|c| c.lat.drain(..)).collect();
    lat.sort_unstable();
    Measured { runs, lat }
}

// ---------------------------------------------------------------- clients

/// Connects `callers` callers of `sys` to the server at `path` and does
/// one run per entry of `runs` (that many calls per caller), keeping the
/// connections across runs. Latencies of the last run if `record`.
fn run_client(
    sys: System,
    path: &str,
    size: usize,
    callers: usize,
    runs: &[usize],
    record: bool,
) -> Measured {
    match sys {
        System::Green
        | System::GreenPinned
        | System::GreenAsync
        | System::GreenInPlace
        | System::GreenZeroCopy => green_client(sys, path, size, callers, runs, record),
        System::Tokio => tokio_client(path, size, callers, runs, record),
        System::Std => std_client(path, size, callers, runs, record),
        System::Monoio => monoio_client(path, size, callers, runs, record),
        System::Shmipc => shmipc_client(path, size, callers, runs, record),
        System::TokioUring => tokio_uring_client(path, size, callers, runs, record),
    }
}

/// Pinned carriers: the runtime of green_pinned's 200-caller runs, built
/// after the single-caller round trips have unpinned the process (the
/// carriers take the CPUs the process may use when they start). Set by
/// `main`.
static PINNED: std::sync::OnceLock<green::Runtime> = std::sync::OnceLock::new();

/// The runtime `sys`'s callers run on: the pinned one for green_pinned
/// once it exists, else one with floating carriers (the defaults).
fn green_runtime(sys: System) -> &'static green::Runtime {
    match PINNED.get() {
        Some(rt) if sys == System::GreenPinned => rt,
        _ => {
            static FLOAT: std::sync::OnceLock<green::Runtime> = std::sync::OnceLock::new();
            FLOAT.get_or_init(|| {
                green::Runtime::builder()
                    .pin_carriers(false)
                    .build()
                    .expect("green runtime")
            })
        }
    }
}

fn green_client(
    sys: System,
    path: &str,
    size: usize,
    callers: usize,
    runs: &[usize],
    record: bool,
) -> Measured {
    let rt = green_runtime(sys);
    let mut config = green::ipc::ClientConfig::default().max_region(4 << 30);
    if let Ok(v) = std::env::var("IPC_BENCH_WINDOW_KIB") {
        let kib: u64 = v.parse().expect("IPC_BENCH_WINDOW_KIB: KiB");
        config = config.max_in_flight(kib.saturating_mul(1 << 10));
    }
    let path = path.to_owned();
    // Connected from the runtime's own carrier: one lane per carrier of it.
    let client = Arc::new(
        rt.block_on(move || green::ipc::Client::connect_with(path, config))
            .expect("connect"),
    );
    let mut state: Vec<Caller> = (0..callers).map(|c| Caller::new(c, size)).collect();
    let mut times = Vec::new();
    for &n in runs {
        state.iter_mut().for_each(|c| c.lat.clear());
        let start = Instant::now();
        let handles: Vec<_> = state
            .drain(..)
            .map(|mut c| {
                let client = client.clone();
                if sys == System::GreenInPlace || sys == System::GreenZeroCopy {
                    rt.spawn(move || {
                        // 1 KiB: 200 callers' buffers stay a small part
                        // of the caches the bodies pass through.
                        let mut chunk = [0u8; 1024];
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = ((c.id as i32) << 20) ^ i as i32;
                            // Filled in place, safely: only we can write
                            // our arena.
                            let mut b = client.request_builder(4 + size).expect("builder");
                            fill(b.as_mut_bytes(), hdr);
                            let r = b.call().expect("call");
                            if sys == System::GreenZeroCopy {
                                // SAFETY: the bench's server leaves a
                                // response body alone until the Response
                                // is dropped.
                                verify(unsafe { r.as_bytes_unchecked() }, hdr);
                                drop(r);
                                c.record(t);
                                continue;
                            }
                            // Checked in pieces through a small buffer.
                            assert_eq!(r.len(), 4 + size, "response length");
                            check_in_pieces(4 + size, !hdr, &mut chunk, |pos, buf| {
                                r.read_at(pos, buf)
                            })
                            .unwrap_or_else(|e| panic!("response: {e}"));
                            drop(r);
                            c.record(t);
                        }
                        c
                    })
                } else if sys == System::GreenAsync {
                    rt.spawn_async(async move {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            let r = client.call_async(&c.req).await.expect("call_async");
                            assert_eq!(r.len(), c.resp.len(), "response length");
                            r.read_into(&mut c.resp);
                            drop(r);
                            c.end(hdr, t);
                        }
                        c
                    })
                } else {
                    rt.spawn(move || {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            let r = client.call(&c.req).expect("call");
                            assert_eq!(r.len(), c.resp.len(), "response length");
                            r.read_into(&mut c.resp);
                            drop(r);
                            c.end(hdr, t);
                        }
                        c
                    })
                }
            })
            .collect();
        state = handles
            .into_iter()
            .map(|h| h.join().expect("caller panicked"))
            .collect();
        times.push(start.elapsed());
    }
    collect(&mut state, times)
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tokio_client(path: &str, size: usize, callers: usize, runs: &[usize], record: bool) -> Measured {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio_rt().block_on(async {
        let mut state = Vec::with_capacity(callers);
        for c in 0..callers {
            let mut s = tokio::net::UnixStream::connect(path)
                .await
                .expect("connect");
            s.write_all(&(size as u32).to_le_bytes()).await.unwrap();
            state.push((s, Caller::new(c, size)));
        }
        let mut times = Vec::new();
        for &n in runs {
            state.iter_mut().for_each(|(_, c)| c.lat.clear());
            let start = Instant::now();
            let handles: Vec<_> = state
                .drain(..)
                .map(|(mut s, mut c)| {
                    tokio::spawn(async move {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            s.write_all(&c.req).await.expect("write");
                            s.read_exact(&mut c.resp).await.expect("read");
                            c.end(hdr, t);
                        }
                        (s, c)
                    })
                })
                .collect();
            for h in handles {
                state.push(h.await.expect("caller panicked"));
            }
            times.push(start.elapsed());
        }
        let mut callers: Vec<Caller> = state.into_iter().map(|(_, c)| c).collect();
        collect(&mut callers, times)
    })
}

fn std_client(path: &str, size: usize, callers: usize, runs: &[usize], record: bool) -> Measured {
    // Threads live for the whole session; a barrier starts and ends each
    // run, so thread creation is not timed.
    let barrier = Arc::new(Barrier::new(callers + 1));
    let runs_v = runs.to_vec();
    let threads: Vec<_> = (0..callers)
        .map(|id| {
            let barrier = barrier.clone();
            let runs = runs_v.clone();
            let path = path.to_owned();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
                    s.write_all(&(size as u32).to_le_bytes()).unwrap();
                    let mut c = Caller::new(id, size);
                    for n in runs {
                        c.lat.clear();
                        barrier.wait();
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            s.write_all(&c.req).expect("write");
                            s.read_exact(&mut c.resp).expect("read");
                            c.end(hdr, t);
                        }
                        barrier.wait();
                    }
                    c
                })
                .expect("spawn caller thread")
        })
        .collect();
    let mut times = Vec::new();
    for _ in runs {
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        times.push(start.elapsed());
    }
    let mut state: Vec<Caller> = threads
        .into_iter()
        .map(|t| t.join().expect("caller panicked"))
        .collect();
    collect(&mut state, times)
}

fn monoio_rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()
        .expect("monoio io_uring runtime")
}

fn monoio_client(
    path: &str,
    size: usize,
    callers: usize,
    runs: &[usize],
    record: bool,
) -> Measured {
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
    monoio_rt().block_on(async {
        let mut state = Vec::with_capacity(callers);
        for c in 0..callers {
            let mut s = monoio::net::UnixStream::connect(path)
                .await
                .expect("connect");
            let (r, _) = s.write_all((size as u32).to_le_bytes().to_vec()).await;
            r.unwrap();
            state.push((s, Caller::new(c, size)));
        }
        let mut times = Vec::new();
        for &n in runs {
            state.iter_mut().for_each(|(_, c)| c.lat.clear());
            let start = Instant::now();
            let handles: Vec<_> = state
                .drain(..)
                .map(|(mut s, mut c)| {
                    monoio::spawn(async move {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            let (r, req) = s.write_all(std::mem::take(&mut c.req)).await;
                            c.req = req;
                            r.expect("write");
                            let (r, resp) = s.read_exact(std::mem::take(&mut c.resp)).await;
                            c.resp = resp;
                            r.expect("read");
                            c.end(hdr, t);
                        }
                        (s, c)
                    })
                })
                .collect();
            for h in handles {
                state.push(h.await);
            }
            times.push(start.elapsed());
        }
        let mut callers: Vec<Caller> = state.into_iter().map(|(_, c)| c).collect();
        collect(&mut callers, times)
    })
}

/// tokio-uring has no `read_exact`: reads into `buf`'s spare capacity
/// until it holds `buf.capacity()` bytes.
async fn uring_read_exact(
    s: &tokio_uring::net::UnixStream,
    mut buf: Vec<u8>,
) -> (io::Result<()>, Vec<u8>) {
    use tokio_uring::buf::BoundedBuf;
    let total = buf.capacity();
    buf.clear();
    while buf.len() < total {
        let filled = buf.len();
        let (r, slice) = s.read(buf.slice(filled..total)).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

fn tokio_uring_client(
    path: &str,
    size: usize,
    callers: usize,
    runs: &[usize],
    record: bool,
) -> Measured {
    tokio_uring::start(async {
        let mut state = Vec::with_capacity(callers);
        for c in 0..callers {
            let s = tokio_uring::net::UnixStream::connect(path)
                .await
                .expect("connect");
            let (r, _) = s.write_all((size as u32).to_le_bytes().to_vec()).await;
            r.unwrap();
            state.push((s, Caller::new(c, size)));
        }
        let mut times = Vec::new();
        for &n in runs {
            state.iter_mut().for_each(|(_, c)| c.lat.clear());
            let start = Instant::now();
            let handles: Vec<_> = state
                .drain(..)
                .map(|(s, mut c)| {
                    tokio_uring::spawn(async move {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = c.begin(i);
                            let (r, req) = s.write_all(std::mem::take(&mut c.req)).await;
                            c.req = req;
                            r.expect("write");
                            let (r, resp) = uring_read_exact(&s, std::mem::take(&mut c.resp)).await;
                            c.resp = resp;
                            r.expect("read");
                            c.end(hdr, t);
                        }
                        (s, c)
                    })
                })
                .collect();
            for h in handles {
                state.push(h.await.expect("caller panicked"));
            }
            times.push(start.elapsed());
        }
        let mut callers: Vec<Caller> = state.into_iter().map(|(_, c)| c).collect();
        collect(&mut callers, times)
    })
}

/// shmipc settings for frames of `frame` bytes and `callers` calls in
/// flight each way (the client's settings size the shared memory).
fn shmipc_config(frame: usize, callers: usize, tag: &str) -> shmipc::session::SessionManagerConfig {
    use shmipc::config::SizePercentPair;
    let mut c = shmipc::session::SessionManagerConfig::new();
    let cfg = c.config_mut();
    cfg.queue_cap = 65536;
    cfg.connection_write_timeout = Duration::from_secs(5);
    // 70% of the memory in slices that hold a whole frame, enough for a
    // request and a response per caller.
    let need = (2 * callers * (frame + 256)) as u64 * 10 / 7 + (64 << 20);
    cfg.share_memory_buffer_cap = need.clamp(256 << 20, 3 << 30) as u32;
    cfg.buffer_slice_sizes = vec![
        SizePercentPair {
            size: (frame + 256) as u32,
            percent: 70,
        },
        SizePercentPair {
            size: (16 << 10) + 256,
            percent: 20,
        },
        SizePercentPair {
            size: (64 << 10) + 256,
            percent: 10,
        },
    ];
    cfg.mem_map_type = shmipc::consts::MemMapType::MemMapTypeMemFd;
    cfg.share_memory_path_prefix.push_str(tag);
    c.with_session_num(1)
}

/// Flushes `s`'s send buffer, retrying while shmipc's queue is full.
async fn shmipc_flush(s: &mut shmipc::stream::Stream) -> Result<(), shmipc::Error> {
    loop {
        match s.flush(false).await {
            Err(shmipc::Error::QueueFull) => {
                tokio::time::sleep(Duration::from_micros(1)).await;
            }
            r => return r,
        }
    }
}

/// Writes a frame into `s`'s send buffer, in shared memory when a slice
/// holds it whole, else through shmipc's copying `write_bytes`.
fn shmipc_write(s: &mut shmipc::stream::Stream, scratch: &mut [u8], hdr: i32) {
    let len = scratch.len();
    match s.reserve(len) {
        Ok(m) if m.len() >= len => fill(&mut m[..len], hdr),
        _ => {
            fill(scratch, hdr);
            s.write_bytes(scratch).expect("shmipc write_bytes");
        }
    }
}

fn shmipc_client(
    path: &str,
    size: usize,
    callers: usize,
    runs: &[usize],
    record: bool,
) -> Measured {
    let frame = 4 + size;
    let tag = format!("ipcbench{}_{size}", std::process::id());
    tokio_rt().block_on(async {
        let addr = std::os::unix::net::SocketAddr::from_pathname(path).unwrap();
        let sm = shmipc::session::SessionManager::new(
            shmipc_config(frame, callers, &tag),
            shmipc::transport::DefaultUnixConnect,
            addr,
        )
        .await
        .expect("shmipc connect");
        let mut state = Vec::with_capacity(callers);
        for c in 0..callers {
            let mut s = sm.get_stream().expect("shmipc stream");
            s.write_bytes(&(size as u32).to_le_bytes()).unwrap();
            shmipc_flush(&mut s).await.expect("flush");
            state.push((s, Caller::new(c, size)));
        }
        let mut times = Vec::new();
        for &n in runs {
            state.iter_mut().for_each(|(_, c)| c.lat.clear());
            let start = Instant::now();
            let handles: Vec<_> = state
                .drain(..)
                .map(|(mut s, mut c)| {
                    tokio::spawn(async move {
                        for i in 0..n {
                            let t = record.then(Instant::now);
                            let hdr = ((c.id as i32) << 20) ^ i as i32;
                            shmipc_write(&mut s, &mut c.req, hdr);
                            shmipc_flush(&mut s).await.expect("flush");
                            let b = s.read_exact_bytes(frame).await.expect("read");
                            c.resp.copy_from_slice(&b);
                            drop(b);
                            s.release_read_and_reuse();
                            c.end(hdr, t);
                        }
                        (s, c)
                    })
                })
                .collect();
            for h in handles {
                state.push(h.await.expect("caller panicked"));
            }
            times.push(start.elapsed());
        }
        let mut callers = Vec::with_capacity(state.len());
        for (mut s, c) in state {
            let _ = s.close().await;
            callers.push(c);
        }
        sm.close().await;
        collect(&mut callers, times)
    })
}

// ---------------------------------------------------------------- servers

/// The child: serves `spec` (`<server kind> <path>`) until killed.
fn serve(spec: &str) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let (kind, path) = spec.split_once(' ').expect("SERVER_ENV: kind path");
    let _ = std::fs::remove_file(path);
    let ready = || {
        println!("ready");
        io::stdout().flush().unwrap();
    };
    match kind {
        "green" | "green_pinned" => {
            // green_pinned: carriers pinned, so that each lane is served on
            // the CPU of the client carrier that calls over it.
            let rt = green::Runtime::builder()
                .pin_carriers(kind == "green_pinned")
                .build()?;
            let config = green::ipc::ServerConfig::default()
                .ring_entries(1024)
                .client_arena(GREEN_ARENA)
                .server_arena(GREEN_ARENA);
            let server = green::ipc::Server::bind_with(path, config)?;
            ready();
            rt.block_on(move || {
                server.serve(|req, resp| {
                    // SAFETY: the bench's clients leave a request body alone
                    // until its response arrives, after this handler returns.
                    let msg = unsafe { req.as_bytes_unchecked() };
                    let hdr = check(msg).unwrap_or_else(|e| die(&e));
                    // Written in place in the server arena: one block,
                    // no copy.
                    let len = msg.len();
                    resp.reserve(len);
                    fill(resp.write_in_place(len), !hdr);
                    Ok(())
                })
            })
        }
        "tokio_uds" => tokio_rt().block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::UnixListener::bind(path)?;
            ready();
            loop {
                let (mut s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let mut hello = [0u8; 4];
                    if s.read_exact(&mut hello).await.is_err() {
                        return;
                    }
                    let frame = 4 + u32::from_le_bytes(hello) as usize;
                    let (mut req, mut resp) = (vec![0u8; frame], vec![0u8; frame]);
                    while s.read_exact(&mut req).await.is_ok() {
                        answer(&req, &mut resp);
                        if s.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }),
        "std_uds" => {
            let l = std::os::unix::net::UnixListener::bind(path)?;
            ready();
            loop {
                let (mut s, _) = l.accept()?;
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || {
                        let mut hello = [0u8; 4];
                        if s.read_exact(&mut hello).is_err() {
                            return;
                        }
                        let frame = 4 + u32::from_le_bytes(hello) as usize;
                        let (mut req, mut resp) = (vec![0u8; frame], vec![0u8; frame]);
                        while s.read_exact(&mut req).is_ok() {
                            answer(&req, &mut resp);
                            if s.write_all(&resp).is_err() {
                                return;
                            }
                        }
                    })?;
            }
        }
        "monoio_uds" => monoio_rt().block_on(async {
            use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
            // monoio's own `bind` sets SO_REUSEPORT, which Unix sockets
            // refuse (EOPNOTSUPP).
            let l =
                monoio::net::UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?)?;
            ready();
            loop {
                let (mut s, _) = l.accept().await?;
                monoio::spawn(async move {
                    let (r, hello) = s.read_exact(vec![0u8; 4]).await;
                    if r.is_err() {
                        return;
                    }
                    let frame = 4 + u32::from_le_bytes(hello[..4].try_into().unwrap()) as usize;
                    let (mut req, mut resp) = (vec![0u8; frame], vec![0u8; frame]);
                    loop {
                        let (r, b) = s.read_exact(req).await;
                        req = b;
                        if r.is_err() {
                            return;
                        }
                        answer(&req, &mut resp);
                        let (r, b) = s.write_all(resp).await;
                        resp = b;
                        if r.is_err() {
                            return;
                        }
                    }
                });
            }
        }),
        "tokio_uring_uds" => tokio_uring::start(async {
            // tokio-uring's `bind` sets SO_REUSEPORT, which Unix sockets
            // refuse (EOPNOTSUPP), and it has no `from_std` listener: a
            // plain thread accepts (connection setup is not timed).
            let l = std::os::unix::net::UnixListener::bind(path)?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    if tx.send(s.expect("accept")).is_err() {
                        return;
                    }
                }
            });
            ready();
            while let Some(s) = rx.recv().await {
                let s = tokio_uring::net::UnixStream::from_std(s);
                tokio_uring::spawn(async move {
                    let (r, hello) = uring_read_exact(&s, Vec::with_capacity(4)).await;
                    if r.is_err() {
                        return;
                    }
                    let frame = 4 + u32::from_le_bytes(hello[..4].try_into().unwrap()) as usize;
                    let (mut req, mut resp) = (vec![0u8; frame], vec![0u8; frame]);
                    loop {
                        let (r, b) = uring_read_exact(&s, req).await;
                        req = b;
                        if r.is_err() {
                            return;
                        }
                        answer(&req, &mut resp);
                        let (r, b) = s.write_all(resp).await;
                        resp = b;
                        if r.is_err() {
                            return;
                        }
                    }
                });
            }
            Ok(())
        }),
        "shmipc" => tokio_rt().block_on(async {
            use shmipc::buffer::BufferReader;
            let addr = std::os::unix::net::SocketAddr::from_pathname(path).unwrap();
            let config = shmipc_config(64, CALLERS, "server").config().clone();
            let mut l =
                shmipc::Listener::new(shmipc::transport::DefaultUnixListen, addr, config).await?;
            ready();
            loop {
                let mut s = l.accept().await?;
                tokio::spawn(async move {
                    let frame = match s.read_exact_bytes(4).await {
                        Ok(b) => 4 + u32::from_le_bytes(b[..4].try_into().unwrap()) as usize,
                        Err(_) => return,
                    };
                    s.recv_buf().release_previous_read();
                    let mut scratch = vec![0u8; frame];
                    loop {
                        let hdr = match s.read_exact_bytes(frame).await {
                            Ok(b) => check(&b).unwrap_or_else(|e| die(&e)),
                            Err(_) => return,
                        };
                        s.recv_buf().release_previous_read();
                        shmipc_write(&mut s, &mut scratch, !hdr);
                        if shmipc_flush(&mut s).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }),
        other => die(&format!("unknown server {other}")),
    }
}

/// A server child process, killed and reaped on drop (a panicking bench
/// included; PR_SET_PDEATHSIG covers a bench that is killed).
struct ServerProcess {
    child: Child,
    path: String,
}

impl ServerProcess {
    /// Starts `sys`'s server, on CPU `cpu` only if given.
    fn start(sys: System, cpu: Option<usize>) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        let path = format!(
            "/tmp/green-ipc-bench-{}-{}.sock",
            std::process::id(),
            sys.name()
        );
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.env(SERVER_ENV, format!("{} {path}", sys.server()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(cpu) = cpu {
            // SAFETY: runs in the child between fork and exec, and only
            // calls sched_setaffinity (async-signal-safe) on a set built
            // on the stack; every thread the server starts inherits it.
            unsafe {
                cmd.pre_exec(move || {
                    pin_thread(0, &[cpu]);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn server");
        let mut line = String::new();
        let out = child.stdout.take().unwrap();
        let _ = io::BufReader::new(out).read_line(&mut line);
        let server = ServerProcess { child, path };
        assert_eq!(line.trim(), "ready", "{} server did not start", sys.name());
        server
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------- driver

/// Sets thread `tid`'s CPUs (0: the calling thread); errors are ignored
/// (a CPU the machine lacks leaves the thread where it was).
fn pin_thread(tid: libc::pid_t, cpus: &[usize]) {
    use rustix::thread::CpuSet;
    let mut set = CpuSet::new();
    for &c in cpus.iter().filter(|&&c| c < CpuSet::MAX_CPU) {
        set.set(c);
    }
    let _ = rustix::thread::sched_setaffinity(rustix::process::Pid::from_raw(tid), &set);
}

/// Sets the CPUs of every thread of this process (runtimes started
/// earlier included); threads started later inherit them from theirs.
fn pin_process(cpus: &[usize]) {
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                pin_thread(tid, cpus);
            }
        }
    }
}

/// The CPUs this thread may run on (every CPU a `CpuSet` can name if
/// the kernel will not say).
fn own_cpus() -> Vec<usize> {
    use rustix::thread::CpuSet;
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => (0..CpuSet::MAX_CPU).collect(),
    }
}

/// The round trip of one cache line between CPU 0 and CPU 1: two pinned
/// threads take turns writing it, 100,000 times; the median of 5 such
/// runs, in ns (`None` with fewer than 2 CPUs). Every shared-memory call
/// moves a few lines each way, so this is the floor under them; on a VM it
/// changes with where the host runs the vCPUs (100-600 ns seen on the
/// same machine within minutes), so it is printed and recorded with each
/// system's runs.
fn cacheline_rtt() -> Option<f64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    #[repr(align(128))]
    struct Line(AtomicU64);
    const N: u64 = 100_000;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let line = Arc::new(Line(AtomicU64::new(0)));
            let l = line.clone();
            let pong = std::thread::spawn(move || {
                pin_thread(0, &[1]);
                for i in 0..N {
                    while l.0.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    l.0.store(2 * i + 2, Ordering::Release);
                }
            });
            let ping = std::thread::spawn(move || {
                pin_thread(0, &[0]);
                let start = Instant::now();
                for i in 0..N {
                    line.0.store(2 * i + 1, Ordering::Release);
                    while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                        std::hint::spin_loop();
                    }
                }
                start.elapsed().as_nanos() as f64 / N as f64
            });
            pong.join().expect("pong");
            ping.join().expect("ping")
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    Some(runs[runs.len() / 2])
}

fn calls_per_caller(size: usize) -> usize {
    (RUN_BYTES / (CALLERS * size)).clamp(MIN_CALLS_PER_CALLER, MAX_CALLS_PER_CALLER)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_size(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// One CSV row; `ns` is the median time per call (group `ipc`), the
/// median of the sessions' p50 round trips (group `rtt`) or the median
/// cache-line round trip of a size's rounds (group `cacheline`, size 0 for
/// the single-caller rounds); `ns_lo`/`ns_hi` the lowest and highest.
/// Group `round<k>` keeps round k's run of a system at a size (`ns`), with
/// the cache-line round trip measured before that round in both `ns_lo`
/// and `ns_hi`: for ratios of runs made in the same round.
struct Row {
    group: String,
    size: usize,
    system: System,
    callers: usize,
    calls: usize,
    ns: f64,
    ns_lo: f64,
    ns_hi: f64,
}

impl Row {
    /// The row for `samples` (sorted here): their median, lowest and
    /// highest.
    fn of(
        group: &'static str,
        size: usize,
        system: System,
        (callers, calls): (usize, usize),
        samples: &mut [f64],
    ) -> Row {
        samples.sort_by(f64::total_cmp);
        Row {
            group: group.to_string(),
            size,
            system,
            callers,
            calls,
            ns: samples[samples.len() / 2],
            ns_lo: samples[0],
            ns_hi: samples[samples.len() - 1],
        }
    }
}

/// The row for a group of cache-line round trips (`size` 0: the
/// single-caller rounds), printed as their range; none if none was
/// measured.
fn line_row(size: usize, samples: &mut [f64]) -> Option<Row> {
    if samples.is_empty() {
        return None;
    }
    let r = Row::of("cacheline", size, System::Green, (0, 0), samples);
    let label = if size == 0 {
        "rtt".to_string()
    } else {
        fmt_size(size)
    };
    println!(
        "cacheline/{label}  CPU0-CPU1 round trips {} .. {}",
        fmt_ns(r.ns_lo),
        fmt_ns(r.ns_hi)
    );
    Some(r)
}

fn csv_path() -> std::path::PathBuf {
    match std::env::var_os("IPC_BENCH_CSV") {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ipc-bench.csv"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var(SERVER_ENV) {
        if let Err(e) = serve(&spec) {
            die(&e.to_string());
        }
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| {
            // `=name` picks that system alone; other words, every system
            // whose name contains them.
            filters.is_empty()
                || filters.iter().any(|f| match f.strip_prefix('=') {
                    Some(exact) => s.name() == exact,
                    None => s.name().contains(f.as_str()),
                })
        })
        .collect();
    let only: Option<Vec<usize>> = std::env::var("IPC_BENCH_SIZES").ok().map(|v| {
        v.split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("IPC_BENCH_SIZES: comma-separated byte counts")
            })
            .collect()
    });
    let (sizes, callers): (&[usize], usize) = match (&only, measuring) {
        (Some(only), true) => (only, CALLERS),
        (None, true) => (&SIZES, CALLERS),
        (_, false) => (&[4, 64 << 10], 8),
    };
    // Start the floating green runtime now, before any pinning: it takes
    // one carrier per CPU the process may use when it starts. Those CPUs
    // (a `taskset` on the bench, say) are given back after the pinned
    // rounds below.
    let started_on = own_cpus();
    green_runtime(System::Green);
    let mut rows = Vec::new();
    // Single caller, 4 B: in each of RTT_SESSIONS rounds every system does
    // one session (a fresh connection: where the runtime places the caller
    // and the reader differs between sessions) against its server, pinned
    // to CPU 0, with this process pinned to CPU 1. Each round starts with
    // the line round trip, measured while this process may use both CPUs.
    let (n, rtt_rounds) = if measuring {
        (RTT_CALLS, RTT_SESSIONS)
    } else {
        (10, 1)
    };
    let pinned: Vec<ServerProcess> = systems
        .iter()
        .map(|&sys| ServerProcess::start(sys, Some(0)))
        .collect();
    let mut p50s = vec![Vec::new(); systems.len()];
    let mut line = Vec::new();
    for _ in 0..rtt_rounds {
        if let Some(ns) = measuring.then(cacheline_rtt).flatten() {
            // Printed per round: the sessions below go with it.
            println!("cacheline/rtt  CPU0-CPU1 round trip {}", fmt_ns(ns));
            line.push(ns);
        }
        pin_process(&[1]);
        for (i, &sys) in systems.iter().enumerate() {
            let m = run_client(sys, &pinned[i].path, 4, 1, &[n / 4, n], true);
            let pct = |p: f64| m.lat[((m.lat.len() as f64 * p) as usize).min(m.lat.len() - 1)];
            println!(
                "rtt/4B/{:<16} p50 {:>10}   p99 {:>10}",
                sys.name(),
                fmt_ns(pct(0.5) as f64),
                fmt_ns(pct(0.99) as f64)
            );
            p50s[i].push(pct(0.5) as f64);
        }
        pin_process(&started_on);
    }
    drop(pinned);
    // The process may use the CPUs it started on again: the pinned
    // runtime pins one carrier to each.
    PINNED.get_or_init(|| {
        green::Runtime::builder()
            .pin_carriers(true)
            .build()
            .expect("pinned green runtime")
    });
    rows.extend(line_row(0, &mut line));
    for (i, &sys) in systems.iter().enumerate() {
        let calls = n * rtt_rounds;
        rows.push(Row::of("rtt", 4, sys, (1, calls), &mut p50s[i]));
    }
    // 200 callers: at each size the systems take turns, one timed run
    // each per round, so that the ratios at a size compare runs made close
    // together, under the same machine weather. Each turn starts its
    // server (unpinned) and stops it after (with all nine servers up at
    // once, shmipc's handshake was refused after a few sessions).
    for &size in sizes {
        let rounds = if measuring { timed_runs(size) } else { 1 };
        let n = if measuring { calls_per_caller(size) } else { 2 };
        // Untimed runs first touch the buffers and the memory a green
        // region's arenas hand out (a fresh memfd faults in lazily, and at
        // 1 MiB and up a run reaches new parts of the arenas).
        let warm = if measuring && size >= 1 << 20 {
            WARMUP_RUNS_LARGE
        } else {
            1
        };
        let calls = callers * n;
        let mut per_call = vec![Vec::new(); systems.len()];
        let mut line = Vec::new();
        for round in 1..=rounds {
            let line_ns = measuring.then(cacheline_rtt).flatten();
            if let Some(ns) = line_ns {
                println!(
                    "cacheline/{}  CPU0-CPU1 round trip {}",
                    fmt_size(size),
                    fmt_ns(ns)
                );
                line.push(ns);
            }
            for (i, &sys) in systems.iter().enumerate() {
                let runs = vec![n; warm + 1];
                let server = ServerProcess::start(sys, None);
                let m = run_client(sys, &server.path, size, callers, &runs, false);
                drop(server);
                let ns = m.runs[warm].as_nanos() as f64 / calls as f64;
                per_call[i].push(ns);
                rows.push(Row {
                    group: format!("round{round}"),
                    size,
                    system: sys,
                    callers,
                    calls,
                    ns,
                    ns_lo: line_ns.unwrap_or(0.0),
                    ns_hi: line_ns.unwrap_or(0.0),
                });
            }
        }
        rows.extend(line_row(size, &mut line));
        for (i, &sys) in systems.iter().enumerate() {
            let r = Row::of("ipc", size, sys, (callers, calls), &mut per_call[i]);
            println!(
                "ipc/{}/{:<16} {:>10} per call   [{} .. {}]  ({calls} calls/run)",
                fmt_size(size),
                sys.name(),
                fmt_ns(r.ns),
                fmt_ns(r.ns_lo),
                fmt_ns(r.ns_hi),
            );
            rows.push(r);
        }
    }
    if !measuring {
        return;
    }
    // The table: time per call, then ratio to green blocking.
    let ns = |size: usize, sys: System| {
        rows.iter()
            .find(|r| r.group == "ipc" && r.size == size && r.system == sys)
            .map(|r| r.ns)
    };
    print!("\n{:<8}", "size");
    systems.iter().for_each(|s| print!("{:>17}", s.name()));
    println!("{:>12}", "line rtt");
    for &size in sizes {
        print!("{:<8}", fmt_size(size));
        for &s in &systems {
            match (ns(size, s), ns(size, System::Green)) {
                (Some(v), Some(g)) => print!("{:>10} {:>5.2}x", fmt_ns(v), v / g),
                (Some(v), None) => print!("{:>17}", fmt_ns(v)),
                _ => print!("{:>17}", "-"),
            }
        }
        // The machine's cache-line round trip around these runs.
        match rows
            .iter()
            .find(|r| r.group == "cacheline" && r.size == size)
        {
            Some(r) => println!("{:>12}", fmt_ns(r.ns)),
            None => println!("{:>12}", "-"),
        }
    }
    // The single-caller round trips (median session p50).
    let find = |group: &str, size: usize, sys: System| {
        rows.iter()
            .find(|r| r.group == group && r.size == size && r.system == sys)
            .map(|r| r.ns)
    };
    print!("{:<8}", "rtt 4B");
    for &s in &systems {
        match find("rtt", 4, s) {
            Some(v) => print!("{:>17}", fmt_ns(v)),
            None => print!("{:>17}", "-"),
        }
    }
    match find("cacheline", 0, System::Green) {
        Some(v) => println!("{:>12}", fmt_ns(v)),
        None => println!("{:>12}", "-"),
    }
    // Paired ratios: each round's run of a system over green's run in the
    // same round, median over the rounds (the machine's state changes
    // between rounds more than within one).
    println!("\npeer / green, median over rounds of the ratio within a round");
    print!("{:<8}", "size");
    let peers: Vec<System> = systems
        .iter()
        .copied()
        .filter(|&s| s != System::Green)
        .collect();
    peers.iter().for_each(|s| print!("{:>17}", s.name()));
    println!();
    for &size in sizes {
        print!("{:<8}", fmt_size(size));
        for &s in &peers {
            let mut ratios: Vec<f64> = (1..=timed_runs(size))
                .filter_map(|k| {
                    let group = format!("round{k}");
                    let run = |sys: System| {
                        rows.iter()
                            .find(|r| r.group == group && r.size == size && r.system == sys)
                            .map(|r| r.ns)
                    };
                    Some(run(s)? / run(System::Green)?)
                })
                .collect();
            ratios.sort_by(f64::total_cmp);
            match ratios.get(ratios.len() / 2) {
                Some(v) => print!("{:>16.2}x", v),
                None => print!("{:>17}", "-"),
            }
        }
        println!();
    }
    let path = csv_path();
    let mut out = String::from("group,size,system,callers,calls,ns,ns_lo,ns_hi\n");
    for r in &rows {
        out += &format!(
            "{},{},{},{},{},{:.1},{:.1},{:.1}\n",
            r.group,
            r.size,
            r.system.name(),
            r.callers,
            r.calls,
            r.ns,
            r.ns_lo,
            r.ns_hi
        );
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, out).expect("write csv");
    println!("\nwrote {}", path.display());
}
