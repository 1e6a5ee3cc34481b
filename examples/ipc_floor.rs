//! The floor under the ipc bench: what the memory traffic of its calls
//! costs with no library at all.
//!
//! Two OS threads in one process play client and server over plain
//! shared memory: CALLERS slots, each with a private request and response
//! buffer on the client side and a request and response block in a
//! shared arena, and two single-producer rings of slot numbers. Per call
//! the work is the bench's, done by its own functions
//! (`benches/ipc_payload`): the client fills its buffer (an `i32` header
//! and SIZE body bytes) and copies it into the arena; the server checks
//! it in place and fills the response in place; the client copies the
//! response out and checks it (the bench's `green`). With `--in-place`
//! the client fills the request in the arena and reads the response
//! back through a 1 KiB buffer, checking each piece (the bench's
//! `green_in_place`, the safe API's in-place calls). There are no
//! green threads, locks, descriptors, allocations or wake-ups: a time per
//! call here is what only the caches and the cores' links cost, so
//! `bench time - floor` is what a system adds.
//!
//! ```text
//! cargo run --release --example ipc_floor -- [--in-place] [SIZE [CALLERS [SECS]]]
//! ```
//!
//! Prints one line per placement:
//! - `client and server on CPUs 1 and 0`: each side spins on its ring, as
//!   green's carriers do while calls flow; every body crosses between
//!   the cores;
//! - `one CPU`: both threads on CPU 0, taking turns (`sched_yield` when
//!   a ring is empty); nothing crosses, but one core does all the work;
//! - `a pair on each CPU`: two such pairs, one per CPU, with half the
//!   callers each (green with pinned carriers is laid out so: each client
//!   carrier's lane is served on its CPU); the time per call of both
//!   together.
//!
//! A time per call is the median over windows of 100 ms.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../benches/ipc_payload/mod.rs"]
mod ipc_payload;
use ipc_payload::{check, check_in_pieces, fill};

/// A cache line of its own.
#[repr(align(128))]
struct Line(AtomicUsize);

