//! Serves green IPC calls on a Unix socket until killed; each call's
//! response is its request body (an echo), so clients can verify data.
//!
//! ```text
//! cargo run --release --example ipc_server -- /tmp/green-ipc.sock
//! ```

use std::io::Write;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/green-ipc.sock".into());
    let _ = std::fs::remove_file(&path);
    let server = green::ipc::Server::bind(&path)?;
    eprintln!("serving on {path}");
    server.serve(|req, resp| {
        let mut buf = vec![0u8; req.len()];
        req.read_into(&mut buf);
        resp.write_all(&buf)
    })
}
