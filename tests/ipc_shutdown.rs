//! Shutting a green IPC server down: gracefully (calls that handlers are
//! running are answered, no call starts after it, `serve` returns once
//! every connection is closed) and at once (`abort`), before `serve`,
//! during a handshake, and from a handler in a server child process.
use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use green::ipc::{Client, Server, ServerConfig, ShutdownHandle};

mod common;
use common::{spawn_server, watchdog, TempDir};

/// A test's server, in this process: how many calls its handler started,
/// and the gate that `WAIT` calls wait on.
#[derive(Default)]
struct Probe {
    started: AtomicUsize,
    go: AtomicBool,
}

/// Binds a server at a fresh path and serves it on a std thread: the
/// handler counts each call it starts; `WAIT` waits for `probe.go`, then
/// everything is echoed.
fn serve(
    dir: &TempDir,
    config: ServerConfig,
) -> (
    std::path::PathBuf,
    ShutdownHandle,
    Arc<Probe>,
    std::thread::JoinHandle<io::Result<()>>,
) {
    let path = dir.0.join("s.sock");
    let server = Server::bind_with(&path, config).unwrap();
    let handle = server.shutdown_handle();
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    let thread = std::thread::spawn(move || {
        server.serve(move |req, resp| {
            p.started.fetch_add(1, Ordering::SeqCst);
            let body = req.to_vec();
            if body.starts_with(b"WAIT") {
                while !p.go.load(Ordering::SeqCst) {
                    green::thread::sleep(Duration::from_millis(1));
                }
            }
            resp.write_all(&body)
        })
    });
    (path, handle, probe, thread)
}

/// Starts `n` green threads that each make one call with `body(i)`.
fn callers(
    client: &Arc<Client>,
    n: usize,
    body: impl Fn(usize) -> Vec<u8>,
) -> Vec<green::JoinHandle<io::Result<Vec<u8>>>> {
    (0..n)
        .map(|i| {
            let (c, b) = (client.clone(), body(i));
            green::spawn(move || c.call(&b).map(|r| r.to_vec()))
        })
        .collect()
}

