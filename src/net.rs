//! TCP and UDP sockets with std::net's API; on a green thread each blocking
//! call goes over the carrier's kernel ring.
//!
//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`] wrap the std types and
//! keep the socket in std's mode (blocking unless `set_nonblocking(true)`).
//! A call that may block (accept, connect, recv, send, shutdown) made on a
//! green thread whose carrier has an io_uring becomes one ring operation:
//! the green thread suspends, the carrier runs others, and the call returns
//! what std would have returned. Anywhere else (a plain OS thread, the
//! blocking backend, a nonblocking socket) it is exactly std's call.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let listener = green::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = green::spawn(move || {
//!     let (mut s, _) = listener.accept().unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).unwrap();
//!     s.write_all(&buf).unwrap();
//! });
//! let client = green::spawn(move || {
//!     let mut c = green::net::TcpStream::connect(addr).unwrap();
//!     c.write_all(b"hello").unwrap();
//!     let mut buf = [0u8; 5];
//!     c.read_exact(&mut buf).unwrap();
//!     buf
//! });
//! server.join().unwrap();
//! assert_eq!(&client.join().unwrap(), b"hello");
//! ```
//!
//! Timeouts set with `set_read_timeout`/`set_write_timeout` are set on the
//! socket (so std's path honours them) and also remembered in state shared
//! by `try_clone`d handles; a ring operation carries the timeout as a
//! linked timeout and reports its expiry as `WouldBlock`, as std does.
//! A timed-out operation is cancelled and its completion awaited before the
//! call returns, so the kernel never writes into the caller's buffer after.
//!
//! A socket that is nonblocking never goes to the ring: its calls are
//! std's nonblocking syscalls, which cannot block the carrier.
//!
//! Name resolution (`ToSocketAddrs` with a host name) is std's blocking
//! resolver and blocks the carrier while it runs.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::driver::{green_op, on_ring};
use crate::sys::uring::{op, Sqe};

pub use std::net::{
    AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6,
    ToSocketAddrs,
};

/// The four timeout methods of a socket wrapper with `inner` (the std
/// socket) and `state` (its shared `SockState`): std's setters and getters,
/// with the setters also recording the timeout for the ring path.
macro_rules! socket_timeouts {
    () => {
        /// Sets the read timeout (`None`: block forever; zero: InvalidInput).
        /// Honoured on green threads and by std's path alike.
        pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
            self.inner.set_read_timeout(dur)?;
            self.state.set_timeout(crate::net::Dir::Read, dur);
            Ok(())
        }

        /// Sets the write timeout (`None`: block forever; zero: InvalidInput).
        pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
            self.inner.set_write_timeout(dur)?;
            self.state.set_timeout(crate::net::Dir::Write, dur);
            Ok(())
        }

        /// The read timeout, as the kernel reports it (std's getter).
        pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
            self.inner.read_timeout()
        }

        /// The write timeout, as the kernel reports it (std's getter).
        pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
            self.inner.write_timeout()
        }
    };
}
pub(crate) use socket_timeouts;

/// `Read` and `Write` for a stream wrapper and for a shared reference to
/// it: RECV/READV and SEND (with `$send_flags`)/WRITEV on the ring, std's
/// calls otherwise.
macro_rules! stream_io {
    ($ty:ty, $send_flags:expr) => {
        impl ::std::io::Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl ::std::io::Read for &$ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                crate::net::recv(self.inner.as_raw_fd(), &self.state, buf, 0)
                    .unwrap_or_else(|| (&self.inner).read(buf))
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                crate::net::readv(self.inner.as_raw_fd(), &self.state, bufs)
                    .unwrap_or_else(|| (&self.inner).read_vectored(bufs))
            }
        }

        impl ::std::io::Write for $ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl ::std::io::Write for &$ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                crate::net::send(self.inner.as_raw_fd(), &self.state, buf, $send_flags)
                    .unwrap_or_else(|| (&self.inner).write(buf))
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                crate::net::writev(self.inner.as_raw_fd(), &self.state, bufs)
                    .unwrap_or_else(|| (&self.inner).write_vectored(bufs))
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}
pub(crate) use stream_io;

