//! Scheduling: yield fairness, thread-per-core pinning, park/unpark tokens.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn yield_round_robins_between_green_threads() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let log = rt.block_on(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3)
            .map(|id| {
                let log = log.clone();
                green::spawn(move || {
                    for _ in 0..100 {
                        log.lock().unwrap().push(id);
                        green::thread::yield_now();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(log.len(), 300);
    // Strict round robin: every window of three turns holds each thread once.
    for w in log.chunks(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, vec![0, 1, 2], "{log:?}");
    }
}

#[test]
fn busy_yielder_does_not_starve_timers() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let spinner = green::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                green::thread::yield_now();
                n += 1;
            }
            n
        });
        let start = Instant::now();
        green::thread::sleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
        stop.store(true, Ordering::SeqCst);
        assert!(spinner.join().unwrap() > 0);
    });
}

#[test]
fn green_threads_never_migrate_between_carriers() {
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let handles: Vec<_> = (0..40)
        .map(|i| {
            rt.spawn(move || {
                let home = std::thread::current().id();
                for j in 0..50 {
                    match (i + j) % 3 {
                        0 => green::thread::yield_now(),
                        1 => green::thread::sleep(Duration::from_micros(100)),
                        _ => green::thread::park_timeout(Duration::from_micros(50)),
                    }
                    assert_eq!(std::thread::current().id(), home);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn unpark_before_park_makes_park_return() {
    let h = green::spawn(|| {
        green::thread::current().unpark();
        green::thread::park(); // consumes the token, returns at once
    });
    h.join().unwrap();
}

#[test]
fn unpark_from_os_thread_wakes_parked_green_thread() {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let h = green::spawn(move || {
        while !f.load(Ordering::SeqCst) {
            green::thread::park();
        }
    });
    std::thread::sleep(Duration::from_millis(10));
    flag.store(true, Ordering::SeqCst);
    h.thread().unpark();
    h.join().unwrap();
}

#[test]
fn unpark_across_carriers() {
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let rounds = 2000;
    let count = Arc::new(AtomicUsize::new(0));
    // Two green threads, one per carrier, ping-pong via park/unpark.
    let c = count.clone();
    let a = rt.spawn(move || {
        let mut seen = 0;
        while seen < rounds {
            while c.load(Ordering::SeqCst) % 2 != 0 {
                green::thread::park();
            }
            seen += 1;
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let c = count.clone();
    let a_thread = a.thread().clone();
    let b = rt.spawn(move || {
        let mut seen = 0;
        while seen < rounds {
            while c.load(Ordering::SeqCst) % 2 != 1 {
                a_thread.unpark();
                green::thread::park_timeout(Duration::from_millis(1));
            }
            seen += 1;
            c.fetch_add(1, Ordering::SeqCst);
            a_thread.unpark();
        }
    });
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2 * rounds);
}

#[test]
fn park_timeout_returns_after_timeout() {
    let h = green::spawn(|| {
        let start = Instant::now();
        green::thread::park_timeout(Duration::from_millis(15));
        start.elapsed()
    });
    assert!(h.join().unwrap() >= Duration::from_millis(15));
}

#[test]
fn sleep_does_not_consume_park_token() {
    let h = green::spawn(|| {
        green::thread::current().unpark();
        green::thread::sleep(Duration::from_millis(2));
        // The token set before the sleep is still there.
        green::thread::park();
    });
    h.join().unwrap();
}
