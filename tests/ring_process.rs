//! A ring in a memfd shared by two real processes: this test binary
//! re-runs itself as the child (one test, selected with `--exact`, with
//! `GREEN_RING_CHILD` set), the memfd inherited as fd 3. Entries carry a
//! sequence number and a checksum, both verified; the consumer sleeps with
//! `wait` and is woken through the shared (non-private) futex.

#![cfg(not(miri))] // memfd, mmap and exec: not available under Miri

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use green::ring::{Consumer, Pod, Producer, PushError, RawRing, RingLayout, WaitOutcome};
use memmap2::MmapMut;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};

mod common;
use common::wait_child;

const CHILD_ENV: &str = "GREEN_RING_CHILD";
/// The fd number the child finds the memfd at.
const CHILD_FD: RawFd = 3;
const CAPACITY: u32 = 64;
/// Upper bound on any single test; reaching it is a failure, not a hang.
const DEADLINE: Duration = Duration::from_secs(60);

fn entries() -> u64 {
    if cfg!(debug_assertions) {
        200_000
    } else {
        2_000_000
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Msg {
    seq: u64,
    check: u64,
}

// SAFETY: repr(C), two u64s: no padding, no pointers, any bits valid.
unsafe impl Pod for Msg {}

impl Msg {
    fn new(seq: u64) -> Self {
        Msg {
            seq,
            check: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555,
        }
    }
}

/// Creates a memfd holding a fresh ring and maps it.
fn shared_ring() -> (File, RawRing<Msg>) {
    let size = RingLayout::for_entry::<Msg>(CAPACITY).unwrap().size();
    let fd = memfd_create("green-ring-test", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&fd, size as u64).unwrap();
    let file = File::from(fd);
    // SAFETY: the memfd is ours; only this test and its child map it, and
    // both access it only through ring handles.
    let mut map = unsafe { MmapMut::map_mut(&file) }.unwrap();
    let (ptr, len) = (map.as_mut_ptr(), map.len());
    let map = Arc::new(map);
    // SAFETY: the mapping is page-aligned, `len` bytes, kept alive by the
    // handles via `keep_alive`; this process takes one side only.
    let raw = unsafe { RawRing::<Msg>::init(ptr, len, CAPACITY) }.unwrap();
    (file, raw.keep_alive(map))
}

/// Maps the inherited memfd and attaches to the ring in it.
fn child_ring() -> RawRing<Msg> {
    // SAFETY: the parent dup2'ed the memfd to CHILD_FD for us, and nothing
    // else in this process owns that fd.
    let file = unsafe { File::from_raw_fd(CHILD_FD) };
    // SAFETY: shared with the parent, accessed through ring handles only.
    let mut map = unsafe { MmapMut::map_mut(&file) }.unwrap();
    let (ptr, len) = (map.as_mut_ptr(), map.len());
    // SAFETY: as in `shared_ring`; this process takes one side only.
    let raw = unsafe { RawRing::<Msg>::attach(ptr, len) }.unwrap();
    raw.keep_alive(Arc::new(map))
}

/// Runs this test binary's test `name` as the child, with the memfd at fd
/// 3.
fn spawn_child(name: &str, role: &str, memfd: &File) -> Child {
    let fd = memfd.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role);
    // SAFETY: the hook runs between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            // dup2 gives the new fd no FD_CLOEXEC; if the memfd already is
            // fd 3, dup2 is a no-op, so clear the flag by hand.
            let r = if fd == CHILD_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, CHILD_FD)
            };
            if r == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Pushes `entries()` messages in batches of varying size, notifying after
/// each batch and pausing now and then so the consumer really sleeps.
/// `peer_alive` is polled while the ring stays full, so a dead consumer
/// fails the test instead of hanging it.
fn produce(mut tx: Producer<Msg>, mut peer_alive: impl FnMut() -> bool) {
    let n = entries();
    let start = Instant::now();
    let mut next = 0u64;
    let mut batch = Vec::with_capacity(17);
    while next < n {
        batch.clear();
        batch.extend((next..(next + 1 + next % 17).min(n)).map(Msg::new));
        let mut sent = 0;
        while sent < batch.len() {
            let k = tx.push_slice(&batch[sent..]).unwrap();
            if k == 0 {
                full_ring(&mut peer_alive, start, next);
            }
            sent += k;
        }
        tx.notify().unwrap();
        next += batch.len() as u64;
        if next % 20_000 < 17 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    // A last single push through the one-at-a-time path.
    let mut last = Msg::new(n);
    loop {
        match tx.push(last) {
            Ok(()) => break,
            Err(PushError::Full(v)) => {
                full_ring(&mut peer_alive, start, n);
                last = v;
            }
            Err(e) => panic!("{e}"),
        }
    }
    tx.notify().unwrap();
}

/// Backs off while the ring is full; fails if the consumer is gone or
/// the test ran past its deadline.
fn full_ring(peer_alive: &mut impl FnMut() -> bool, start: Instant, next: u64) {
    thread::yield_now();
    if start.elapsed() > DEADLINE || !peer_alive() {
        panic!("consumer stopped taking entries at {next}");
    }
}

/// Pops and verifies `entries() + 1` messages, sleeping in `wait` when the
/// ring is empty. `peer_alive` is polled on each timeout so a dead peer
/// fails the test instead of hanging it. Returns the number of waits.
fn consume(mut rx: Consumer<Msg>, mut peer_alive: impl FnMut() -> bool) -> u64 {
    let n = entries() + 1;
    let start = Instant::now();
    let mut next = 0u64;
    let mut waits = 0;
    let mut buf = [Msg::new(0); 23];
    while next < n {
        let k = rx.pop_into(&mut buf).unwrap();
        for m in &buf[..k] {
            assert_eq!(*m, Msg::new(next), "wrong entry");
            next += 1;
        }
        if k == 0 {
            waits += 1;
            match rx
                .wait(Duration::from_micros(20), Some(Duration::from_millis(200)))
                .unwrap()
            {
                WaitOutcome::Ready => {}
                WaitOutcome::TimedOut => {
                    assert!(peer_alive(), "producer exited after {next} of {n} entries");
                    assert!(start.elapsed() < DEADLINE, "stuck at {next} of {n}");
                }
            }
        }
    }
    assert_eq!(rx.pop().unwrap(), None);
    waits
}

#[test]
fn child_produces_parent_consumes() {
    if let Some(role) = child_role() {
        assert_eq!(role, "produce");
        // The parent outlives us; it is always alive while we run.
        produce(child_ring().into_producer(), || true);
        return;
    }
    let (memfd, raw) = shared_ring();
    let rx = raw.into_consumer();
    let mut child = spawn_child("child_produces_parent_consumes", "produce", &memfd);
    let waits = consume(rx, || child.try_wait().is_ok_and(|s| s.is_none()));
    eprintln!("parent consumed {} entries, {waits} waits", entries() + 1);
    wait_child(child, DEADLINE);
}

#[test]
fn parent_produces_child_consumes() {
    if let Some(role) = child_role() {
        assert_eq!(role, "consume");
        // The parent outlives us; it is always alive while we run.
        let waits = consume(child_ring().into_consumer(), || true);
        eprintln!("child consumed {} entries, {waits} waits", entries() + 1);
        return;
    }
    let (memfd, raw) = shared_ring();
    let tx = raw.into_producer();
    let mut child = spawn_child("parent_produces_child_consumes", "consume", &memfd);
    produce(tx, || child.try_wait().is_ok_and(|s| s.is_none()));
    wait_child(child, DEADLINE);
}