/// A ring of slot numbers, one producer and one consumer.
struct Ring {
    slots: Box<[AtomicUsize]>,
    tail: Line,
    head: Line,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring {
            slots: (0..n.next_power_of_two())
                .map(|_| AtomicUsize::new(0))
                .collect(),
            tail: Line(AtomicUsize::new(0)),
            head: Line(AtomicUsize::new(0)),
        }
    }

    /// Never full: at most `slots.len()` calls are out.
    fn push(&self, v: usize) {
        let t = self.tail.0.load(Ordering::Relaxed);
        self.slots[t % self.slots.len()].store(v, Ordering::Relaxed);
        self.tail.0.store(t + 1, Ordering::Release);
    }

    /// Takes everything there is into `out`, waiting for something;
    /// false once `stop` is set.
    fn pop_all(&self, out: &mut Vec<usize>, stop: &AtomicBool, yield_cpu: bool) -> bool {
        let h = self.head.0.load(Ordering::Relaxed);
        loop {
            let t = self.tail.0.load(Ordering::Acquire);
            if t != h {
                out.extend(
                    (h..t).map(|i| self.slots[i % self.slots.len()].load(Ordering::Relaxed)),
                );
                self.head.0.store(t, Ordering::Release);
                return true;
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            if yield_cpu {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A shared byte area that both threads write, at disjoint ranges handed
/// over through the rings.
struct Area {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the area is a heap allocation owned by `Shared`; the threads
// touch disjoint byte ranges (one slot's block), and a block changes
// hands only through a ring's Release/Acquire pair.
unsafe impl Send for Area {}
// SAFETY: as for `Send`.
unsafe impl Sync for Area {}

impl Area {
    fn new(len: usize) -> Area {
        let v = vec![0u8; len].into_boxed_slice();
        Area {
            len: v.len(),
            ptr: Box::into_raw(v).cast::<u8>(),
        }
    }

    /// The `len` bytes at `at`.
    ///
    /// # Safety
    ///
    /// In bounds, and no other thread touches those bytes while the slice
    /// lives (the slot is this thread's until it pushes it on).
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes(&self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.len);
        // SAFETY: in bounds (checked above) of a live allocation; the
        // caller guarantees exclusive use of the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new` with this length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

struct Shared {
    requests: Ring,
    responses: Ring,
    req_blocks: Area,
    resp_blocks: Area,
    stop: AtomicBool,
}

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("pin to a CPU");
}

/// How the client side handles the bodies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Fill a private buffer and copy it in; copy the response out into
    /// a private buffer and check it there (the bench's `green`).
    Copying,
    /// Fill the request in place; copy the response out through a 1 KiB
    /// buffer, checking each piece (the bench's `green_in_place`).
    InPlace,
}

/// Runs the calls for `run_for` with the server on `server_cpu` and the
/// The block green's arena gives a body of `len` bytes (its cache's size
/// classes, in `src/ipc/blocks.rs`): 1 to 4 lines of 64 bytes, then four
/// sizes per doubling (a 4 KiB body and its header take 5 KiB).
fn block_size(len: usize) -> usize {
    let g = len.max(1).div_ceil(64);
    if g <= 4 {
        return g * 64;
    }
    let k = usize::BITS - 1 - (g - 1).leading_zeros();
    let step = 1 << (k - 2);
    ((1 << k) + (g - (1 << k)).div_ceil(step) * step) * 64
}

/// client on `client_cpu`; the median time per call over 100 ms windows.
fn measure(
    size: usize,
    callers: usize,
    run_for: Duration,
    (server_cpu, client_cpu): (usize, usize),
    client: Client,
) -> f64 {
    let msg = 4 + size;
    let block = block_size(msg);
    let same_cpu = server_cpu == client_cpu;
    let sh = Arc::new(Shared {
        requests: Ring::new(callers),
        responses: Ring::new(callers),
        req_blocks: Area::new(callers * block),
        resp_blocks: Area::new(callers * block),
        stop: AtomicBool::new(false),
    });
    let server = {
        let sh = sh.clone();
        std::thread::spawn(move || {
            pin(server_cpu);
            let mut got = Vec::with_capacity(callers);
            while sh.requests.pop_all(&mut got, &sh.stop, same_cpu) {
                for &slot in &got {
                    // SAFETY: `slot`'s blocks are ours until we push it.
                    let (req, resp) = unsafe {
                        (
                            sh.req_blocks.bytes(slot * block, msg),
                            sh.resp_blocks.bytes(slot * block, msg),
                        )
                    };
                    fill(resp, !check(req).unwrap_or_else(|e| panic!("request: {e}")));
                    sh.responses.push(slot);
                }
                got.clear();
            }
        })
    };
    pin(client_cpu);
    let mut req_bufs: Vec<Vec<u8>> = (0..callers).map(|_| vec![0u8; msg]).collect();
    let mut resp_bufs: Vec<Vec<u8>> = (0..callers).map(|_| vec![0u8; msg]).collect();
    let mut sent = vec![0i32; callers];
    let mut next_hdr = 0i32;
    let send = |slot: usize, hdr: i32, buf: &mut Vec<u8>| {
        // SAFETY: `slot`'s request block is ours until we push it.
        let dst = unsafe { sh.req_blocks.bytes(slot * block, msg) };
        match client {
            Client::Copying => {
                fill(buf, hdr);
                dst.copy_from_slice(buf);
            }
            Client::InPlace => fill(dst, hdr),
        }
        sh.requests.push(slot);
    };
    let mut chunk = [0u8; 1024];
    for (slot, buf) in req_bufs.iter_mut().enumerate() {
        next_hdr += 1;
        sent[slot] = next_hdr;
        send(slot, next_hdr, buf);
    }
    let mut got = Vec::with_capacity(callers);
    let mut windows = Vec::new();
    let start = Instant::now();
    let (mut window_start, mut window_calls) = (start, 0u64);
    loop {
        sh.responses.pop_all(&mut got, &sh.stop, same_cpu);
        for &slot in &got {
            // SAFETY: `slot`'s response block is ours until we push the
            // slot's next request.
            let resp = unsafe { sh.resp_blocks.bytes(slot * block, msg) };
            match client {
                Client::Copying => {
                    resp_bufs[slot].copy_from_slice(resp);
                    let got = check(&resp_bufs[slot]).unwrap_or_else(|e| panic!("response: {e}"));
                    assert_eq!(got, !sent[slot], "response to another call");
                }
                Client::InPlace => check_in_pieces(msg, !sent[slot], &mut chunk, |pos, buf| {
                    let k = buf.len().min(msg - pos);
                    buf[..k].copy_from_slice(&resp[pos..pos + k]);
                    k
                })
                .unwrap_or_else(|e| panic!("response: {e}")),
            }
            next_hdr = next_hdr.wrapping_add(1);
            sent[slot] = next_hdr;
            send(slot, next_hdr, &mut req_bufs[slot]);
        }
        window_calls += got.len() as u64;
        got.clear();
        let now = Instant::now();
        if now - window_start >= Duration::from_millis(100) {
            windows.push((now - window_start).as_nanos() as f64 / window_calls as f64);
            (window_start, window_calls) = (now, 0);
            if now - start >= run_for {
                break;
            }
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    server.join().expect("server thread");
    windows.sort_by(f64::total_cmp);
    windows[windows.len() / 2]
}

fn main() {
    let (flags, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let client = match flags.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Client::Copying,
        ["--in-place"] => Client::InPlace,
        _ => panic!("the only flag is --in-place, got {flags:?}"),
    };
    let mut args = args.into_iter();
    let size: usize = args.next().map_or(4096, |s| s.parse().expect("SIZE"));
    let callers: usize = args.next().map_or(200, |s| s.parse().expect("CALLERS"));
    let run_for = args.next().map_or(Duration::from_secs(2), |s| {
        Duration::from_secs_f64(s.parse().expect("SECS"))
    });
    assert!(callers > 0, "CALLERS must be at least 1");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mode = match client {
        Client::Copying => "copying",
        Client::InPlace => "in place",
    };
    let line = |placement: &str, ns: f64| {
        println!(
            "floor: size: {size}, callers: {callers}, client {mode}, {placement}: {ns:.0} ns per call"
        );
    };
    if cpus >= 2 {
        line(
            "client and server on CPUs 1 and 0",
            measure(size, callers, run_for, (0, 1), client),
        );
    }
    line("one CPU", measure(size, callers, run_for, (0, 0), client));
    if cpus >= 2 && callers >= 2 {
        let pairs: Vec<_> = [(0, callers / 2), (1, callers - callers / 2)]
            .into_iter()
            .map(|(cpu, n)| {
                std::thread::spawn(move || measure(size, n, run_for, (cpu, cpu), client))
            })
            .collect();
        // Calls per ns add up.
        let rate: f64 = pairs
            .into_iter()
            .map(|p| 1.0 / p.join().expect("pair"))
            .sum();
        line("a pair on each CPU", 1.0 / rate);
    }
}
