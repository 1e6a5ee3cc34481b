//! Files as futures (owned buffers), on the carrier's kernel ring.
//!
//! The same entries as the blocking [`crate::fs`], as futures: each
//! operation takes its buffer by value and hands it back with the result
//! (`(io::Result<usize>, Vec<u8>)`), as monoio and tokio-uring do, because
//! the kernel may write into the buffer until the completion arrives. If a
//! future is dropped first, its operation is cancelled and the buffer is
//! freed only when the completion arrives, never while the kernel may still
//! write to it.
//!
//! The futures must be polled on a carrier: in a task of
//! [`crate::spawn_async`] or under [`crate::block_on`]. A carrier without
//! an io_uring (the blocking backend) makes them fail with `Unsupported`.
//!
//! ```
//! use green::aio::fs;
//!
//! let path = std::env::temp_dir().join(format!("green-aio-doc-{}", std::process::id()));
//! let data = green::block_on(async move {
//!     fs::write(&path, b"owned buffers".to_vec()).await?;
//!     let f = fs::File::open(&path).await?;
//!     let (n, buf) = f.read_at(Vec::with_capacity(64), 6).await;
//!     assert_eq!(n?, 7);
//!     f.close().await?;
//!     fs::remove_file(&path).await?;
//!     std::io::Result::Ok(buf)
//! })
//! .unwrap();
//! assert_eq!(data, b"buffers");
//! ```
//!
//! Buffer convention (monoio's): a read fills `buf` from its start up to
//! its *capacity* and sets `buf.len()` to the bytes read; a write writes
//! `buf[..buf.len()]`.
//!
//! Over the ring: open (`OPENAT`), reads and writes, `sync_all`/`sync_data`
//! (`FSYNC`), `set_len` (`FTRUNCATE`), [`File::close`] (`CLOSE`), and the
//! path functions (`UNLINKAT`, `MKDIRAT`, `RENAMEAT`). Plain syscalls:
//! [`File::metadata`] (`statx`), the size hint in [`read`], and `Drop` of a
//! [`File`] (`close(2)`, which does not wait for the disk).

use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::driver::OpFuture;
use crate::fs::{
    cstr, fsync_sqe, ftruncate_sqe, mkdirat_sqe, openat_sqe, read_sqe, renameat_sqe, unlinkat_sqe,
    write_sqe, Metadata, OpenOptions, CUR_POS,
};
use crate::sys::uring::{op, Sqe};

/// Runs an entry that points only into `keep`.
///
/// # Safety
///
/// Every pointer in `sqe` must point into heap memory owned by `keep`.
async unsafe fn submit<K: Send + 'static>(
    sqe: Sqe,
    keep: K,
    name: &'static str,
) -> (io::Result<u32>, K) {
    // SAFETY: the caller's contract is OpFuture::new's.
    unsafe { OpFuture::new(sqe, keep, None, name) }.await
}

/// Runs an entry that points into the given paths.
async fn path_op(paths: Vec<CString>, sqe: Sqe, name: &'static str) -> io::Result<()> {
    // SAFETY: `sqe` was built from `paths`, whose heap buffers move with
    // the future and outlive the operation.
    let (r, _paths) = unsafe { submit(sqe, paths, name) }.await;
    r.map(drop)
}

/// A file for async code: std's `File` whose I/O is owned-buffer futures
/// over the ring.
pub struct File {
    inner: std::fs::File,
}

