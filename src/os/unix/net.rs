//! Unix domain sockets with std::os::unix::net's API; on a green thread
//! each blocking call goes over the carrier's kernel ring.
//!
//! [`UnixListener`] and [`UnixStream`] wrap the std types exactly as
//! [`crate::net`]'s TCP types do: accept, connect, read, write and shutdown
//! on a green thread are ring operations; anywhere else, or on a
//! nonblocking socket, they are std's calls. Timeouts are honoured on both
//! paths.
//!
//! ```
//! use std::io::{Read, Write};
//! use green::os::unix::net::UnixStream;
//!
//! let (mut a, mut b) = UnixStream::pair().unwrap();
//! let h = green::spawn(move || {
//!     let mut buf = [0u8; 4];
//!     b.read_exact(&mut buf).unwrap();
//!     buf
//! });
//! a.write_all(b"ping").unwrap();
//! assert_eq!(&h.join().unwrap(), b"ping");
//! ```

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::driver::on_ring;
use crate::net::{accept, connect, shutdown, socket, SockState};

pub use std::net::Shutdown;
pub use std::os::unix::net::SocketAddr;

/// Byte offset of `sun_path` in `sockaddr_un` (after `sun_family`).
const PATH_OFFSET: usize = mem::size_of::<libc::sa_family_t>();

/// A std Unix socket address as the kernel's `sockaddr_un`, with its
/// length (std's rules: a pathname gets a trailing NUL, an abstract name a
/// leading one, an unnamed address only the family).
pub(crate) fn unix_addr_to_raw(addr: &SocketAddr) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain integers; all-zero is a valid value.
    let mut raw: libc::sockaddr_un = unsafe { mem::zeroed() };
    raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, lead): (&[u8], usize) = if let Some(p) = addr.as_pathname() {
        (p.as_os_str().as_bytes(), 0)
    } else if let Some(name) = addr.as_abstract_name() {
        (name, 1)
    } else {
        (&[], 0)
    };
    // A std SocketAddr always fits (std checked it when it made it); the
    // min() keeps a bad one from overrunning sun_path all the same.
    let n = bytes.len().min(raw.sun_path.len() - lead);
    for (dst, &b) in raw.sun_path[lead..lead + n].iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    let mut len = PATH_OFFSET + lead + n;
    if addr.as_pathname().is_some() && n < raw.sun_path.len() {
        len += 1;
    }
    (raw, len as libc::socklen_t)
}

/// The std address in a `sockaddr_un` the kernel filled with `len` bytes;
/// `None` for an unnamed address (std offers no constructor for one).
pub(crate) fn raw_to_unix_addr(
    raw: &libc::sockaddr_un,
    len: libc::socklen_t,
) -> Option<io::Result<SocketAddr>> {
    let len = (len as usize).min(mem::size_of::<libc::sockaddr_un>());
    if len <= PATH_OFFSET || raw.sun_family as i32 != libc::AF_UNIX {
        return None;
    }
    let path: Vec<u8> = raw.sun_path[..len - PATH_OFFSET]
        .iter()
        .map(|&c| c as u8)
        .collect();
    Some(match path.split_first() {
        Some((0, name)) => SocketAddr::from_abstract_name(name),
        _ => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            SocketAddr::from_pathname(OsStr::from_bytes(&path[..end]))
        }
    })
}

/// Connects a new Unix stream socket to `addr` over the ring.
fn connect_ring(addr: &SocketAddr) -> io::Result<std::os::unix::net::UnixStream> {
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
    let (raw, len) = unix_addr_to_raw(addr);
    let ptr = &raw as *const libc::sockaddr_un as *const libc::sockaddr;
    // SAFETY: `raw` holds `len` bytes of address and outlives the call.
    match unsafe { connect(fd.as_raw_fd(), ptr, len, None) } {
        Some(r) => r.map(|()| fd.into()),
        None => {
            drop(fd);
            std::os::unix::net::UnixStream::connect_addr(addr)
        }
    }
}

// ---------------------------------------------------------------------------
// UnixStream

/// A Unix stream socket, with std's `UnixStream` API. See the [module
/// docs](self).
pub struct UnixStream {
    inner: std::os::unix::net::UnixStream,
    state: Arc<SockState>,
}

impl UnixStream {
    /// Connects to the socket at `path`.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        if !on_ring() {
            return std::os::unix::net::UnixStream::connect(path).map(UnixStream::fresh);
        }
        // std's own checks (interior NUL, length) give std's errors.
        let addr = SocketAddr::from_pathname(path)?;
        connect_ring(&addr).map(UnixStream::fresh)
    }

    /// Connects to the socket at `addr` (a pathname or an abstract name).
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        if !on_ring() {
            return std::os::unix::net::UnixStream::connect_addr(addr).map(UnixStream::fresh);
        }
        connect_ring(addr).map(UnixStream::fresh)
    }

    /// A connected pair of unnamed sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::fresh(a), UnixStream::fresh(b)))
    }

    fn fresh(inner: std::os::unix::net::UnixStream) -> UnixStream {
        UnixStream {
            inner,
            state: SockState::fresh(),
        }
    }

    /// A new handle to the same socket, sharing its timeouts and mode.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        Ok(UnixStream {
            inner: self.inner.try_clone()?,
            state: self.state.clone(),
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    crate::net::socket_timeouts!();

    /// Moves the socket into or out of nonblocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.state.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        shutdown(self.inner.as_raw_fd(), how).unwrap_or_else(|| self.inner.shutdown(how))
    }
}

