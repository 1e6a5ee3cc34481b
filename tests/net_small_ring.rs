//! Far more socket ops in flight than a 64-entry ring holds: the surplus
//! waits for room and nothing is lost, timeouts included.
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use green::net::UdpSocket;

fn small_ring() -> Option<green::Runtime> {
    match green::Runtime::builder()
        .carriers(1)
        .ring_entries(64)
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("skipped: io_uring unavailable: {e}");
            None
        }
    }
}

/// Exits the process if `done` is not signalled in time: an op lost in the
/// ring would hang its reader forever.
fn watchdog(name: &'static str) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(120)) {
            // Straight to stderr: the test harness's capture would be lost
            // with the process.
            let _ = writeln!(
                io::stderr(),
                "{name}: readers still blocked after 120 s (an op or its timeout was lost)"
            );
            std::process::exit(1);
        }
    });
    tx
}

#[test]
fn ten_thousand_reads_in_flight_on_a_64_entry_ring() {
    const N: usize = 10_000;
    let Some(rt) = small_ring() else { return };
    let done = watchdog("ten_thousand_reads_in_flight_on_a_64_entry_ring");
    let (addr_tx, addr_rx) = mpsc::channel::<Vec<SocketAddr>>();
    // Spawned from a green thread on the carrier, the readers run in one
    // burst: each turn of the scheduler queues far more than 64 entries.
    let main = rt.spawn(move || {
        let mut addrs = Vec::with_capacity(N);
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                addrs.push(sock.local_addr().unwrap());
                green::spawn(move || {
                    let mut buf = [0u8; 8];
                    assert_eq!(sock.recv(&mut buf).unwrap(), 8);
                    assert_eq!(u64::from_le_bytes(buf), i as u64);
                })
            })
            .collect();
        addr_tx.send(addrs).unwrap();
        for h in handles {
            h.join().unwrap();
        }
    });
    let addrs = addr_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, a) in addrs.iter().enumerate().rev() {
        sender.send_to(&(i as u64).to_le_bytes(), a).unwrap();
    }
    main.join().unwrap();
    done.send(()).unwrap();
}

/// Clears `SO_RCVTIMEO` behind the socket's back, so only the ring's
/// linked timeout can end a read (the kernel's own would mask a lost one).
fn clear_kernel_timeout(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval of the size passed, on an open socket.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn linked_timeouts_survive_a_full_ring() {
    // A read with a timeout is two entries (the op and its linked timeout);
    // mixed with one-entry reads, pairs straddle the end of the 64-entry SQ
    // and most wait in the overflow.
    const N: usize = 3_000;
    let Some(rt) = small_ring() else { return };
    let done = watchdog("linked_timeouts_survive_a_full_ring");
    let (addr_tx, addr_rx) = mpsc::channel::<Vec<SocketAddr>>();
    let main = rt.spawn(move || {
        let mut plain = Vec::new();
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let timed = i % 3 != 0;
                if !timed {
                    plain.push(sock.local_addr().unwrap());
                }
                green::spawn(move || {
                    if timed {
                        sock.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        clear_kernel_timeout(&sock);
                    }
                    let start = Instant::now();
                    let r = sock.recv(&mut [0u8; 8]);
                    (timed, r.map_err(|e| e.kind()), start.elapsed())
                })
            })
            .collect();
        addr_tx.send(plain).unwrap();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let plain = addr_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for a in &plain {
        sender.send_to(&[1u8; 8], a).unwrap();
    }
    for (timed, r, took) in main.join().unwrap() {
        if timed {
            assert_eq!(r, Err(io::ErrorKind::WouldBlock));
            assert!(took >= Duration::from_millis(100));
        } else {
            assert_eq!(r, Ok(8));
        }
    }
    done.send(()).unwrap();
}