/// Longest buffer one ring op is given: the kernel caps a single read or
/// write at `MAX_RW_COUNT` anyway, and the result must fit an `i32`.
const MAX_LEN: usize = 0x7fff_f000;
/// std caps vectored I/O at `IOV_MAX` buffers.
const IOV_MAX: usize = 1024;

// ---------------------------------------------------------------------------
// Per-socket state shared between try_clone'd handles.

/// Which direction a timeout applies to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// What a ring op needs to know about a socket that the fd cannot tell it
/// without a syscall: its timeouts and whether it is nonblocking. Shared
/// (`Arc`) by handles made with `try_clone`, which share the socket and its
/// file description, so a setting made through one applies to all, as it
/// does for the kernel's own `SO_RCVTIMEO` and `O_NONBLOCK`.
///
/// Timeouts are stored in nanoseconds, `0` meaning none (std rejects a zero
/// timeout, so it is free). Every access is `Relaxed`: each field is an
/// independent setting that guards no other memory, like the socket option
/// it mirrors.
#[derive(Debug, Default)]
pub(crate) struct SockState {
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    nonblocking: AtomicBool,
}

impl SockState {
    /// State of a socket this crate just made: blocking, no timeouts.
    pub(crate) fn fresh() -> Arc<SockState> {
        Arc::new(SockState::default())
    }

    /// State of a socket handed in from elsewhere, read from the kernel.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> Arc<SockState> {
        use rustix::net::sockopt::{socket_timeout, Timeout};
        let s = SockState::default();
        s.set_timeout(Dir::Read, socket_timeout(fd, Timeout::Recv).ok().flatten());
        s.set_timeout(Dir::Write, socket_timeout(fd, Timeout::Send).ok().flatten());
        let nb = rustix::fs::fcntl_getfl(fd)
            .map(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
            .unwrap_or(false);
        s.nonblocking.store(nb, Ordering::Relaxed);
        Arc::new(s)
    }

    fn slot(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Read => &self.read_timeout,
            Dir::Write => &self.write_timeout,
        }
    }

    /// The timeout of `dir`.
    pub(crate) fn timeout(&self, dir: Dir) -> Option<Duration> {
        match self.slot(dir).load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Remembers the timeout of `dir` (after std has validated and set it).
    pub(crate) fn set_timeout(&self, dir: Dir, d: Option<Duration>) {
        let ns = d.map_or(0, |d| d.as_nanos().clamp(1, u64::MAX as u128) as u64);
        self.slot(dir).store(ns, Ordering::Relaxed);
    }

    /// Remembers the socket's blocking mode (after std has set it).
    pub(crate) fn set_nonblocking(&self, nb: bool) {
        self.nonblocking.store(nb, Ordering::Relaxed);
    }

    /// Runs `sqe` on the ring with `dir`'s timeout, unless the socket is
    /// nonblocking or the caller is not on a ring (then None: do std's
    /// call).
    ///
    /// # Safety
    ///
    /// As [`green_op`]: the entry's pointers stay valid until this returns.
    pub(crate) unsafe fn op(
        &self,
        sqe: Sqe,
        dir: Option<Dir>,
        name: &str,
    ) -> Option<io::Result<u32>> {
        if self.nonblocking.load(Ordering::Relaxed) {
            return None;
        }
        let timeout = dir.and_then(|d| self.timeout(d));
        // SAFETY: forwarded from the caller.
        unsafe { green_op(sqe, timeout, name) }
    }
}

// ---------------------------------------------------------------------------
// Ring ops on a socket fd, shared with os::unix::net. Each returns None when
// the caller must do std's call instead.

/// `recv(fd, buf, flags)`.
pub(crate) fn recv(
    fd: RawFd,
    st: &SockState,
    buf: &mut [u8],
    flags: i32,
) -> Option<io::Result<usize>> {
    let sqe = Sqe {
        opcode: op::RECV,
        fd,
        addr: buf.as_mut_ptr() as u64,
        len: buf.len().min(MAX_LEN) as u32,
        op_flags: flags as u32,
        ..Sqe::default()
    };
    // SAFETY: `buf` is borrowed for the whole call, which returns only after
    // the completion.
    unsafe { st.op(sqe, Some(Dir::Read), "recv") }.map(|r| r.map(|n| n as usize))
}

