//! green::fs on green threads (over the ring) and on OS threads (std):
//! file round trips, positions, append, positional I/O, path operations.
use std::io::{IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::path::Path;

use green::fs::{self, File, FileExt, OpenOptions};

/// A fresh directory under the system temp dir, removed on drop.
mod common;
use common::{pattern, TempDir};

/// Runs `f` on a green thread of a small runtime with an io_uring.
fn on_green<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let rt = green::Runtime::builder()
        .carriers(2)
        .io_backend(green::IoBackend::IoUring)
        .build()
        .unwrap();
    rt.block_on(f)
}

/// Everything a program does with files, checked step by step.
fn round_trip(dir: &Path) {
    let a = dir.join("a.txt");
    fs::write(&a, b"hello world").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"hello world");
    assert_eq!(fs::read_to_string(&a).unwrap(), "hello world");
    assert_eq!(fs::metadata(&a).unwrap().len(), 11);

    // Read, seek, read again: the position is the file's.
    let mut f = File::open(&a).unwrap();
    let mut buf = [0u8; 5];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(f.stream_position().unwrap(), 5);
    f.seek(SeekFrom::Start(6)).unwrap();
    let mut rest = String::new();
    f.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "world");
    assert_eq!(f.read(&mut buf).unwrap(), 0, "at the end");
    drop(f);

    // Append mode writes at the end whatever the position.
    let mut f = OpenOptions::new().append(true).open(&a).unwrap();
    f.write_all(b"!!").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"?").unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello world!!?");

    // Read-write, positional I/O leaves the position alone.
    let mut f = OpenOptions::new().read(true).write(true).open(&a).unwrap();
    f.seek(SeekFrom::Start(2)).unwrap();
    f.write_at(b"HELLO", 0).unwrap();
    let mut at = [0u8; 5];
    f.read_exact_at(&mut at, 6).unwrap();
    assert_eq!(&at, b"world");
    assert_eq!(f.stream_position().unwrap(), 2);
    let mut two = [0u8; 3];
    f.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"LLO");
    assert_eq!(f.read_at(&mut at, 1000).unwrap(), 0, "past the end");

    // Vectored I/O at the position.
    f.seek(SeekFrom::Start(0)).unwrap();
    let (mut x, mut y) = ([0u8; 2], [0u8; 3]);
    let n = f
        .read_vectored(&mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)])
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!((&x, &y), (b"HE", b"LLO"));
    f.seek(SeekFrom::End(0)).unwrap();
    let n = f
        .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
        .unwrap();
    assert_eq!(n, 4);
    f.sync_all().unwrap();
    f.sync_data().unwrap();

    // set_len truncates and extends, position unchanged.
    f.set_len(5).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 5);
    f.set_len(8).unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"HELLO\0\0\0");

    // create / create_new / &File I/O / try_clone share the position.
    let b = dir.join("b.bin");
    let f = File::create_new(&b).unwrap();
    let g = f.try_clone().unwrap();
    (&f).write_all(b"12345").unwrap();
    (&g).write_all(b"678").unwrap();
    (&f).seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    (&g).read_to_end(&mut all).unwrap();
    assert_eq!(all, b"12345678");
    drop((f, g));
    let mut f = File::create(&b).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0, "create truncates");
    f.write_all(b"new").unwrap();
    drop(f);

    // A larger file than one read: 3 MiB + 1, read whole.
    let big = pattern(3 * 1024 * 1024 + 1, 7);
    let c = dir.join("big");
    fs::write(&c, &big).unwrap();
    assert!(fs::read(&c).unwrap() == big);
    let mut f = File::open(&c).unwrap();
    f.seek(SeekFrom::Start(1000)).unwrap();
    let mut tail = vec![1, 2, 3];
    assert_eq!(f.read_to_end(&mut tail).unwrap(), big.len() - 1000);
    assert!(tail[..3] == [1, 2, 3] && tail[3..] == big[1000..]);

    // copy, rename, hard_link, directories.
    let d = dir.join("x/y/z");
    fs::create_dir_all(&d).unwrap();
    fs::create_dir_all(&d).unwrap();
    assert!(d.is_dir());
    assert_eq!(fs::copy(&c, d.join("copy")).unwrap(), big.len() as u64);
    assert!(fs::read(d.join("copy")).unwrap() == big);
    fs::rename(d.join("copy"), d.join("moved")).unwrap();
    assert!(!d.join("copy").exists());
    fs::hard_link(d.join("moved"), d.join("linked")).unwrap();
    assert_eq!(fs::read(d.join("linked")).unwrap().len(), big.len());
    fs::remove_file(d.join("moved")).unwrap();
    fs::remove_file(d.join("linked")).unwrap();
    fs::create_dir(d.join("w")).unwrap();
    fs::remove_dir(d.join("w")).unwrap();
    fs::remove_dir(&d).unwrap();
    assert!(!d.exists());
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    fs::remove_file(&c).unwrap();
}

