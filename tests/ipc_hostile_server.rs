//! The client against a server that breaks the protocol. A fake server
//! (this file's, built from the public handshake pieces) answers a call
//! (made with `call` or with `call_async`) with unknown opcodes, ids
//! nobody asked for, bodies outside its arena, malformed inline bodies,
//! a second answer to one call, a corrupt ring index or random bytes in
//! the response ring. Each time the client closes that connection: the
//! call waiting on it fails with `InvalidData` and a message naming the
//! fault, later calls fail at once with `BrokenPipe`, the fake server
//! sees the client hang up, nothing panics or hangs, and a connection
//! to a well-behaved server in the same process keeps working. A server
//! that fails the handshake (hangs up, stays silent, speaks another
//! protocol, sends the wrong fds, a region of garbage or one too large,
//! never confirms the connection or confirms it with a wrong byte)
//! makes `connect` fail with an error that says which. And a server
//! that dies while calls wait for ring or arena room fails those calls
//! too.
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use green::ipc::{
    ArenaFullPolicy, Client, ClientConfig, Server, CALL, ERROR, INLINE, INLINE_MAX, PROTOCOL,
    READY, RELEASE, REPLY,
};
use green::shm::{
    recv_fd, send_fds, Desc, Endpoint, OwnArena, PeerArena, Region, RegionHeader, RegionLayout,
    ARENA_NAMES,
};

mod common;
use common::{watchdog, Rng};

/// Bytes in the fake server's arenas.
const ARENA: u64 = 1 << 20;

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("green-ipcs-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What the fake server's script gets: its end of the connection.
struct Conn {
    /// The socket: the script may drop it (the server dies).
    sock: Option<UnixStream>,
    ep: Endpoint,
    header: RegionHeader,
    /// The whole region, mapped read-write as the server maps it.
    map: memmap2::MmapRaw,
}

impl Conn {
    /// Waits for the client's next call (skipping releases of responses).
    fn next_call(&mut self) -> Desc {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.ep.rx.pop() {
                Ok(Some(d)) if d.opcode == CALL => return d,
                Ok(Some(d)) => assert_eq!(d.opcode, RELEASE, "client sent {d:?}"),
                Ok(None) => {
                    assert!(Instant::now() < deadline, "no call from the client");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("request ring: {e}"),
            }
        }
    }

    /// Puts `descs` on the response ring and wakes the client.
    fn send(&mut self, descs: &[Desc]) {
        for &d in descs {
            assert!(self.ep.tx.push(d).is_ok(), "response ring full");
        }
        self.ep.tx.notify().unwrap();
    }

    /// The `u32` at byte `at` of the response ring's memory.
    fn response_ring_word(&self, at: u64) -> &AtomicU32 {
        common::ring_word(&self.map, self.header.response_ring, at)
    }
}

/// A fake server at `path` for one connection: does the handshake as
/// `Server` does, runs `script`, then waits (up to 20 s) for the client
/// to hang up. The receiver gets whether the client hung up.
fn fake_server(
    path: &Path,
    script: impl FnOnce(&mut Conn) + Send + 'static,
) -> mpsc::Receiver<bool> {
    fake_server_with(path, RegionLayout::new(64, 64, ARENA, ARENA), script)
}

/// As [`fake_server`], with the region laid out as `layout`; if the
/// script drops the socket, the receiver gets nothing.
fn fake_server_with(
    path: &Path,
    layout: RegionLayout,
    script: impl FnOnce(&mut Conn) + Send + 'static,
) -> mpsc::Receiver<bool> {
    let listener = UnixListener::bind(path).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut hello = green::ipc::hello(None);
        sock.read_exact(&mut hello).unwrap();
        let region = Region::create(&layout).unwrap();
        let header = *region.header();
        let own = OwnArena::create(header.server_arena_len).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(header.size as usize)
            .map_raw(region.fd().as_raw_fd())
            .unwrap();
        send_fds(&sock, &[region.fd(), own.fd()], PROTOCOL).unwrap();
        let (fd, payload) = recv_fd(&sock).unwrap();
        assert_eq!(payload, PROTOCOL);
        let peer = PeerArena::attach(fd, ARENA_NAMES[0], header.client_arena_len).unwrap();
        let ep = region.into_server(own, peer).unwrap();
        (&sock).write_all(&[READY]).unwrap();
        let mut conn = Conn {
            sock: Some(sock),
            ep,
            header,
            map,
        };
        script(&mut conn);
        let Some(mut sock) = conn.sock.take() else {
            return;
        };
        // Keep the connection open: the client must hang up by itself.
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut byte = [0u8; 1];
        let hung_up = matches!(sock.read(&mut byte), Ok(0));
        let _ = done_tx.send(hung_up);
        drop(conn);
    });
    done_rx
}

