//! Switch costs of green threads, next to may coroutines and std threads.
//!
//! Every case runs its two parties on one scheduler thread: a green runtime
//! with one carrier, may with one worker. The std peers are plain OS
//! threads; they share a core only when the run is pinned
//! (`taskset -c 0 cargo bench --bench switch`), and otherwise measure OS
//! yields and syscalls on two cores rather than switches.
//!
//! Each case times only its loop with `iter_custom`: runtime start-up and
//! the spawning of the two parties stay outside the clock. The exception is
//! std's two-thread cases, whose threads start running as they are
//! spawned; their two spawns (tens of microseconds) are under 2% of the
//! shortest sample.
//!
//! `mutex_handoff` runs both sides on one scheduler thread, so the lock is
//! never contended there: a hand-off is one lock/unlock pair plus one yield.
//!
//! | case               | one iteration                                        |
//! |--------------------|------------------------------------------------------|
//! | `yield_round_trip` | A yields to B, B yields back to A                    |
//! | `spawn_join`       | spawn a thread returning a value, join it            |
//! | `mutex_handoff`    | one turn: lock, bump the shared counter, yield       |

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion};

/// A green runtime whose green threads all share one carrier.
fn green_runtime() -> green::Runtime {
    green::Runtime::builder()
        .carriers(1)
        .build()
        .expect("start a one-carrier green runtime")
}

/// Runs `f` as a may coroutine and returns its value.
///
/// `may::go!` hides an `unsafe` spawn: may coroutines must not rely on
/// thread-locals or overflow their (default) stacks. The closures here only
/// count, lock may's mutex and read the clock.
fn may_run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    may::go!(f).join().expect("may coroutine panicked")
}

/// One side of a mutex hand-off: `turns` times, wait until the counter
/// has this side's parity, bump it under the lock, and yield. Two sides
/// with parities 0 and 1 strictly alternate, so every turn is a hand-off.
macro_rules! take_turns {
    ($mutex:expr, $parity:expr, $turns:expr, $yield_now:path) => {{
        let mut done = 0u64;
        while done < $turns {
            {
                let mut count = $mutex.lock().unwrap();
                if *count % 2 == $parity {
                    *count += 1;
                    done += 1;
                }
            }
            $yield_now();
        }
    }};
}

fn yield_round_trip(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = green_runtime();
    g.bench_function("yield_round_trip/green", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let side = move || {
                    for _ in 0..iters {
                        green::thread::yield_now();
                    }
                };
                let (a, b) = (green::spawn(side), green::spawn(side));
                // Neither side has run yet: they start when we park in join.
                let start = Instant::now();
                a.join().unwrap();
                b.join().unwrap();
                start.elapsed()
            })
        })
    });

    g.bench_function("yield_round_trip/may", |b| {
        b.iter_custom(|iters| {
            may_run(move || {
                let side = move || {
                    for _ in 0..iters {
                        may::coroutine::yield_now();
                    }
                };
                let (a, b) = (may::go!(side), may::go!(side));
                let start = Instant::now();
                a.join().unwrap();
                b.join().unwrap();
                start.elapsed()
            })
        })
    });

    // Two OS threads calling sched_yield: a round trip only when both
    // share one core (taskset), else two independent syscall loops.
    g.bench_function("yield_round_trip/std", |b| {
        b.iter_custom(|iters| {
            let side = move || {
                for _ in 0..iters {
                    std::thread::yield_now();
                }
            };
            let start = Instant::now();
            let (a, b) = (std::thread::spawn(side), std::thread::spawn(side));
            a.join().unwrap();
            b.join().unwrap();
            start.elapsed()
        })
    });
}

fn spawn_join(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = green_runtime();
    g.bench_function("spawn_join/green", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(green::spawn(|| black_box(1u64)).join().unwrap());
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("spawn_join/may", |b| {
        b.iter_custom(|iters| {
            may_run(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(may::go!(|| black_box(1u64)).join().unwrap());
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("spawn_join/std", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(std::thread::spawn(|| black_box(1u64)).join().unwrap());
            }
            start.elapsed()
        })
    });
}

/// Each iteration is one hand-off; a run of `iters` gives each side
/// `iters` turns, `2 * iters` hand-offs, so the time is halved.
fn mutex_handoff(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = green_runtime();
    g.bench_function("mutex_handoff/green", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let m = Arc::new(green::sync::Mutex::new(0u64));
                let (ma, mb) = (m.clone(), m.clone());
                let a = green::spawn(move || take_turns!(ma, 0, iters, green::thread::yield_now));
                let b = green::spawn(move || take_turns!(mb, 1, iters, green::thread::yield_now));
                let start = Instant::now();
                a.join().unwrap();
                b.join().unwrap();
                let elapsed = start.elapsed();
                assert_eq!(*black_box(&m).lock().unwrap(), 2 * iters);
                elapsed / 2
            })
        })
    });

    g.bench_function("mutex_handoff/may", |b| {
        b.iter_custom(|iters| {
            may_run(move || {
                let m = Arc::new(may::sync::Mutex::new(0u64));
                let (ma, mb) = (m.clone(), m.clone());
                let a = may::go!(move || take_turns!(ma, 0, iters, may::coroutine::yield_now));
                let b = may::go!(move || take_turns!(mb, 1, iters, may::coroutine::yield_now));
                let start = Instant::now();
                a.join().unwrap();
                b.join().unwrap();
                let elapsed = start.elapsed();
                assert_eq!(*black_box(&m).lock().unwrap(), 2 * iters);
                elapsed / 2
            })
        })
    });

    g.bench_function("mutex_handoff/std", |b| {
        b.iter_custom(|iters| {
            let m = Arc::new(std::sync::Mutex::new(0u64));
            let (ma, mb) = (m.clone(), m.clone());
            let start = Instant::now();
            let a = std::thread::spawn(move || take_turns!(ma, 0, iters, std::thread::yield_now));
            let b = std::thread::spawn(move || take_turns!(mb, 1, iters, std::thread::yield_now));
            a.join().unwrap();
            b.join().unwrap();
            let elapsed = start.elapsed();
            assert_eq!(*black_box(&m).lock().unwrap(), 2 * iters);
            elapsed / 2
        })
    });
}

fn switch(c: &mut Criterion) {
    // Before may's first use: its scheduler starts lazily with this count.
    may::config().set_workers(1);
    let mut g = c.benchmark_group("switch");
    yield_round_trip(&mut g);
    spawn_join(&mut g);
    mutex_handoff(&mut g);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = switch
}
criterion_main!(benches);