/// `send(fd, buf, flags)`.
pub(crate) fn send(fd: RawFd, st: &SockState, buf: &[u8], flags: i32) -> Option<io::Result<usize>> {
    let sqe = Sqe {
        opcode: op::SEND,
        fd,
        addr: buf.as_ptr() as u64,
        len: buf.len().min(MAX_LEN) as u32,
        op_flags: flags as u32,
        ..Sqe::default()
    };
    // SAFETY: `buf` is borrowed for the whole call.
    unsafe { st.op(sqe, Some(Dir::Write), "send") }.map(|r| r.map(|n| n as usize))
}

/// `readv(fd, bufs)`.
pub(crate) fn readv(
    fd: RawFd,
    st: &SockState,
    bufs: &mut [IoSliceMut<'_>],
) -> Option<io::Result<usize>> {
    let sqe = Sqe {
        opcode: op::READV,
        fd,
        // std guarantees IoSliceMut is ABI-compatible with `struct iovec`.
        addr: bufs.as_mut_ptr() as u64,
        len: bufs.len().min(IOV_MAX) as u32,
        // -1: no file position (a socket has none).
        off: u64::MAX,
        ..Sqe::default()
    };
    // SAFETY: `bufs` and the buffers they point to are borrowed for the
    // whole call.
    unsafe { st.op(sqe, Some(Dir::Read), "readv") }.map(|r| r.map(|n| n as usize))
}

/// `writev(fd, bufs)`.
pub(crate) fn writev(fd: RawFd, st: &SockState, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
    let sqe = Sqe {
        opcode: op::WRITEV,
        fd,
        // std guarantees IoSlice is ABI-compatible with `struct iovec`.
        addr: bufs.as_ptr() as u64,
        len: bufs.len().min(IOV_MAX) as u32,
        off: u64::MAX,
        ..Sqe::default()
    };
    // SAFETY: `bufs` and the buffers they point to are borrowed for the
    // whole call.
    unsafe { st.op(sqe, Some(Dir::Write), "writev") }.map(|r| r.map(|n| n as usize))
}

/// `shutdown(fd, how)`.
pub(crate) fn shutdown(fd: RawFd, how: Shutdown) -> Option<io::Result<()>> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    let sqe = Sqe {
        opcode: op::SHUTDOWN,
        fd,
        len: how as u32,
        ..Sqe::default()
    };
    // SAFETY: the entry holds no pointers. Shutdown never blocks, so the
    // socket's mode does not matter.
    unsafe { green_op(sqe, None, "shutdown") }.map(|r| r.map(drop))
}

/// `accept4(fd, addr, len, SOCK_CLOEXEC)`, like std's accept. `storage`
/// receives the peer's address and `len` its length.
///
/// # Safety
///
/// `storage` must be valid for writes of `*len` bytes until this returns.
pub(crate) unsafe fn accept(
    fd: RawFd,
    st: &SockState,
    storage: *mut libc::sockaddr,
    len: &mut libc::socklen_t,
) -> Option<io::Result<OwnedFd>> {
    let sqe = Sqe {
        opcode: op::ACCEPT,
        fd,
        addr: storage as u64,
        off: len as *mut libc::socklen_t as u64,
        op_flags: libc::SOCK_CLOEXEC as u32,
        ..Sqe::default()
    };
    // SAFETY: `storage` is valid for `*len` bytes (the caller's contract)
    // and `len` is borrowed, both until the call returns.
    let r = unsafe { st.op(sqe, None, "accept") }?;
    Some(r.map(|fd| {
        // SAFETY: a successful accept returns a new fd that nothing else
        // owns.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    }))
}

/// `connect(fd, addr, len)` with an optional timeout (expiry: WouldBlock).
///
/// # Safety
///
/// `addr` must be valid for reads of `len` bytes until this returns.
pub(crate) unsafe fn connect(
    fd: RawFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    timeout: Option<Duration>,
) -> Option<io::Result<()>> {
    let sqe = Sqe {
        opcode: op::CONNECT,
        fd,
        addr: addr as u64,
        off: len as u64,
        ..Sqe::default()
    };
    // SAFETY: `addr` is valid for `len` bytes until the call returns (the
    // caller's contract).
    unsafe { green_op(sqe, timeout, "connect") }.map(|r| r.map(drop))
}

/// A new blocking, close-on-exec socket, as std makes them.
pub(crate) fn socket(family: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful socket(2) returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------
// Socket addresses <-> sockaddr_in / sockaddr_in6.

/// std's error for an address of a family it does not know.
fn invalid_addr() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "invalid argument")
}

/// A `SocketAddr` as the kernel's `sockaddr_in`/`sockaddr_in6`, in a
/// `sockaddr_storage`, with its length.
pub(crate) fn addr_to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain integers; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                // s_addr is in network order: the octets as they are.
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is at least as large and as aligned as
            // any sockaddr type (its purpose), so the write is in bounds and
            // aligned.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in).write(sin)
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                // Flow info and scope id in host order, as std passes them.
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe {
                (&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6).write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The `SocketAddr` in a `sockaddr_storage` the kernel filled with `len`
/// bytes. A family other than IPv4/IPv6, or a length too short for its
/// family, is std's InvalidInput error.
pub(crate) fn raw_to_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> io::Result<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as i32 {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for one.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6)
            };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(invalid_addr()),
    }
}