/// An echo server that keeps to the protocol, on a std thread.
/// An echo server of our own at a fresh socket named `name`, and a
/// client connected to it: the connection that must keep working.
fn good_client(name: &str) -> Client {
    let path = sock_path(name);
    let server = Server::bind(&path).unwrap();
    std::thread::spawn(move || {
        let _ = server.serve(|req, resp| resp.write_all(&req.to_vec()));
    });
    Client::connect(&path).unwrap()
}

fn one_lane() -> ClientConfig {
    ClientConfig::default().lanes(1)
}

/// A call with `call`, or with `call_async` from an async task.
fn call(client: &Arc<Client>, asynchronous: bool, req: &'static [u8]) -> io::Result<Vec<u8>> {
    if !asynchronous {
        return client.call(req).map(|r| r.to_vec());
    }
    let client = client.clone();
    green::spawn_async(async move { client.call_async(req).await.map(|r| r.to_vec()) })
        .join()
        .unwrap()
}

/// One bad answer: the descriptors the fake server sends for `call`.
type Answer = fn(&Desc) -> Vec<Desc>;

fn reply(id: u64, flags: u32, offset: u64, len: u64) -> Desc {
    Desc {
        id,
        opcode: REPLY,
        flags,
        offset,
        len,
    }
}

#[test]
fn bad_responses_close_only_their_connection_and_fail_its_calls() {
    watchdog(|| {
        let good = good_client("good");
        let cases: [(&str, Answer, &str); 8] = [
            (
                "unknown opcode",
                |c| {
                    vec![Desc {
                        opcode: 999,
                        ..reply(c.id, 0, 0, 0)
                    }]
                },
                "unknown response opcode 999",
            ),
            (
                "id nobody asked for",
                |c| vec![reply(c.id ^ (1 << 40), 0, 0, 8)],
                "unknown or answered call",
            ),
            (
                "body past the end of the address space",
                |c| vec![reply(c.id, 0, u64::MAX - 3, 16)],
                "bad response",
            ),
            (
                "body longer than the arena",
                |c| vec![reply(c.id, 0, 0, ARENA + 1)],
                "bad response",
            ),
            (
                "ERROR with a body",
                |c| {
                    vec![Desc {
                        opcode: ERROR,
                        ..reply(c.id, 0, 0, 8)
                    }]
                },
                "ERROR response with a body",
            ),
            (
                "inline body longer than a descriptor holds",
                |c| vec![reply(c.id, INLINE | (INLINE_MAX as u32 + 1), 0, 0)],
                "bad response",
            ),
            (
                "a flag nobody defined",
                |c| vec![reply(c.id, 1 << 28, 0, 8)],
                "bad response",
            ),
            (
                "a call is its own answer",
                |c| vec![*c],
                "unknown response opcode",
            ),
        ];
        let runs = cases
            .into_iter()
            .enumerate()
            .flat_map(|(i, case)| [(i, case, false), (i, case, true)]);
        for (i, (what, answer, says), asynchronous) in runs {
            let path = sock_path(&format!("bad{i}-{asynchronous}"));
            let hung_up = fake_server(&path, move |conn| {
                let call = conn.next_call();
                conn.send(&answer(&call));
            });
            let client = Arc::new(Client::connect_with(&path, one_lane()).unwrap());
            let err = call(&client, asynchronous, b"first").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{what}: {err}");
            assert!(err.to_string().contains(says), "{what}: {err}");
            let later = call(&client, asynchronous, b"second").unwrap_err();
            assert_eq!(later.kind(), ErrorKind::BrokenPipe, "{what}: {later}");
            assert!(later.to_string().contains(says), "{what}: {later}");
            assert!(
                hung_up.recv().unwrap(),
                "{what}: the client kept the socket"
            );
            drop(client);
            assert_eq!(
                good.call(what.as_bytes()).unwrap().to_vec(),
                what.as_bytes()
            );
        }
    });
}

