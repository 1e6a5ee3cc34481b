//! Files with std::fs's API; on a green thread each blocking call goes
//! over the carrier's kernel ring.
//!
//! Every function and method here has std's signature and meaning. Outside
//! a green thread (a plain OS thread, an async task's poll, or a carrier
//! running the blocking backend) it *is* std's implementation. On a green
//! thread whose carrier has an io_uring, the calls that can block on the
//! disk become one ring entry each: the green thread suspends, the carrier
//! runs others, and the call returns the completion's result, with the same
//! `io::Error` (same errno, same [`io::ErrorKind`]) std would return.
//!
//! ```
//! use std::io::{Read, Seek, SeekFrom, Write};
//!
//! let path = std::env::temp_dir().join(format!("green-fs-doc-{}", std::process::id()));
//! let p = path.clone();
//! let text = green::spawn(move || {
//!     let mut f = green::fs::File::options().read(true).write(true).create(true).open(&p)?;
//!     f.write_all(b"hello from a green thread")?; // one WRITE entry, green thread suspended
//!     f.seek(SeekFrom::Start(6))?;
//!     let mut s = String::new();
//!     f.read_to_string(&mut s)?;
//!     green::fs::remove_file(&p)?; // UNLINKAT
//!     std::io::Result::Ok(s)
//! })
//! .join()
//! .unwrap()
//! .unwrap();
//! assert_eq!(text, "from a green thread");
//! ```
//!
//! # What goes over the ring
//!
//! | call | on a green thread |
//! |---|---|
//! | [`File::open`], [`OpenOptions::open`], [`File::create`], [`File::create_new`] | `OPENAT` |
//! | `Read::read`, `read_to_end`, `read_to_string` | `READ` at the file position (offset `-1`) |
//! | `Read::read_vectored` / `Write::write_vectored` | `READV` / `WRITEV` at the file position |
//! | `Write::write`, `write_all` | `WRITE` at the file position (`O_APPEND` honoured by the kernel) |
//! | [`FileExt::read_at`] / [`FileExt::write_at`] (and `read_exact_at`, `write_all_at`) | `READ` / `WRITE` at the offset |
//! | [`File::sync_all`] / [`File::sync_data`] | `FSYNC` / `FSYNC` + `DATASYNC` |
//! | [`File::set_len`] | `FTRUNCATE` (kernel 6.9+) |
//! | [`remove_file`] / [`remove_dir`] | `UNLINKAT` (with `AT_REMOVEDIR`) |
//! | [`create_dir`], [`create_dir_all`] | `MKDIRAT` (+ `stat` for std's "already a directory" check) |
//! | [`rename`] / [`hard_link`] | `RENAMEAT` / `LINKAT` |
//! | [`read()`], [`read_to_string()`], [`write()`], [`copy()`] | the entries above (open, read/write loop) |
//!
//! Plain syscalls even on a green thread (they do not wait for the disk in
//! practice, or their result is a std type this crate cannot construct):
//! `Seek` (`lseek`), [`File::metadata`], [`metadata`], [`symlink_metadata`]
//! (`statx`: std's [`Metadata`] cannot be built from outside std),
//! [`File::try_clone`] (`fcntl`), [`File::set_permissions`] (`fchmod`),
//! [`File::set_times`]/[`File::set_modified`], and `Drop` of a [`File`]
//! (`close(2)`). Closing usually takes microseconds, but not always: on
//! ext4 (and XFS, btrfs) the last close of a file that was truncated and
//! rewritten starts its write-back, which allocates blocks and can sleep
//! in the block layer's write-back throttling, and the carrier waits for
//! it. A ring `CLOSE` does not help while keeping std's meaning: done
//! inline, the file's final release (which drops its write access and
//! `flock` locks and starts that write-back) still runs on the carrier;
//! forced into a kernel worker, it may run after the completion, so
//! executing a file just written could fail with `ETXTBSY`, which std's
//! `close` rules out.
//! Re-exported std functions ([`read_dir`], [`remove_dir_all`],
//! [`canonicalize`], ...) are std's, plain syscalls everywhere.
//!
//! If the kernel's io_uring lacks one of these opcodes (for example
//! `FTRUNCATE` before Linux 6.9), that call is made as the plain syscall on
//! the carrier thread: same result, but the carrier waits for it.
//!
//! Sizes: one read or write moves at most [`MAX_RW`] bytes (about 2 GiB,
//! the kernel's own per-call limit), so a larger buffer gives a short count,
//! as std's `read`/`write` do.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

