//! Each error path of green::fs gives what std gives for the same inputs:
//! the same `io::ErrorKind` and, where std has one, the same errno. Every
//! case runs std and green on the same paths, green both on a green thread
//! (over the ring) and on an OS thread (std underneath).

// The invalid option combinations are the point of some cases.
#![allow(clippy::nonsensical_open_options, clippy::suspicious_open_options)]

use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use green::fs::FileExt;

mod common;
use common::TempDir;

/// What an outcome looks like, for comparison: Ok, or the error's kind and
/// errno.
fn outcome<T>(r: io::Result<T>) -> Result<(), (io::ErrorKind, Option<i32>)> {
    r.map(drop).map_err(|e| (e.kind(), e.raw_os_error()))
}

/// The fixture: a directory with a file, a non-empty subdirectory, an empty
/// one, and a mode-000 file.
fn fixture(d: &Path) {
    std::fs::write(d.join("file"), b"data").unwrap();
    std::fs::create_dir(d.join("full")).unwrap();
    std::fs::write(d.join("full/inner"), b"x").unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join("locked"), b"secret").unwrap();
    std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
}

type Case = (&'static str, io::ErrorKind);

/// Runs every failing call with std and with green::fs and compares.
/// Returns the cases checked with the kind they gave.
fn compare_all(d: &Path) -> Vec<Case> {
    let mut seen = Vec::new();
    let mut check = |name: &'static str,
                     s: Result<(), (io::ErrorKind, Option<i32>)>,
                     g: Result<(), (io::ErrorKind, Option<i32>)>| {
        assert_eq!(s, g, "{name}: std gave {s:?}, green gave {g:?}");
        let kind = s.err().map(|e| e.0).expect(name);
        seen.push((name, kind));
    };
    let missing = d.join("missing");
    let file = d.join("file");
    let full = d.join("full");
    let empty = d.join("empty");

    macro_rules! both {
        ($name:expr, |$fs:ident| $body:expr) => {{
            let s = {
                use std::fs as $fs;
                outcome($body)
            };
            let g = {
                use green::fs as $fs;
                outcome($body)
            };
            check($name, s, g);
        }};
    }

    both!("open missing", |fs| fs::File::open(&missing));
    both!("open through a file", |fs| fs::File::open(file.join("x")));
    both!("create in missing dir", |fs| fs::File::create(
        missing.join("x")
    ));
    both!("create_new existing", |fs| fs::File::create_new(&file));
    both!("open directory for writing", |fs| fs::OpenOptions::new()
        .write(true)
        .open(&full));
    both!("create a directory", |fs| fs::File::create(&empty));
    both!("no access mode", |fs| fs::OpenOptions::new().open(&file));
    both!("truncate without write", |fs| fs::OpenOptions::new()
        .read(true)
        .truncate(true)
        .open(&file));
    both!("create without write", |fs| fs::OpenOptions::new()
        .read(true)
        .create(true)
        .open(&missing));
    both!("append with truncate", |fs| fs::OpenOptions::new()
        .append(true)
        .truncate(true)
        .open(&file));
    both!("O_DIRECTORY on a file", |fs| fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&file));
    both!("nul in path", |fs| fs::File::open("a\0b"));
    both!("empty path", |fs| fs::File::open(""));
    both!("read a directory", |fs| fs::read(&full));
    both!("read_to_string a directory", |fs| fs::read_to_string(&full));
    both!("write into a missing dir", |fs| fs::write(
        missing.join("x"),
        b"x"
    ));
    both!("write to a read-only file", |fs| fs::File::open(&file)
        .and_then(|mut f| f.write(b"x")));
    both!("read a write-only file", |fs| fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|mut f| f.read(&mut [0u8; 4])));
    both!("read_at past i64::MAX", |fs| fs::File::open(&file)
        .and_then(|f| f.read_at(&mut [0u8; 4], u64::MAX)));
    both!("write_at to a read-only file", |fs| fs::File::open(&file)
        .and_then(|f| f.write_at(b"x", 0)));
    both!("set_len on a read-only file", |fs| fs::File::open(&file)
        .and_then(|f| f.set_len(1)));
    both!("set_len past i64::MAX", |fs| fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(u64::MAX)));
    both!("remove_file missing", |fs| fs::remove_file(&missing));
    both!("remove_file a directory", |fs| fs::remove_file(&empty));
    both!("remove_dir missing", |fs| fs::remove_dir(&missing));
    both!("remove_dir non-empty", |fs| fs::remove_dir(&full));
    both!("remove_dir a file", |fs| fs::remove_dir(&file));
    both!("create_dir existing", |fs| fs::create_dir(&empty));
    both!("create_dir in missing", |fs| fs::create_dir(
        missing.join("a")
    ));
    both!("create_dir_all over a file", |fs| fs::create_dir_all(&file));
    both!("create_dir_all through a file", |fs| fs::create_dir_all(
        file.join("a/b")
    ));
    both!("rename missing", |fs| fs::rename(&missing, d.join("to")));
    both!("rename dir over non-empty dir", |fs| fs::rename(
        &empty, &full
    ));
    both!("rename file over dir", |fs| fs::rename(&file, &empty));
    both!("rename dir over file", |fs| fs::rename(&empty, &file));
    both!("rename into itself", |fs| fs::rename(
        &full,
        full.join("sub")
    ));
    both!("hard_link missing", |fs| fs::hard_link(
        &missing,
        d.join("l")
    ));
    both!("hard_link onto existing", |fs| fs::hard_link(&file, &file));
    both!("hard_link a directory", |fs| fs::hard_link(
        &empty,
        d.join("l")
    ));
    both!("copy missing", |fs| fs::copy(&missing, d.join("c")));
    both!("copy a directory", |fs| fs::copy(&full, d.join("c")));
    both!("copy into a missing dir", |fs| fs::copy(
        &file,
        missing.join("c")
    ));
    both!("metadata missing", |fs| fs::metadata(&missing));
    seen
}

