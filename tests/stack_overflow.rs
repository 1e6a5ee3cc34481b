//! A green thread that overflows its stack ends the process with a message
//! naming it, never with silent corruption. Each case runs in a child
//! process (this test binary re-executed with GREEN_TEST_CHILD set).
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

fn recurse(depth: u64) -> u64 {
    let buf = [depth as u8; 512];
    if depth == u64::MAX {
        return 0;
    }
    std::hint::black_box(&buf);
    recurse(depth + 1) + std::hint::black_box(buf[3]) as u64
}

/// Runs `test` in a child with `GREEN_TEST_CHILD=1` and extra env vars.
fn run_child(test: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("GREEN_TEST_CHILD", "1")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_child() -> bool {
    std::env::var_os("GREEN_TEST_CHILD").is_some()
}

fn overflow_in_named_green_thread() {
    let h = green::thread::Builder::new()
        .name("deep-recursion".into())
        .stack_size(32 * 1024)
        .spawn(|| recurse(0))
        .unwrap();
    let _ = h.join();
    unreachable!("the overflow must abort the process");
}

#[test]
fn overflow_child_madvise_guard() {
    if is_child() {
        overflow_in_named_green_thread();
    }
}

#[test]
fn overflow_child_mprotect_guard() {
    if is_child() {
        overflow_in_named_green_thread();
    }
}

#[test]
fn overflow_aborts_with_message_naming_the_green_thread() {
    if is_child() {
        return;
    }
    for (test, env) in [
        ("overflow_child_madvise_guard", vec![]),
        (
            "overflow_child_mprotect_guard",
            vec![("GREEN_STACK_GUARD", "mprotect")],
        ),
    ] {
        let (signal, stderr) = run_child(test, &env);
        assert_eq!(
            signal,
            Some(libc_sigabrt()),
            "{test}: child must abort; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("thread 'deep-recursion' has overflowed its stack"),
            "{test}: stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("stack size 32 KiB"),
            "{test}: stderr:\n{stderr}"
        );
    }
}

#[test]
fn overflow_child_unnamed() {
    if is_child() {
        let _ = green::spawn(|| recurse(0)).join();
        unreachable!();
    }
}

#[test]
fn overflow_of_unnamed_green_thread_says_unnamed() {
    if is_child() {
        return;
    }
    let (signal, stderr) = run_child("overflow_child_unnamed", &[]);
    assert_eq!(signal, Some(libc_sigabrt()), "stderr:\n{stderr}");
    assert!(
        stderr.contains("thread '<unnamed>' has overflowed its stack"),
        "{stderr}"
    );
    assert!(stderr.contains("stack size 64 KiB"), "{stderr}");
}

#[test]
fn overflow_child_os_thread() {
    if is_child() {
        // A runtime exists (so our handler is installed), but the overflow
        // happens on a plain OS thread: std's report must still appear.
        green::spawn(|| ()).join().unwrap();
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = t.join();
        unreachable!();
    }
}

#[test]
fn os_thread_overflow_still_reported_by_std() {
    if is_child() {
        return;
    }
    let (signal, stderr) = run_child("overflow_child_os_thread", &[]);
    assert_eq!(signal, Some(libc_sigabrt()), "stderr:\n{stderr}");
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(!stderr.contains("green thread"), "{stderr}");
}

fn libc_sigabrt() -> i32 {
    6
}
