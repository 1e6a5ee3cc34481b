//! Blocking TCP on green threads: round trips, timeouts, shutdown, and the
//! same errors as std.
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use green::net::{Shutdown, TcpListener, TcpStream};

/// A connected pair on 127.0.0.1 (made from the calling thread).
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Runs `f` on a green thread and returns its value.
fn on_green<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    green::spawn(f).join().unwrap()
}

#[test]
fn round_trip_on_green_threads() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = green::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        assert_eq!(peer, s.peer_addr().unwrap());
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        let mut a = [0u8; 3];
        let mut b = [0u8; 4];
        let n = s
            .read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
            .unwrap();
        assert_eq!(n, 7);
        assert_eq!((&a, &b), (b"vec", b"tors"));
        // Two small buffers on a fresh socket go out whole.
        let n = s
            .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
            .unwrap();
        assert_eq!(n, 4);
    });
    let client = green::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        c.write_all(b"hello green").unwrap();
        let mut buf = [0u8; 11];
        let n = c.peek(&mut buf).unwrap();
        assert!(n > 0 && buf[..n] == b"hello green"[..n]);
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello green");
        c.write_all(b"vectors").unwrap();
        let mut out = [0u8; 4];
        c.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"abcd");
    });
    server.join().unwrap();
    client.join().unwrap();
}

#[test]
fn std_thread_path_is_plain_std() {
    let (mut a, mut b) = pair();
    a.write_all(b"x").unwrap();
    let mut buf = [0u8; 1];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
    let std_stream: std::net::TcpStream = a.into();
    let back = TcpStream::from(std_stream);
    assert!(back.peer_addr().is_ok());
}

#[test]
fn incoming_yields_connections() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = green::spawn(move || {
        for s in l.incoming().take(3) {
            let mut s = s.unwrap();
            s.write_all(b"hi").unwrap();
        }
    });
    for _ in 0..3 {
        let got = on_green(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let mut v = Vec::new();
            c.read_to_end(&mut v).unwrap();
            v
        });
        assert_eq!(got, b"hi");
    }
    server.join().unwrap();
}