/// std's `each_addr`: tries `f` on every address `addr` resolves to and
/// returns the first success or the last error.
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last_err = None;
    for a in addr.to_socket_addrs()? {
        match f(&a) {
            Ok(v) => return Ok(v),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// Connects a new TCP socket to `addr` over the ring (the caller is on
/// one).
fn connect_ring(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<std::net::TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = socket(family, libc::SOCK_STREAM)?;
    let (raw, len) = addr_to_raw(addr);
    let raw_ptr = &raw as *const libc::sockaddr_storage as *const libc::sockaddr;
    // SAFETY: `raw` holds `len` bytes of address and outlives the call.
    match unsafe { connect(fd.as_raw_fd(), raw_ptr, len, timeout) } {
        Some(Ok(())) => {}
        Some(Err(e)) if timeout.is_some() && e.kind() == io::ErrorKind::WouldBlock => {
            // The linked timeout fired: std's connect_timeout error.
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ));
        }
        Some(Err(e)) => return Err(e),
        None => {
            // Not on a ring after all (cannot happen: the caller checked):
            // std's connect on a socket of its own.
            drop(fd);
            return match timeout {
                Some(t) => std::net::TcpStream::connect_timeout(addr, t),
                None => std::net::TcpStream::connect(addr),
            };
        }
    }
    Ok(std::net::TcpStream::from(fd))
}

// ---------------------------------------------------------------------------
// TcpStream

/// A TCP connection, with std's `TcpStream` API. See the [module
/// docs](self).
pub struct TcpStream {
    inner: std::net::TcpStream,
    state: Arc<SockState>,
}

