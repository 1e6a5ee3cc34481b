//! The server against misbehaving and dying clients: garbage descriptors,
//! out-of-range offsets, corrupt ring indices and unknown opcodes close
//! only the offending connection; a client killed with SIGKILL (a child
//! process) is dropped while another client keeps being served; an arena
//! memfd that is not sealed against writes, or not the agreed size, is
//! refused by either side; the credential policy refuses peers on both
//! sides; and seeded random requests and ring words close only their
//! connection.
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use green::ipc::{Client, ClientConfig, Server, ServerConfig, CALL, INLINE, INLINE_MAX, RELEASE};
use green::shm::{CredentialPolicy, Desc, OwnArena, Region, RegionLayout};
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

mod common;
use common::{watchdog, Rng};

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("green-ipch-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What a server reported to its `on_error` hook, in order.
type Reports = Mutex<Vec<String>>;

/// An echo server on a std thread; returns what it reports.
fn start_server(path: &Path, config: ServerConfig) -> Arc<Reports> {
    let reports = Arc::new(Reports::default());
    let r = reports.clone();
    let server = Server::bind_with(
        path,
        config.on_error(move |err| {
            eprintln!("server reported: {err}");
            r.lock().unwrap().push(err.to_string());
        }),
    )
    .unwrap();
    std::thread::spawn(move || {
        let _ = server.serve(|req, resp| resp.write_all(&req.to_vec()));
    });
    reports
}

/// How many errors the server reported so far.
fn reported(reports: &Reports) -> usize {
    reports.lock().unwrap().len()
}

/// Waits until the server closes `sock` (EOF or reset).
fn assert_closed_by_server(mut sock: &std::os::unix::net::UnixStream) {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut b = [0u8; 8];
    loop {
        match sock.read(&mut b) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            // The end of a handshake that went through, before the fault
            // that closed the connection.
            Ok(1) if b[0] == green::ipc::READY => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

fn wait_errors(reports: &Reports, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reported(reports) < n {
        assert!(
            Instant::now() < deadline,
            "server reported {:?}, expected {n} errors",
            reports.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pushes call `id` with a body of `len` bytes, each `id as u8`, in the
/// raw client's arena (not notified).
fn push_call(ep: &mut green::shm::Endpoint, id: u64, len: usize) {
    let body = ep.arena.alloc(len as u64).unwrap();
    ep.arena
        .mem()
        .copy_to_owned(body.offset, &vec![id as u8; len])
        .unwrap();
    ep.tx
        .push(Desc {
            id,
            opcode: CALL,
            flags: 0,
            offset: body.offset,
            len: body.len,
        })
        .unwrap();
}

/// An echo server with the default configuration at a fresh path named
/// `name`, and what it reports; `None` in the child process a test starts
/// as a client (it runs `child_client` only).
fn echo_server(name: &str) -> Option<(PathBuf, Arc<Reports>)> {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return None;
    }
    let path = sock_path(name);
    let errors = start_server(&path, ServerConfig::default());
    Some((path, errors))
}

#[test]
fn hostile_clients_are_closed_good_client_keeps_working() {
    let Some((path, errors)) = echo_server("hostile") else {
        return;
    };
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        assert_eq!(good.call(b"before").unwrap().to_vec(), b"before");
        let bad_descs = [
            Desc {
                id: 1,
                opcode: 999,
                flags: 0,
                offset: 0,
                len: 0,
            },
            Desc {
                id: 2,
                opcode: CALL,
                flags: 0,
                offset: u64::MAX - 3,
                len: 16,
            },
            Desc {
                id: 3,
                opcode: CALL,
                flags: 0,
                offset: 0,
                len: 1 << 40,
            },
            Desc {
                id: 4,
                opcode: RELEASE,
                flags: 0,
                offset: 4096,
                len: 8,
            },
            Desc {
                id: 0xdead_beef,
                opcode: 0,
                flags: !0,
                offset: !0,
                len: !0,
            },
            // Inline bodies longer than a descriptor holds, or empty.
            Desc {
                id: 5,
                opcode: CALL,
                flags: INLINE | (INLINE_MAX as u32 + 1),
                offset: 0,
                len: 0,
            },
            Desc {
                id: 6,
                opcode: CALL,
                flags: INLINE,
                offset: 0,
                len: 0,
            },
            // A flag nobody defined.
            Desc {
                id: 8,
                opcode: CALL,
                flags: 1,
                offset: 0,
                len: 8,
            },
        ];
        let n_bad = bad_descs.len();
        for (i, d) in bad_descs.into_iter().enumerate() {
            let (mut ep, sock) = Client::connect_raw(&path, &ClientConfig::default()).unwrap();
            ep.tx.push(d).unwrap();
            let _ = ep.tx.notify();
            assert_closed_by_server(&sock);
            wait_errors(&errors, i + 1);
            assert_eq!(good.call(b"still here").unwrap().to_vec(), b"still here");
        }
        // Duplicate id in flight: two CALLs with the same id (the first
        // may or may not be answered before the second is read; send many).
        let (mut ep, sock) = Client::connect_raw(&path, &ClientConfig::default()).unwrap();
        for _ in 0..16 {
            let _ = ep.tx.push(Desc {
                id: 7,
                opcode: CALL,
                flags: 0,
                offset: 0,
                len: 0,
            });
        }
        let _ = ep.tx.notify();
        drop(ep);
        let _ = &sock;
        // Either closed for the duplicate or still open: the good client
        // must keep working regardless.
        assert_eq!(good.call(b"after dup").unwrap().to_vec(), b"after dup");
        drop(sock);

        // Corrupt ring index: map the region ourselves and write the
        // request ring's tail far beyond head + capacity.
        let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
        (&sock).write_all(&green::ipc::hello(None)).unwrap();
        let (fds, payload) = green::shm::recv_fds(&sock, 2).unwrap();
        let fd = fds.into_iter().next().unwrap();
        // Our arena, at the size the header asks for (word 7).
        let header = green::shm::Region::attach(fd.try_clone().unwrap()).unwrap();
        let own = OwnArena::create(header.header().client_arena_len).unwrap();
        green::shm::send_fd(&sock, own.fd(), &payload).unwrap();
        let size = rustix::fs::fstat(&fd).unwrap().st_size as usize;
        let map = memmap2::MmapOptions::new()
            .len(size)
            .map_raw(fd.as_raw_fd())
            .unwrap();
        let base = map.as_mut_ptr();
        // SAFETY: the header page is in the mapping; word 3 is the request
        // ring's offset; the ring header's `tail` is at +128 of it. Atomic
        // accesses tolerate the server's concurrent ones.
        unsafe {
            let words = base.cast::<std::sync::atomic::AtomicU64>();
            let ring = (*words.add(3)).load(Ordering::SeqCst) as usize;
            assert!(ring + 256 <= size);
            let tail = &*base.add(ring + 128).cast::<std::sync::atomic::AtomicU32>();
            tail.store(0x7fff_0000, Ordering::SeqCst);
        }
        assert_closed_by_server(&sock);
        wait_errors(&errors, n_bad + 1);
        assert_eq!(good.call(b"end").unwrap().to_vec(), b"end");
    });
}

#[test]
fn clients_without_a_good_hello_are_closed_good_client_keeps_working() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let path = sock_path("hello");
    let errors = start_server(
        &path,
        ServerConfig::default().handshake_timeout(Duration::from_millis(300)),
    );
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        assert_eq!(good.call(b"before").unwrap().to_vec(), b"before");
        // Not a hello (an HTTP request), a hello cut short, and silence:
        // each is closed without a region, and reported.
        let garbage = std::os::unix::net::UnixStream::connect(&path).unwrap();
        (&garbage).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_closed_by_server(&garbage);
        let cut = std::os::unix::net::UnixStream::connect(&path).unwrap();
        (&cut).write_all(&green::ipc::hello(None)[..5]).unwrap();
        let silent = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert_closed_by_server(&silent);
        assert_closed_by_server(&cut);
        wait_errors(&errors, 3);
        // Hanging up before the hello is no error.
        drop(std::os::unix::net::UnixStream::connect(&path).unwrap());
        // A hello naming a CPU the server has no carrier on is served.
        let odd = std::os::unix::net::UnixStream::connect(&path).unwrap();
        (&odd).write_all(&green::ipc::hello(Some(100_000))).unwrap();
        let (fds, payload) = green::shm::recv_fds(&odd, 2).unwrap();
        assert!(!payload.is_empty());
        // Hanging up instead of sending our arena is no error either.
        drop((fds, odd));
        assert_eq!(good.call(b"after").unwrap().to_vec(), b"after");
        assert_eq!(reported(&errors), 3);
    });
}

