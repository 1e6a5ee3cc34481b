//! Plots the results of `cargo bench --bench ipc`: time per call against
//! buf_size, both axes logarithmic, one line per system. Reads the bench's
//! CSV and writes a self-contained SVG (no plotting crate).
//!
//! ```text
//! cargo bench --bench ipc
//! cargo run --example ipc_plot [-- CSV SVG]   # target/ipc-bench.csv -> docs/ipc.svg
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#d62728", "#ff7f0e", "#bcbd22", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#17becf",
];

fn size_label(size: f64) -> String {
    let s = size as u64;
    match s {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn ns_label(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{} s", n / 1e9),
        n if n >= 1e6 => format!("{} ms", n / 1e6),
        n if n >= 1e3 => format!("{} µs", n / 1e3),
        n => format!("{n} ns"),
    }
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let csv = args
        .next()
        .map_or(root.join("target/ipc-bench.csv"), PathBuf::from);
    let svg = args.next().map_or(root.join("docs/ipc.svg"), PathBuf::from);

    // system -> [(buf_size, ns per call)], systems in order of first row.
    let text = std::fs::read_to_string(&csv)?;
    let mut order: Vec<String> = Vec::new();
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 6 || f[0] != "ipc" {
            continue;
        }
        let (Ok(size), Ok(ns)) = (f[1].parse::<f64>(), f[5].parse::<f64>()) else {
            continue;
        };
        if !order.iter().any(|s| s == f[2]) {
            order.push(f[2].to_owned());
        }
        series.entry(f[2].to_owned()).or_default().push((size, ns));
    }
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x.log2());
        x1 = x1.max(x.log2());
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    if order.is_empty() {
        eprintln!("no `ipc` rows in {}", csv.display());
        std::process::exit(1);
    }
    let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
    let (x0, x1) = (x0, x1.max(x0 + 1.0));
    let px = |x: f64| LEFT + (x.log2() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y.log10() - y0) / (y1 - y0) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">IPC between two processes, 200 concurrent callers: time per call</text>"#,
        (LEFT + W - RIGHT) / 2.0
    );
    // Horizontal grid: decades, with 2x and 5x minor lines.
    for d in y0 as i32..=y1 as i32 {
        for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = m * 10f64.powi(d);
            if v.log10() > y1 + 1e-9 {
                continue;
            }
            let y = py(v);
            let (stroke, width) = if major { ("#bbb", 1.0) } else { ("#eee", 0.8) };
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}" stroke-width="{width}"/>"#,
                W - RIGHT
            );
            if major {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 6.0,
                    y + 4.0,
                    ns_label(v)
                );
            }
        }
    }
    // Vertical grid: every measured size.
    let mut sizes: Vec<f64> = series.values().flatten().map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let mut last_label = f64::MIN;
    for &size in &sizes {
        let x = px(size);
        // Sizes one octave apart are close: drop such a label a line.
        let drop = if x - last_label < 45.0 { 14.0 } else { 0.0 };
        if drop == 0.0 {
            last_label = x;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 18.0 + drop,
            size_label(size)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">buf_size (request and response body, log scale)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">time per call (log scale)</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    // One polyline with markers per system, and its legend entry.
    for (i, name) in order.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = series[name].clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(x, y) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = TOP + 14.0 + 22.0 * i as f64;
        let lx = W - RIGHT + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><circle cx="{:.1}" cy="{ly}" r="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            lx + 24.0,
            lx + 12.0,
            lx + 32.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    if let Some(dir) = svg.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&svg, s)?;
    println!(
        "wrote {} ({} systems, {} sizes)",
        svg.display(),
        order.len(),
        sizes.len()
    );
    Ok(())
}