#[test]
fn a_second_answer_to_one_call_closes_the_connection() {
    watchdog(|| {
        let path = sock_path("twice");
        let hung_up = fake_server(&path, |conn| {
            let call = conn.next_call();
            // "ok" inline, twice.
            let ok = reply(
                call.id,
                INLINE | 2,
                u64::from(u16::from_le_bytes(*b"ok")),
                0,
            );
            conn.send(&[ok, ok]);
        });
        let client = Client::connect_with(&path, one_lane()).unwrap();
        // The first answer may settle the call before the second is read.
        match client.call(b"once") {
            Ok(r) => assert_eq!(r.to_vec(), b"ok"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}"),
        }
        assert!(hung_up.recv().unwrap(), "the client kept the socket");
        let later = client.call(b"again").unwrap_err();
        assert_eq!(later.kind(), ErrorKind::BrokenPipe, "{later}");
        assert!(
            later.to_string().contains("unknown or answered call"),
            "{later}"
        );
    });
}

#[test]
fn a_corrupt_response_ring_index_closes_the_connection() {
    watchdog(|| {
        let path = sock_path("tail");
        let hung_up = fake_server(&path, |conn| {
            let _call = conn.next_call();
            // The ring's tail (at +128) far beyond head + capacity.
            conn.response_ring_word(128)
                .store(0x7fff_0000, Ordering::SeqCst);
            conn.ep.tx.notify().unwrap();
        });
        let client = Client::connect_with(&path, one_lane()).unwrap();
        let err = client.call(b"first").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("response ring"), "{err}");
        assert!(hung_up.recv().unwrap(), "the client kept the socket");
        let later = client.call(b"second").unwrap_err();
        assert_eq!(later.kind(), ErrorKind::BrokenPipe, "{later}");
    });
}

/// A random answer to `call`: mostly near-misses of a valid one.
fn random_answer(rng: &mut Rng, call: &Desc) -> Desc {
    let (r1, r2, r3, r4, r5, r6) = (
        rng.next(),
        rng.next(),
        rng.below(ARENA),
        rng.below(64),
        rng.next(),
        rng.next(),
    );
    let ops = [REPLY, REPLY, REPLY, ERROR, CALL, RELEASE, r1 as u32];
    let opcode = ops[rng.below(7) as usize];
    let flags = match rng.below(6) {
        0..=2 => 0,
        3 => INLINE | rng.below(INLINE_MAX as u64 + 4) as u32,
        4 => 1 << rng.below(32),
        _ => r2 as u32,
    };
    let id = rng.pick(&[
        call.id,
        call.id,
        call.id,
        call.id + 1,
        call.id ^ (1 << 32),
        r5,
    ]);
    let offset = rng.pick(&[0, r3, ARENA - 8, ARENA, u64::MAX - r4, r6]);
    let len = rng.pick(&[0, r4, r3, ARENA, ARENA + 1, r1]);
    Desc {
        id,
        opcode,
        flags,
        offset,
        len,
    }
}

/// Random descriptors, and random words in the response ring (slots,
/// stamps and indices): every call ends, in an answer or an error, and an
/// error closes the connection. Seeded, so a failure reproduces.
#[test]
fn random_responses_end_every_call_and_never_panic() {
    watchdog(|| {
        let good = good_client("good-random");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut answered, mut closed) = (0, 0);
        for round in 0..120 {
            let seed = rng.next() | 1;
            let path = sock_path(&format!("random{round}"));
            let hung_up = fake_server(&path, move |conn| {
                let mut rng = Rng(seed);
                let call = conn.next_call();
                for _ in 0..1 + rng.below(3) {
                    if rng.below(4) == 0 {
                        // A random word anywhere in the ring but the two
                        // the client writes: its head (+256) and its
                        // sleep flag (+384).
                        let len = conn.header.response_ring.len;
                        let at = loop {
                            let at = rng.below(len / 4) * 4;
                            if at != 256 && at != 384 {
                                break at;
                            }
                        };
                        conn.response_ring_word(at)
                            .store(rng.next() as u32, Ordering::SeqCst);
                        conn.ep.tx.notify().unwrap();
                    } else {
                        let d = random_answer(&mut rng, &call);
                        conn.send(&[d]);
                    }
                }
                // A garbage answer may look valid and leave the call
                // waiting: end it with a bad one.
                conn.send(&[reply(call.id ^ (1 << 41), 0, 0, 0)]);
            });
            let client = Client::connect_with(&path, one_lane()).unwrap();
            match client.call(b"first") {
                Ok(r) => {
                    // A valid-looking answer: its bytes are whatever the
                    // fake server's arena holds at that range.
                    let _ = r.to_vec();
                    answered += 1;
                }
                // An ERROR for the call is a failed handler, whatever
                // error code it carries; anything else that ends the call
                // is the connection closing.
                Err(e) if e.to_string().contains("ipc handler failed") => answered += 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData, "round {round}: {e}");
                    closed += 1;
                }
            }
            // Every round ends with a bad answer, so the connection closes.
            assert!(
                hung_up.recv().unwrap(),
                "round {round}: the client kept the socket"
            );
            let later = client.call(b"second").unwrap_err();
            assert_eq!(
                later.kind(),
                ErrorKind::BrokenPipe,
                "round {round}: {later}"
            );
            drop(client);
            assert_eq!(good.call(b"still here").unwrap().to_vec(), b"still here");
        }
        eprintln!("{answered} calls answered, {closed} failed");
        assert!(
            closed > 0 && answered > 0,
            "the garbage never hit one of the two outcomes"
        );
    });
}