/// A memfd of `len` bytes with `seals`.
fn memfd(len: u64, seals: SealFlags) -> OwnedFd {
    let fd = memfd_create(
        "green-hostile",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    ftruncate(&fd, len).unwrap();
    fcntl_add_seals(&fd, seals).unwrap();
    fd
}

#[test]
fn clients_with_a_bad_arena_are_closed_good_client_keeps_working() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let path = sock_path("arena");
    let log = start_server(
        &path,
        ServerConfig::default().handshake_timeout(Duration::from_millis(300)),
    );
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        assert_eq!(good.call(b"before").unwrap().to_vec(), b"before");
        // A raw client up to the point where it owes the server its arena.
        let start = || {
            let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
            (&sock).write_all(&green::ipc::hello(None)).unwrap();
            let (fds, payload) = green::shm::recv_fds(&sock, 2).unwrap();
            assert_eq!(payload, green::ipc::PROTOCOL);
            let fd = fds.into_iter().next().unwrap();
            let h = *Region::attach(fd).unwrap().header();
            (sock, h.client_arena_len)
        };
        let sealed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        // An arena its sender (or anyone holding it) could still write.
        let (sock, len) = start();
        let fd = memfd(len, sealed);
        green::shm::send_fd(&sock, fd.as_fd(), green::ipc::PROTOCOL).unwrap();
        assert_closed_by_server(&sock);
        // Sealed, but not the size the region asks for.
        let (sock, len) = start();
        let fd = memfd(len + 4096, sealed | SealFlags::FUTURE_WRITE);
        green::shm::send_fd(&sock, fd.as_fd(), green::ipc::PROTOCOL).unwrap();
        assert_closed_by_server(&sock);
        // Not a memfd.
        let (sock, _) = start();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        green::shm::send_fd(&sock, a.as_fd(), green::ipc::PROTOCOL).unwrap();
        assert_closed_by_server(&sock);
        // No arena at all.
        let (sock, _) = start();
        assert_closed_by_server(&sock);
        wait_errors(&log, 4);
        let log = log.lock().unwrap().clone();
        for needle in [
            "not write-sealed",
            "but the region header gives",
            "does not support seals",
            "sent no arena",
        ] {
            assert!(
                log.iter().any(|m| m.contains(needle)),
                "no report names {needle:?}: {log:?}"
            );
        }
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(good.call(b"after").unwrap().to_vec(), b"after");
    });
}

