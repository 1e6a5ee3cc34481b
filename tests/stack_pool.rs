//! The stack pool: reuse without growth, and the clear error when guard
//! pages would exceed vm.max_map_count.
use std::process::Command;
use std::sync::Mutex;

/// The pool is process-wide: tests that measure it must not overlap.
static POOL: Mutex<()> = Mutex::new(());

#[test]
fn million_sequential_spawns_do_not_grow_the_pool() {
    let _g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let n = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    // Warm up: the first spawns carve the carrier's first batch of stacks.
    rt.block_on(|| {
        for i in 0..1000 {
            assert_eq!(green::spawn(move || i).join().unwrap(), i);
        }
    });
    let mapped = green::runtime::mapped_stack_bytes();
    rt.block_on(move || {
        for i in 0..n {
            assert_eq!(green::spawn(move || i).join().unwrap(), i);
        }
    });
    assert_eq!(green::runtime::mapped_stack_bytes(), mapped);
}

#[test]
fn concurrent_waves_reuse_stacks() {
    let _g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    // Each wave holds all its green threads alive at once (they wait at a
    // gate), so every wave needs exactly the same number of stacks.
    let wave = |rt: &green::Runtime| {
        let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hs: Vec<_> = (0..5000)
            .map(|i| {
                let gate = gate.clone();
                rt.spawn(move || {
                    while !gate.load(std::sync::atomic::Ordering::SeqCst) {
                        green::thread::park();
                    }
                    i
                })
            })
            .collect();
        gate.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in &hs {
            h.thread().unpark();
        }
        hs.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
    };
    // Stacks freed on a carrier stay in its cache (up to a bound) while
    // spawns from this OS thread draw from the global pool, so the pool may
    // grow by at most the caches' size until they are full: two waves.
    wave(&rt);
    wave(&rt);
    let mapped = green::runtime::mapped_stack_bytes();
    for _ in 0..5 {
        assert_eq!(wave(&rt), 5000 * 4999 / 2);
    }
    assert_eq!(green::runtime::mapped_stack_bytes(), mapped);
}

#[test]
fn map_count_child() {
    if std::env::var_os("GREEN_TEST_CHILD").is_none() {
        return;
    }
    // With the mprotect fallback every stack costs mappings; keep spawning
    // parked green threads until the pool refuses.
    let rt = green::Runtime::builder()
        .carriers(1)
        .stack_size(16 * 1024)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    let err = loop {
        match green::thread::Builder::new().spawn_on(&rt, || loop {
            green::thread::park();
        }) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
        assert!(handles.len() < 200_000, "vm.max_map_count never reached");
    };
    eprintln!("spawned {} then: {err}", handles.len());
    std::process::exit(if err.to_string().contains("vm.max_map_count") {
        0
    } else {
        3
    });
}

#[test]
fn mprotect_fallback_reports_max_map_count() {
    if std::env::var_os("GREEN_TEST_CHILD").is_some() {
        return;
    }
    let max: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if max > 1_000_000 {
        eprintln!("skipped: vm.max_map_count is {max}, too high to reach in a test");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "map_count_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GREEN_TEST_CHILD", "1")
        .env("GREEN_STACK_GUARD", "mprotect")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("vm.max_map_count"), "{stderr}");
}
