//! Spawning and joining green threads: values, panics, names, detaching,
//! joining from OS threads and from green threads.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn join_returns_the_closure_value() {
    let h = green::spawn(|| 40 + 2);
    assert_eq!(h.join().unwrap(), 42);
}

#[test]
fn panic_comes_back_as_err_with_payload() {
    let n = std::hint::black_box(7);
    let h = green::spawn(move || -> u32 { panic!("boom {n}") });
    let err = h.join().unwrap_err();
    assert_eq!(
        err.downcast_ref::<String>().map(String::as_str),
        Some("boom 7")
    );
    let h = green::spawn(|| std::panic::panic_any(17u8));
    assert_eq!(h.join().unwrap_err().downcast_ref::<u8>(), Some(&17));
}

#[test]
fn panic_does_not_disturb_other_green_threads() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let total = rt.block_on(|| {
        let handles: Vec<_> = (0..100u64)
            .map(|i| {
                green::spawn(move || {
                    green::thread::yield_now();
                    if i % 3 == 0 {
                        panic!("thread {i} fails");
                    }
                    green::thread::sleep(Duration::from_millis(1));
                    i
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .sum::<u64>()
    });
    let expected: u64 = (0..100).filter(|i| i % 3 != 0).sum();
    assert_eq!(total, expected);
    // The carrier still runs new work after the panics.
    assert_eq!(rt.block_on(|| 5), 5);
}

#[test]
fn join_from_green_thread_and_nested_spawns() {
    let h = green::spawn(|| {
        let inner: Vec<_> = (0..10).map(|i| green::spawn(move || i * i)).collect();
        inner.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
    });
    assert_eq!(h.join().unwrap(), 285);
}

#[test]
fn dropping_handle_detaches_and_thread_still_runs() {
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    drop(green::spawn(move || {
        green::thread::sleep(Duration::from_millis(5));
        d.fetch_add(1, Ordering::SeqCst);
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "detached green thread never ran"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn builder_sets_name_and_stack_size() {
    let h = green::thread::Builder::new()
        .name("worker-1".into())
        .stack_size(256 * 1024)
        .spawn(|| {
            // 200 KiB of stack use fits in a 256 KiB stack.
            let buf = [7u8; 200 * 1024];
            let sum: u32 = std::hint::black_box(&buf).iter().map(|&b| b as u32).sum();
            (green::thread::current().name().map(str::to_owned), sum)
        })
        .unwrap();
    assert_eq!(h.thread().name(), Some("worker-1"));
    let (name, sum) = h.join().unwrap();
    assert_eq!(name.as_deref(), Some("worker-1"));
    assert_eq!(sum, 7 * 200 * 1024);
}

#[test]
fn too_large_stack_is_an_error_not_a_panic() {
    let err = green::thread::Builder::new()
        .stack_size(usize::MAX / 2)
        .spawn(|| ())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("stack size"), "{err}");
}

#[test]
fn zero_carriers_is_an_error() {
    let err = green::Runtime::builder().carriers(0).build().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn thread_ids_are_unique_and_current_matches_handle() {
    let handles: Vec<_> = (0..50)
        .map(|_| green::spawn(|| green::thread::current().id()))
        .collect();
    let expected: Vec<_> = handles.iter().map(|h| h.thread().id()).collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, expected);
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 50);
    assert!(!green::thread::is_green());
    assert!(!green::thread::current().is_green());
    assert!(green::spawn(green::thread::is_green).join().unwrap());
}

#[test]
fn is_finished_reports_completion() {
    let h = green::spawn(|| green::thread::sleep(Duration::from_millis(20)));
    assert!(!h.is_finished());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !h.is_finished() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join().unwrap();
}

#[test]
fn block_on_runs_closure_and_resumes_its_panic() {
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    assert!(rt.block_on(green::thread::is_green));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(|| panic!("inner"))
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"inner"));
}

#[test]
fn spawns_from_os_thread_spread_over_carriers() {
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let gate = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let gate = gate.clone();
            rt.spawn(move || {
                let carrier = std::thread::current().name().unwrap().to_owned();
                while gate.load(Ordering::SeqCst) == 0 {
                    green::thread::sleep(Duration::from_millis(1));
                }
                carrier
            })
        })
        .collect();
    gate.store(1, Ordering::SeqCst);
    let mut names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    names.sort();
    let first = names.iter().filter(|n| **n == names[0]).count();
    assert_eq!(
        names.len() - first,
        10,
        "least-loaded placement splits evenly: {names:?}"
    );
}
