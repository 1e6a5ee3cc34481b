//! Connection set-up over a Unix stream socket: passing memfds (the
//! region's, the arenas') with `SCM_RIGHTS`, and checking who is on the
//! other end with `SO_PEERCRED`. These run once per connection.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, sockopt, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Largest payload [`send_fds`] sends and [`recv_fds`] accepts, in bytes.
pub const MAX_PAYLOAD: usize = 4096;

/// Most fds one [`send_fds`] frame carries.
pub const MAX_FDS: usize = 4;

/// Sends `fd` and `payload` as one frame: [`send_fds`] with one fd. The
/// receiver calls [`recv_fd`].
///
/// # Errors
///
/// As [`send_fds`].
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    send_fds(sock, &[fd], payload)
}

/// Sends `fds` (1 to [`MAX_FDS`]) and `payload` (at most [`MAX_PAYLOAD`]
/// bytes, may be empty) as one frame: a native-endian `u32` length, then
/// the payload; the fds ride on the frame's first byte. The receiver
/// calls [`recv_fds`] with the same count.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] for a payload over [`MAX_PAYLOAD`] or
/// an fd count outside `1..=MAX_FDS`; the socket's errors (`EPIPE` if the
/// peer is gone...).
pub fn send_fds(sock: &UnixStream, fds: &[BorrowedFd<'_>], payload: &[u8]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a frame carries 1 to {MAX_FDS} fds, not {}", fds.len()),
        ));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd payload of {} bytes exceeds {MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    let len = (payload.len() as u32).to_ne_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("SCM_RIGHTS does not fit its cmsg buffer"));
    }
    let total = len.len() + payload.len();
    let sent = loop {
        let iov = [IoSlice::new(&len), IoSlice::new(payload)];
        // NOSIGNAL: a vanished peer is an EPIPE error, not a SIGPIPE.
        match sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if sent == total {
        return Ok(());
    }
    // A short send: the fd went with the first bytes; the rest goes
    // without it.
    let frame: Vec<u8> = len.iter().chain(payload).copied().collect();
    send_all(sock, &frame[sent..])
}

/// Sends all of `bytes` on a blocking socket without `SIGPIPE`: a peer
/// that is gone is an `EPIPE` error.
pub(crate) fn send_all(sock: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(&sock, bytes, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives one frame sent by [`send_fd`]: [`recv_fds`] for one fd.
///
/// # Errors
///
/// As [`recv_fds`].
pub fn recv_fd(sock: &UnixStream) -> io::Result<(OwnedFd, Vec<u8>)> {
    let (mut fds, payload) = recv_fds(sock, 1)?;
    match fds.pop() {
        Some(fd) => Ok((fd, payload)),
        None => Err(invalid("handshake frame carries no fd")),
    }
}

/// Receives one frame sent by [`send_fds`]: exactly `count` fds
/// (close-on-exec, in the order sent) and the payload. Reads exactly the
/// frame, nothing after it.
///
/// # Errors
///
/// [`io::ErrorKind::UnexpectedEof`] if the peer closed first;
/// [`io::ErrorKind::InvalidData`] if the frame carries another number of
/// fds (all are closed) or a length over [`MAX_PAYLOAD`]; the socket's
/// errors.
pub fn recv_fds(sock: &UnixStream, count: usize) -> io::Result<(Vec<OwnedFd>, Vec<u8>)> {
    let mut len = [0u8; 4];
    // Room for more fds than a frame carries, so a peer sending extras is
    // detected and they are closed, rather than silently dropped by the
    // kernel.
    const ROOM: usize = MAX_FDS + 4;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(ROOM))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        let mut iov = [IoSliceMut::new(&mut len)];
        match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if msg.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed the socket before sending the region fd",
        ));
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        // Truncated with room to spare: the kernel could not install
        // the fds here (this process is at its descriptor limit), not a
        // peer sending too many.
        if fds.len() < ROOM {
            let e = io::Error::from(Errno::MFILE);
            return Err(io::Error::new(
                e.kind(),
                format!("could not receive the peer's fds: {e}"),
            ));
        }
        return Err(invalid(
            "the peer sent more fds than a region handshake carries",
        ));
    }
    if fds.len() != count {
        return Err(invalid(if fds.is_empty() {
            "handshake frame carries no fd".to_owned()
        } else {
            format!(
                "handshake frame carries {} fds, expected {count}",
                fds.len()
            )
        }));
    }
    // The rest of the length word, then the payload: plain reads.
    (&*sock).read_exact(&mut len[msg.bytes..])?;
    let n = u32::from_ne_bytes(len) as usize;
    if n > MAX_PAYLOAD {
        return Err(invalid(format!(
            "handshake payload of {n} bytes exceeds {MAX_PAYLOAD}"
        )));
    }
    let mut payload = vec![0u8; n];
    (&*sock).read_exact(&mut payload)?;
    Ok((fds, payload))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Who is on the other end of a Unix socket, as the kernel recorded it at
/// `connect` (or `socketpair`) time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The peer's credentials, from `SO_PEERCRED`.
///
/// # Errors
///
/// The socket's errors (for example `ENOTCONN`).
pub fn peer_credentials(sock: &UnixStream) -> io::Result<PeerCredentials> {
    let cred = sockopt::socket_peercred(sock)?;
    Ok(PeerCredentials {
        pid: cred.pid.as_raw_nonzero().get(),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// Which peers a server (or client) accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CredentialPolicy {
    /// Only peers running as this process's effective uid.
    #[default]
    SameUid,
    /// Only peers running as one of these uids (this process's own uid is
    /// not implied).
    Allow(Vec<u32>),
    /// Anyone who can reach the socket.
    Any,
}

impl CredentialPolicy {
    /// Whether `peer` passes.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::PermissionDenied`], naming the peer and the rule.
    pub fn check(&self, peer: &PeerCredentials) -> io::Result<()> {
        let ok = match self {
            CredentialPolicy::SameUid => peer.uid == rustix::process::geteuid().as_raw(),
            CredentialPolicy::Allow(uids) => uids.contains(&peer.uid),
            CredentialPolicy::Any => true,
        };
        if ok {
            return Ok(());
        }
        let rule = match self {
            CredentialPolicy::SameUid => format!(
                "only uid {} (ours) is allowed",
                rustix::process::geteuid().as_raw()
            ),
            CredentialPolicy::Allow(uids) => format!("allowed uids are {uids:?}"),
            CredentialPolicy::Any => unreachable!("Any accepts everyone"),
        };
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "peer pid {} uid {} gid {} refused: {rule}",
                peer.pid, peer.uid, peer.gid
            ),
        ))
    }

    /// Reads the peer's credentials from `sock` and checks them.
    ///
    /// # Errors
    ///
    /// As [`peer_credentials`] and [`check`](Self::check).
    pub fn verify(&self, sock: &UnixStream) -> io::Result<PeerCredentials> {
        let peer = peer_credentials(sock)?;
        self.check(&peer)?;
        Ok(peer)
    }
}
