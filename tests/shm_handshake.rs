//! The connection handshake: a memfd passed with SCM_RIGHTS over a Unix
//! socket pair, framing of the payload, refusals of malformed frames, and
//! SO_PEERCRED policies.

#![cfg(not(miri))] // sockets and memfd: not available under Miri

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use green::shm::{
    peer_credentials, recv_fd, send_fd, CredentialPolicy, PeerCredentials, MAX_PAYLOAD,
};
use rustix::fs::{fstat, memfd_create, MemfdFlags};
use rustix::io::{fcntl_getfd, FdFlags};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

fn memfd() -> OwnedFd {
    memfd_create("green-handshake-test", MemfdFlags::CLOEXEC).unwrap()
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let (a, b) = (fstat(a).unwrap(), fstat(b).unwrap());
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Sends `frame` with `fds` attached as one `sendmsg`, bypassing
/// `send_fds`'s checks, as a misbehaving peer would.
fn send_raw(sock: &UnixStream, fds: &[std::os::fd::BorrowedFd<'_>], frame: &[u8]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    sendmsg(
        sock,
        &[io::IoSlice::new(frame)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
}

#[test]
fn fd_and_payload_cross_a_socket_pair() {
    let (a, b) = UnixStream::pair().unwrap();
    let fd = memfd();
    send_fd(&a, fd.as_fd(), b"region v1").unwrap();
    let (got, payload) = recv_fd(&b).unwrap();
    assert_eq!(payload, b"region v1");
    assert!(same_file(&fd, &got));
    assert!(fcntl_getfd(&got).unwrap().contains(FdFlags::CLOEXEC));
}

#[test]
fn frames_are_read_exactly() {
    let (a, b) = UnixStream::pair().unwrap();
    let (f1, f2) = (memfd(), memfd());
    let big = vec![0xA5u8; MAX_PAYLOAD];
    send_fd(&a, f1.as_fd(), b"").unwrap();
    send_fd(&a, f2.as_fd(), &big).unwrap();
    (&a).write_all(b"after").unwrap();
    let (g1, p1) = recv_fd(&b).unwrap();
    let (g2, p2) = recv_fd(&b).unwrap();
    assert!(p1.is_empty() && same_file(&f1, &g1));
    assert_eq!(p2, big);
    assert!(same_file(&f2, &g2));
    let mut rest = [0u8; 5];
    io::Read::read_exact(&mut &b, &mut rest).unwrap();
    assert_eq!(&rest, b"after");
}

#[test]
fn oversized_payload_is_refused_at_send() {
    let (a, _b) = UnixStream::pair().unwrap();
    let e = send_fd(&a, memfd().as_fd(), &vec![0; MAX_PAYLOAD + 1]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn frame_without_fd_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    (&a).write_all(&3u32.to_ne_bytes()).unwrap();
    (&a).write_all(b"abc").unwrap();
    let e = recv_fd(&b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("no fd"), "{e}");
}

#[test]
fn frame_with_two_fds_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let (f1, f2) = (memfd(), memfd());
    let fds = [f1.as_fd(), f2.as_fd()];
    send_raw(&a, &fds, &0u32.to_ne_bytes());
    let e = recv_fd(&b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("2 fds"), "{e}");
}

#[test]
fn frame_with_more_fds_than_any_frame_carries_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let files: Vec<OwnedFd> = (0..12).map(|_| memfd()).collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    send_raw(&a, &fds, &0u32.to_ne_bytes());
    let e = recv_fd(&b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("more fds"), "{e}");
}

/// Set in the child that [`a_receiver_out_of_descriptors_says_so`] runs.
const NOFILE_CHILD: &str = "GREEN_TEST_NOFILE_CHILD";

/// A process at its descriptor limit cannot take in a passed fd: the
/// kernel drops it and flags the message truncated. That is reported as
/// this process's shortage, not as a peer sending too many. Runs in a
/// child process (this test binary again), whose limit can be lowered
/// without starving the other tests.
#[test]
fn a_receiver_out_of_descriptors_says_so() {
    if std::env::var_os(NOFILE_CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_receiver_out_of_descriptors_says_so"])
            .args(["--test-threads", "1", "--nocapture"])
            .env(NOFILE_CHILD, "1")
            .output()
            .unwrap();
        let says = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{says}{err}");
        assert!(says.contains("1 passed"), "{says}");
        return;
    }
    let (a, b) = UnixStream::pair().unwrap();
    let fd = memfd();
    send_fd(&a, fd.as_fd(), b"region").unwrap();
    // No room for one more descriptor: a new one takes the lowest free
    // number, and the limit is on numbers.
    let lowest_free = rustix::io::dup(&a).unwrap().as_raw_fd() as u64;
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(lowest_free),
            maximum: max,
        },
    )
    .unwrap();
    let e = recv_fd(&b).unwrap_err();
    assert!(e.to_string().contains("could not receive"), "{e}");
    assert!(e.to_string().contains("Too many open files"), "{e}");
}

#[test]
fn oversized_length_is_refused_at_recv() {
    let (a, b) = UnixStream::pair().unwrap();
    // A well-formed fd with a forged length word.
    let fd = memfd();
    let fds = [fd.as_fd()];
    send_raw(&a, &fds, &u32::MAX.to_ne_bytes());
    let e = recv_fd(&b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("exceeds"), "{e}");
}

#[test]
fn peer_gone_is_eof_or_pipe() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    assert_eq!(
        recv_fd(&b).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    let e = send_fd(&b, memfd().as_fd(), b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
}

#[test]
fn peer_credentials_are_ours_on_a_pair() {
    let (a, _b) = UnixStream::pair().unwrap();
    let cred = peer_credentials(&a).unwrap();
    assert_eq!(cred.pid, std::process::id() as i32);
    assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
    assert_eq!(cred.gid, rustix::process::getegid().as_raw());
}

#[test]
fn same_uid_and_matching_allowlist_are_accepted() {
    let (a, _b) = UnixStream::pair().unwrap();
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(CredentialPolicy::default(), CredentialPolicy::SameUid);
    CredentialPolicy::SameUid.verify(&a).unwrap();
    CredentialPolicy::Allow(vec![uid.wrapping_add(1), uid])
        .verify(&a)
        .unwrap();
    CredentialPolicy::Any.verify(&a).unwrap();
}

#[test]
fn allowlist_without_our_uid_is_denied() {
    let (a, _b) = UnixStream::pair().unwrap();
    let uid = rustix::process::geteuid().as_raw();
    for policy in [
        CredentialPolicy::Allow(vec![uid.wrapping_add(1)]),
        CredentialPolicy::Allow(Vec::new()),
    ] {
        let e = policy.verify(&a).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains(&format!("uid {uid}")), "{e}");
    }
    // SameUid refuses a stranger.
    let stranger = PeerCredentials {
        pid: 1,
        uid: uid.wrapping_add(1),
        gid: 0,
    };
    let e = CredentialPolicy::SameUid.check(&stranger).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    CredentialPolicy::Any.check(&stranger).unwrap();
}
