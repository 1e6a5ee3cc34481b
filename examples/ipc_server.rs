//! Serves green IPC calls on a Unix socket until killed; each call's
//! response is its request body (an echo), so clients can verify data.
//!
//! ```text
//! cargo run --release --example ipc_server -- /tmp/green-ipc.sock
//! ```
//!
//! With `GREEN_PIN_CARRIERS=1` on both this and the client, each of the
//! client's lanes is served on the CPU its calls come from.

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/green-ipc.sock".into());
    let _ = std::fs::remove_file(&path);
    let server = green::ipc::Server::bind(&path)?;
    eprintln!("serving on {path}");
    server.serve(|req, resp| {
        // The echo is copied once, from the client's arena straight into
        // the response's place in ours: `reserve` makes that one block and
        // `write_in_place` hands it out (only this process can write it).
        let n = req.len();
        resp.reserve(n);
        req.read_into(resp.write_in_place(n));
        Ok(())
    })
}