/// A fake server for one connection that reads the client's hello, hands
/// the socket to `then`, and keeps it until the client hangs up.
fn fake_handshake(path: &Path, then: impl FnOnce(&UnixStream) + Send + 'static) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut hello = green::ipc::hello(None);
        sock.read_exact(&mut hello).unwrap();
        then(&sock);
        let _ = (&sock).read(&mut [0u8; 1]);
    });
}

/// A region and a server arena as `Server` makes them.
fn region_and_arena() -> (Region, OwnArena) {
    let region = Region::create(&RegionLayout::new(64, 64, ARENA, ARENA)).unwrap();
    let own = OwnArena::create(region.header().server_arena_len).unwrap();
    (region, own)
}

/// The server's part of a good handshake up to its last byte: sends a
/// region and arena, takes the client's arena.
fn region_handshake(sock: &UnixStream) {
    let (region, own) = region_and_arena();
    send_fds(sock, &[region.fd(), own.fd()], PROTOCOL).unwrap();
    let _ = recv_fd(sock).unwrap();
}

/// A server that fails the handshake: `connect` returns an error of the
/// right kind naming what went wrong, and nothing panics or hangs.
#[test]
fn a_bad_handshake_fails_connect_with_a_clear_error() {
    type Script = Box<dyn FnOnce(&UnixStream) + Send>;
    watchdog(|| {
        let cases: Vec<(&str, Script, ErrorKind, &str)> = vec![
            (
                "hangs up after the hello",
                Box::new(|sock| sock.shutdown(std::net::Shutdown::Both).unwrap()),
                ErrorKind::UnexpectedEof,
                "closed the socket",
            ),
            (
                "sends nothing",
                Box::new(|_| {}),
                ErrorKind::TimedOut,
                "sent no region",
            ),
            (
                "speaks another protocol",
                Box::new(|sock| {
                    let (region, own) = region_and_arena();
                    send_fds(sock, &[region.fd(), own.fd()], b"other/1").unwrap();
                }),
                ErrorKind::InvalidData,
                "unknown protocol",
            ),
            (
                "sends the region without its arena",
                Box::new(|sock| {
                    let (region, _own) = region_and_arena();
                    send_fds(sock, &[region.fd()], PROTOCOL).unwrap();
                }),
                ErrorKind::InvalidData,
                "carries 1 fds, expected 2",
            ),
            (
                "sends /dev/null as its region",
                Box::new(|sock| {
                    let null = std::fs::File::open("/dev/null").unwrap();
                    let (_region, own) = region_and_arena();
                    send_fds(sock, &[null.as_fd(), own.fd()], PROTOCOL).unwrap();
                }),
                ErrorKind::InvalidData,
                "not a memfd",
            ),
            (
                "sends a region of garbage",
                Box::new(|sock| {
                    let (region, own) = region_and_arena();
                    let size = region.header().size as usize;
                    let map = memmap2::MmapOptions::new()
                        .len(size)
                        .map_raw(region.fd().as_raw_fd())
                        .unwrap();
                    // SAFETY: `size` bytes are mapped, and nobody else
                    // uses the region yet.
                    unsafe { std::ptr::write_bytes(map.as_mut_ptr(), 0xab, size) };
                    send_fds(sock, &[region.fd(), own.fd()], PROTOCOL).unwrap();
                }),
                ErrorKind::InvalidData,
                "magic",
            ),
            (
                "hangs up instead of finishing the handshake",
                Box::new(|sock| {
                    region_handshake(sock);
                    sock.shutdown(std::net::Shutdown::Both).unwrap();
                }),
                ErrorKind::UnexpectedEof,
                "before setting it up",
            ),
            (
                "ends the handshake with another byte",
                Box::new(|sock| {
                    region_handshake(sock);
                    (&*sock).write_all(b"?").unwrap();
                }),
                ErrorKind::InvalidData,
                "unknown byte",
            ),
            (
                "never finishes the handshake",
                Box::new(|sock| {
                    region_handshake(sock);
                }),
                ErrorKind::TimedOut,
                "did not finish the handshake",
            ),
            (
                "asks for more memory than the client maps",
                Box::new(|sock| {
                    let region =
                        Region::create(&RegionLayout::new(64, 64, 64 << 20, 64 << 20)).unwrap();
                    let own = OwnArena::create(region.header().server_arena_len).unwrap();
                    send_fds(sock, &[region.fd(), own.fd()], PROTOCOL).unwrap();
                }),
                ErrorKind::InvalidData,
                "above the limit",
            ),
        ];
        for (i, (what, script, kind, says)) in cases.into_iter().enumerate() {
            let path = sock_path(&format!("handshake{i}"));
            fake_handshake(&path, script);
            let config = one_lane()
                .handshake_timeout(Duration::from_millis(200))
                .max_region(32 << 20);
            let err = Client::connect_with(&path, config).unwrap_err();
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(err.to_string().contains(says), "{what}: {err}");
        }
    });
}