/// Calls that succeed for root (tests may run as root) must at least agree
/// with std: open a mode-000 file both ways.
fn compare_locked(d: &Path) {
    let locked = d.join("locked");
    let s = outcome(std::fs::File::open(&locked));
    let g = outcome(green::fs::File::open(&locked));
    assert_eq!(s, g, "open mode-000 file");
    let s = outcome(std::fs::OpenOptions::new().write(true).open(&locked));
    let g = outcome(green::fs::OpenOptions::new().write(true).open(&locked));
    assert_eq!(s, g, "open mode-000 file for writing");
}

#[test]
fn errors_match_std_on_a_green_thread() {
    let dir = TempDir::new("green");
    fixture(&dir.0);
    let d = dir.0.clone();
    let rt = green::Runtime::builder()
        .carriers(1)
        .io_backend(green::IoBackend::IoUring)
        .build()
        .unwrap();
    let seen = rt.block_on(move || {
        compare_locked(&d);
        compare_all(&d)
    });
    // Spot checks that the cases fail the way they are meant to.
    let kind = |name: &str| seen.iter().find(|c| c.0 == name).unwrap().1;
    assert_eq!(kind("open missing"), io::ErrorKind::NotFound);
    assert_eq!(kind("create_new existing"), io::ErrorKind::AlreadyExists);
    assert_eq!(kind("no access mode"), io::ErrorKind::InvalidInput);
    assert_eq!(kind("nul in path"), io::ErrorKind::InvalidInput);
    assert_eq!(
        kind("remove_dir non-empty"),
        io::ErrorKind::DirectoryNotEmpty
    );
    assert_eq!(
        kind("open directory for writing"),
        io::ErrorKind::IsADirectory
    );
    assert_eq!(
        kind("create_dir_all over a file"),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind("create_dir_all through a file"),
        io::ErrorKind::NotADirectory
    );
}

#[test]
fn errors_match_std_on_an_os_thread() {
    let dir = TempDir::new("os");
    fixture(&dir.0);
    compare_locked(&dir.0);
    let seen = compare_all(&dir.0);
    assert!(seen.len() > 40);
}

#[test]
fn fixture_is_unchanged_by_the_failed_calls() {
    let dir = TempDir::new("unchanged");
    fixture(&dir.0);
    let d = dir.0.clone();
    green::spawn(move || compare_all(&d)).join().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "file", "full", "locked"]);
    assert_eq!(std::fs::read(dir.0.join("file")).unwrap(), b"data");
}
