//! Dropping a runtime while green threads are blocked.
use std::time::Duration;

#[test]
fn blocked_green_threads_are_abandoned_and_joins_report_it() {
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let parked: Vec<_> = (0..10)
        .map(|_| {
            rt.spawn(|| loop {
                green::thread::park();
            })
        })
        .collect();
    let sleeper = rt.spawn(|| green::thread::sleep(Duration::from_secs(3600)));
    let task = rt.spawn_async(async {
        green::time::sleep_async(Duration::from_secs(3600)).await;
    });
    let finished = rt.spawn(|| 5);
    assert_eq!(finished.join().unwrap(), 5);
    std::thread::sleep(Duration::from_millis(20));
    drop(rt);
    for h in parked {
        let err = h.join().unwrap_err();
        let msg = err.downcast_ref::<&str>().unwrap();
        assert!(msg.contains("shut down"), "{msg}");
    }
    assert!(sleeper.join().is_err());
    assert!(task.join().is_err());
}

#[test]
fn waking_an_abandoned_green_thread_after_shutdown_is_harmless() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let h = rt.spawn(|| loop {
        green::thread::park();
    });
    let thread = h.thread().clone();
    std::thread::sleep(Duration::from_millis(10));
    drop(rt);
    // The carrier is gone; the wake-up is refused by its closed queue, and
    // nothing runs, crashes or hangs.
    for _ in 0..3 {
        thread.unpark();
    }
    let err = h.join().unwrap_err();
    assert!(err.downcast_ref::<&str>().unwrap().contains("shut down"));
    // A new runtime works as before.
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    assert_eq!(rt.block_on(|| 3), 3);
}
