//! A million green threads alive at once.
//!
//! `cargo run --release --example many [N]` spawns N green threads (default
//! 1,000,000), each of which sleeps on the runtime's timers and then waits
//! until all N are alive, so they all exist at the same time. It reports the
//! peak resident memory per green thread (guard pages included) and, in a
//! second phase, the cost of a spawn+join pair.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse().expect("N must be a number"))
        .unwrap_or(1_000_000);
    let rt = green::Runtime::new().expect("start runtime");
    let carriers = rt.carriers();

    // Phase 1: N green threads alive at once.
    let ready = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let rss_before = status_kib("VmRSS:");
    let start = Instant::now();
    // One spawner per carrier (spawns from plain threads go to the least
    // loaded carrier); each spawns its share locally.
    let spawners: Vec<_> = (0..carriers)
        .map(|i| {
            let (ready, release) = (ready.clone(), release.clone());
            let share = n / carriers + usize::from(i < n % carriers);
            rt.spawn(move || {
                (0..share)
                    .map(|_| {
                        let (ready, release) = (ready.clone(), release.clone());
                        green::spawn(move || {
                            green::thread::sleep(Duration::from_millis(10));
                            ready.fetch_add(1, Ordering::Release);
                            while !release.load(Ordering::Acquire) {
                                green::thread::park();
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let handles: Vec<_> = spawners
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    while ready.load(Ordering::Acquire) < n {
        std::thread::sleep(Duration::from_millis(5));
    }
    let alive_after = start.elapsed();
    let peak_kib = status_kib("VmHWM:").saturating_sub(rss_before);
    release.store(true, Ordering::Release);
    for h in &handles {
        h.thread().unpark();
    }
    for h in handles {
        h.join().unwrap();
    }
    eprintln!(
        "{n} green threads alive after {alive_after:?}, all joined after {:?}, stack address space mapped: {} MiB",
        start.elapsed(),
        green::runtime::mapped_stack_bytes() >> 20
    );

    // Phase 2: spawn+join cost, from a green thread, one at a time.
    let rounds = n.max(1000);
    let per = rt.block_on(move || {
        let t = Instant::now();
        for i in 0..rounds {
            let v = green::spawn(move || i).join().unwrap();
            assert_eq!(v, i);
        }
        t.elapsed().as_nanos() as f64 / rounds as f64
    });
    let rss_per_thread = peak_kib as f64 / n as f64;
    println!("green threads: {n}, peak rss per thread: {rss_per_thread:.2} KiB, spawn+join: {per:.0} ns/thread");
}