#[test]
fn round_trip_on_green_thread() {
    let dir = TempDir::new("green");
    let p = dir.0.as_path().to_path_buf();
    on_green(move || {
        assert!(green::thread::is_green());
        round_trip(&p)
    });
}

#[test]
fn round_trip_on_os_thread() {
    let dir = TempDir::new("os");
    round_trip(dir.0.as_path());
}

#[test]
fn round_trip_on_blocking_backend() {
    let dir = TempDir::new("blocking");
    let p = dir.0.as_path().to_path_buf();
    let rt = green::Runtime::builder()
        .carriers(1)
        .io_backend(green::IoBackend::Blocking)
        .build()
        .unwrap();
    rt.block_on(move || round_trip(&p));
}

#[test]
fn green_and_std_files_convert_and_share_the_position() {
    let dir = TempDir::new("convert");
    let p = dir.0.as_path().join("f");
    on_green(move || {
        let f = File::create(&p).unwrap();
        let mut s: std::fs::File = f.into();
        s.write_all(b"std ").unwrap();
        let mut g = File::from(s);
        g.write_all(b"green").unwrap();
        let s = g.into_std();
        assert_eq!(s.metadata().unwrap().len(), 9);
        drop(s);
        assert_eq!(fs::read_to_string(&p).unwrap(), "std green");
        assert!(format!("{:?}", File::open(&p).unwrap()).contains("File"));
    });
}

#[test]
fn invalid_utf8_leaves_the_string_unchanged() {
    let dir = TempDir::new("utf8");
    let p = dir.0.as_path().join("bad");
    std::fs::write(&p, [b'o', b'k', 0xff, 0xfe]).unwrap();
    let (green_kind, s) = on_green(move || {
        let mut s = String::from("keep");
        let e = File::open(&p).unwrap().read_to_string(&mut s).unwrap_err();
        (e.kind(), s)
    });
    assert_eq!(green_kind, std::io::ErrorKind::InvalidData);
    assert_eq!(s, "keep");
}

/// A FIFO's reader and writer on one carrier: if `open` or `read` blocked
/// the carrier instead of going over the ring, the writer could never run.
#[test]
fn fifo_reader_and_writer_share_one_carrier() {
    let dir = TempDir::new("fifo");
    let p = dir.0.as_path().join("fifo");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = green::Runtime::builder()
            .carriers(1)
            .io_backend(green::IoBackend::IoUring)
            .build()
            .unwrap();
        let got = rt.block_on(move || {
            let q = p.clone();
            let reader = green::spawn(move || {
                let mut s = String::new();
                File::open(&q).unwrap().read_to_string(&mut s).unwrap();
                s
            });
            let writer = green::spawn(move || {
                let mut f = OpenOptions::new().write(true).open(&p).unwrap();
                f.write_all(b"through the pipe").unwrap();
            });
            writer.join().unwrap();
            reader.join().unwrap()
        });
        let _ = tx.send(got);
    });
    // A hang guard, not a timing bound: the exchange takes microseconds.
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("reader and writer deadlocked: a blocking call held the carrier");
    assert_eq!(got, "through the pipe");
}

/// Many green threads doing file I/O on few carriers, each its own file.
#[test]
fn many_green_threads_each_with_a_file() {
    let dir = TempDir::new("many");
    let base = dir.0.as_path().to_path_buf();
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            let p = base.join(format!("f{i}"));
            rt.spawn(move || {
                let data = pattern(10_000 + i as usize, i);
                fs::write(&p, &data).unwrap();
                let back = fs::read(&p).unwrap();
                fs::remove_file(&p).unwrap();
                back == data
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}
