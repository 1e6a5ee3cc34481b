//! Sleeping: deadlines are honoured and timers fire in deadline order.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn sleep_lasts_at_least_the_duration() {
    let handles: Vec<_> = [0u64, 1, 5, 20]
        .into_iter()
        .map(|ms| {
            green::spawn(move || {
                let start = Instant::now();
                green::thread::sleep(Duration::from_millis(ms));
                (ms, start.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (ms, took) = h.join().unwrap();
        assert!(
            took >= Duration::from_millis(ms),
            "slept {took:?} for {ms} ms"
        );
    }
}

#[test]
fn wakeups_follow_deadline_order() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let order = rt.block_on(|| {
        let base = Instant::now() + Duration::from_millis(30);
        let order = Arc::new(Mutex::new(Vec::new()));
        // Spawned in scrambled order; deadlines 1 ms apart.
        let handles: Vec<_> = (0..50u64)
            .map(|i| (i * 37) % 50)
            .map(|k| {
                let order = order.clone();
                green::spawn(move || {
                    green::thread::sleep_until(base + Duration::from_millis(k));
                    order.lock().unwrap().push(k);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    });
    assert_eq!(order, (0..50).collect::<Vec<_>>());
}

#[test]
fn many_sleepers_all_wake() {
    let n = 20_000;
    let handles: Vec<_> = (0..n)
        .map(|i| green::spawn(move || green::thread::sleep(Duration::from_millis(1 + i % 10))))
        .collect();
    let done = handles
        .into_iter()
        .map(|h| h.join())
        .filter(Result::is_ok)
        .count();
    assert_eq!(done, n as usize);
}

#[test]
fn os_thread_sleep_is_std_sleep() {
    let start = Instant::now();
    green::thread::sleep(Duration::from_millis(5));
    assert!(start.elapsed() >= Duration::from_millis(5));
    green::time::sleep_until(Instant::now() + Duration::from_millis(1));
}