#[test]
fn read_timeout_fires_and_stream_still_works() {
    let (a, mut b) = pair();
    let out = on_green(move || {
        let mut a = a;
        a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 4];
        let start = Instant::now();
        let err = a.read(&mut buf).unwrap_err();
        let took = start.elapsed();
        (a, err.kind(), took)
    });
    let (mut a, kind, took) = out;
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(took >= Duration::from_millis(50), "fired after {took:?}");
    b.write_all(b"ping").unwrap();
    let (a, buf) = on_green(move || {
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).unwrap();
        (a, buf)
    });
    assert_eq!(&buf, b"ping");
    // The same timeout applies on the std path (it is set on the socket).
    let mut a = a;
    let mut buf = [0u8; 4];
    assert_eq!(
        a.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

#[test]
fn write_timeout_fires_when_the_peer_does_not_read() {
    let (a, _b) = pair();
    let (kind, took, wrote) = on_green(move || {
        a.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut wrote = 0usize;
        let start = Instant::now();
        loop {
            match (&a).write(&chunk) {
                Ok(n) => wrote += n,
                Err(e) => return (e.kind(), start.elapsed(), wrote),
            }
            assert!(wrote < 1 << 30, "the socket buffer never filled");
        }
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(took >= Duration::from_millis(50));
    assert!(wrote > 0);
}

#[test]
fn timed_out_read_never_writes_the_buffer_after_return() {
    let (a, mut b) = pair();
    let (a, buf) = on_green(move || {
        a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = vec![0u8; 64];
        let err = (&a).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The caller owns the buffer again: reuse it.
        buf.fill(0xA5);
        (a, buf)
    });
    b.write_all(&[1u8; 64]).unwrap();
    // Give a stray kernel write every chance to land.
    thread::sleep(Duration::from_millis(50));
    assert!(
        buf.iter().all(|&x| x == 0xA5),
        "the kernel wrote after the call returned"
    );
    // The data is still there for the next read.
    let got = on_green(move || {
        let mut v = [0u8; 64];
        (&a).read_exact(&mut v).unwrap();
        v
    });
    assert_eq!(got, [1u8; 64]);
}

#[test]
fn try_clone_shares_timeouts() {
    let (a, _b) = pair();
    let kind = on_green(move || {
        let c = a.try_clone().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut buf = [0u8; 1];
        (&c).read(&mut buf).unwrap_err().kind()
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
}

#[test]
fn nonblocking_read_returns_would_block_at_once() {
    let (a, _b) = pair();
    let kind = on_green(move || {
        a.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        (&a).read(&mut buf).unwrap_err().kind()
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let kind = on_green(move || {
        l.set_nonblocking(true).unwrap();
        l.accept().unwrap_err().kind()
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
}

#[test]
fn nonblocking_state_is_read_from_a_std_socket() {
    let (a, _b) = pair();
    let a: std::net::TcpStream = a.into();
    a.set_nonblocking(true).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let a = TcpStream::from(a);
    let kind = on_green(move || {
        let mut buf = [0u8; 1];
        (&a).read(&mut buf).unwrap_err().kind()
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
}

#[test]
fn shutdown_write_gives_the_peer_eof() {
    let (a, b) = pair();
    let got = on_green(move || {
        let mut b = b;
        a.shutdown(Shutdown::Write).unwrap();
        let mut v = Vec::new();
        b.read_to_end(&mut v).unwrap();
        // The other direction still works.
        b.write_all(b"back").unwrap();
        let mut buf = [0u8; 4];
        (&a).read_exact(&mut buf).unwrap();
        (v, buf)
    });
    assert!(got.0.is_empty());
    assert_eq!(&got.1, b"back");
}

#[test]
fn connect_timeout_connects_and_zero_is_invalid_input() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    on_green(move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        let e = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
    drop(l);
}

/// A port with nothing listening on it (bound, then closed).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Runs `f` on a std thread and on a green thread; both must fail the same way.
fn same_error<T: std::fmt::Debug + Send + 'static>(
    f: impl Fn() -> io::Result<T> + Send + Sync + Clone + 'static,
) -> io::Error {
    let g = f.clone();
    let std_err = thread::spawn(f).join().unwrap().unwrap_err();
    let green_err = on_green(g).unwrap_err();
    assert_eq!(
        std_err.kind(),
        green_err.kind(),
        "std: {std_err:?}, green: {green_err:?}"
    );
    assert_eq!(std_err.raw_os_error(), green_err.raw_os_error());
    green_err
}

#[test]
fn connect_to_a_closed_port_is_connection_refused() {
    let addr = closed_port();
    let e = same_error(move || TcpStream::connect(addr));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    let e = same_error(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    // And what plain std says.
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn bind_in_use_is_addr_in_use() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let e = same_error(move || TcpListener::bind(addr));
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
}

#[test]
fn ops_on_a_non_socket_fail_like_std() {
    let file = || {
        let f = std::fs::File::open("/dev/null").unwrap();
        TcpStream::from(std::os::fd::OwnedFd::from(f))
    };
    let e = same_error(move || (&file()).read(&mut [0u8; 4]));
    assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
    same_error(move || (&file()).write(b"abc"));
    same_error(move || file().peek(&mut [0u8; 4]));
    same_error(move || file().shutdown(Shutdown::Both));
    let l = || {
        TcpListener::from(std::os::fd::OwnedFd::from(
            std::fs::File::open("/dev/null").unwrap(),
        ))
    };
    same_error(move || l().accept());
}

#[test]
fn errors_after_the_peer_closes_match_std() {
    // Writing to a connection the peer reset: EPIPE or ECONNRESET, never SIGPIPE.
    let run = || -> io::Result<()> {
        let (a, b) = pair();
        drop(b);
        let chunk = [0u8; 4096];
        for _ in 0..1000 {
            (&a).write_all(&chunk)?;
            green::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    let std_err = thread::spawn(run).join().unwrap().unwrap_err();
    let green_err = on_green(run).unwrap_err();
    assert!(matches!(
        std_err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    ));
    assert!(matches!(
        green_err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    ));
    // Invalid timeouts.
    let (a, _b) = pair();
    let a = std::sync::Arc::new(a);
    let e = same_error(move || a.set_read_timeout(Some(Duration::ZERO)));
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}