pub use std::fs::{
    canonicalize, read_dir, read_link, remove_dir_all, set_permissions, DirBuilder, DirEntry,
    FileTimes, FileType, Metadata, Permissions, ReadDir,
};
/// Positional reads and writes (`read_at`, `write_at`, `read_exact_at`,
/// `write_all_at`): std's trait, implemented for [`File`] over the ring.
pub use std::os::unix::fs::FileExt;

use crate::driver::green_op;
use crate::sys::uring::{op, Sqe};

/// Most bytes one read or write moves (the kernel's `MAX_RW_COUNT`,
/// `INT_MAX` rounded down to a page): longer buffers give short counts.
pub const MAX_RW: usize = 0x7fff_f000;

/// `off` of a READ/WRITE entry meaning "at the file position, and advance
/// it" (the kernel's `-1`).
pub(crate) const CUR_POS: u64 = u64::MAX;

/// Largest `iovec` count one READV/WRITEV takes (`IOV_MAX`).
const MAX_IOV: usize = 1024;

/// The default creation mode of files, as std's.
const DEFAULT_FILE_MODE: u32 = 0o666;
/// The default creation mode of directories, as std's `DirBuilder`.
const DEFAULT_DIR_MODE: u32 = 0o777;

// ---------------------------------------------------------------------------
// Entries (shared with the async front end, `crate::aio::fs`).

/// A path as the NUL-terminated string the kernel reads, with std's error
/// for an interior NUL.
pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name contained an unexpected NUL byte",
        )
    })
}

/// `READ` of `len` bytes at `off` (or [`CUR_POS`]) into `buf`.
pub(crate) fn read_sqe(fd: RawFd, buf: *mut u8, len: usize, off: u64) -> Sqe {
    Sqe {
        opcode: op::READ,
        fd,
        addr: buf as u64,
        len: len.min(MAX_RW) as u32,
        off,
        ..Sqe::default()
    }
}

/// `WRITE` of `len` bytes from `buf` at `off` (or [`CUR_POS`]).
pub(crate) fn write_sqe(fd: RawFd, buf: *const u8, len: usize, off: u64) -> Sqe {
    Sqe {
        opcode: op::WRITE,
        fd,
        addr: buf as u64,
        len: len.min(MAX_RW) as u32,
        off,
        ..Sqe::default()
    }
}

/// `OPENAT` of `path` relative to the working directory.
pub(crate) fn openat_sqe(path: &CString, flags: i32, mode: u32) -> Sqe {
    Sqe {
        opcode: op::OPENAT,
        fd: libc::AT_FDCWD,
        addr: path.as_ptr() as u64,
        len: mode,
        op_flags: flags as u32,
        ..Sqe::default()
    }
}

/// `FSYNC` (with `datasync`, `fdatasync`).
pub(crate) fn fsync_sqe(fd: RawFd, datasync: bool) -> Sqe {
    Sqe {
        opcode: op::FSYNC,
        fd,
        op_flags: if datasync { op::FSYNC_DATASYNC } else { 0 },
        ..Sqe::default()
    }
}

/// `FTRUNCATE` to `len` bytes.
pub(crate) fn ftruncate_sqe(fd: RawFd, len: u64) -> Sqe {
    Sqe {
        opcode: op::FTRUNCATE,
        fd,
        off: len,
        ..Sqe::default()
    }
}

