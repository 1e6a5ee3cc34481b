//! The smallest useful program: blocking code on green threads.
use std::time::{Duration, Instant};

fn main() {
    let start = Instant::now();
    // A thousand "threads" that each block for 100 ms, on one OS thread per core.
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            green::spawn(move || {
                green::thread::sleep(Duration::from_millis(100));
                i
            })
        })
        .collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "hello from 1000 green threads: sum {sum}, all slept 100 ms in {:?} total",
        start.elapsed()
    );
}
