//! Two threads, millions of sequence-numbered entries through a 64-entry
//! ring: every value checked in order, with spinning and with sleeping
//! (`wait`) consumers. A lost wake-up shows up as a `TimedOut` failure
//! (each wait's timeout is far above any pause of the producer), never as
//! a hang.

use std::thread;
use std::time::Duration;

use green::ring::{self, Consumer, Producer, WaitOutcome};

/// Entries per test: `release` in optimized builds, `debug` in debug
/// builds, 1,000 under Miri; each test takes a few seconds at most.
fn count(release: u64, debug: u64) -> u64 {
    if cfg!(miri) {
        1_000
    } else if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// A wait that should never reach its timeout.
const NO_LOST_WAKEUP: Option<Duration> = Some(Duration::from_secs(20));

fn produce_one_by_one(mut tx: Producer<u64>, n: u64, notify: bool) {
    for i in 0..n {
        let mut v = i;
        loop {
            match tx.push(v) {
                Ok(()) => break,
                Err(e) => {
                    v = e.into_inner();
                    thread::yield_now();
                }
            }
        }
        if notify {
            tx.notify().unwrap();
        }
    }
}

fn consume_spinning(mut rx: Consumer<u64>, n: u64) {
    let mut next = 0;
    while next < n {
        match rx.pop().unwrap() {
            Some(v) => {
                assert_eq!(v, next, "out of order");
                next += 1;
            }
            None => thread::yield_now(),
        }
    }
    assert_eq!(rx.pop().unwrap(), None);
}

#[test]
fn ten_million_in_order_spinning() {
    let n = count(10_000_000, 10_000_000);
    let (tx, rx) = ring::channel::<u64>(64).unwrap();
    let producer = thread::spawn(move || produce_one_by_one(tx, n, false));
    consume_spinning(rx, n);
    producer.join().unwrap();
}

#[test]
fn ten_million_in_order_bulk() {
    let n = count(10_000_000, 10_000_000);
    let (mut tx, mut rx) = ring::channel::<u64>(64).unwrap();
    let producer = thread::spawn(move || {
        let mut next = 0u64;
        let mut batch = Vec::with_capacity(100);
        while next < n {
            // Batch sizes 1..=100, larger than the ring at times.
            let size = 1 + (next % 100);
            batch.clear();
            batch.extend(next..(next + size).min(n));
            let mut sent = 0;
            while sent < batch.len() {
                let k = tx.push_slice(&batch[sent..]).unwrap();
                if k == 0 {
                    thread::yield_now();
                }
                sent += k;
            }
            next += batch.len() as u64;
        }
    });
    let mut next = 0u64;
    let mut buf = [0u64; 37];
    while next < n {
        let k = rx.pop_into(&mut buf).unwrap();
        if k == 0 {
            thread::yield_now();
        }
        for v in &buf[..k] {
            assert_eq!(*v, next, "out of order");
            next += 1;
        }
    }
    producer.join().unwrap();
}

fn consume_waiting(mut rx: Consumer<u64>, n: u64, spin: Duration) -> u64 {
    let mut next = 0;
    let mut waits = 0;
    while next < n {
        match rx.pop().unwrap() {
            Some(v) => {
                assert_eq!(v, next, "out of order");
                next += 1;
            }
            None => {
                waits += 1;
                let outcome = rx.wait(spin, NO_LOST_WAKEUP).unwrap();
                assert_eq!(outcome, WaitOutcome::Ready, "lost wake-up at entry {next}");
            }
        }
    }
    waits
}

#[test]
fn waiting_consumer_never_misses_a_wakeup() {
    // No spinning: every empty ring goes straight to the futex path, racing
    // the producer's notify as often as possible.
    let n = count(1_000_000, 200_000);
    let (tx, rx) = ring::channel::<u64>(64).unwrap();
    let producer = thread::spawn(move || produce_one_by_one(tx, n, true));
    let waits = consume_waiting(rx, n, Duration::ZERO);
    producer.join().unwrap();
    eprintln!("{n} entries, {waits} waits");
}

#[test]
fn waiting_consumer_with_spin_window() {
    let n = count(10_000_000, 1_000_000);
    let (tx, rx) = ring::channel::<u64>(64).unwrap();
    let producer = thread::spawn(move || produce_one_by_one(tx, n, true));
    let waits = consume_waiting(rx, n, Duration::from_micros(5));
    producer.join().unwrap();
    eprintln!("{n} entries, {waits} waits");
}

#[test]
fn waiting_consumer_sleeps_through_producer_pauses() {
    // The producer pauses between bursts, long enough for the consumer to
    // pass its spin window and sleep in FUTEX_WAIT every time.
    let bursts = if cfg!(miri) { 3 } else { 200 };
    let burst = 50u64;
    let (mut tx, rx) = ring::channel::<u64>(64).unwrap();
    let producer = thread::spawn(move || {
        let mut next = 0;
        for _ in 0..bursts {
            thread::sleep(Duration::from_micros(500));
            for _ in 0..burst {
                tx.push(next).unwrap();
                next += 1;
            }
            assert!(tx.free_slots().unwrap() <= 64);
            tx.notify().unwrap();
            // Let the consumer drain before the next burst (64 slots > 50).
            while tx.free_slots().unwrap() < 64 {
                thread::yield_now();
            }
        }
    });
    let waits = consume_waiting(rx, bursts * burst, Duration::from_micros(10));
    producer.join().unwrap();
    assert!(waits >= bursts, "consumer never waited ({waits} waits)");
}