#[test]
fn a_server_offering_a_writable_arena_is_refused() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let path = sock_path("writable-arena");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // A fake server: a good region, but an arena it did not seal against
    // writes, so it could change a response under the client.
    let fake = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut hello = [0u8; 8];
        (&sock).read_exact(&mut hello).unwrap();
        let region = Region::create(&RegionLayout::default()).unwrap();
        let arena = memfd(
            region.header().server_arena_len,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        );
        green::shm::send_fds(&sock, &[region.fd(), arena.as_fd()], green::ipc::PROTOCOL).unwrap();
        // Until the client hangs up.
        let _ = (&sock).read(&mut hello);
    });
    watchdog(move || {
        let e = Client::connect(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(
            e.to_string()
                .contains("server_arena memfd is not write-sealed"),
            "{e}"
        );
    });
    fake.join().unwrap();
}

/// Runs as a client when re-executed: calls forever.
#[test]
fn child_client() {
    let Some(path) = std::env::var_os("GREEN_IPC_CLIENT") else {
        return;
    };
    let client = Arc::new(Client::connect(path).unwrap());
    // The memfds this connection maps, which the server maps too.
    let inodes: Vec<String> = memfd_inodes().into_iter().map(|i| i.to_string()).collect();
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            green::spawn(move || loop {
                let _ = c.call(&[5u8; 1000]);
            })
        })
        .collect();
    println!("ready {}", inodes.join(" "));
    for h in hs {
        let _ = h.join();
    }
}