/// `UNLINKAT` (`rmdir` with `dir`).
pub(crate) fn unlinkat_sqe(path: &CString, dir: bool) -> Sqe {
    Sqe {
        opcode: op::UNLINKAT,
        fd: libc::AT_FDCWD,
        addr: path.as_ptr() as u64,
        op_flags: if dir { libc::AT_REMOVEDIR as u32 } else { 0 },
        ..Sqe::default()
    }
}

/// `MKDIRAT` with `mode`.
pub(crate) fn mkdirat_sqe(path: &CString, mode: u32) -> Sqe {
    Sqe {
        opcode: op::MKDIRAT,
        fd: libc::AT_FDCWD,
        addr: path.as_ptr() as u64,
        len: mode,
        ..Sqe::default()
    }
}

/// `RENAMEAT` of `from` to `to` (flags 0: `rename(2)`).
pub(crate) fn renameat_sqe(from: &CString, to: &CString) -> Sqe {
    Sqe {
        opcode: op::RENAMEAT,
        fd: libc::AT_FDCWD,
        addr: from.as_ptr() as u64,
        len: libc::AT_FDCWD as u32,
        off: to.as_ptr() as u64,
        ..Sqe::default()
    }
}

/// `LINKAT` of `original` as `link` (flags 0, as std's `hard_link`).
fn linkat_sqe(original: &CString, link: &CString) -> Sqe {
    Sqe {
        opcode: op::LINKAT,
        fd: libc::AT_FDCWD,
        addr: original.as_ptr() as u64,
        len: libc::AT_FDCWD as u32,
        off: link.as_ptr() as u64,
        ..Sqe::default()
    }
}

/// Runs `sqe` for the calling green thread on its carrier's ring.
///
/// `None` means "make the plain syscall instead": the caller is not a green
/// thread on an io_uring carrier, or the kernel lacks the opcode.
///
/// # Safety
///
/// Every pointer in `sqe` must stay valid until this returns (memory owned
/// by the caller's frame, or borrowed by it, qualifies: the green thread
/// stays suspended until the completion).
unsafe fn ring(sqe: Sqe, name: &str) -> Option<io::Result<u32>> {
    if !crate::driver::ring_supports(sqe.opcode) {
        return None;
    }
    // SAFETY: the caller's contract is green_op's.
    unsafe { green_op(sqe, None, name) }
}

/// A file offset as the kernel takes it: offsets past `i64::MAX` are
/// negative `off_t`s, which `pread`/`pwrite` refuse with `EINVAL` (and
/// `u64::MAX` would mean "at the file position" to io_uring).
fn check_offset(off: u64) -> io::Result<u64> {
    if off > i64::MAX as u64 {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        Ok(off)
    }
}

fn ring_read(fd: RawFd, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
    let sqe = read_sqe(fd, buf.as_mut_ptr(), buf.len(), off);
    // SAFETY: `buf` is borrowed for this whole call, which returns only
    // after the completion.
    unsafe { ring(sqe, "read") }.map(|r| r.map(|n| n as usize))
}

fn ring_write(fd: RawFd, buf: &[u8], off: u64) -> Option<io::Result<usize>> {
    let sqe = write_sqe(fd, buf.as_ptr(), buf.len(), off);
    // SAFETY: `buf` is borrowed for this whole call, which returns only
    // after the completion.
    unsafe { ring(sqe, "write") }.map(|r| r.map(|n| n as usize))
}

// ---------------------------------------------------------------------------
// OpenOptions

