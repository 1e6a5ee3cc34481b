//! More file operations in flight than the ring has entries: 1,000 green
//! threads (and 1,000 async tasks) on carriers with 64-entry rings, each
//! writing and reading back its own file. Nothing is lost or mixed up.
use std::io::{Read, Write};

use green::fs::FileExt;

mod common;
use common::TempDir;

const FILES: u64 = if cfg!(miri) { 10 } else { 1000 };
const CHUNK: usize = 4096;
const CHUNKS: usize = 16;

/// Chunk `c` of file `i`: distinct for every (file, chunk).
fn chunk(i: u64, c: usize) -> Vec<u8> {
    common::pattern(CHUNK, i << 20 | c as u64)
}

fn small_ring_runtime() -> green::Runtime {
    green::Runtime::builder()
        .carriers(2)
        .ring_entries(64)
        .io_backend(green::IoBackend::IoUring)
        .build()
        .unwrap()
}

#[test]
fn thousand_green_threads_on_64_entry_rings() {
    let dir = TempDir::new("green");
    let rt = small_ring_runtime();
    let handles: Vec<_> = (0..FILES)
        .map(|i| {
            let p = dir.0.join(format!("f{i}"));
            rt.spawn(move || {
                // Out-of-order positional writes, then a sequential read.
                let f = green::fs::File::create_new(&p).unwrap();
                for c in (0..CHUNKS).rev() {
                    f.write_all_at(&chunk(i, c), (c * CHUNK) as u64).unwrap();
                }
                f.sync_data().unwrap();
                drop(f);
                let mut back = Vec::new();
                green::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back.len(), CHUNK * CHUNKS, "file {i}");
                for c in 0..CHUNKS {
                    assert!(
                        back[c * CHUNK..(c + 1) * CHUNK] == chunk(i, c)[..],
                        "file {i} chunk {c}"
                    );
                }
                // And appended, at the position.
                let mut f = green::fs::OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(&chunk(i, 99)).unwrap();
                drop(f);
                let all = green::fs::read(&p).unwrap();
                assert!(all[CHUNK * CHUNKS..] == chunk(i, 99)[..]);
                green::fs::remove_file(&p).unwrap();
                i
            })
        })
        .collect();
    let done: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(done, FILES * (FILES - 1) / 2);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn thousand_async_tasks_on_64_entry_rings() {
    let dir = TempDir::new("async");
    let rt = small_ring_runtime();
    let handles: Vec<_> = (0..FILES)
        .map(|i| {
            let p = dir.0.join(format!("f{i}"));
            rt.spawn_async(async move {
                use green::aio::fs;
                let f = fs::File::create_new(&p).await.unwrap();
                for c in (0..CHUNKS).rev() {
                    let (r, _) = f.write_all_at(chunk(i, c), (c * CHUNK) as u64).await;
                    r.unwrap();
                }
                f.close().await.unwrap();
                let back = fs::read(&p).await.unwrap();
                assert_eq!(back.len(), CHUNK * CHUNKS, "file {i}");
                for c in 0..CHUNKS {
                    assert!(
                        back[c * CHUNK..(c + 1) * CHUNK] == chunk(i, c)[..],
                        "file {i} chunk {c}"
                    );
                }
                fs::remove_file(&p).await.unwrap();
                i
            })
        })
        .collect();
    let done: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(done, FILES * (FILES - 1) / 2);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}
