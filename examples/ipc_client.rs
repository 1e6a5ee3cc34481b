//! Runs CALLERS concurrent green-thread callers against `ipc_server` for
//! SECS seconds (default 3) with SIZE-byte requests, verifies every echoed
//! response, and prints throughput and latency percentiles. With `--async`
//! the callers are async tasks awaiting `call_async` on the same
//! connection instead.
//!
//! ```text
//! cargo run --release --example ipc_client -- /tmp/green-ipc.sock 200 4096 [SECS] [--async]
//! ```
//!
//! `GREEN_PIN_CARRIERS=1` (here and for the server) pins the carriers,
//! and the server then serves each lane on its callers' CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let (flags, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let use_async = flags.iter().any(|f| f == "--async");
    let mut args = args.into_iter();
    let path = args.next().unwrap_or_else(|| "/tmp/green-ipc.sock".into());
    let callers: usize = args.next().map_or(1, |s| s.parse().expect("CALLERS"));
    let size: usize = args.next().map_or(4, |s| s.parse().expect("SIZE"));
    let run_for = args.next().map_or(Duration::from_secs(3), |s| {
        Duration::from_secs_f64(s.parse().expect("SECS"))
    });

    let client = Arc::new(green::ipc::Client::connect(&path)?);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..callers)
        .map(|c| {
            let client = client.clone();
            let stop = stop.clone();
            let req: Vec<u8> = (0..size).map(|i| (i + c) as u8).collect();
            let mut got = vec![0u8; size];
            let mut lat = Vec::with_capacity(1 << 16);
            if use_async {
                green::spawn_async(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let resp = client.call_async(&req).await?;
                        resp.read_into(&mut got);
                        drop(resp);
                        lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        assert_eq!(got, req, "echoed bytes differ");
                    }
                    Ok(lat)
                })
            } else {
                green::spawn(move || -> std::io::Result<Vec<u32>> {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let resp = client.call(&req)?;
                        resp.read_into(&mut got);
                        drop(resp);
                        lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        assert_eq!(got, req, "echoed bytes differ");
                    }
                    Ok(lat)
                })
            }
        })
        .collect();
    let start = Instant::now();
    green::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("caller panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "callers: {callers}, size: {size}, calls/s: {:.0}, p50: {} ns, p99: {} ns",
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
