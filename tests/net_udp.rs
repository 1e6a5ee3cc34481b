//! UDP on green threads: addressed and connected round trips, peeking,
//! timeouts, and std's errors.
use std::io;
use std::time::{Duration, Instant};

use green::net::UdpSocket;

fn on_green<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    green::spawn(f).join().unwrap()
}

#[test]
fn send_to_recv_from_round_trip() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let echo = green::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        b.send_to(&buf[..n], from).unwrap();
        from
    });
    let (got, from) = on_green(move || {
        a.send_to(b"datagram", b_addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, peek_from) = a.peek_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"datagram");
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(peek_from, from);
        (buf[..n].to_vec(), from)
    });
    assert_eq!(got, b"datagram");
    assert_eq!(from, b_addr);
    assert_eq!(echo.join().unwrap(), a_addr);
}

#[test]
fn ipv6_round_trip() {
    let Ok(a) = UdpSocket::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let b = UdpSocket::bind("[::1]:0").unwrap();
    let b_addr = b.local_addr().unwrap();
    let a_addr = a.local_addr().unwrap();
    let (n, from) = on_green(move || {
        a.send_to(b"six", b_addr).unwrap();
        b.recv_from(&mut [0u8; 8]).unwrap()
    });
    assert_eq!((n, from), (3, a_addr));
}

#[test]
fn connected_send_recv_and_timeout() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let (kind, took, got) = on_green(move || {
        b.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let start = Instant::now();
        let kind = b.recv(&mut [0u8; 8]).unwrap_err().kind();
        let took = start.elapsed();
        a.send(b"conn").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.peek(&mut buf).unwrap(), 4);
        let n = b.recv(&mut buf).unwrap();
        (kind, took, buf[..n].to_vec())
    });
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(took >= Duration::from_millis(30));
    assert_eq!(got, b"conn");
}

#[test]
fn errors_match_std() {
    // Sending on an unconnected socket with send(): EDESTADDRREQ.
    let run = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send(b"x")
            .unwrap_err()
    };
    let std_err = std::thread::spawn(run).join().unwrap();
    let green_err = on_green(run);
    assert_eq!(std_err.kind(), green_err.kind());
    assert_eq!(std_err.raw_os_error(), green_err.raw_os_error());
    // A refused datagram surfaces as ConnectionRefused on the next recv.
    let run = || {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(target).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send(b"x").unwrap();
        s.recv(&mut [0u8; 4]).unwrap_err().kind()
    };
    let std_kind = std::thread::spawn(run).join().unwrap();
    assert_eq!(std_kind, io::ErrorKind::ConnectionRefused);
    assert_eq!(on_green(run), std_kind);
    // Bind in use.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = a.local_addr().unwrap();
    assert_eq!(
        on_green(move || UdpSocket::bind(addr).unwrap_err().kind()),
        io::ErrorKind::AddrInUse
    );
}
