//! A region shared by two real processes. This test binary re-runs itself
//! as the child (one test, selected with `--exact`, with `GREEN_SHM_CHILD`
//! set), its end of a socket pair inherited as fd 3. The parent creates
//! the region and its own (client) arena and sends both memfds over the
//! socket; the child checks the parent's credentials, attaches
//! (validating everything), sends back the memfd of the server arena it
//! makes, and serves requests: every body is checked on both sides, every descriptor handed
//! back is checked against the owner's arena.

#![cfg(not(miri))] // memfd, mmap, sockets and exec: not available under Miri

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use green::ring::{Consumer, Producer, PushError, WaitOutcome};
use green::shm::{
    self, CredentialPolicy, Desc, Endpoint, OwnArena, PeerArena, Region, RegionLayout,
};

mod common;
use common::wait_child;

const CHILD_ENV: &str = "GREEN_SHM_CHILD";
/// The fd number the child finds its socket at.
const CHILD_FD: RawFd = 3;
/// Upper bound on the whole test; reaching it is a failure, not a hang.
const DEADLINE: Duration = Duration::from_secs(60);
const HELLO: &[u8] = b"green-shm-test v1";

/// Opcodes of this test's little protocol.
const OP_CALL: u32 = 1;
const OP_RELEASE: u32 = 2;
const OP_DONE: u32 = 3;
const OP_REPLY: u32 = 10;

/// Requests in flight at once.
const IN_FLIGHT: u64 = 8;
/// Largest body; `IN_FLIGHT` of them fit each 1 MiB arena.
const MAX_BODY: u64 = 64 * 1024;

fn calls() -> u64 {
    if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    }
}

fn body_len(id: u64) -> u64 {
    match id % 4 {
        0 => id % 8,
        1 => id % 700,
        2 => 4096,
        _ => id * 7919 % (MAX_BODY + 1),
    }
}

