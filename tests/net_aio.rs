//! The async socket API (owned buffers) on green carriers.
use std::future::Future;
use std::io;

use green::aio::net::{TcpListener, TcpStream};
use green::net::Shutdown;

#[test]
fn async_echo_round_trips() {
    const CONNS: usize = 50;
    let got = green::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = green::spawn_async(async move {
            for _ in 0..CONNS {
                let (s, peer) = listener.accept().await.unwrap();
                assert_eq!(peer, s.peer_addr().unwrap());
                green::spawn_async(async move {
                    let mut buf = Vec::with_capacity(256);
                    loop {
                        let (r, b) = s.read(buf).await;
                        if r.unwrap() == 0 {
                            return;
                        }
                        let (r, b) = s.write_all(b).await;
                        r.unwrap();
                        buf = b;
                    }
                });
            }
        });
        let clients: Vec<_> = (0..CONNS)
            .map(|c| {
                green::spawn_async(async move {
                    let s = TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut back = Vec::with_capacity(64);
                    for r in 0..10u8 {
                        let msg = vec![c as u8 ^ r; 64];
                        let (res, _) = s.write_all(msg.clone()).await;
                        res.unwrap();
                        let (res, b) = s.read_exact(back).await;
                        res.unwrap();
                        assert_eq!(b, msg);
                        back = b;
                    }
                    s.shutdown(Shutdown::Write).await.unwrap();
                    let (r, _) = s.read(Vec::with_capacity(8)).await;
                    r.unwrap()
                })
            })
            .collect();
        let mut eofs = 0;
        for c in clients {
            eofs += usize::from(c.await.unwrap() == 0);
        }
        server.await.unwrap();
        eofs
    });
    assert_eq!(got, CONNS);
}

#[test]
fn async_connect_refused_and_early_eof() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let kind = green::block_on(async move { TcpStream::connect(addr).await.unwrap_err().kind() });
    assert_eq!(kind, io::ErrorKind::ConnectionRefused);

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"abc").unwrap();
    });
    let (kind, partial) = green::block_on(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, b) = s.read_exact(Vec::with_capacity(10)).await;
        (r.unwrap_err().kind(), b)
    });
    h.join().unwrap();
    assert_eq!(kind, io::ErrorKind::UnexpectedEof);
    assert_eq!(partial, b"abc");
}

#[test]
fn dropped_read_future_keeps_its_buffer_until_the_completion() {
    // A read future dropped while in flight: the op is cancelled and the
    // driver holds the buffer; the stream still works afterwards.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"after").unwrap();
    });
    let got = green::block_on(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        {
            let read = s.read(Vec::with_capacity(64));
            let timeout = green::time::sleep_async(std::time::Duration::from_millis(20));
            let mut read = std::pin::pin!(read);
            let mut timeout = std::pin::pin!(timeout);
            std::future::poll_fn(|cx| {
                if read.as_mut().poll(cx).is_ready() {
                    panic!("nothing was sent yet");
                }
                timeout.as_mut().poll(cx)
            })
            .await;
        }
        let (r, _) = s.write_all(b"go".to_vec()).await;
        r.unwrap();
        let (r, b) = s.read_exact(Vec::with_capacity(5)).await;
        r.unwrap();
        b
    });
    h.join().unwrap();
    assert_eq!(got, b"after");
}
