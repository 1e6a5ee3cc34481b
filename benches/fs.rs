//! File I/O: green threads (blocking API over io_uring) next to green's
//! async API, tokio::fs, monoio (io_uring driver) and std.
//!
//! | case | one iteration |
//! |---|---|
//! | `write_read_100x64k` | 100 workers; each writes its own 64 KiB file (create + write) and reads it back whole (open + read) |
//! | `random_read_4k` | 1024 reads of 4 KiB at fixed pseudo-random aligned offsets of one 64 MiB file, by 16 workers (std: 1 or 4 threads) |
//!
//! Peers (one scheduler thread each, except std's threaded peers and
//! tokio's blocking pool, which is how tokio::fs works):
//!
//! - `green`: green threads (one per worker) on a one-carrier runtime,
//!   `green::fs`'s std-style blocking calls;
//! - `green_async`: `green::aio::fs` futures in `spawn_async` tasks on the
//!   same kind of runtime;
//! - `tokio`: `tokio::fs` in tasks of a current_thread runtime (tokio::fs
//!   runs each call on its blocking thread pool);
//! - `monoio`: `monoio::fs` on the io_uring driver, one thread;
//! - `std`: plain blocking calls on the bench thread; `std_4threads`: the
//!   same work split over 4 OS threads.
//!
//! Every read is checked: each worker sums the bytes it read as u64 words
//! and the iteration asserts the total against the expected one. Files live
//! in page cache (the bench writes them), so this measures the cost of
//! issuing file I/O, not the disk. Written buffers are prepared once and
//! moved into and out of the owned-buffer peers (no copies in the loop).
//!
//! The green peers time their loop inside the runtime (`iter_custom`), as
//! monoio's and tokio's `block_on` run theirs on the bench thread: the
//! hand-off from the bench thread to a carrier stays outside the clock.
//!
//! Run: `cargo bench --bench fs` (about two minutes).

use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

// The integration tests' helpers: the same data pattern and scratch
// directory.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{pattern, TempDir};

const FILES: usize = 100;
const FILE_SIZE: usize = 64 * 1024;
const BIG_SIZE: usize = 64 * 1024 * 1024;
const READ_SIZE: usize = 4096;
const READS: usize = 1024;
const WORKERS: usize = 16;
const PER_WORKER: usize = READS / WORKERS;

/// Sum of a buffer as little-endian u64 words (lengths are multiples of 8).
fn checksum(buf: &[u8]) -> u64 {
    buf.chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add)
}

fn green_runtime() -> green::Runtime {
    green::Runtime::builder()
        .carriers(1)
        .io_backend(green::IoBackend::IoUring)
        .build()
        .expect("a one-carrier green runtime with io_uring")
}

fn monoio_runtime() -> monoio::Runtime<monoio::IoUringDriver> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .expect("a monoio io_uring runtime")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// write then read back 100 files of 64 KiB

struct WriteRead {
    paths: Arc<Vec<PathBuf>>,
    /// File `i`'s contents; taken by the owned-buffer peers and put back.
    data: Vec<Option<Vec<u8>>>,
    shared: Arc<Vec<Vec<u8>>>,
    expected: u64,
}

impl WriteRead {
    fn new(dir: &Path) -> WriteRead {
        let shared: Vec<Vec<u8>> = (0..FILES).map(|i| pattern(FILE_SIZE, i as u64)).collect();
        let expected = shared
            .iter()
            .map(|d| checksum(d))
            .fold(0, u64::wrapping_add);
        WriteRead {
            paths: Arc::new((0..FILES).map(|i| dir.join(format!("f{i}"))).collect()),
            data: shared.iter().cloned().map(Some).collect(),
            shared: Arc::new(shared),
            expected,
        }
    }

    fn take(&mut self) -> Vec<(usize, PathBuf, Vec<u8>)> {
        self.data
            .iter_mut()
            .enumerate()
            .map(|(i, d)| (i, self.paths[i].clone(), d.take().unwrap()))
            .collect()
    }

