//! Unix domain sockets on green threads: listener round trips, pairs,
//! shutdown, timeouts, and std's errors.
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use green::os::unix::net::{Shutdown, UnixListener, UnixStream};

/// A fresh socket path in the temp dir, unique per test and process.
fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("green-net-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn on_green<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    green::spawn(f).join().unwrap()
}

#[test]
fn listener_round_trip_on_green_threads() {
    let path = sock_path("round-trip");
    let l = UnixListener::bind(&path).unwrap();
    let server = green::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        assert!(peer.is_unnamed());
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        // A second client through incoming().
        let mut s2 = l.incoming().next().unwrap().unwrap();
        s2.write_all(b"second").unwrap();
    });
    let p = path.clone();
    let got = on_green(move || {
        let mut c = UnixStream::connect(&p).unwrap();
        assert_eq!(c.peer_addr().unwrap().as_pathname(), Some(p.as_path()));
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        let mut c2 = UnixStream::connect(&p).unwrap();
        let mut v = Vec::new();
        c2.read_to_end(&mut v).unwrap();
        (buf, v)
    });
    assert_eq!(&got.0, b"hello");
    assert_eq!(got.1, b"second");
    server.join().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn accept_reports_a_bound_peer_address() {
    use std::os::linux::net::SocketAddrExt;
    let path = sock_path("bound-peer");
    let l = UnixListener::bind(&path).unwrap();
    let peer_name = format!("green-net-peer-{}", std::process::id());
    let name = peer_name.clone();
    let server = green::spawn(move || l.accept().unwrap().1);
    // A client bound to an abstract name before it connects.
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let fd = {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: socket(2) takes no pointers; a successful call returns a
        // new fd that we own.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fd is a new socket owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    bind_abstract(&fd, peer_name.as_bytes());
    let l_addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
    let stream = UnixStream::from(fd);
    // std has no bind-then-connect for streams: connect(2) by hand.
    connect_raw(&stream, &l_addr);
    let seen = server.join().unwrap();
    assert_eq!(seen.as_abstract_name(), addr.as_abstract_name());
    std::fs::remove_file(&path).unwrap();
}

fn bind_abstract(fd: &std::os::fd::OwnedFd, name: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed sockaddr_un is valid; we write within sun_path.
    let mut raw: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in raw.sun_path[1..].iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: raw is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
}

fn connect_raw(s: &UnixStream, addr: &std::os::unix::net::SocketAddr) {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = addr.as_pathname().unwrap().as_os_str().as_bytes();
    // SAFETY: zeroed sockaddr_un is valid; we write within sun_path.
    let mut raw: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    raw.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in raw.sun_path.iter_mut().zip(path) {
        *d = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    // SAFETY: raw is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&raw as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
}

#[test]
fn pair_round_trip_and_shutdown_gives_eof() {
    let (a, b) = UnixStream::pair().unwrap();
    let (got, eof) = on_green(move || {
        let mut b = b;
        (&a).write_all(b"over the ring").unwrap();
        let mut buf = [0u8; 13];
        b.read_exact(&mut buf).unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        (buf, rest.is_empty())
    });
    assert_eq!(&got, b"over the ring");
    assert!(eof);
}

#[test]
fn read_timeout_fires_and_the_stream_still_works() {
    let (a, b) = UnixStream::pair().unwrap();
    let (a, kind, took) = on_green(move || {
        a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let start = Instant::now();
        let e = (&a).read(&mut [0u8; 8]).unwrap_err();
        (a, e.kind(), start.elapsed())
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(took >= Duration::from_millis(30));
    (&b).write_all(b"late").unwrap();
    let got = on_green(move || {
        let mut buf = [0u8; 4];
        (&a).read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&got, b"late");
}

#[test]
fn errors_match_std() {
    // Connecting to a path nobody listens on.
    let path = sock_path("nobody");
    let p = path.clone();
    let std_err = std::thread::spawn(move || UnixStream::connect(&p).unwrap_err())
        .join()
        .unwrap();
    let p = path.clone();
    let green_err = on_green(move || UnixStream::connect(&p).unwrap_err());
    assert_eq!(std_err.kind(), io::ErrorKind::NotFound);
    assert_eq!(std_err.kind(), green_err.kind());
    // A bound socket file with no listener: ECONNREFUSED.
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(l);
    let p = path.clone();
    let std_err = std::thread::spawn(move || UnixStream::connect(&p).unwrap_err())
        .join()
        .unwrap();
    let p = path.clone();
    let green_err = on_green(move || UnixStream::connect(&p).unwrap_err());
    assert_eq!(std_err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(std_err.kind(), green_err.kind());
    // Binding a path that exists: AddrInUse.
    let p = path.clone();
    let green_err = on_green(move || UnixListener::bind(&p).unwrap_err());
    assert_eq!(green_err.kind(), io::ErrorKind::AddrInUse);
    std::fs::remove_file(&path).unwrap();
    // A path with an interior NUL: std's InvalidInput, before any syscall.
    let green_err = on_green(|| UnixStream::connect("/tmp/a\0b").unwrap_err());
    let std_err = std::os::unix::net::UnixStream::connect("/tmp/a\0b").unwrap_err();
    assert_eq!(green_err.kind(), std_err.kind());
}