fn byte(id: u64, i: u64) -> u8 {
    (id.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8
}

/// Pushes `d`, backing off while the ring is full.
fn push(tx: &mut Producer<Desc>, mut d: Desc, mut alive: impl FnMut() -> bool, start: Instant) {
    loop {
        match tx.push(d) {
            Ok(()) => break,
            Err(PushError::Full(v)) => {
                assert!(alive() && start.elapsed() < DEADLINE, "ring stayed full");
                d = v;
                thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    tx.notify().unwrap();
}

/// Pops the next descriptor, sleeping on the ring's futex when empty.
fn pop(rx: &mut Consumer<Desc>, mut alive: impl FnMut() -> bool, start: Instant) -> Desc {
    loop {
        if let Some(d) = rx.pop().unwrap() {
            return d;
        }
        match rx
            .wait(Duration::from_micros(20), Some(Duration::from_millis(200)))
            .unwrap()
        {
            WaitOutcome::Ready => {}
            WaitOutcome::TimedOut => {
                assert!(alive(), "peer exited");
                assert!(start.elapsed() < DEADLINE, "stuck");
            }
        }
    }
}

/// The child: attach and serve until OP_DONE. Each response body is the
/// request body with every byte inverted.
fn serve(sock: UnixStream) {
    let start = Instant::now();
    let peer = CredentialPolicy::SameUid.verify(&sock).unwrap();
    assert_eq!(
        peer.pid,
        rustix::process::getppid().unwrap().as_raw_nonzero().get()
    );
    let (fds, payload) = shm::recv_fds(&sock, 2).unwrap();
    assert_eq!(payload, HELLO);
    let [region_fd, arena_fd]: [OwnedFd; 2] = fds.try_into().unwrap();
    let region = Region::attach(region_fd).unwrap();
    let h = *region.header();
    let peer = PeerArena::attach(arena_fd, "client_arena", h.client_arena_len).unwrap();
    let own = OwnArena::create(h.server_arena_len).unwrap();
    shm::send_fd(&sock, own.fd(), HELLO).unwrap();
    let Endpoint {
        mut tx,
        mut rx,
        mut arena,
        peer_arena,
        ..
    } = region.into_server(own, peer).unwrap();
    let mut served = 0u64;
    let mut body = Vec::new();
    loop {
        let req = pop(&mut rx, || true, start);
        match req.opcode {
            OP_CALL => {
                body.resize(req.len as usize, 0);
                peer_arena.copy_from(req.offset, &mut body).unwrap();
                for (i, b) in body.iter_mut().enumerate() {
                    assert_eq!(*b, byte(req.id, i as u64), "request {} byte {i}", req.id);
                    *b = !*b;
                }
                let a = arena
                    .alloc(req.len)
                    .expect("server arena sized for IN_FLIGHT");
                arena.copy_to(a.offset, &body).unwrap();
                let resp = Desc {
                    id: req.id,
                    opcode: OP_REPLY,
                    flags: 0,
                    offset: a.offset,
                    len: a.len,
                };
                push(&mut tx, resp, || true, start);
                served += 1;
            }
            OP_RELEASE => {
                // A handed-back descriptor: must match what we gave out.
                arena.lookup(req.offset, req.len).unwrap();
                arena.free(req.offset).unwrap();
            }
            OP_DONE => break,
            op => panic!("unknown opcode {op}"),
        }
    }
    assert_eq!(served, calls());
    assert_eq!(
        arena.outstanding(),
        0,
        "client did not hand back every response"
    );
    eprintln!("child served {served} calls");
}

/// Runs this test binary's test `name` as the child, with `sock` at fd 3.
fn spawn_child(name: &str, sock: &UnixStream) -> Child {
    let fd = sock.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "serve");
    // SAFETY: the hook runs between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            // dup2 gives the new fd no FD_CLOEXEC; if the socket already is
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

#[test]
fn calls_cross_processes_with_verified_bodies() {
    if std::env::var(CHILD_ENV).is_ok() {
        // SAFETY: the parent dup2'ed its socket to CHILD_FD for us, and
        // nothing else in this process owns that fd.
        serve(unsafe { UnixStream::from_raw_fd(CHILD_FD) });
        return;
    }
    let start = Instant::now();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let region = Region::create(&RegionLayout::new(64, 64, 1 << 20, 1 << 20)).unwrap();
    let mut child = spawn_child("calls_cross_processes_with_verified_bodies", &theirs);
    drop(theirs);
    CredentialPolicy::SameUid.verify(&ours).unwrap();
    let h = *region.header();
    let own = OwnArena::create(h.client_arena_len).unwrap();
    shm::send_fds(&ours, &[region.fd(), own.fd()], HELLO).unwrap();
    let (fd, payload) = shm::recv_fd(&ours).unwrap();
    assert_eq!(payload, HELLO);
    let peer = PeerArena::attach(fd, "server_arena", h.server_arena_len).unwrap();
    let Endpoint {
        mut tx,
        mut rx,
        mut arena,
        peer_arena,
        ..
    } = region.into_client(own, peer).unwrap();
    let mut alive = || child.try_wait().is_ok_and(|s| s.is_none());

    let n = calls();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut body = Vec::new();
    // Request id -> offset of its body in our arena.
    let mut requests = HashMap::new();
    while done < n {
        while sent < n && sent - done < IN_FLIGHT {
            let len = body_len(sent);
            let a = arena.alloc(len).expect("client arena sized for IN_FLIGHT");
            body.clear();
            body.extend((0..len).map(|i| byte(sent, i)));
            arena.copy_to(a.offset, &body).unwrap();
            let d = Desc {
                id: sent,
                opcode: OP_CALL,
                flags: 0,
                offset: a.offset,
                len,
            };
            push(&mut tx, d, &mut alive, start);
            requests.insert(sent, a.offset);
            sent += 1;
        }
        let resp = pop(&mut rx, &mut alive, start);
        assert_eq!(resp.opcode, OP_REPLY);
        // The server answers in order; the IPC layer will match by id.
        assert_eq!(resp.id, done, "response out of order");
        assert_eq!(resp.len, body_len(resp.id));
        body.resize(resp.len as usize, 0);
        peer_arena.copy_from(resp.offset, &mut body).unwrap();
        for (i, b) in body.iter().enumerate() {
            assert_eq!(
                *b,
                !byte(resp.id, i as u64),
                "response {} byte {i}",
                resp.id
            );
        }
        // Our request body is ours to free once its response is in.
        assert_eq!(arena.outstanding() as u64, sent - done);
        let offset = requests
            .remove(&resp.id)
            .expect("a response to an unknown id");
        arena.free(offset).unwrap();
        done += 1;
        let release = Desc {
            opcode: OP_RELEASE,
            ..resp
        };
        push(&mut tx, release, &mut alive, start);
    }
    push(
        &mut tx,
        Desc {
            opcode: OP_DONE,
            ..Desc::default()
        },
        &mut alive,
        start,
    );
    assert_eq!(arena.outstanding(), 0);
    wait_child(child, DEADLINE);
    eprintln!("parent made {n} calls in {:?}", start.elapsed());
}