/// The error of a call that a shut-down server never ran: failed when
/// its lane closed, or made on a lane already closed (a client's lanes
/// are connections of their own and close one after the other).
fn assert_not_run(e: &io::Error) {
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_graceful_shutdown_answers_running_calls_and_starts_no_other() {
    watchdog(|| {
        let dir = TempDir::new("graceful");
        let (path, handle, probe, server) = serve(&dir, ServerConfig::default());
        let client = Arc::new(Client::connect(&path).unwrap());
        // Bodies inline and in the arena.
        let waiting = callers(&client, 8, |i| {
            let mut b = b"WAIT".to_vec();
            b.resize(if i % 2 == 0 { 10 } else { 5000 }, i as u8);
            b
        });
        wait_until("8 handlers running", || {
            probe.started.load(Ordering::SeqCst) == 8
        });
        assert!(!handle.is_shutdown());
        handle.shutdown();
        assert!(handle.is_shutdown());
        // Calls made now reach the server but never a handler.
        let late = callers(&client, 6, |i| vec![i as u8; 40]);
        // Nothing returns while handlers run calls. (They cannot end
        // before `go`.)
        std::thread::sleep(Duration::from_millis(50));
        assert!(!server.is_finished(), "serve returned with calls running");
        // A new connection is refused at once.
        assert!(Client::connect(&path).is_err());
        probe.go.store(true, Ordering::SeqCst);
        for (i, h) in waiting.into_iter().enumerate() {
            let got = h.join().unwrap().expect("a running call is answered");
            assert_eq!(got.len(), if i % 2 == 0 { 10 } else { 5000 });
            assert!(got.starts_with(b"WAIT"));
        }
        for h in late {
            let e = h
                .join()
                .unwrap()
                .expect_err("no call starts after shutdown");
            assert_not_run(&e);
        }
        server
            .join()
            .unwrap()
            .expect("serve returns Ok after a shutdown");
        assert_eq!(probe.started.load(Ordering::SeqCst), 8);
        wait_until("the client sees the close", || client.is_closed());
        assert_not_run(&client.call(b"after").unwrap_err());
    });
}

#[test]
fn abort_fails_running_calls_at_once() {
    watchdog(|| {
        let dir = TempDir::new("abort");
        let (path, handle, probe, server) = serve(&dir, ServerConfig::default());
        let client = Arc::new(Client::connect(&path).unwrap());
        let waiting = callers(&client, 5, |_| b"WAIT".to_vec());
        wait_until("5 handlers running", || {
            probe.started.load(Ordering::SeqCst) == 5
        });
        // A graceful shutdown would wait for them; abort ends it.
        handle.shutdown();
        handle.abort();
        for h in waiting {
            let e = h.join().unwrap().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        server.join().unwrap().unwrap();
        assert_not_run(&client.call(b"after").unwrap_err());
        // The handlers were never cut short; let them end.
        probe.go.store(true, Ordering::SeqCst);
    });
}

#[test]
fn a_shutdown_before_serve_or_during_a_handshake_ends_serve() {
    watchdog(|| {
        let dir = TempDir::new("early");
        // Before `serve`: it returns without accepting.
        let server = Server::bind(dir.0.join("a.sock")).unwrap();
        server.shutdown_handle().shutdown();
        server.serve(|_, _| Ok(())).unwrap();

        // A client that connects and never says hello would hold `serve`
        // for the handshake timeout (an hour here): a shutdown cuts it.
        let config = ServerConfig::default().handshake_timeout(Duration::from_secs(3600));
        let (path, handle, _probe, server) = serve(&dir, config);
        let mut silent = StdUnixStream::connect(&path).unwrap();
        // A served client on the side shows the server has accepted.
        let client = Client::connect(&path).unwrap();
        assert_eq!(client.call(b"ping").unwrap().to_vec(), b"ping");
        handle.shutdown();
        server.join().unwrap().unwrap();
        let mut buf = [0u8; 64];
        // The silent client's socket is closed: EOF (or the fds the
        // server had begun to send, then EOF).
        use std::io::Read;
        while silent.read(&mut buf).unwrap() > 0 {}
        // Calling again after a shutdown does nothing.
        handle.shutdown();
        handle.abort();
    });
}

/// The server child: `STOP` shuts its server down from the handler (and
/// is answered); the process exits once `serve` returns.
#[test]
fn child_server() {
    let Some(path) = std::env::var_os("GREEN_IPC_SHUTDOWN_SERVE") else {
        return;
    };
    static HANDLE: OnceLock<ShutdownHandle> = OnceLock::new();
    let server = Server::bind(path).unwrap();
    HANDLE.set(server.shutdown_handle()).unwrap();
    server
        .serve(|req, resp| {
            let body = req.to_vec();
            if body == b"STOP" {
                HANDLE.get().unwrap().shutdown();
            }
            resp.write_all(&body)
        })
        .unwrap();
}

#[test]
fn a_server_process_shut_down_by_a_handler_answers_and_exits() {
    if std::env::var_os("GREEN_IPC_SHUTDOWN_SERVE").is_some() {
        return;
    }
    let mut server = spawn_server("GREEN_IPC_SHUTDOWN_SERVE", "shutdown", &[]);
    let path = server.path.clone();
    watchdog(move || {
        let client = Client::connect(&path).unwrap();
        assert_eq!(client.call(b"echo").unwrap().to_vec(), b"echo");
        // Its own handler runs this call when it shuts down: answered.
        assert_eq!(client.call(b"STOP").unwrap().to_vec(), b"STOP");
        wait_until("the client sees the close", || client.is_closed());
        assert_not_run(&client.call(b"after").unwrap_err());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "server child: {status}");
}