impl TcpStream {
    /// Opens a TCP connection to `addr`, trying each address it resolves to
    /// in turn (std's `TcpStream::connect`).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        if !on_ring() {
            return std::net::TcpStream::connect(addr).map(TcpStream::fresh);
        }
        each_addr(addr, |a| connect_ring(a, None)).map(TcpStream::fresh)
    }

    /// Opens a TCP connection to `addr`, failing with `TimedOut` after
    /// `timeout` (std's `TcpStream::connect_timeout`; a zero timeout is
    /// InvalidInput).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if !on_ring() || timeout.is_zero() {
            return std::net::TcpStream::connect_timeout(addr, timeout).map(TcpStream::fresh);
        }
        connect_ring(addr, Some(timeout)).map(TcpStream::fresh)
    }

    fn fresh(inner: std::net::TcpStream) -> TcpStream {
        TcpStream {
            inner,
            state: SockState::fresh(),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        shutdown(self.inner.as_raw_fd(), how).unwrap_or_else(|| self.inner.shutdown(how))
    }

    /// A new handle to the same socket, sharing its timeouts and mode.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            inner: self.inner.try_clone()?,
            state: self.state.clone(),
        })
    }

    crate::net::socket_timeouts!();

    /// Receives data without removing it from the queue.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.inner.as_raw_fd(), &self.state, buf, libc::MSG_PEEK)
            .unwrap_or_else(|| self.inner.peek(buf))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Gets `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Moves the socket into or out of nonblocking mode. A nonblocking
    /// socket's calls are std's syscalls (they return `WouldBlock` at once,
    /// on a green thread too).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.state.set_nonblocking(nonblocking);
        Ok(())
    }
}

// MSG_NOSIGNAL: std's TcpStream::write reports a closed peer as EPIPE,
// never SIGPIPE.
crate::net::stream_io!(TcpStream, libc::MSG_NOSIGNAL);

crate::wrap::std_wrapper!(TcpStream, std::net::TcpStream, |inner| TcpStream {
    state: SockState::of(inner.as_fd()),
    inner,
});

// ---------------------------------------------------------------------------
// TcpListener

/// A TCP socket server, with std's `TcpListener` API. See the [module
/// docs](self).
pub struct TcpListener {
    inner: std::net::TcpListener,
    state: Arc<SockState>,
}

impl TcpListener {
    /// Binds a listener to `addr` (std's `TcpListener::bind`; binding does
    /// not block).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        std::net::TcpListener::bind(addr).map(|inner| TcpListener {
            inner,
            state: SockState::fresh(),
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A new handle to the same socket.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener {
            inner: self.inner.try_clone()?,
            state: self.state.clone(),
        })
    }

    /// Accepts a connection: the stream (close-on-exec, blocking) and the
    /// peer's address.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let ptr = &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr;
        // SAFETY: `storage` is `len` bytes and outlives the call.
        match unsafe { accept(self.inner.as_raw_fd(), &self.state, ptr, &mut len) } {
            Some(r) => {
                let stream = TcpStream::fresh(std::net::TcpStream::from(r?));
                Ok((stream, raw_to_addr(&storage, len)?))
            }
            None => self.inner.accept().map(|(s, a)| (TcpStream::fresh(s), a)),
        }
    }

    /// An iterator over accepted connections (never returns None).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Moves the socket into or out of nonblocking mode (a nonblocking
    /// `accept` returns `WouldBlock` at once, on a green thread too).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.state.set_nonblocking(nonblocking);
        Ok(())
    }
}

/// An iterator over a listener's connections; see [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

crate::wrap::std_wrapper!(TcpListener, std::net::TcpListener, |inner| TcpListener {
    state: SockState::of(inner.as_fd()),
    inner,
});

// ---------------------------------------------------------------------------
// UdpSocket

/// A UDP socket, with std's `UdpSocket` API. See the [module docs](self).
pub struct UdpSocket {
    inner: std::net::UdpSocket,
    state: Arc<SockState>,
}

impl UdpSocket {
    /// Binds a socket to `addr` (std's `UdpSocket::bind`).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        std::net::UdpSocket::bind(addr).map(|inner| UdpSocket {
            inner,
            state: SockState::fresh(),
        })
    }

    /// `recvmsg` with an address, over the ring.
    fn recv_msg(&self, buf: &mut [u8], flags: i32) -> Option<io::Result<(usize, SocketAddr)>> {
        // SAFETY: sockaddr_storage and msghdr are plain integers and
        // pointers; all-zero is valid for both.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len().min(MAX_LEN),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let sqe = Sqe {
            opcode: op::RECVMSG,
            fd: self.inner.as_raw_fd(),
            addr: &mut msg as *mut libc::msghdr as u64,
            len: 1,
            op_flags: flags as u32,
            ..Sqe::default()
        };
        // SAFETY: msg, iov, storage and buf live until the call returns.
        let r = unsafe { self.state.op(sqe, Some(Dir::Read), "recvmsg") }?;
        Some(r.and_then(|n| Ok((n as usize, raw_to_addr(&storage, msg.msg_namelen)?))))
    }

    /// Receives one datagram and its sender's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_msg(buf, 0)
            .unwrap_or_else(|| self.inner.recv_from(buf))
    }

    /// Receives one datagram without removing it from the queue.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_msg(buf, libc::MSG_PEEK)
            .unwrap_or_else(|| self.inner.peek_from(buf))
    }

    /// Sends one datagram to `addr` (its first resolved address).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let Some(addr) = addr.to_socket_addrs()?.next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        let (mut raw, len) = addr_to_raw(&addr);
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len().min(MAX_LEN),
        };
        // SAFETY: msghdr is plain integers and pointers; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut raw as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let sqe = Sqe {
            opcode: op::SENDMSG,
            fd: self.inner.as_raw_fd(),
            addr: &msg as *const libc::msghdr as u64,
            len: 1,
            op_flags: libc::MSG_NOSIGNAL as u32,
            ..Sqe::default()
        };
        // SAFETY: msg, iov, raw and buf live until the call returns; the
        // kernel only reads through them.
        match unsafe { self.state.op(sqe, Some(Dir::Write), "sendmsg") } {
            Some(r) => r.map(|n| n as usize),
            None => self.inner.send_to(buf, addr),
        }
    }

    /// Connects the socket to a default peer for `send`/`recv`.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.inner.connect(addr)
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        send(self.inner.as_raw_fd(), &self.state, buf, libc::MSG_NOSIGNAL)
            .unwrap_or_else(|| self.inner.send(buf))
    }

    /// Receives one datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.inner.as_raw_fd(), &self.state, buf, 0).unwrap_or_else(|| self.inner.recv(buf))
    }

    /// Receives one datagram from the connected peer without removing it.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.inner.as_raw_fd(), &self.state, buf, libc::MSG_PEEK)
            .unwrap_or_else(|| self.inner.peek(buf))
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A new handle to the same socket, sharing its timeouts and mode.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            inner: self.inner.try_clone()?,
            state: self.state.clone(),
        })
    }

    crate::net::socket_timeouts!();

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.set_broadcast(on)
    }

    /// Gets `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.broadcast()
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.inner.set_multicast_loop_v4(on)
    }

    /// Gets `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.inner.multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_multicast_ttl_v4(ttl)
    }

    /// Gets `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.inner.multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.inner.set_multicast_loop_v6(on)
    }

    /// Gets `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.inner.multicast_loop_v6()
    }

    /// Joins an IPv4 multicast group.
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.join_multicast_v4(multiaddr, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group.
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.leave_multicast_v6(multiaddr, interface)
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Moves the socket into or out of nonblocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.state.set_nonblocking(nonblocking);
        Ok(())
    }
}