#[test]
fn client_killed_server_keeps_serving_others() {
    let Some((path, errors)) = echo_server("killclient") else {
        return;
    };
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["child_client", "--exact", "--nocapture", "--test-threads=1"])
            .env("GREEN_IPC_CLIENT", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 256];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            let n = out.read(&mut buf).unwrap();
            assert!(n > 0, "child exited early");
            seen.extend_from_slice(&buf[..n]);
        }
        // The shared memory of the child's connection, as the server (this
        // process) maps it.
        let line = String::from_utf8_lossy(&seen).into_owned();
        let theirs: Vec<u64> = line
            .split_once("ready")
            .unwrap()
            .1
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(|i| i.parse().unwrap())
            .collect();
        assert!(!theirs.is_empty(), "child mapped no memfd: {line:?}");
        let mapped = || {
            let ours = memfd_inodes();
            theirs.iter().filter(|i| ours.contains(i)).count()
        };
        assert!(mapped() > 0, "the server maps none of the child's memfds");
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
        for i in 0..200u32 {
            let req = i.to_le_bytes();
            assert_eq!(good.call(&req).unwrap().to_vec(), req);
        }
        // The server lets go of the dead client's region and arenas
        // (the watchdog bounds the wait).
        while mapped() > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A dying client is not a protocol error.
        assert_eq!(reported(&errors), 0);
    });
}

