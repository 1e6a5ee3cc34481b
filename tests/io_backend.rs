//! Choosing the I/O backend, and what happens where io_uring is refused.
//!
//! The "refused" cases run in a child process (this test binary re-run with
//! GREEN_TEST_CHILD set) that installs a real seccomp filter making
//! io_uring_setup fail with EPERM, as Docker's default profile does.
use std::process::Command;
use std::time::Duration;

fn is_child() -> bool {
    std::env::var_os("GREEN_TEST_CHILD").is_some()
}

/// Makes io_uring_setup (syscall 425 on x86_64 and aarch64) fail with EPERM
/// for this thread and the threads it starts later.
fn forbid_io_uring() {
    const IO_URING_SETUP: u32 = 425;
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls with a valid, live filter program.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _
            ),
            0
        );
    }
}

fn run_child(test: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("GREEN_TEST_CHILD", "1")
        .env_remove("GREEN_IO_BACKEND")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn refused_child() {
    if !is_child() {
        return;
    }
    forbid_io_uring();
    // The io_uring backend: a clear error naming the cause and the way out.
    let err = green::Runtime::builder().carriers(1).build().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("io_uring unavailable"), "{msg}");
    assert!(msg.contains("seccomp"), "{msg}");
    assert!(msg.contains("GREEN_IO_BACKEND=blocking"), "{msg}");
    // The blocking backend still runs green threads and their sleeps.
    let rt = green::Runtime::builder()
        .carriers(1)
        .io_backend(green::IoBackend::Blocking)
        .build()
        .unwrap();
    assert_eq!(rt.io_backend(), green::IoBackend::Blocking);
    let v = rt.block_on(|| {
        green::thread::sleep(Duration::from_millis(2));
        7
    });
    assert_eq!(v, 7);
    println!("child-ok");
}

#[test]
fn io_uring_refused_by_seccomp_gives_clear_error_and_blocking_backend_works() {
    if is_child() {
        return;
    }
    let (ok, out) = run_child("refused_child");
    assert!(ok && out.contains("child-ok"), "child failed:\n{out}");
}

#[test]
fn env_var_selects_backend_and_rejects_unknown_names() {
    if is_child() {
        return;
    }
    // The builder option wins over the environment; the default is io_uring
    // where the kernel allows it.
    let rt = green::Runtime::builder()
        .carriers(1)
        .io_backend(green::IoBackend::Blocking)
        .build()
        .unwrap();
    assert_eq!(rt.io_backend(), green::IoBackend::Blocking);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "bad_env_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GREEN_TEST_CHILD", "1")
        .env("GREEN_IO_BACKEND", "epoll")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("child-ok"), "{text}");
}

#[test]
fn bad_env_child() {
    if !is_child() {
        return;
    }
    let err = green::Runtime::builder().carriers(1).build().unwrap_err();
    assert!(
        err.to_string().contains("GREEN_IO_BACKEND=\"epoll\""),
        "{err}"
    );
    println!("child-ok");
}

#[test]
fn ring_entries_out_of_range_is_an_error() {
    if is_child() {
        return;
    }
    let err = green::Runtime::builder()
        .ring_entries(0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn zero_io_workers_is_an_error() {
    if is_child() {
        return;
    }
    let err = green::Runtime::builder().io_workers(0).build().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// With one kernel worker, operations that block in the kernel (creating
/// and truncating files, buffered writes) queue behind each other but all
/// complete, each with its own result.
#[test]
fn one_io_worker_still_completes_every_blocking_file_op() {
    if is_child() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("green-one-io-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = green::Runtime::builder()
        .carriers(1)
        .io_workers(1)
        .io_backend(green::IoBackend::IoUring)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..50u8)
        .map(|i| {
            let p = dir.join(format!("f{i}"));
            rt.spawn(move || {
                green::fs::write(&p, [i; 3000]).unwrap();
                // Truncate and rewrite: the open truncates in a kernel worker.
                green::fs::write(&p, [i; 5000]).unwrap();
                green::fs::read(&p).unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), vec![i as u8; 5000]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