/// Calls waiting for room, on a ring the server stopped reading (inline
/// bodies) and in an arena its calls filled (16 KiB bodies), all fail
/// when the server dies, with `ConnectionReset` or `BrokenPipe`: neither
/// kind of wait outlives the peer (the arena wait would otherwise last
/// its 30 s and end in `OutOfMemory`).
#[test]
fn calls_waiting_for_ring_or_arena_room_fail_when_the_server_dies() {
    watchdog(|| {
        let path = sock_path("dies");
        let (die_tx, die_rx) = mpsc::channel::<()>();
        // An 8-entry request ring and a 64 KiB client arena.
        let layout = RegionLayout::new(8, 64, 64 << 10, ARENA);
        let _ = fake_server_with(&path, layout, move |conn| {
            // Read nothing; die when told.
            die_rx.recv().unwrap();
            conn.sock.take();
        });
        let client = Arc::new(Client::connect_with(&path, one_lane()).unwrap());
        let calls: Vec<_> = (0..80)
            .map(|i| {
                let client = client.clone();
                let body = if i % 2 == 0 {
                    vec![1u8; 8]
                } else {
                    vec![2u8; 16 << 10]
                };
                green::spawn(move || client.call(&body).map(|r| r.len()))
            })
            .collect();
        // Let the callers reach their waits (the test holds either way:
        // a call not yet waiting must fail as well).
        std::thread::sleep(Duration::from_millis(200));
        die_tx.send(()).unwrap();
        for (i, call) in calls.into_iter().enumerate() {
            let err = call.join().unwrap().unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ),
                "call {i}: {err}"
            );
        }
        let later = client.call(b"later").unwrap_err();
        assert!(
            matches!(
                later.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{later}"
        );
    });
}

/// `call_timeout` against a server that takes its time: the call gives up
/// with `TimedOut`, the connection keeps working, and the answer that
/// comes late is released (its body handed back to the server).
#[test]
fn a_call_that_times_out_is_abandoned_and_its_late_answer_released() {
    for asynchronous in [false, true] {
        late_answer(asynchronous);
    }
}