/// Inode numbers of the memfds this process maps (from /proc/self/maps).
fn memfd_inodes() -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut inodes: Vec<u64> = maps
        .lines()
        .filter(|l| l.contains("/memfd:green-shm"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes
}

#[test]
fn credential_policy_refuses_peers() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let me = rustix::process::geteuid().as_raw();
    // The server allows only another uid: it refuses us without a region.
    let path = sock_path("cred-server");
    let errors = start_server(
        &path,
        ServerConfig::default().credentials(CredentialPolicy::Allow(vec![me.wrapping_add(1)])),
    );
    let path2 = sock_path("cred-client");
    let _ok = start_server(&path2, ServerConfig::default());
    watchdog(move || {
        let e = Client::connect(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        wait_errors(&errors, 1);
        // The client refuses a server of another uid.
        let e = Client::connect_with(
            &path2,
            ClientConfig::default().credentials(CredentialPolicy::Allow(vec![me.wrapping_add(1)])),
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        // And a client refuses a region above its size limit.
        let e = Client::connect_with(&path2, ClientConfig::default().max_region(4096)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        // The limit covers both arenas too (4 MiB each by default), not
        // just the region (rings: well under 1 MiB).
        let e =
            Client::connect_with(&path2, ClientConfig::default().max_region(1 << 20)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("a region and arenas"), "{e}");
        // Defaults work.
        let c = Client::connect(&path2).unwrap();
        assert_eq!(c.call(b"ok").unwrap().to_vec(), b"ok");
    });
}

/// A client that does the handshake by hand and keeps a read-write map
/// of the whole region, to write any word of it.
struct RawClient {
    ep: green::shm::Endpoint,
    sock: std::os::unix::net::UnixStream,
    header: green::shm::RegionHeader,
    map: memmap2::MmapRaw,
    /// The region memfd's inode.
    region_ino: u64,
}

impl RawClient {
    fn connect(path: &Path) -> RawClient {
        let sock = std::os::unix::net::UnixStream::connect(path).unwrap();
        (&sock).write_all(&green::ipc::hello(None)).unwrap();
        let (fds, _) = green::shm::recv_fds(&sock, 2).unwrap();
        let [region_fd, arena_fd]: [OwnedFd; 2] = fds.try_into().unwrap();
        let stat = rustix::fs::fstat(&region_fd).unwrap();
        let (size, region_ino) = (stat.st_size as usize, stat.st_ino);
        let map = memmap2::MmapOptions::new()
            .len(size)
            .map_raw(region_fd.as_raw_fd())
            .unwrap();
        let region = Region::attach(region_fd).unwrap();
        let header = *region.header();
        let peer = green::shm::PeerArena::attach(
            arena_fd,
            green::shm::ARENA_NAMES[1],
            header.server_arena_len,
        )
        .unwrap();
        let own = OwnArena::create(header.client_arena_len).unwrap();
        green::shm::send_fd(&sock, own.fd(), green::ipc::PROTOCOL).unwrap();
        let ep = region.into_client(own, peer).unwrap();
        RawClient {
            ep,
            sock,
            header,
            map,
            region_ino,
        }
    }

    /// The `u32` at byte `at` of the request ring (`request`) or the
    /// response ring.
    fn ring_word(&self, request: bool, at: u64) -> &std::sync::atomic::AtomicU32 {
        let ring = if request {
            self.header.request_ring
        } else {
            self.header.response_ring
        };
        common::ring_word(&self.map, ring, at)
    }
}

/// Seeded random requests, near-misses of valid ones, and random words
/// in both rings except the ones the server writes: whatever a round
/// sends, the server answers what is valid, closes the connection at the
/// first violation (each round ends with one), reports it, never panics
/// or hangs, and a well-behaved client keeps being served.
#[test]
fn random_requests_and_ring_words_close_only_their_connection() {
    let Some((path, errors)) = echo_server("random") else {
        return;
    };
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let rounds = 120;
        for round in 0..rounds {
            let mut c = RawClient::connect(&path);
            let arena = c.header.client_arena_len;
            // Some valid bodies in our arena for the near-misses.
            let body = c.ep.arena.alloc(64).unwrap();
            c.ep.arena
                .mem()
                .copy_to_owned(body.offset, &[round as u8; 64])
                .unwrap();
            for _ in 0..1 + rng.below(4) {
                if rng.below(4) == 0 {
                    // Not the words the server writes: the request ring's
                    // head (+256) and sleep flag (+384), the response
                    // ring's tail (+128) and futex (+388), or its slots.
                    let request = rng.below(2) == 0;
                    let len = if request {
                        c.header.request_ring.len
                    } else {
                        512
                    };
                    let at = rng.below(len / 4) * 4;
                    let servers = if request { [256, 384] } else { [128, 388] };
                    if !servers.contains(&at) {
                        c.ring_word(request, at)
                            .store(rng.next() as u32, Ordering::SeqCst);
                    }
                } else {
                    let opcode =
                        [CALL, CALL, CALL, RELEASE, rng.next() as u32][rng.below(5) as usize];
                    let flags = match rng.below(6) {
                        0..=2 => 0,
                        3 => INLINE | rng.below(INLINE_MAX as u64 + 4) as u32,
                        4 => 1 << rng.below(32),
                        _ => rng.next() as u32,
                    };
                    let offsets = [body.offset, rng.below(arena), arena - 8, u64::MAX - 7];
                    let lens = [0, 64, rng.below(64), arena, rng.next()];
                    let d = Desc {
                        id: [round, round + 1, rng.next()][rng.below(3) as usize],
                        opcode,
                        flags,
                        offset: offsets[rng.below(4) as usize],
                        len: lens[rng.below(5) as usize],
                    };
                    let _ = c.ep.tx.push(d);
                }
                let _ = c.ep.tx.notify();
            }
            // End every round with a violation, after what came before.
            let _ = c.ep.tx.push(Desc {
                id: 0,
                opcode: 999,
                flags: 0,
                offset: 0,
                len: 0,
            });
            let _ = c.ep.tx.notify();
            assert_closed_by_server(&c.sock);
            wait_errors(&errors, round as usize + 1);
            assert_eq!(good.call(b"still here").unwrap().to_vec(), b"still here");
        }
        let reports = errors.lock().unwrap();
        eprintln!("server reported: {:?}", &reports[..reports.len().min(5)]);
        assert!(reports.len() >= rounds as usize);
    });
}

/// An echo server with room for four 16 KiB responses, whose handlers
/// wait for more with no limit (`ArenaFullPolicy::Wait(Duration::MAX)`:
/// too long to count); its path and what it reports.
fn server_with_room_for_four(name: &str) -> (PathBuf, Arc<Reports>) {
    let path = sock_path(name);
    let config = ServerConfig::default()
        .server_arena(64 << 10)
        .arena_full(green::ipc::ArenaFullPolicy::Wait(Duration::MAX));
    let errors = start_server(&path, config);
    (path, errors)
}

/// A client that dies while the server's handlers wait for room in the
/// server's arena (it never released the responses that filled it): the
/// server ends those waits and lets go of the connection's memory at
/// once, not when the arena wait would have timed out, and reports
/// nothing (a client going away is not a protocol error).
#[test]
fn a_client_dying_while_handlers_wait_for_response_room_is_let_go() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let (path, errors) = server_with_room_for_four("dies-full");
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        let mut c = RawClient::connect(&path);
        for id in 1..=12u64 {
            push_call(&mut c.ep, id, 16 << 10);
        }
        c.ep.tx.notify().unwrap();
        // Four answers fill the server's arena; the other handlers wait.
        while c.ep.rx.len().unwrap() < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }

        let region = c.region_ino;
        drop(c);
        // The server unmaps the region once every handler is gone (the
        // watchdog bounds the wait).
        while memfd_inodes().contains(&region) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(good.call(b"still here").unwrap().to_vec(), b"still here");
        assert_eq!(reported(&errors), 0);
    });
}