    fn put(&mut self, i: usize, buf: Vec<u8>) {
        self.data[i] = Some(buf);
    }

    fn put_all(&mut self, jobs: Vec<(usize, PathBuf, Vec<u8>)>) {
        for (i, _, buf) in jobs {
            self.put(i, buf);
        }
    }
}

fn write_read(g: &mut BenchmarkGroup<'_, WallTime>, dir: &Path) {
    let mut w = WriteRead::new(dir);
    let expected = w.expected;

    let rt = green_runtime();
    g.bench_function("write_read_100x64k/green", |b| {
        b.iter_custom(|iters| {
            let (paths, data) = (w.paths.clone(), w.shared.clone());
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    let hs: Vec<_> = (0..FILES)
                        .map(|i| {
                            let (paths, data) = (paths.clone(), data.clone());
                            green::spawn(move || {
                                green::fs::write(&paths[i], &data[i]).unwrap();
                                checksum(&green::fs::read(&paths[i]).unwrap())
                            })
                        })
                        .collect();
                    let sum = hs
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .fold(0, u64::wrapping_add);
                    assert_eq!(sum, expected);
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("write_read_100x64k/green_async", |b| {
        b.iter_custom(|iters| {
            let mut jobs = w.take();
            let (took, jobs) = rt
                .spawn_async(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let hs: Vec<_> = jobs
                            .drain(..)
                            .map(|(i, p, buf)| {
                                green::spawn_async(async move {
                                    use green::aio::fs;
                                    let f = fs::File::create(&p).await.unwrap();
                                    let (r, buf) = f.write_all_at(buf, 0).await;
                                    r.unwrap();
                                    drop(f);
                                    let back = fs::read(&p).await.unwrap();
                                    (checksum(&back), (i, p, buf))
                                })
                            })
                            .collect();
                        let mut sum = 0u64;
                        for h in hs {
                            let (s, job) = h.await.unwrap();
                            sum = sum.wrapping_add(s);
                            jobs.push(job);
                        }
                        assert_eq!(sum, expected);
                    }
                    (start.elapsed(), jobs)
                })
                .join()
                .unwrap();
            w.put_all(jobs);
            took
        })
    });
    drop(rt);

    let trt = tokio_runtime();
    g.bench_function("write_read_100x64k/tokio", |b| {
        b.iter(|| {
            let (paths, data) = (w.paths.clone(), w.shared.clone());
            let sum = trt.block_on(async move {
                let hs: Vec<_> = (0..FILES)
                    .map(|i| {
                        let (paths, data) = (paths.clone(), data.clone());
                        tokio::spawn(async move {
                            tokio::fs::write(&paths[i], &data[i]).await.unwrap();
                            checksum(&tokio::fs::read(&paths[i]).await.unwrap())
                        })
                    })
                    .collect();
                let mut sum = 0u64;
                for h in hs {
                    sum = sum.wrapping_add(h.await.unwrap());
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });
    drop(trt);

    let mut mrt = monoio_runtime();
    g.bench_function("write_read_100x64k/monoio", |b| {
        b.iter(|| {
            let jobs = w.take();
            let (sum, bufs) = mrt.block_on(async move {
                let hs: Vec<_> = jobs
                    .into_iter()
                    .map(|(i, p, buf)| {
                        monoio::spawn(async move {
                            use monoio::fs;
                            let f = fs::File::create(&p).await.unwrap();
                            let (r, buf) = f.write_all_at(buf, 0).await;
                            r.unwrap();
                            drop(f);
                            let back = fs::read(&p).await.unwrap();
                            (i, checksum(&back), buf)
                        })
                    })
                    .collect();
                let mut sum = 0u64;
                let mut bufs = Vec::with_capacity(FILES);
                for h in hs {
                    let (i, s, buf) = h.await;
                    sum = sum.wrapping_add(s);
                    bufs.push((i, buf));
                }
                (sum, bufs)
            });
            assert_eq!(sum, expected);
            for (i, buf) in bufs {
                w.put(i, buf);
            }
        })
    });
    drop(mrt);

    g.bench_function("write_read_100x64k/std", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..FILES {
                std::fs::write(&w.paths[i], &w.shared[i]).unwrap();
                sum = sum.wrapping_add(checksum(&std::fs::read(&w.paths[i]).unwrap()));
            }
            assert_eq!(sum, expected);
        })
    });

    g.bench_function("write_read_100x64k/std_4threads", |b| {
        b.iter(|| {
            let sum = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|t| {
                        let w = &w;
                        s.spawn(move || {
                            let mut sum = 0u64;
                            for i in (t..FILES).step_by(4) {
                                std::fs::write(&w.paths[i], &w.shared[i]).unwrap();
                                let back = std::fs::read(&w.paths[i]).unwrap();
                                sum = sum.wrapping_add(checksum(&back));
                            }
                            sum
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .fold(0, u64::wrapping_add)
            });
            assert_eq!(sum, expected);
        })
    });
}

// ---------------------------------------------------------------------------
// 4 KiB random reads of one 64 MiB file

/// The fixed offsets: 4 KiB-aligned, spread by a multiplicative hash.
fn offsets() -> Arc<Vec<u64>> {
    let blocks = (BIG_SIZE / READ_SIZE) as u64;
    Arc::new(
        (0..READS as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) % blocks) * READ_SIZE as u64)
            .collect(),
    )
}

/// Offsets of worker `w`.
fn share(offs: &[u64], w: usize) -> &[u64] {
    &offs[w * PER_WORKER..(w + 1) * PER_WORKER]
}

fn random_read(g: &mut BenchmarkGroup<'_, WallTime>, dir: &Path) {
    let path = Arc::new(dir.join("big"));
    let content = pattern(BIG_SIZE, 42);
    {
        let mut f = std::fs::File::create(&*path).unwrap();
        f.write_all(&content).unwrap();
    }
    let offs = offsets();
    let expected = offs
        .iter()
        .map(|&o| checksum(&content[o as usize..o as usize + READ_SIZE]))
        .fold(0, u64::wrapping_add);
    drop(content);

    let rt = green_runtime();
    g.bench_function("random_read_4k/green", |b| {
        b.iter_custom(|iters| {
            let (path, offs) = (path.clone(), offs.clone());
            rt.block_on(move || {
                use green::fs::FileExt;
                let start = Instant::now();
                for _ in 0..iters {
                    let f = Arc::new(green::fs::File::open(&*path).unwrap());
                    let hs: Vec<_> = (0..WORKERS)
                        .map(|w| {
                            let (f, offs) = (f.clone(), offs.clone());
                            green::spawn(move || {
                                let mut buf = vec![0u8; READ_SIZE];
                                let mut sum = 0u64;
                                for &o in share(&offs, w) {
                                    f.read_exact_at(&mut buf, o).unwrap();
                                    sum = sum.wrapping_add(checksum(&buf));
                                }
                                sum
                            })
                        })
                        .collect();
                    let sum = hs
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .fold(0, u64::wrapping_add);
                    assert_eq!(sum, expected);
                }
                start.elapsed()
            })
        })
    });

    g.bench_function("random_read_4k/green_async", |b| {
        b.iter_custom(|iters| {
            let (path, offs) = (path.clone(), offs.clone());
            rt.spawn_async(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let f = Arc::new(green::aio::fs::File::open(&*path).await.unwrap());
                    let hs: Vec<_> = (0..WORKERS)
                        .map(|w| {
                            let (f, offs) = (f.clone(), offs.clone());
                            green::spawn_async(async move {
                                let mut buf = Vec::with_capacity(READ_SIZE);
                                let mut sum = 0u64;
                                for &o in share(&offs, w) {
                                    let (r, b) = f.read_exact_at(buf, o).await;
                                    r.unwrap();
                                    sum = sum.wrapping_add(checksum(&b));
                                    buf = b;
                                }
                                sum
                            })
                        })
                        .collect();
                    let mut sum = 0u64;
                    for h in hs {
                        sum = sum.wrapping_add(h.await.unwrap());
                    }
                    assert_eq!(sum, expected);
                }
                start.elapsed()
            })
            .join()
            .unwrap()
        })
    });
    drop(rt);

    let trt = tokio_runtime();
    g.bench_function("random_read_4k/tokio", |b| {
        b.iter(|| {
            let (path, offs) = (path.clone(), offs.clone());
            let sum = trt.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let hs: Vec<_> = (0..WORKERS)
                    .map(|w| {
                        let (path, offs) = (path.clone(), offs.clone());
                        tokio::spawn(async move {
                            // tokio::fs has no positional reads: seek + read
                            // on a file of the worker's own.
                            let mut f = tokio::fs::File::open(&*path).await.unwrap();
                            let mut buf = vec![0u8; READ_SIZE];
                            let mut sum = 0u64;
                            for &o in share(&offs, w) {
                                f.seek(std::io::SeekFrom::Start(o)).await.unwrap();
                                f.read_exact(&mut buf).await.unwrap();
                                sum = sum.wrapping_add(checksum(&buf));
                            }
                            sum
                        })
                    })
                    .collect();
                let mut sum = 0u64;
                for h in hs {
                    sum = sum.wrapping_add(h.await.unwrap());
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });
    drop(trt);

    let mut mrt = monoio_runtime();
    g.bench_function("random_read_4k/monoio", |b| {
        b.iter(|| {
            let (path, offs) = (path.clone(), offs.clone());
            let sum = mrt.block_on(async move {
                let f = Rc::new(monoio::fs::File::open(&*path).await.unwrap());
                let hs: Vec<_> = (0..WORKERS)
                    .map(|w| {
                        let (f, offs) = (f.clone(), offs.clone());
                        monoio::spawn(async move {
                            let mut buf = vec![0u8; READ_SIZE];
                            let mut sum = 0u64;
                            for &o in share(&offs, w) {
                                let (r, b) = f.read_exact_at(buf, o).await;
                                r.unwrap();
                                sum = sum.wrapping_add(checksum(&b));
                                buf = b;
                            }
                            sum
                        })
                    })
                    .collect();
                let mut sum = 0u64;
                for h in hs {
                    sum = sum.wrapping_add(h.await);
                }
                sum
            });
            assert_eq!(sum, expected);
        })
    });
    drop(mrt);

    g.bench_function("random_read_4k/std", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&*path).unwrap();
            let mut buf = vec![0u8; READ_SIZE];
            let mut sum = 0u64;
            for &o in offs.iter() {
                f.read_exact_at(&mut buf, o).unwrap();
                sum = sum.wrapping_add(checksum(&buf));
            }
            assert_eq!(sum, expected);
        })
    });

    g.bench_function("random_read_4k/std_4threads", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&*path).unwrap();
            let sum = std::thread::scope(|s| {
                let hs: Vec<_> = offs
                    .chunks(READS / 4)
                    .map(|part| {
                        let f = &f;
                        s.spawn(move || {
                            let mut buf = vec![0u8; READ_SIZE];
                            let mut sum = 0u64;
                            for &o in part {
                                f.read_exact_at(&mut buf, o).unwrap();
                                sum = sum.wrapping_add(checksum(&buf));
                            }
                            sum
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .fold(0, u64::wrapping_add)
            });
            assert_eq!(sum, expected);
        })
    });
}

fn fs_benches(c: &mut Criterion) {
    let scratch = TempDir::new("bench-fs");
    let mut g = c.benchmark_group("fs");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    write_read(&mut g, &scratch.0);
    random_read(&mut g, &scratch.0);
    g.finish();
}

criterion_group!(benches, fs_benches);
criterion_main!(benches);
