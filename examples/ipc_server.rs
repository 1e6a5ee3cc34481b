//! Serves green IPC calls on a Unix socket; each call's response is its
//! request body (an echo), so clients can verify data. SIGINT or SIGTERM
//! shuts it down gracefully (calls being handled are answered, then it
//! exits); a second one closes the remaining connections at once.
//!
//! ```text
//! cargo run --release --example ipc_server -- /tmp/green-ipc.sock
//! ```
//!
//! With `GREEN_PIN_CARRIERS=1` on both this and the client, each of the
//! client's lanes is served on the CPU its calls come from.

use std::io;

fn main() -> io::Result<()> {
    // First, so that every thread started later inherits the signal mask.
    let signals = block_signals(&[libc::SIGINT, libc::SIGTERM])?;
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/green-ipc.sock".into());
    let _ = std::fs::remove_file(&path);
    let server = green::ipc::Server::bind(&path)?;
    let handle = server.shutdown_handle();
    std::thread::spawn(move || {
        for n in 0.. {
            let sig = wait_signal(&signals);
            if n == 0 {
                eprintln!("signal {sig}: shutting down (again to close every connection now)");
                handle.shutdown();
            } else {
                eprintln!("signal {sig}: closing every connection");
                handle.abort();
            }
        }
    });
    eprintln!("serving on {path}");
    server.serve(|req, resp| {
        // The echo is copied once, from the client's arena straight into
        // the response's place in ours: `reserve` makes that one block and
        // `write_in_place` hands it out (only this process can write it).
        let n = req.len();
        resp.reserve(n);
        req.read_into(resp.write_in_place(n));
        Ok(())
    })?;
    let _ = std::fs::remove_file(&path);
    eprintln!("shut down");
    Ok(())
}

/// Blocks `sigs` in this thread (and so in the threads it starts from
/// now on), to be taken by [`wait_signal`] instead.
fn block_signals(sigs: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: `sigset_t` is plain data, and `sigemptyset` initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, initialised signal set.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    // SAFETY: `set` is valid; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(set)
}

/// Waits for one of the signals in `set` (blocked in every thread).
fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig = 0;
    // SAFETY: `set` is a valid signal set and `sig` a valid out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