/// Options and flags for opening a file: std's `OpenOptions`, opening over
/// the ring on a green thread.
///
/// The flags are std's exactly (`O_CLOEXEC` always, the access mode, the
/// creation mode, custom flags without the access bits), and so are the
/// errors for invalid combinations (`InvalidInput`).
///
/// ```no_run
/// use green::fs::OpenOptions;
/// let f = OpenOptions::new().append(true).create(true).open("log.txt")?;
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options false, mode `0o666`: as std's `OpenOptions::new`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: DEFAULT_FILE_MODE,
            custom_flags: 0,
        }
    }

    /// Read access.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }

    /// Write access.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }

    /// Append mode: every write goes to the end of the file (implies write
    /// access).
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }

    /// Truncate an existing file to length 0 (needs write access).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }

    /// Create the file if it does not exist (needs write or append).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists
    /// (`O_CREAT | O_EXCL`; overrides `create` and `truncate`).
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }

    /// Opens `path` with these options: `OPENAT` on a green thread, std's
    /// `open` elsewhere.
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        let path = path.as_ref();
        if !crate::driver::on_ring() {
            return self.to_std().open(path).map(File::from);
        }
        let c = cstr(path)?;
        let flags = self.flags()?;
        let sqe = openat_sqe(&c, flags, self.mode);
        // SAFETY: `c` lives on this frame until the call returns.
        match unsafe { ring(sqe, "openat") } {
            Some(r) => r.map(|fd| {
                // SAFETY: a successful OPENAT returns a new descriptor that
                // nothing else owns.
                File::from(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
            }),
            None => self.to_std().open(path).map(File::from),
        }
    }

    /// The creation mode (the file's permissions, before the umask).
    pub(crate) fn mode_bits(&self) -> u32 {
        self.mode
    }

    /// The `open(2)` flags, computed as std computes them, with std's
    /// errors for invalid combinations.
    pub(crate) fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
            (false, false, false) => {
                return Err(invalid_options(
                    "must specify at least one of read, write, or append access",
                ))
            }
        };
        match (self.write, self.append) {
            (true, false) => {}
            (false, false) => {
                if self.truncate || self.create || self.create_new {
                    return Err(invalid_options(
                        "creating or truncating a file requires write or append access",
                    ));
                }
            }
            (_, true) => {
                if self.truncate && !self.create_new {
                    return Err(invalid_options(
                        "creating or truncating a file requires write or append access",
                    ));
                }
            }
        }
        let creation = match (self.create, self.truncate, self.create_new) {
            (false, false, false) => 0,
            (true, false, false) => libc::O_CREAT,
            (false, true, false) => libc::O_TRUNC,
            (true, true, false) => libc::O_CREAT | libc::O_TRUNC,
            (_, _, true) => libc::O_CREAT | libc::O_EXCL,
        };
        Ok(libc::O_CLOEXEC | access | creation | (self.custom_flags & !libc::O_ACCMODE))
    }

    /// The same options as std's, for the plain-syscall path.
    fn to_std(&self) -> std::fs::OpenOptions {
        let mut o = std::fs::OpenOptions::new();
        o.read(self.read)
            .write(self.write)
            .append(self.append)
            .truncate(self.truncate)
            .create(self.create)
            .create_new(self.create_new)
            .mode(self.mode)
            .custom_flags(self.custom_flags);
        o
    }
}

/// std's error for an invalid combination of open options (recent std's
/// message; older std gave `EINVAL`, the same kind).
fn invalid_options(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl OpenOptionsExt for OpenOptions {
    fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }
}

// ---------------------------------------------------------------------------
// File

/// An open file: std's `File`, whose blocking calls go over the ring on a
/// green thread (see the [module docs](self) for which).
///
/// Converts to and from `std::fs::File` for free; both share the same
/// descriptor and file position.
pub struct File {
    inner: std::fs::File,
}

impl File {
    /// Opens `path` read-only (`OPENAT` on a green thread).
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens `path` write-only, creating it or truncating it.
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates `path` read-write, failing with `AlreadyExists` if it
    /// exists.
    pub fn create_new<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// A blank [`OpenOptions`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Flushes data and metadata to the device (`FSYNC`).
    pub fn sync_all(&self) -> io::Result<()> {
        // SAFETY: the entry holds no pointers.
        match unsafe { ring(fsync_sqe(self.as_raw_fd(), false), "fsync") } {
            Some(r) => r.map(drop),
            None => self.inner.sync_all(),
        }
    }

