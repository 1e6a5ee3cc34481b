//! 10,000 green threads each blocked on its own socket read, released in a
//! random order: every one completes with its own data.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use green::net::UdpSocket;

const READERS: usize = 10_000;

/// xorshift64: a fixed-seed shuffle, reproducible run to run.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[test]
fn ten_thousand_blocked_readers_released_in_random_order() {
    let ready = Arc::new(AtomicUsize::new(0));
    let mut addrs = Vec::with_capacity(READERS);
    let handles: Vec<_> = (0..READERS)
        .map(|i| {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            addrs.push((i, sock.local_addr().unwrap()));
            let ready = ready.clone();
            green::spawn(move || {
                ready.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 16];
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(n, 8);
                (u64::from_le_bytes(buf[..8].try_into().unwrap()), from)
            })
        })
        .collect();
    // Let every reader reach its read (bounded wait; datagrams sent before a
    // reader blocks are queued, so this only makes the test meaningful).
    for _ in 0..2_000 {
        if ready.load(Ordering::Relaxed) == READERS {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "a reader finished before any data was sent"
    );

    shuffle(&mut addrs, 0x9E37_79B9_7F4A_7C15);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = sender.local_addr().unwrap();
    for (i, addr) in &addrs {
        sender.send_to(&(*i as u64).to_le_bytes(), addr).unwrap();
    }
    for (i, h) in handles.into_iter().enumerate() {
        let (got, src) = h.join().unwrap();
        assert_eq!(got, i as u64);
        assert_eq!(src, from);
    }
}
