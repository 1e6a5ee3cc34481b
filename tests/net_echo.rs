//! An echo server with a green thread per connection, under 1,000
//! concurrent connections from green-thread clients.
use std::io::{Read, Write};
use std::sync::Arc;

use green::sync::Barrier;

use green::net::{TcpListener, TcpStream};

const CONNS: usize = 1_000;
const ROUNDS: usize = 20;

fn serve(listener: TcpListener, conns: usize) {
    let handlers: Vec<_> = (0..conns)
        .map(|_| {
            let (mut s, _) = listener.accept().unwrap();
            green::spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        return;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
            })
        })
        .collect();
    for h in handlers {
        h.join().unwrap();
    }
}

#[test]
fn echo_with_a_thousand_concurrent_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = green::spawn(move || serve(listener, CONNS));
    // Every client connects before any sends, so all 1,000 are open at once.
    let all_connected = Arc::new(Barrier::new(CONNS));
    let clients: Vec<_> = (0..CONNS)
        .map(|c| {
            let all_connected = all_connected.clone();
            green::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                all_connected.wait();
                let mut back = [0u8; 64];
                for r in 0..ROUNDS {
                    let msg = [(c * 31 + r) as u8; 64];
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    server.join().unwrap();
}