    /// Flushes data (and the metadata needed to read it) to the device
    /// (`FSYNC` with `DATASYNC`).
    pub fn sync_data(&self) -> io::Result<()> {
        // SAFETY: the entry holds no pointers.
        match unsafe { ring(fsync_sqe(self.as_raw_fd(), true), "fdatasync") } {
            Some(r) => r.map(drop),
            None => self.inner.sync_data(),
        }
    }

    /// Truncates or extends the file to `size` bytes (`FTRUNCATE`, kernel
    /// 6.9+; the plain `ftruncate` before). The file position is unchanged.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        if size > i64::MAX as u64 {
            // std's error for a size that is no off_t.
            return self.inner.set_len(size);
        }
        // SAFETY: the entry holds no pointers.
        match unsafe { ring(ftruncate_sqe(self.as_raw_fd(), size), "ftruncate") } {
            Some(r) => r.map(drop),
            None => self.inner.set_len(size),
        }
    }

    /// The file's metadata (a plain `statx`: std's `Metadata` cannot be
    /// built outside std).
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.inner.metadata()
    }

    /// A new `File` sharing the descriptor's file position and flags (a
    /// plain `fcntl(F_DUPFD_CLOEXEC)`).
    pub fn try_clone(&self) -> io::Result<File> {
        self.inner.try_clone().map(File::from)
    }

    /// Changes the file's permissions (a plain `fchmod`).
    pub fn set_permissions(&self, perm: Permissions) -> io::Result<()> {
        self.inner.set_permissions(perm)
    }

    /// Sets the access and modification times (a plain `futimens`).
    pub fn set_times(&self, times: FileTimes) -> io::Result<()> {
        self.inner.set_times(times)
    }

    /// Sets the modification time (a plain `futimens`).
    pub fn set_modified(&self, time: SystemTime) -> io::Result<()> {
        self.inner.set_modified(time)
    }

    /// The std file, sharing the descriptor.
    pub fn into_std(self) -> std::fs::File {
        self.inner
    }

    /// Bytes from the file position to the end, as std's `read_to_end`
    /// estimates it (plain `fstat` + `lseek`).
    fn remaining_hint(&self) -> Option<usize> {
        let size = self.inner.metadata().ok()?.len();
        let pos = (&self.inner).stream_position().ok()?;
        Some(size.saturating_sub(pos) as usize)
    }

    /// `read_to_end` over the ring: one READ per chunk into the spare
    /// capacity, sized by the file's length so a whole file is usually one
    /// READ plus one that sees the end.
    fn ring_read_to_end(&self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        let fd = self.as_raw_fd();
        let start = buf.len();
        if let Some(hint) = self.remaining_hint() {
            if let Err(e) = buf.try_reserve(hint) {
                return Some(Err(io::Error::new(io::ErrorKind::OutOfMemory, e)));
            }
        }
        loop {
            if buf.len() == buf.capacity() {
                // Probably at the end: look with a small read before growing.
                let mut probe = [0u8; 32];
                match ring_read(fd, &mut probe, CUR_POS)? {
                    Ok(0) => return Some(Ok(buf.len() - start)),
                    Ok(n) => buf.extend_from_slice(&probe[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let spare = buf.spare_capacity_mut();
            let sqe = read_sqe(fd, spare.as_mut_ptr().cast(), spare.len(), CUR_POS);
            // SAFETY: `spare` is the Vec's allocation, borrowed for the
            // whole call, which returns only after the completion.
            match unsafe { ring(sqe, "read") }? {
                Ok(0) => return Some(Ok(buf.len() - start)),
                Ok(n) => {
                    let n = (n as usize).min(spare.len());
                    // SAFETY: the kernel initialised the first `n` spare
                    // bytes (`n` is bounded by the spare length above).
                    unsafe { buf.set_len(buf.len() + n) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn ring_read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> Option<io::Result<usize>> {
        let n = bufs.len().min(MAX_IOV);
        let sqe = Sqe {
            opcode: op::READV,
            fd: self.as_raw_fd(),
            addr: bufs.as_mut_ptr() as u64,
            len: n as u32,
            off: CUR_POS,
            ..Sqe::default()
        };
        // SAFETY: `IoSliceMut` is ABI-compatible with `struct iovec` on
        // Unix; the slices and the buffers they name are borrowed for the
        // whole call, which returns only after the completion.
        unsafe { ring(sqe, "readv") }.map(|r| r.map(|n| n as usize))
    }

    fn ring_write_vectored(&self, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        let n = bufs.len().min(MAX_IOV);
        let sqe = Sqe {
            opcode: op::WRITEV,
            fd: self.as_raw_fd(),
            addr: bufs.as_ptr() as u64,
            len: n as u32,
            off: CUR_POS,
            ..Sqe::default()
        };
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix;
        // the slices and the buffers they name are borrowed for the whole
        // call, which returns only after the completion.
        unsafe { ring(sqe, "writev") }.map(|r| r.map(|n| n as usize))
    }
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match ring_read(self.as_raw_fd(), buf, CUR_POS) {
            Some(r) => r,
            None => (&self.inner).read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self.ring_read_vectored(bufs) {
            Some(r) => r,
            None => (&self.inner).read_vectored(bufs),
        }
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self.ring_read_to_end(buf) {
            Some(r) => r,
            None => (&self.inner).read_to_end(buf),
        }
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        if !crate::driver::on_ring() {
            return (&self.inner).read_to_string(buf);
        }
        // std's guarantee: on invalid UTF-8 nothing is appended.
        let mut bytes = Vec::new();
        let n = self.read_to_end(&mut bytes)?;
        let s = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })?;
        if buf.is_empty() {
            *buf = s;
        } else {
            buf.push_str(&s);
        }
        Ok(n)
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&*self).read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&*self).read_to_string(buf)
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match ring_write(self.as_raw_fd(), buf, CUR_POS) {
            Some(r) => r,
            None => (&self.inner).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.ring_write_vectored(bufs) {
            Some(r) => r,
            None => (&self.inner).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Seeking is a plain `lseek` (it never waits for the disk). Reads and
/// writes over the ring use and advance the same file position.
impl Seek for &File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&self.inner).seek(pos)
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&self.inner).seek(pos)
    }
}

/// `pread`/`pwrite` over the ring: READ/WRITE entries at the offset, which
/// neither use nor move the file position.
impl FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Err(e) = check_offset(offset) {
            return if crate::driver::on_ring() {
                Err(e)
            } else {
                self.inner.read_at(buf, offset)
            };
        }
        match ring_read(self.as_raw_fd(), buf, offset) {
            Some(r) => r,
            None => self.inner.read_at(buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if let Err(e) = check_offset(offset) {
            return if crate::driver::on_ring() {
                Err(e)
            } else {
                self.inner.write_at(buf, offset)
            };
        }
        match ring_write(self.as_raw_fd(), buf, offset) {
            Some(r) => r,
            None => self.inner.write_at(buf, offset),
        }
    }
}

crate::wrap::std_wrapper!(File, std::fs::File, |inner| File { inner });

// ---------------------------------------------------------------------------
// Free functions

/// Reads a whole file (`OPENAT`, then READs sized by the file's length).
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    if !crate::driver::on_ring() {
        return std::fs::read(path);
    }
    let mut f = File::open(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads a whole file as UTF-8 (`InvalidData` if it is not).
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    if !crate::driver::on_ring() {
        return std::fs::read_to_string(path);
    }
    let mut f = File::open(path)?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// Writes `contents` as the whole file, creating or truncating it.
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    if !crate::driver::on_ring() {
        return std::fs::write(path, contents);
    }
    File::create(path)?.write_all(contents.as_ref())
}

/// The metadata of `path`, following symlinks (a plain `statx`: std's
/// `Metadata` cannot be built outside std).
pub fn metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    std::fs::metadata(path)
}

/// The metadata of `path` itself, not following a symlink (a plain
/// `statx`).
pub fn symlink_metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    std::fs::symlink_metadata(path)
}

/// Runs a path entry for a green thread, or `plain` elsewhere.
fn path_op(
    paths: &[&Path],
    name: &str,
    sqe: impl FnOnce(&[CString]) -> Sqe,
    plain: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if !crate::driver::on_ring() {
        return plain();
    }
    let c = paths
        .iter()
        .map(|p| cstr(p))
        .collect::<io::Result<Vec<_>>>()?;
    let sqe = sqe(&c);
    // SAFETY: the entry points into `c`, alive until the call returns.
    match unsafe { ring(sqe, name) } {
        Some(r) => r.map(drop),
        None => plain(),
    }
}

/// Removes a file or symlink (`UNLINKAT`).
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let p = path.as_ref();
    path_op(
        &[p],
        "unlinkat",
        |c| unlinkat_sqe(&c[0], false),
        || std::fs::remove_file(p),
    )
}

/// Removes an empty directory (`UNLINKAT` with `AT_REMOVEDIR`).
pub fn remove_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let p = path.as_ref();
    path_op(
        &[p],
        "unlinkat",
        |c| unlinkat_sqe(&c[0], true),
        || std::fs::remove_dir(p),
    )
}