/// As above, with `call_timeout` or a `call_async` under
/// `green::time::timeout`.
fn late_answer(asynchronous: bool) {
    watchdog(move || {
        let path = sock_path(&format!("late-{asynchronous}"));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (released_tx, released_rx) = mpsc::channel::<bool>();
        let _ = fake_server(&path, move |conn| {
            let slow = conn.next_call();
            go_rx.recv().unwrap();
            let fast = conn.next_call();
            conn.send(&[reply(
                fast.id,
                INLINE | 2,
                u64::from(u16::from_le_bytes(*b"b!")),
                0,
            )]);
            // The slow call's answer, late, in the server arena.
            let body = conn.ep.arena.alloc(100).unwrap();
            conn.ep
                .arena
                .mem()
                .copy_to_owned(body.offset, &[7; 100])
                .unwrap();
            // Key 77: the client must hand it back with the body.
            conn.send(&[reply(slow.id, 77, body.offset, body.len)]);
            let deadline = Instant::now() + Duration::from_secs(20);
            let released = loop {
                match conn.ep.rx.pop().unwrap() {
                    Some(d) if d.opcode == RELEASE && d.offset == body.offset => {
                        assert_eq!((d.flags, d.len), (77, body.len), "{d:?}");
                        break true;
                    }
                    Some(d) => panic!("unexpected {d:?}"),
                    None if Instant::now() > deadline => break false,
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            };
            released_tx.send(released).unwrap();
        });
        let client = Arc::new(Client::connect_with(&path, one_lane()).unwrap());
        let err = if asynchronous {
            let c = client.clone();
            green::spawn_async(async move {
                let call = c.call_async(b"slow");
                green::time::timeout(Duration::from_millis(100), call)
                    .await
                    .map(drop)
            })
            .join()
            .unwrap()
            .map_err(io::Error::from)
            .unwrap_err()
        } else {
            let err = client
                .call_timeout(b"slow", Duration::from_millis(100))
                .unwrap_err();
            assert!(
                err.to_string().contains("waiting for the response"),
                "{err}"
            );
            err
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        go_tx.send(()).unwrap();
        // A timeout too long to count is no timeout.
        let fast = client.call_timeout(b"fast", Duration::MAX).unwrap();
        assert_eq!(fast.to_vec(), b"b!");
        assert!(
            released_rx.recv().unwrap(),
            "the late answer was not released"
        );
    });
}

/// `call_timeout` while waiting for room: on a full request ring and in
/// a full client arena, the call gives up with `TimedOut`, and leaving
/// the queue for arena room passes the turn on: a call queued behind it
/// is sent once room comes, and every other call completes.
#[test]
fn a_call_that_times_out_waiting_for_room_gives_up_its_turn() {
    watchdog(|| {
        let path = sock_path("room");
        let (full_tx, full_rx) = mpsc::channel::<()>();
        let (serve_tx, serve_rx) = mpsc::channel::<()>();
        // An 8-entry request ring and room for four 16 KiB bodies.
        let layout = RegionLayout::new(8, 64, 64 << 10, ARENA);
        let _ = fake_server_with(&path, layout, move |conn| {
            while conn.ep.rx.len().unwrap() < 8 {
                std::thread::sleep(Duration::from_millis(1));
            }
            full_tx.send(()).unwrap();
            serve_rx.recv().unwrap();
            let ok = |call: &Desc| {
                reply(
                    call.id,
                    INLINE | 2,
                    u64::from(u16::from_le_bytes(*b"ok")),
                    0,
                )
            };
            let eight: Vec<Desc> = (0..8).map(|_| conn.next_call()).collect();
            let (big, small): (Vec<Desc>, Vec<Desc>) = eight.into_iter().partition(|d| d.len > 16);
            // The inline calls and one big one: room for one body, which
            // must go to the call queued for it.
            let first: Vec<Desc> = small.iter().chain(&big[..1]).map(ok).collect();
            conn.send(&first);
            let queued = conn.next_call();
            conn.send(&[ok(&queued)]);
            let rest: Vec<Desc> = big[1..].iter().map(ok).collect();
            conn.send(&rest);
        });
        // Waiting for arena room without a limit (a limit too long to
        // count is none).
        let config = one_lane().arena_full(ArenaFullPolicy::Wait(Duration::MAX));
        let client = Arc::new(Client::connect_with(&path, config).unwrap());
        let spawn_call = |len: usize| {
            let client = client.clone();
            green::spawn(move || client.call(&vec![3u8; len]).map(|r| r.to_vec()))
        };
        // Four bodies fill the arena; with four inline calls, the ring.
        let mut calls: Vec<_> = (0..4).map(|_| spawn_call(16 << 10)).collect();
        calls.extend((0..4).map(|_| spawn_call(8)));
        full_rx.recv().unwrap();
        let err = client
            .call_timeout(b"no room", Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("request ring"), "{err}");
        let err = client
            .call_timeout(&[4u8; 16 << 10], Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("client arena"), "{err}");
        // Queued for room behind where the timed-out call was.
        calls.push(spawn_call(16 << 10));
        serve_tx.send(()).unwrap();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.join().unwrap().unwrap(), b"ok", "call {i}");
        }
    });
}