/// A handler waiting for response room with no limit
/// (`ArenaFullPolicy::Wait(Duration::MAX)`: too long to count) waits
/// until the client releases a response, then answers.
#[test]
fn a_response_waits_without_limit_for_room_the_client_releases() {
    if std::env::var_os("GREEN_IPC_CLIENT").is_some() {
        return;
    }
    let (path, errors) = server_with_room_for_four("nolimit");
    watchdog(move || {
        let client =
            Arc::new(Client::connect_with(&path, ClientConfig::default().lanes(1)).unwrap());
        // Four responses held: the server's arena is full.
        let mut held: Vec<_> = (0..4u8)
            .map(|i| client.call(&[i; 16 << 10]).unwrap())
            .collect();
        let c = client.clone();
        let fifth = green::spawn(move || c.call(&[5u8; 16 << 10]).map(|r| r.to_vec()));
        std::thread::sleep(Duration::from_millis(50));
        held.remove(0);
        assert_eq!(fifth.join().unwrap().unwrap(), vec![5u8; 16 << 10]);
        assert_eq!(reported(&errors), 0);
    });
}

/// A `RELEASE` must name a response body by the key its `REPLY` gave it:
/// the right offset and length under another key close the connection,
/// and the key, offset and length of the reply are accepted.
#[test]
fn a_release_under_the_wrong_key_closes_only_its_connection() {
    let Some((path, errors)) = echo_server("release-key") else {
        return;
    };
    watchdog(move || {
        let good = Client::connect(&path).unwrap();
        // A call with a 100-byte body: the echo comes back in the server
        // arena, under a key.
        let call = |ep: &mut green::shm::Endpoint, id: u64| -> Desc {
            push_call(ep, id, 100);
            let _ = ep.tx.notify();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(d) = ep.rx.pop().unwrap() {
                    assert_eq!((d.id, d.opcode, d.len), (id, green::ipc::REPLY, 100));
                    assert_eq!(d.flags & !green::ipc::KEY_MASK, 0, "{d:?}");
                    return d;
                }
                assert!(Instant::now() < deadline, "no reply");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let release = |d: &Desc, key: u32| Desc {
            id: 0,
            opcode: RELEASE,
            flags: key,
            offset: d.offset,
            len: d.len,
        };
        // The right key: accepted, and the connection goes on.
        let (mut ep, sock) = Client::connect_raw(&path, &ClientConfig::default()).unwrap();
        let first = call(&mut ep, 1);
        ep.tx.push(release(&first, first.flags)).unwrap();
        let second = call(&mut ep, 2);
        // Another key, with the body's offset and length.
        ep.tx.push(release(&second, second.flags ^ 1)).unwrap();
        let _ = ep.tx.notify();
        assert_closed_by_server(&sock);
        wait_errors(&errors, 1);
        let reported = errors.lock().unwrap()[0].clone();
        assert!(reported.contains("RELEASE of key"), "{reported}");
        assert_eq!(good.call(b"still here").unwrap().to_vec(), b"still here");
    });
}