// Send flags 0: std's UnixStream writes with write(2), which is send(2)
// without flags.
crate::net::stream_io!(UnixStream, 0);

crate::wrap::std_wrapper!(UnixStream, std::os::unix::net::UnixStream, |inner| {
    UnixStream {
        state: SockState::of(inner.as_fd()),
        inner,
    }
});

// ---------------------------------------------------------------------------
// UnixListener

/// A Unix socket server, with std's `UnixListener` API. See the [module
/// docs](self).
pub struct UnixListener {
    inner: std::os::unix::net::UnixListener,
    state: Arc<SockState>,
}

impl UnixListener {
    /// Binds a listener to `path` (std's bind; it does not block).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        std::os::unix::net::UnixListener::bind(path).map(UnixListener::fresh)
    }

    /// Binds a listener to `addr`.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        std::os::unix::net::UnixListener::bind_addr(addr).map(UnixListener::fresh)
    }

    fn fresh(inner: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener {
            inner,
            state: SockState::fresh(),
        }
    }

    /// Accepts a connection: the stream (close-on-exec, blocking) and the
    /// peer's address.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        // SAFETY: sockaddr_un is plain integers; all-zero is valid.
        let mut raw: libc::sockaddr_un = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let ptr = &mut raw as *mut libc::sockaddr_un as *mut libc::sockaddr;
        // SAFETY: `raw` is `len` bytes and outlives the call.
        match unsafe { accept(self.inner.as_raw_fd(), &self.state, ptr, &mut len) } {
            Some(r) => {
                let stream = UnixStream::fresh(r?.into());
                let addr = match raw_to_unix_addr(&raw, len) {
                    Some(a) => a?,
                    // Unnamed (the usual case for a client): std has no
                    // constructor for it, so ask the kernel like std does.
                    None => stream.inner.peer_addr()?,
                };
                Ok((stream, addr))
            }
            None => self.inner.accept().map(|(s, a)| (UnixStream::fresh(s), a)),
        }
    }

    /// An iterator over accepted connections (never returns None).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A new handle to the same socket.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: self.inner.try_clone()?,
            state: self.state.clone(),
        })
    }

    /// Moves the socket into or out of nonblocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)?;
        self.state.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }
}

/// An iterator over a listener's connections; see
/// [`UnixListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

crate::wrap::std_wrapper!(UnixListener, std::os::unix::net::UnixListener, |inner| {
    UnixListener {
        state: SockState::of(inner.as_fd()),
        inner,
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(addr: &SocketAddr) -> SocketAddr {
        let (raw, len) = unix_addr_to_raw(addr);
        raw_to_unix_addr(&raw, len).expect("named").unwrap()
    }

    #[test]
    fn pathname_round_trip_and_length() {
        let a = SocketAddr::from_pathname("/tmp/some.sock").unwrap();
        let (raw, len) = unix_addr_to_raw(&a);
        // Family, the path, and its NUL terminator.
        assert_eq!(len as usize, PATH_OFFSET + "/tmp/some.sock".len() + 1);
        assert_eq!(raw.sun_path["/tmp/some.sock".len()], 0);
        assert_eq!(round_trip(&a).as_pathname(), a.as_pathname());
    }

    #[test]
    fn abstract_round_trip_and_length() {
        let a = SocketAddr::from_abstract_name(b"green\0test").unwrap();
        let (raw, len) = unix_addr_to_raw(&a);
        assert_eq!(len as usize, PATH_OFFSET + 1 + 10);
        assert_eq!(raw.sun_path[0], 0);
        assert_eq!(round_trip(&a).as_abstract_name(), Some(&b"green\0test"[..]));
    }

    #[test]
    fn unnamed_is_family_only() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let addr = a.local_addr().unwrap();
        assert!(addr.is_unnamed());
        let (raw, len) = unix_addr_to_raw(&addr);
        assert_eq!(len as usize, PATH_OFFSET);
        assert!(raw_to_unix_addr(&raw, len).is_none());
    }

    #[test]
    fn longest_path_fits_without_terminator() {
        let (probe, _) = unix_addr_to_raw(&SocketAddr::from_pathname("/").unwrap());
        let max = probe.sun_path.len();
        // std accepts a path that fills sun_path only if it leaves room for
        // the NUL; whatever it accepts must round-trip.
        for n in [max - 2, max - 1] {
            let p = format!("/{}", "x".repeat(n - 1));
            if let Ok(a) = SocketAddr::from_pathname(&p) {
                assert_eq!(round_trip(&a).as_pathname(), a.as_pathname());
            }
        }
    }
}