/// Creates a directory, mode `0o777` before the umask (`MKDIRAT`).
pub fn create_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let p = path.as_ref();
    path_op(
        &[p],
        "mkdirat",
        |c| mkdirat_sqe(&c[0], DEFAULT_DIR_MODE),
        || std::fs::create_dir(p),
    )
}

/// Creates a directory and its missing parents, as std's (same order of
/// `mkdir`s, same tolerance of directories created concurrently): each
/// `mkdir` is a `MKDIRAT`.
///
/// One difference in the error alone: where std fails with its internal
/// `Uncategorized` kind ("failed to create whole tree", a path whose root
/// cannot be created), this returns `ErrorKind::Other`.
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    if !crate::driver::on_ring() {
        return std::fs::create_dir_all(path);
    }
    create_dir_all_rec(path)
}

fn create_dir_all_rec(path: &Path) -> io::Result<()> {
    if path == Path::new("") {
        return Ok(());
    }
    match create_dir(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) if path.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(p) => create_dir_all_rec(p)?,
        None => return Err(io::Error::other("failed to create whole tree")),
    }
    match create_dir(path) {
        Ok(()) => Ok(()),
        Err(_) if path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to`, replacing `to` if it exists (`RENAMEAT`).
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    let (f, t) = (from.as_ref(), to.as_ref());
    path_op(
        &[f, t],
        "renameat",
        |c| renameat_sqe(&c[0], &c[1]),
        || std::fs::rename(f, t),
    )
}

/// Makes `link` a new hard link to `original` (`LINKAT`, not following a
/// symlink `original`, as std on Linux).
pub fn hard_link<P: AsRef<Path>, Q: AsRef<Path>>(original: P, link: Q) -> io::Result<()> {
    let (o, l) = (original.as_ref(), link.as_ref());
    path_op(
        &[o, l],
        "linkat",
        |c| linkat_sqe(&c[0], &c[1]),
        || std::fs::hard_link(o, l),
    )
}

/// Copies the contents and permissions of `from` to `to` (created or
/// truncated), returning the bytes copied, as std's.
///
/// On a green thread: `OPENAT` both, then a READ/WRITE loop through a 64
/// KiB heap buffer (std uses `copy_file_range` in the kernel instead; the
/// result is the same). The permissions are set with a plain `fchmod`.
pub fn copy<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<u64> {
    let (from, to) = (from.as_ref(), to.as_ref());
    if !crate::driver::on_ring() {
        return std::fs::copy(from, to);
    }
    let reader = File::open(from)?;
    let meta = reader.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the source path is neither a regular file nor a symlink to a regular file",
        ));
    }
    let perm = meta.permissions();
    let writer = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(perm.mode())
        .open(to)?;
    writer.set_permissions(perm)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match (&reader).read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        (&writer).write_all(&buf[..n])?;
        total += n as u64;
    }
}
