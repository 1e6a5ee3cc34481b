//! Serves green IPC calls on a Unix socket until killed; each call's
//! response is its request body (an echo), so clients can verify data.
//!
//! ```text
//! cargo run --release --example ipc_server -- /tmp/green-ipc.sock
//! ```
//!
//! With `GREEN_PIN_CARRIERS=1` on both this and the client, each of the
//! client's lanes is served on the CPU its calls come from.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/green-ipc.sock".into());
    let _ = std::fs::remove_file(&path);
    let server = green::ipc::Server::bind(&path)?;
    eprintln!("serving on {path}");
    server.serve(|req, resp| {
        // Copied through a buffer on the handler's stack, in pieces: no
        // allocation per call, any size. `reserve` puts a longer response
        // straight into the shared arena.
        let mut buf = [0u8; 4096];
        resp.reserve(req.len());
        let mut pos = 0;
        loop {
            let n = req.read_at(pos, &mut buf);
            if n == 0 {
                return Ok(());
            }
            resp.write_all(&buf[..n])?;
            pos += n;
        }
    })
}
