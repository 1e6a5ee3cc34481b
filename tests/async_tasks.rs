//! Async tasks share the carriers and timers with green threads.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn spawn_async_and_join_from_os_thread() {
    let h = green::spawn_async(async {
        green::time::sleep_async(Duration::from_millis(5)).await;
        7
    });
    assert_eq!(h.join().unwrap(), 7);
}

#[test]
fn block_on_future_from_os_thread_and_green_thread() {
    let start = Instant::now();
    let v = green::block_on(async {
        green::time::sleep_async(Duration::from_millis(10)).await;
        1
    });
    assert_eq!(v, 1);
    assert!(start.elapsed() >= Duration::from_millis(10));
    let v = green::spawn(|| {
        green::block_on(async {
            green::time::sleep_async(Duration::from_millis(3)).await;
            2
        })
    })
    .join()
    .unwrap();
    assert_eq!(v, 2);
}

#[test]
fn green_thread_awaits_async_task_and_task_awaits_green_thread() {
    let v = green::spawn(|| {
        let task = green::spawn_async(async { 20 });
        let thread = green::spawn(|| {
            green::thread::sleep(Duration::from_millis(2));
            22
        });
        green::block_on(async move { task.await.unwrap() + thread.await.unwrap() })
    })
    .join()
    .unwrap();
    assert_eq!(v, 42);
}

#[test]
fn async_panic_comes_back_as_err() {
    let h = green::spawn_async(async {
        green::time::sleep_async(Duration::from_millis(1)).await;
        panic!("async boom");
    });
    let err = h.join().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"async boom"));
}

#[test]
fn many_async_tasks_and_green_threads_interleave_on_one_carrier() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    rt.block_on(move || {
        let mut handles = Vec::new();
        for i in 0..500u64 {
            let c = c.clone();
            if i % 2 == 0 {
                let h = green::spawn_async(async move {
                    green::time::sleep_async(Duration::from_millis(i % 7)).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
                handles.push(h);
            } else {
                let h = green::spawn(move || {
                    green::thread::sleep(Duration::from_millis(i % 7));
                    c.fetch_add(1, Ordering::SeqCst);
                });
                handles.push(h);
            }
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(count.load(Ordering::SeqCst), 500);
}

#[test]
fn dropping_a_pending_sleep_future_then_sleeping_again_works() {
    green::block_on(async {
        let long = green::time::sleep_async(Duration::from_secs(3600));
        drop(long);
        green::time::sleep_async(Duration::from_millis(1)).await;
    });
}

#[test]
fn blocking_calls_inside_a_poll_are_not_green() {
    // Inside an async task's poll there is no green thread to suspend:
    // yield_now and sleep fall back to the OS thread (std behaviour), and
    // current() names the carrier's OS thread.
    let h = green::spawn_async(async {
        green::thread::yield_now();
        green::thread::sleep(Duration::from_millis(1));
        (
            green::thread::is_green(),
            green::thread::current().is_green(),
        )
    });
    assert_eq!(h.join().unwrap(), (false, false));
}

#[test]
fn block_on_inside_async_task_panics_with_clear_message() {
    let h = green::spawn_async(async { green::block_on(async { 1 }) });
    let err = h.join().unwrap_err();
    let msg = err.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("inside an async task"), "{msg}");
}

#[test]
fn timeout_gives_the_output_or_elapsed() {
    let (out, late, unbounded, err) = green::spawn_async(async {
        use green::time::{sleep_async, timeout};
        // Ready first: its output.
        let out = timeout(Duration::from_secs(60), async { 5 }).await;
        // Never ready: Elapsed, no earlier than the deadline.
        let start = Instant::now();
        let late = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
        let waited = start.elapsed();
        // A duration too long to count: waits as long as it takes.
        let unbounded = timeout(Duration::MAX, async {
            sleep_async(Duration::from_millis(5)).await;
            6
        })
        .await;
        // Elapsed is a TimedOut io::Error with `?`.
        let err: std::io::Result<()> = async {
            timeout(Duration::from_millis(1), std::future::pending::<()>()).await?;
            Ok(())
        }
        .await;
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        (out, late, unbounded, err)
    })
    .join()
    .unwrap();
    assert_eq!(out, Ok(5));
    assert!(late.is_err());
    assert_eq!(unbounded, Ok(6));
    let err = err.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(err.to_string(), "deadline has elapsed");
}