impl File {
    /// Opens `path` read-only (`OPENAT`).
    pub fn open(path: impl AsRef<Path>) -> impl Future<Output = io::Result<File>> + Send + 'static {
        File::open_with(path, OpenOptions::new().read(true))
    }

    /// Opens `path` write-only, creating or truncating it (`OPENAT`).
    pub fn create(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        File::open_with(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
    }

    /// Creates `path` read-write, failing with `AlreadyExists` if it exists.
    pub fn create_new(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        File::open_with(
            path,
            OpenOptions::new().read(true).write(true).create_new(true),
        )
    }

    /// Opens `path` with `options` (std's flags and errors, as the blocking
    /// [`OpenOptions::open`]).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: &OpenOptions,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        let prepared = cstr(path.as_ref()).and_then(|c| Ok((c, options.flags()?)));
        let mode = options.mode_bits();
        async move {
            let (c, flags) = prepared?;
            let sqe = openat_sqe(&c, flags, mode);
            // SAFETY: the entry points into `c`'s heap buffer, kept by the op.
            let (r, _c) = unsafe { submit(sqe, c, "openat") }.await;
            let fd = r?;
            // SAFETY: a successful OPENAT returns a new descriptor that
            // nothing else owns.
            Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
        }
    }

    /// Reads into `buf` (from its start, up to its capacity) at `pos`,
    /// without using or moving the file position. On return `buf.len()` is
    /// the bytes read (0 at the end of the file).
    pub async fn read_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        self.read_into(buf, 0, pos).await
    }

    /// Reads into `buf` (from its start, up to its capacity) at the file
    /// position, advancing it. On return `buf.len()` is the bytes read.
    pub async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.read_into(buf, 0, CUR_POS).await
    }

    /// Fills `buf` to its capacity from `pos`; `UnexpectedEof` if the file
    /// ends first (then `buf.len()` is what was read).
    pub async fn read_exact_at(&self, mut buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        buf.clear();
        while buf.len() < buf.capacity() {
            let done = buf.len();
            let off = match pos.checked_add(done as u64) {
                Some(o) => o,
                None => return (Err(io::Error::from_raw_os_error(libc::EINVAL)), buf),
            };
            let (r, b) = self.read_into(buf, done, off).await;
            buf = b;
            match r {
                Ok(0) => {
                    return (
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "failed to fill whole buffer",
                        )),
                        buf,
                    )
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Reads into `buf[start..capacity]` at `off` (or the file position);
    /// on success `buf.len()` becomes `start + n`, else `start`.
    async fn read_into(
        &self,
        mut buf: Vec<u8>,
        start: usize,
        off: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(start <= buf.len());
        // SAFETY: the bytes `start..` are not read by anyone until the
        // kernel initialises them; `len` is set to what it wrote below.
        unsafe { buf.set_len(start) };
        if off != CUR_POS && off > i64::MAX as u64 {
            return (Err(io::Error::from_raw_os_error(libc::EINVAL)), buf);
        }
        let spare = buf.capacity() - start;
        // SAFETY: `start <= capacity`, so the pointer is within (or one past)
        // the allocation.
        let ptr = unsafe { buf.as_mut_ptr().add(start) };
        let sqe = read_sqe(self.as_raw_fd(), ptr, spare, off);
        // SAFETY: the entry points into `buf`'s heap allocation, kept by the
        // op; moving the Vec does not move it.
        let (r, mut buf) = unsafe { submit(sqe, buf, "read") }.await;
        match r {
            Ok(n) => {
                let n = (n as usize).min(spare);
                // SAFETY: the kernel initialised `n` bytes from `start`,
                // within the capacity.
                unsafe { buf.set_len(start + n) };
                (Ok(n), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Writes `buf[..buf.len()]` at `pos`, without using or moving the file
    /// position. Returns the bytes written (maybe fewer).
    pub async fn write_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        if pos > i64::MAX as u64 {
            return (Err(io::Error::from_raw_os_error(libc::EINVAL)), buf);
        }
        self.write_from(buf, 0, pos).await
    }

    /// Writes `buf[..buf.len()]` at the file position (the end in append
    /// mode), advancing it. Returns the bytes written (maybe fewer).
    pub async fn write(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.write_from(buf, 0, CUR_POS).await
    }

    /// Writes all of `buf[..buf.len()]` at `pos`; `WriteZero` if the kernel
    /// takes nothing.
    pub async fn write_all_at(&self, mut buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        let mut done = 0;
        while done < buf.len() {
            let off = match pos.checked_add(done as u64) {
                Some(o) if o <= i64::MAX as u64 => o,
                _ => return (Err(io::Error::from_raw_os_error(libc::EINVAL)), buf),
            };
            let (r, b) = self.write_from(buf, done, off).await;
            buf = b;
            match r {
                Ok(0) => {
                    return (
                        Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "failed to write whole buffer",
                        )),
                        buf,
                    )
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes `buf[start..len]` at `off` (or the file position).
    async fn write_from(
        &self,
        buf: Vec<u8>,
        start: usize,
        off: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let data = &buf[start..];
        let sqe = write_sqe(self.as_raw_fd(), data.as_ptr(), data.len(), off);
        // SAFETY: the entry points into `buf`'s heap allocation, kept by the
        // op; moving the Vec does not move it.
        let (r, buf) = unsafe { submit(sqe, buf, "write") }.await;
        (r.map(|n| n as usize), buf)
    }

    /// Flushes data and metadata to the device (`FSYNC`).
    pub async fn sync_all(&self) -> io::Result<()> {
        // SAFETY: the entry holds no pointers.
        let (r, ()) = unsafe { submit(fsync_sqe(self.as_raw_fd(), false), (), "fsync") }.await;
        r.map(drop)
    }

    /// Flushes data to the device (`FSYNC` with `DATASYNC`).
    pub async fn sync_data(&self) -> io::Result<()> {
        // SAFETY: the entry holds no pointers.
        let (r, ()) = unsafe { submit(fsync_sqe(self.as_raw_fd(), true), (), "fdatasync") }.await;
        r.map(drop)
    }

    /// Truncates or extends the file to `size` bytes (`FTRUNCATE`, kernel
    /// 6.9+: on older kernels this fails with `Unsupported`).
    pub async fn set_len(&self, size: u64) -> io::Result<()> {
        if size > i64::MAX as u64 {
            return self.inner.set_len(size);
        }
        // SAFETY: the entry holds no pointers.
        let (r, ()) =
            unsafe { submit(ftruncate_sqe(self.as_raw_fd(), size), (), "ftruncate") }.await;
        r.map(drop)
    }

    /// The file's metadata (a plain `statx`).
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.inner.metadata()
    }

    /// Closes the file over the ring (`CLOSE`), reporting the error that
    /// `Drop` (a plain `close(2)`) would ignore.
    pub async fn close(self) -> io::Result<()> {
        let fd = self.inner.into_raw_fd();
        let sqe = Sqe {
            opcode: op::CLOSE,
            fd,
            ..Sqe::default()
        };
        // SAFETY: the entry holds no pointers. The descriptor is ours and
        // is closed by this op whatever happens to the future.
        let (r, ()) = unsafe { submit(sqe, (), "close") }.await;
        r.map(drop)
    }

    /// The std file, sharing the descriptor.
    pub fn into_std(self) -> std::fs::File {
        self.inner
    }
}

crate::wrap::std_wrapper!(File, std::fs::File, |inner| File { inner });

impl From<crate::fs::File> for File {
    fn from(f: crate::fs::File) -> File {
        File::from(f.into_std())
    }
}

/// Reads a whole file: `OPENAT`, then READs sized by its length (a plain
/// `fstat`), then a plain `close`.
pub fn read(path: impl AsRef<Path>) -> impl Future<Output = io::Result<Vec<u8>>> + Send + 'static {
    let open = File::open(path);
    async move {
        let f = open.await?;
        let hint = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
        // One spare byte so that a file read whole sees its end without a
        // reallocation.
        let mut buf = Vec::new();
        if let Err(e) = buf.try_reserve_exact(hint.saturating_add(1)) {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, e));
        }
        loop {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity().max(4096));
            }
            let done = buf.len();
            let (r, b) = f.read_into(buf, done, done as u64).await;
            buf = b;
            match r {
                Ok(0) => return Ok(buf),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes `contents` as the whole file, creating or truncating it
/// (`OPENAT`, WRITEs, a plain `close`).
pub fn write(
    path: impl AsRef<Path>,
    contents: impl Into<Vec<u8>>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let open = File::create(path);
    let contents = contents.into();
    async move {
        let f = open.await?;
        f.write_all_at(contents, 0).await.0
    }
}

/// Removes a file or symlink (`UNLINKAT`).
pub fn remove_file(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let c = cstr(path.as_ref());
    async move {
        let c = c?;
        let sqe = unlinkat_sqe(&c, false);
        path_op(vec![c], sqe, "unlinkat").await
    }
}

/// Removes an empty directory (`UNLINKAT` with `AT_REMOVEDIR`).
pub fn remove_dir(path: impl AsRef<Path>) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let c = cstr(path.as_ref());
    async move {
        let c = c?;
        let sqe = unlinkat_sqe(&c, true);
        path_op(vec![c], sqe, "unlinkat").await
    }
}

/// Creates a directory, mode `0o777` before the umask (`MKDIRAT`).
pub fn create_dir(path: impl AsRef<Path>) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let c = cstr(path.as_ref());
    async move {
        let c = c?;
        let sqe = mkdirat_sqe(&c, 0o777);
        path_op(vec![c], sqe, "mkdirat").await
    }
}

/// Renames `from` to `to`, replacing `to` if it exists (`RENAMEAT`).
pub fn rename(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let c = cstr(from.as_ref()).and_then(|f| Ok((f, cstr(to.as_ref())?)));
    async move {
        let (f, t) = c?;
        let sqe = renameat_sqe(&f, &t);
        path_op(vec![f, t], sqe, "renameat").await
    }
}

/// Creates a directory and its missing parents, with std's algorithm
/// (`MKDIRAT` per level; a plain `stat` where std checks that a path is
/// already a directory).
pub fn create_dir_all(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let path = path.as_ref().to_path_buf();
    async move {
        if path.as_os_str().is_empty() {
            return Ok(());
        }
        // std's recursion, unrolled (an async fn cannot recurse without
        // boxing): (directory, whether this is its second mkdir, made after
        // its parent's).
        let mut stack = vec![(path.as_path(), false)];
        while let Some((dir, second)) = stack.pop() {
            if dir.as_os_str().is_empty() {
                continue;
            }
            match create_dir(dir).await {
                Ok(()) => {}
                Err(e) if !second && e.kind() == io::ErrorKind::NotFound => match dir.parent() {
                    Some(parent) => {
                        stack.push((dir, true));
                        stack.push((parent, false));
                    }
                    None => return Err(io::Error::other("failed to create whole tree")),
                },
                Err(_) if dir.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
