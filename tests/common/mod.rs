//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh scratch directory, removed on drop: unique per test binary,
/// process and call.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "green-{}-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` pseudo-random bytes (xorshift), distinct for every `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `f` on a std thread and fails the test if it takes over 60 s.
pub fn watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("watchdog: test hung for 60 s"),
    }
}

/// Waits for a child process to exit successfully within `deadline`
/// (killing it and failing the test otherwise).
pub fn wait_child(mut child: Child, deadline: Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if start.elapsed() > deadline {
            child.kill().ok();
            panic!("child did not finish in {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server child process (this test binary re-executed to run its
/// `child_server` test), listening on `path`; killed and its socket
/// removed on drop.
pub struct ServerProc {
    pub child: Child,
    pub path: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts this binary's `child_server` test as a server on a fresh socket
/// path (unique per process and `name`) passed in `$path_var`, with the
/// extra environment `env`; returns once the socket exists.
pub fn spawn_server(path_var: &str, name: &str, env: &[(&str, &str)]) -> ServerProc {
    let path = std::env::temp_dir().join(format!("green-ipc-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_server", "--exact", "--nocapture", "--test-threads=1"])
        .env(path_var, &path)
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    // From here on a failure kills the child (drop).
    let server = ServerProc { child, path };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.path.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    server
}

/// xorshift64*: reproducible garbage for the hostile-peer tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick(&mut self, choices: &[u64]) -> u64 {
        choices[self.below(choices.len() as u64) as usize]
    }
}

/// The `u32` at byte `at` of `ring`, an area of the region mapped (read-
/// write) by `map`: for tests that play a peer writing any word it can.
pub fn ring_word(
    map: &memmap2::MmapRaw,
    ring: green::shm::Area,
    at: u64,
) -> &std::sync::atomic::AtomicU32 {
    assert!(at % 4 == 0 && at + 4 <= ring.len);
    assert!(ring.offset + ring.len <= map.len() as u64);
    // SAFETY: the word lies inside the mapping (checked above) and is
    // 4-aligned (areas are page-aligned and `at` is a multiple of 4).
    // Every bit pattern is a valid `AtomicU32`, and atomics tolerate the
    // peer's concurrent accesses to the same word.
    unsafe {
        &*map
            .as_mut_ptr()
            .add((ring.offset + at) as usize)
            .cast::<std::sync::atomic::AtomicU32>()
    }
}
