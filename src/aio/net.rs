//! Sockets as futures (owned buffers), on the carrier's kernel ring.
//!
//! The same ring operations as [`crate::net`]'s blocking calls, for async
//! tasks on the same carriers ([`crate::spawn_async`], [`crate::block_on`]).
//! Buffers are owned, as in monoio and tokio-uring: a call takes a `Vec<u8>`
//! and hands it back with the result, because the kernel may write into it
//! until the completion arrives, even if the future is dropped first (the
//! driver then keeps the buffer until the completion).
//!
//! ```
//! use green::aio::net::{TcpListener, TcpStream};
//!
//! green::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let client = green::spawn_async(async move {
//!         let s = TcpStream::connect(addr).await.unwrap();
//!         let (r, _) = s.write_all(b"ping".to_vec()).await;
//!         r.unwrap();
//!     });
//!     let (s, _) = listener.accept().await.unwrap();
//!     let (r, buf) = s.read_exact(Vec::with_capacity(4)).await;
//!     r.unwrap();
//!     assert_eq!(buf, b"ping");
//!     client.await.unwrap();
//! });
//! ```
//!
//! The futures must be polled on a carrier of a runtime with the io_uring
//! backend; with the blocking backend they fail with `Unsupported`.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::driver::OpFuture;
use crate::net::{addr_to_raw, raw_to_addr, socket, Shutdown, SocketAddr, ToSocketAddrs};
use crate::sys::uring::{op, Sqe};

/// Longest buffer one op is given (see `crate::net`).
const MAX_LEN: usize = 0x7fff_f000;

/// A TCP listener whose `accept` is a future.
pub struct TcpListener {
    inner: std::net::TcpListener,
}

impl TcpListener {
    /// Binds a listener to `addr` (binding does not block).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        std::net::TcpListener::bind(addr).map(|inner| TcpListener { inner })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Accepts a connection: the stream (close-on-exec) and the peer's
    /// address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
        let storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut keep = Box::new((
            storage,
            mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        ));
        let sqe = Sqe {
            opcode: op::ACCEPT,
            fd: self.inner.as_raw_fd(),
            addr: &mut keep.0 as *mut libc::sockaddr_storage as u64,
            off: &mut keep.1 as *mut libc::socklen_t as u64,
            op_flags: libc::SOCK_CLOEXEC as u32,
            ..Sqe::default()
        };
        // SAFETY: both pointers point into the box, whose heap memory does
        // not move when the box does and is kept until the completion.
        let (r, keep) = unsafe { OpFuture::new(sqe, keep, None, "accept") }.await;
        // SAFETY: a successful accept returns a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(r? as RawFd) };
        Ok((
            TcpStream { inner: fd.into() },
            raw_to_addr(&keep.0, keep.1)?,
        ))
    }
}

crate::wrap::std_wrapper!(TcpListener, std::net::TcpListener, |inner| TcpListener {
    inner
});

/// A TCP connection whose I/O calls are futures over owned buffers.
pub struct TcpStream {
    inner: std::net::TcpStream,
}

impl TcpStream {
    /// Opens a TCP connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let fd = socket(family, libc::SOCK_STREAM)?;
        let (raw, len) = addr_to_raw(&addr);
        let keep = Box::new(raw);
        let sqe = Sqe {
            opcode: op::CONNECT,
            fd: fd.as_raw_fd(),
            addr: &*keep as *const libc::sockaddr_storage as u64,
            off: len as u64,
            ..Sqe::default()
        };
        // SAFETY: the address points into the box, kept until the
        // completion. The fd outlives the op: a dropped future's op is
        // cancelled, and the kernel holds its own reference to the socket.
        let (r, _) = unsafe { OpFuture::new(sqe, keep, None, "connect") }.await;
        r?;
        Ok(TcpStream { inner: fd.into() })
    }

    /// Reads into `buf`'s spare room from its start (`buf[..capacity]`)
    /// and sets its length to the bytes read (0 at end of stream).
    pub async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let sqe = Sqe {
            opcode: op::RECV,
            fd: self.inner.as_raw_fd(),
            addr: buf.as_mut_ptr() as u64,
            len: buf.capacity().min(MAX_LEN) as u32,
            ..Sqe::default()
        };
        // SAFETY: the entry points into the Vec's heap buffer, which does
        // not move with the Vec and is kept until the completion.
        let (r, mut buf) = unsafe { OpFuture::new(sqe, buf, None, "recv") }.await;
        match r {
            Ok(n) => {
                // SAFETY: the kernel initialised the first n bytes (n is at
                // most the capacity it was given).
                unsafe { buf.set_len(n as usize) };
                (Ok(n as usize), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Writes from `buf[..len]`; returns how many bytes were written.
    pub async fn write(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.send_at(buf, 0).await
    }

    async fn send_at(&self, buf: Vec<u8>, from: usize) -> (io::Result<usize>, Vec<u8>) {
        let rest = &buf[from..];
        let sqe = Sqe {
            opcode: op::SEND,
            fd: self.inner.as_raw_fd(),
            addr: rest.as_ptr() as u64,
            len: rest.len().min(MAX_LEN) as u32,
            op_flags: libc::MSG_NOSIGNAL as u32,
            ..Sqe::default()
        };
        // SAFETY: as in read; the kernel only reads `buf[from..len]`.
        let (r, buf) = unsafe { OpFuture::new(sqe, buf, None, "send") }.await;
        (r.map(|n| n as usize), buf)
    }

    /// Writes all of `buf[..len]`.
    pub async fn write_all(&self, mut buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut done = 0;
        while done < buf.len() {
            let (r, b) = self.send_at(buf, done).await;
            buf = b;
            match r {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Fills `buf` to its capacity (its length becomes its capacity);
    /// `UnexpectedEof` if the stream ends first.
    pub async fn read_exact(&self, mut buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        buf.clear();
        while buf.len() < buf.capacity() {
            let filled = buf.len();
            let sqe = Sqe {
                opcode: op::RECV,
                fd: self.inner.as_raw_fd(),
                // In bounds: filled <= capacity.
                addr: buf.as_mut_ptr().wrapping_add(filled) as u64,
                len: (buf.capacity() - filled).min(MAX_LEN) as u32,
                ..Sqe::default()
            };
            // SAFETY: as in read, for the tail `buf[filled..capacity]`.
            let (r, b) = unsafe { OpFuture::new(sqe, buf, None, "recv") }.await;
            buf = b;
            match r {
                Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
                // SAFETY: the kernel initialised n more bytes after `filled`.
                Ok(n) => unsafe { buf.set_len(filled + n as usize) },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Shuts down the read half, the write half or both.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        let sqe = Sqe {
            opcode: op::SHUTDOWN,
            fd: self.inner.as_raw_fd(),
            len: how as u32,
            ..Sqe::default()
        };
        // SAFETY: the entry holds no pointers.
        let (r, ()) = unsafe { OpFuture::new(sqe, (), None, "shutdown") }.await;
        r.map(drop)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

crate::wrap::std_wrapper!(TcpStream, std::net::TcpStream, |inner| TcpStream { inner });