crate::wrap::std_wrapper!(UdpSocket, std::net::UdpSocket, |inner| UdpSocket {
    state: SockState::of(inner.as_fd()),
    inner,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip_and_layout() {
        let a: SocketAddr = "192.168.1.2:8080".parse().unwrap();
        let (raw, len) = addr_to_raw(&a);
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_in>());
        assert_eq!(raw.ss_family as i32, libc::AF_INET);
        // SAFETY: reading the first 8 bytes of a 128-byte storage.
        let bytes: [u8; 8] = unsafe { *(&raw as *const _ as *const [u8; 8]) };
        // Port then address, both in network order.
        assert_eq!(&bytes[2..8], &[0x1f, 0x90, 192, 168, 1, 2]);
        assert_eq!(raw_to_addr(&raw, len).unwrap(), a);
    }

    #[test]
    fn v6_round_trip_keeps_flowinfo_and_scope() {
        let a = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1:2".parse().unwrap(),
            443,
            0x12345,
            7,
        ));
        let (raw, len) = addr_to_raw(&a);
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(raw_to_addr(&raw, len).unwrap(), a);
    }

    #[test]
    fn unknown_family_or_short_length_is_invalid_input() {
        let (mut raw, len) = addr_to_raw(&"1.2.3.4:5".parse().unwrap());
        assert_eq!(
            raw_to_addr(&raw, len - 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        raw.ss_family = libc::AF_UNIX as libc::sa_family_t;
        assert_eq!(
            raw_to_addr(&raw, len).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn matches_the_kernel_view_of_a_bound_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let want = s.local_addr().unwrap();
        // SAFETY: zeroed storage is valid; getsockname writes at most `len`
        // bytes into it.
        let mut raw: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of_val(&raw) as libc::socklen_t;
        // SAFETY: as above; the fd is open.
        let r = unsafe {
            libc::getsockname(
                s.as_raw_fd(),
                (&mut raw as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(raw_to_addr(&raw, len).unwrap(), want);
        let (mine, mine_len) = addr_to_raw(&want);
        assert_eq!(mine_len, len);
        // SAFETY: both are 128-byte plain-integer structs.
        let (a, b): ([u8; 16], [u8; 16]) = unsafe {
            (
                *(&mine as *const _ as *const [u8; 16]),
                *(&raw as *const _ as *const [u8; 16]),
            )
        };
        assert_eq!(a, b);
    }
}
