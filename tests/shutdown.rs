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
fn spawn_after_shutdown_fails_cleanly() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let handle_rt = std::sync::Arc::new(rt);
    let weak = handle_rt.clone();
    drop(handle_rt);
    // The runtime still exists through `weak`; dropping it shuts it down.
    let rt = std::sync::Arc::try_unwrap(weak).unwrap();
    rt.block_on(|| ());
    drop(rt);
}
