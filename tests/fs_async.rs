//! green::aio::fs: owned-buffer file futures on the carriers' rings, from
//! block_on (OS thread and green thread) and spawn_async; errors as std's;
//! dropped futures never corrupt memory.
// One case opens with invalid options on purpose.
#![allow(clippy::suspicious_open_options)]

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use std::task::Poll;

use green::aio::fs::{self, File};

mod common;
use common::{pattern, TempDir};

/// The async API end to end on one directory.
async fn round_trip(dir: PathBuf) -> io::Result<()> {
    let a = dir.join("a");
    fs::write(&a, "hello async world").await?;
    assert_eq!(fs::read(&a).await?, b"hello async world");

    let f = File::open(&a).await?;
    // Reads fill from the start of the buffer up to its capacity.
    let (n, buf) = f.read_at(Vec::with_capacity(5), 6).await;
    assert_eq!((n?, &buf[..]), (5, &b"async"[..]));
    let (n, buf) = f.read_at(buf, 1000).await;
    assert_eq!((n?, buf.len()), (0, 0), "past the end");
    // Reads at the position advance it.
    let (n, buf) = f.read(Vec::with_capacity(6)).await;
    assert_eq!((n?, &buf[..]), (6, &b"hello "[..]));
    let (n, buf) = f.read(buf).await;
    assert_eq!((n?, &buf[..]), (6, &b"async "[..]));
    let (r, buf) = f.read_exact_at(Vec::with_capacity(11), 6).await;
    r?;
    assert_eq!(buf, b"async world");
    let (r, buf) = f.read_exact_at(Vec::with_capacity(100), 6).await;
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(buf, b"async world", "what was read before the end");
    f.close().await?;

    // Writes at offsets and at the position; sync; set_len.
    let b = dir.join("b");
    let f = File::create(&b).await?;
    let (n, _) = f.write(b"0123".to_vec()).await;
    assert_eq!(n?, 4);
    let (n, _) = f.write(b"4567".to_vec()).await;
    assert_eq!(n?, 4);
    let (r, _) = f.write_all_at(b"AB".to_vec(), 2).await;
    r?;
    f.sync_all().await?;
    f.sync_data().await?;
    assert_eq!(f.metadata()?.len(), 8);
    f.set_len(6).await?;
    drop(f);
    assert_eq!(std::fs::read(&b)?, b"01AB45");

    // A big file in one write_all_at and read back with read().
    let big = pattern(5 * 1024 * 1024 + 3, 1);
    let c = dir.join("big");
    fs::write(&c, big.clone()).await?;
    assert!(fs::read(&c).await? == big);
    let f = File::open(&c).await?;
    let (r, part) = f.read_exact_at(Vec::with_capacity(1 << 20), 12345).await;
    r?;
    assert!(part[..] == big[12345..12345 + (1 << 20)]);

    // Path operations.
    let d = dir.join("p/q/r");
    fs::create_dir_all(&d).await?;
    fs::create_dir_all(&d).await?;
    assert!(d.is_dir());
    fs::rename(&c, d.join("moved")).await?;
    assert!(!c.exists());
    fs::remove_file(d.join("moved")).await?;
    fs::create_dir(d.join("s")).await?;
    fs::remove_dir(d.join("s")).await?;
    assert_eq!(
        File::create_new(&a).await.unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    Ok(())
}

#[test]
fn round_trip_with_block_on_from_an_os_thread() {
    let dir = TempDir::new("os");
    green::block_on(round_trip(dir.0.clone())).unwrap();
}

#[test]
fn round_trip_with_block_on_on_a_green_thread() {
    let dir = TempDir::new("green");
    let p = dir.0.clone();
    green::spawn(move || green::block_on(round_trip(p)))
        .join()
        .unwrap()
        .unwrap();
}

#[test]
fn many_spawned_tasks_each_with_a_file() {
    let dir = TempDir::new("tasks");
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            let p = dir.0.join(format!("f{i}"));
            green::spawn_async(async move {
                let data = pattern(20_000 + i as usize, i);
                fs::write(&p, data.clone()).await.unwrap();
                let back = fs::read(&p).await.unwrap();
                fs::remove_file(&p).await.unwrap();
                back == data
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}

/// Borrowed paths work too: the futures do not keep the path argument.
#[test]
fn futures_do_not_borrow_the_path() {
    let dir = TempDir::new("borrow");
    let fut = {
        let owned = dir.0.join("x").to_str().unwrap().to_string();
        let fut = fs::write(owned.as_str(), "x");
        drop(owned);
        fut
    };
    green::block_on(fut).unwrap();
    assert_eq!(std::fs::read(dir.0.join("x")).unwrap(), b"x");
}

fn kind<T>(r: io::Result<T>) -> Option<io::ErrorKind> {
    r.err().map(|e| e.kind())
}

#[test]
fn errors_match_std() {
    let dir = TempDir::new("errors");
    let d = dir.0.clone();
    std::fs::write(d.join("file"), b"data").unwrap();
    std::fs::create_dir(d.join("full")).unwrap();
    std::fs::write(d.join("full/inner"), b"x").unwrap();
    let (missing, file, full) = (d.join("missing"), d.join("file"), d.join("full"));
    let std_kinds = vec![
        kind(std::fs::File::open(&missing)),
        kind(std::fs::File::create_new(&file)),
        kind(std::fs::OpenOptions::new().write(true).open(&full)),
        kind(
            std::fs::OpenOptions::new()
                .read(true)
                .create(true)
                .open(&missing),
        ),
        kind(std::fs::File::open("a\0b")),
        kind(std::fs::read(&missing)),
        kind(std::fs::read(&full)),
        kind(std::fs::remove_file(&missing)),
        kind(std::fs::remove_file(&full)),
        kind(std::fs::remove_dir(&full)),
        kind(std::fs::create_dir(&full)),
        kind(std::fs::create_dir_all(&file)),
        kind(std::fs::create_dir_all(file.join("a/b"))),
        kind(std::fs::rename(&missing, d.join("to"))),
        kind(std::fs::rename(&file, &full)),
    ];
    let green_kinds = green::block_on(async move {
        vec![
            kind(File::open(&missing).await),
            kind(File::create_new(&file).await),
            kind(File::open_with(&full, green::fs::OpenOptions::new().write(true)).await),
            kind(
                File::open_with(
                    &missing,
                    green::fs::OpenOptions::new().read(true).create(true),
                )
                .await,
            ),
            kind(File::open("a\0b").await),
            kind(fs::read(&missing).await),
            kind(fs::read(&full).await),
            kind(fs::remove_file(&missing).await),
            kind(fs::remove_file(&full).await),
            kind(fs::remove_dir(&full).await),
            kind(fs::create_dir(&full).await),
            kind(fs::create_dir_all(&file).await),
            kind(fs::create_dir_all(file.join("a/b")).await),
            kind(fs::rename(&missing, d.join("to")).await),
            kind(fs::rename(&file, &full).await),
        ]
    });
    assert!(std_kinds.iter().all(Option::is_some));
    assert_eq!(std_kinds, green_kinds);
}

/// Polls `fut` once, then drops it (mid-flight if it was not ready).
async fn poll_once_then_drop<F: Future>(fut: F) -> bool {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (File::from(r), File::from(w))
}

/// A read on an empty pipe is in flight when its future is dropped: the op
/// is cancelled, its buffer outlives the kernel's use, and the pipe and
/// the carrier keep working. Data written afterwards reaches the next read,
/// not the cancelled one (the cancel is submitted ahead of the write).
#[test]
fn dropped_read_future_is_cancelled_and_memory_stays_sound() {
    green::block_on(async {
        let (r, w) = pipe();
        for round in 0..100u32 {
            let ready = poll_once_then_drop(r.read(vec![0u8; 4096])).await;
            assert!(!ready, "nothing to read yet");
            let msg = format!("round {round}").into_bytes();
            let (n, _) = w.write(msg.clone()).await;
            assert_eq!(n.unwrap(), msg.len());
            let (n, buf) = r.read(Vec::with_capacity(64)).await;
            assert_eq!(n.unwrap(), msg.len());
            assert_eq!(buf, msg);
        }
    });
}

/// Reads of a file dropped at every stage, interleaved with reads that are
/// checked: nothing written into freed or reused memory shows up.
#[test]
fn dropped_file_reads_do_not_corrupt_later_ones() {
    let dir = TempDir::new("drop");
    let p = dir.0.join("data");
    let data = pattern(1 << 20, 3);
    std::fs::write(&p, &data).unwrap();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let p = p.clone();
            let data = data.clone();
            green::spawn_async(async move {
                let f = File::open(&p).await.unwrap();
                for i in 0..200u64 {
                    let off = (i * 7919 + t * 104_729) % (data.len() as u64 - 65536);
                    poll_once_then_drop(f.read_at(Vec::with_capacity(65536), off)).await;
                    let (n, buf) = f.read_at(Vec::with_capacity(65536), off).await;
                    assert_eq!(n.unwrap(), 65536);
                    assert!(buf[..] == data[off as usize..off as usize + 65536]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The runtime goes on serving other I/O afterwards.
    let back = green::block_on(fs::read(p)).unwrap();
    assert!(back == data);
}

#[test]
fn blocking_and_async_files_convert() {
    let dir = TempDir::new("convert");
    let p = dir.0.join("f");
    let q: &Path = &p;
    let f = green::fs::File::create(q).unwrap();
    let a = File::from(f);
    let a = green::block_on(async move {
        let (r, _) = a.write_all_at(b"shared".to_vec(), 0).await;
        r.unwrap();
        a
    });
    let s: std::fs::File = a.into();
    assert_eq!(s.metadata().unwrap().len(), 6);
}
