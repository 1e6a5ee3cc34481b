//! The kernel's io_uring: setup, the mapped rings, submit and reap.
//!
//! Owns one io_uring instance: its fd, the mappings of the submission and
//! completion rings and of the submission entries, and the opcode probe. It
//! knows nothing of green threads: callers fill [`Sqe`]s, call
//! [`Uring::enter`] and read [`Cqe`]s.
//!
//! ```text
//!  SQ ring (mmap IORING_OFF_SQ_RING; with FEAT_SINGLE_MMAP also the CQ ring)
//!  +------+------+------+-----------+--------+--------------------------+
//!  | head | tail | mask | entries   | flags  | array[entries] (u32) ... |
//!  +------+------+------+-----------+--------+--------------------------+
//!    ^kernel  ^us                              identity map, set once;
//!                                              absent with NO_SQARRAY
//!  SQEs (mmap IORING_OFF_SQES): [Sqe; entries], 64 bytes each
//!  CQ ring: head (us) | tail (kernel) | mask | entries | overflow | cqes[]
//! ```
//!
//! Indices are free-running u32s: `tail - head` is in `0..=entries` for the
//! SQ and `0..=cq_entries` for the CQ, and an index's slot is `i & mask`.
//! The kernel publishes the CQ tail and SQ head with release stores; we read
//! them with acquire loads, and publish the SQ tail and CQ head with release
//! stores.
//!
//! It must never hand the kernel an SQE whose pointers are not valid until
//! the operation completes: that is the driver's contract with its callers.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::io_uring::{
    io_uring_enter, io_uring_enter_arg, io_uring_getevents_arg, io_uring_params, io_uring_ptr,
    io_uring_register, io_uring_setup, IoringEnterFlags, IoringFeatureFlags, IoringRegisterOp,
    IoringSetupFlags, IoringSqFlags, IORING_OFF_CQ_RING, IORING_OFF_SQES, IORING_OFF_SQ_RING,
};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A submission queue entry, laid out as the kernel's `struct io_uring_sqe`.
/// Unions of the kernel struct are flattened to their widest member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    /// `off` / `addr2`.
    pub off: u64,
    /// `addr` / `splice_off_in`.
    pub addr: u64,
    pub len: u32,
    /// `rw_flags`, `msg_flags`, `timeout_flags`, `accept_flags`, ...
    pub op_flags: u32,
    pub user_data: u64,
    /// `buf_index` / `buf_group`.
    pub buf_index: u16,
    pub personality: u16,
    /// `splice_fd_in` / `file_index` / `addr_len`.
    pub file_index: u32,
    /// `addr3`.
    pub addr3: u64,
    pub pad: u64,
}

/// A completion queue entry, laid out as the kernel's `struct io_uring_cqe`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cqe {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

// Compile-time layout facts: the kernel ABI.
const _: () = assert!(std::mem::size_of::<Sqe>() == 64);
const _: () = assert!(std::mem::size_of::<Cqe>() == 16);

/// `IOSQE_IO_LINK`: the next SQE runs only after this one succeeds.
pub(crate) const IOSQE_IO_LINK: u8 = 1 << 2;

/// Opcodes, from the kernel's `enum io_uring_op` (the table, not only the
/// entries some front end uses today).
#[allow(missing_docs, dead_code)]
pub(crate) mod op {
    pub const NOP: u8 = 0;
    pub const READV: u8 = 1;
    pub const WRITEV: u8 = 2;
    pub const FSYNC: u8 = 3;
    pub const POLL_ADD: u8 = 6;
    pub const SENDMSG: u8 = 9;
    pub const RECVMSG: u8 = 10;
    pub const TIMEOUT: u8 = 11;
    pub const ACCEPT: u8 = 13;
    pub const ASYNC_CANCEL: u8 = 14;
    /// `IORING_ASYNC_CANCEL_ANY` (in `op_flags` of ASYNC_CANCEL).
    pub const CANCEL_ANY: u32 = 1 << 2;
    pub const LINK_TIMEOUT: u8 = 15;
    pub const CONNECT: u8 = 16;
    pub const OPENAT: u8 = 18;
    pub const CLOSE: u8 = 19;
    pub const STATX: u8 = 21;
    pub const READ: u8 = 22;
    pub const WRITE: u8 = 23;
    pub const SEND: u8 = 26;
    pub const RECV: u8 = 27;
    pub const SHUTDOWN: u8 = 34;
    pub const RENAMEAT: u8 = 35;
    pub const UNLINKAT: u8 = 36;
    pub const MKDIRAT: u8 = 37;
    pub const FTRUNCATE: u8 = 55;
    pub const SYMLINKAT: u8 = 38;
    pub const LINKAT: u8 = 39;
    pub const FADVISE: u8 = 24;
    /// `IORING_OP_FUTEX_WAIT` (Linux 6.7+): fd = futex2 flags, addr =
    /// futex word, off = expected value, addr3 = mask.
    pub const FUTEX_WAIT: u8 = 51;
    pub const FUTEX_WAKE: u8 = 52;
    pub const SPLICE: u8 = 30;
    /// `IORING_FSYNC_DATASYNC` (in `op_flags` of FSYNC).
    pub const FSYNC_DATASYNC: u32 = 1;
    /// `IORING_TIMEOUT_ABS` (in `op_flags` of TIMEOUT).
    pub const TIMEOUT_ABS: u32 = 1;
}

/// Which setup flags to ask for, best first. With `TASKRUN_FLAG` the
/// kernel raises `IORING_SQ_TASKRUN` in the SQ ring's flags while
/// completions wait for us to enter it ([`Uring::kernel_has_completions`]),
/// so a turn of the driver with nothing to submit makes no system call
/// unless there is something to collect.
const SETUP_CHOICES: [(&str, u32); 4] = [
    (
        "SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG",
        IoringSetupFlags::SINGLE_ISSUER.bits()
            | IoringSetupFlags::DEFER_TASKRUN.bits()
            | IoringSetupFlags::TASKRUN_FLAG.bits(),
    ),
    (
        "SINGLE_ISSUER|DEFER_TASKRUN",
        IoringSetupFlags::SINGLE_ISSUER.bits() | IoringSetupFlags::DEFER_TASKRUN.bits(),
    ),
    (
        "COOP_TASKRUN|TASKRUN_FLAG",
        IoringSetupFlags::COOP_TASKRUN.bits() | IoringSetupFlags::TASKRUN_FLAG.bits(),
    ),
    ("none", 0),
];

/// One mmap of the ring fd.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, offset: u64) -> io::Result<Mapping> {
        // SAFETY: mapping the ring fd at the offsets the kernel defines for
        // it, with the size it reported; the mapping aliases only kernel
        // memory meant to be shared this way.
        let p = unsafe {
            mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )
        }?;
        Ok(Mapping {
            ptr: NonNull::new(p as *mut u8).expect("mmap never returns null on success"),
            len,
        })
    }

    /// A pointer `off` bytes into the mapping, as `T`.
    fn at<T>(&self, off: u32) -> *mut T {
        assert!(off as usize + std::mem::size_of::<T>() <= self.len);
        // SAFETY: in bounds, checked above; the kernel reports offsets that
        // are aligned for their fields.
        unsafe { self.ptr.as_ptr().add(off as usize) as *mut T }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping; nothing references it after the ring
        // (its only user) is dropped.
        let _ = unsafe { munmap(self.ptr.as_ptr() as *mut _, self.len) };
    }
}

/// Why io_uring cannot be used here, in words.
pub(crate) fn explain_setup_error(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .ok();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            "io_uring_setup is not implemented: this kernel is older than 5.1 or built without io_uring".into()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => match disabled.as_deref() {
            Some("2") => "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled=2)".into(),
            Some("1") => "io_uring is limited to the io_uring_group (sysctl kernel.io_uring_disabled=1) and this process is not in it".into(),
            _ => "io_uring_setup was refused (EPERM): a seccomp filter, such as Docker's default profile, blocks io_uring".into(),
        },
        Some(libc::ENOMEM) => "io_uring_setup failed with ENOMEM: the locked-memory limit (ulimit -l) is too low for the ring".into(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// A kernel io_uring instance with its mapped rings.
pub(crate) struct Uring {
    fd: OwnedFd,
    _sq_map: Mapping,
    _cq_map: Option<Mapping>,
    _sqe_map: Mapping,
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    /// The SQ ring's `flags` word (`IORING_SQ_*`), written by the kernel.
    sq_flags: *const AtomicU32,
    /// The setup flags the kernel accepted. With `TASKRUN_FLAG`,
    /// `IORING_SQ_TASKRUN` in `sq_flags` tells whether completions wait
    /// for an enter.
    setup: IoringSetupFlags,
    sq_mask: u32,
    sq_entries: u32,
    sqes: *mut Sqe,
    /// Our next SQE index; `[kernel head, local_tail)` are filled and not
    /// yet consumed by the kernel.
    local_tail: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cq_mask: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    cq_entries: u32,
    cqes: *const Cqe,
    probe: [bool; 256],
}

// SAFETY: the raw pointers point into mappings owned by this value; moving it
// to another thread moves them along. Uring is not Sync: one thread submits
// and reaps (SINGLE_ISSUER holds us to it).
unsafe impl Send for Uring {}

impl Uring {
    /// Sets up a ring with `entries` SQ entries (CQ twice that), asking for
    /// the best setup flags the kernel accepts.
    pub(crate) fn new(entries: u32) -> io::Result<Uring> {
        let mut last = None;
        for (_flags, bits) in SETUP_CHOICES {
            let mut params = io_uring_params::default();
            params.flags = IoringSetupFlags::from_bits_retain(bits) | IoringSetupFlags::CQSIZE;
            params.cq_entries = entries.saturating_mul(2);
            // SAFETY: params is a valid, zero-initialised io_uring_params.
            match unsafe { io_uring_setup(entries, &mut params) } {
                Ok(fd) => return Self::map(fd, params),
                Err(e) if e == rustix::io::Errno::INVAL && bits != 0 => last = Some(e),
                Err(e) => {
                    let e = io::Error::from(e);
                    return Err(io::Error::new(e.kind(), explain_setup_error(&e)));
                }
            }
        }
        let e = io::Error::from(last.expect("at least one choice was tried"));
        Err(io::Error::new(e.kind(), explain_setup_error(&e)))
    }

    fn map(fd: OwnedFd, p: io_uring_params) -> io::Result<Uring> {
        if !p.features.contains(IoringFeatureFlags::EXT_ARG)
            || !p.features.contains(IoringFeatureFlags::NODROP)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks FEAT_EXT_ARG or FEAT_NODROP (Linux 5.11+ is required)",
            ));
        }
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
        let single = p.features.contains(IoringFeatureFlags::SINGLE_MMAP);
        let sq_map = Mapping::new(
            &fd,
            if single { sq_len.max(cq_len) } else { sq_len },
            IORING_OFF_SQ_RING,
        )?;
        let cq_map = if single {
            None
        } else {
            Some(Mapping::new(&fd, cq_len, IORING_OFF_CQ_RING)?)
        };
        let sqe_map = Mapping::new(
            &fd,
            p.sq_entries as usize * std::mem::size_of::<Sqe>(),
            IORING_OFF_SQES,
        )?;
        let cq = cq_map.as_ref().unwrap_or(&sq_map);
        // SAFETY: the offset comes from the kernel for this mapping, and
        // `at` bounds-checks it.
        let sq_mask = unsafe { *sq_map.at::<u32>(p.sq_off.ring_mask) };
        // SAFETY: as above.
        let cq_mask = unsafe { *cq.at::<u32>(p.cq_off.ring_mask) };
        let array = sq_map.at::<u32>(p.sq_off.array);
        for i in 0..p.sq_entries {
            // SAFETY: array has sq_entries u32 slots (sq_len above). The
            // identity map lets SQE i be submitted as slot i.
            unsafe { array.add(i as usize).write(i) };
        }
        let mut probe = [false; 256];
        let mut buf = vec![0u8; 16 + 256 * 8];
        // SAFETY: the buffer has room for the probe header plus 256 ops, as
        // the kernel's io_uring_probe layout requires.
        let probed = unsafe {
            io_uring_register(
                &fd,
                IoringRegisterOp::RegisterProbe,
                buf.as_mut_ptr() as *const _,
                256,
            )
        };
        if probed.is_ok() {
            let ops_len = buf[1] as usize;
            for i in 0..ops_len.min(256) {
                let entry = &buf[16 + i * 8..16 + i * 8 + 8];
                // IO_URING_OP_SUPPORTED = 1 in the op's flags (u16 at 2).
                if entry[2] & 1 != 0 {
                    probe[entry[0] as usize] = true;
                }
            }
        }
        Ok(Uring {
            sq_head: sq_map.at(p.sq_off.head),
            sq_tail: sq_map.at(p.sq_off.tail),
            sq_flags: sq_map.at(p.sq_off.flags),
            setup: p.flags,
            sq_mask,
            sq_entries: p.sq_entries,
            sqes: sqe_map.ptr.as_ptr() as *mut Sqe,
            local_tail: 0,
            cq_head: cq.at(p.cq_off.head),
            cq_tail: cq.at(p.cq_off.tail),
            cq_mask,
            cq_entries: p.cq_entries,
            cqes: cq.at(p.cq_off.cqes),
            probe,
            fd,
            _sq_map: sq_map,
            _cq_map: cq_map,
            _sqe_map: sqe_map,
        })
    }

    /// Caps the kernel worker threads (io-wq) that serve this thread's
    /// rings for operations that must block in the kernel, such as opens
    /// that create or truncate a file and buffered writes. Workers are
    /// started only while queued operations wait behind blocked ones, so
    /// the cap decides how many such waits overlap, not how many threads
    /// exist. The kernel's default is `min(SQ entries, 4 x CPUs)`. Kernels
    /// before 5.15 lack the setting and keep their default (Err).
    pub(crate) fn set_max_workers(&self, bounded: u32) -> io::Result<()> {
        // [bounded, unbounded]; 0 leaves a limit as it is.
        let mut limits = [bounded, 0u32];
        // SAFETY: IORING_REGISTER_IOWQ_MAX_WORKERS reads and writes back
        // two u32s at the pointer, which `limits` provides for the call.
        unsafe {
            io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterIowqMaxWorkers,
                limits.as_mut_ptr() as *const _,
                2,
            )
        }?;
        Ok(())
    }

    /// SQ and CQ sizes.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (u32, u32) {
        (self.sq_entries, self.cq_entries)
    }

    /// Whether the kernel supports opcode `op`.
    pub(crate) fn supports(&self, op: u8) -> bool {
        self.probe[op as usize]
    }

    /// A zeroed SQE to fill, or None when the SQ is full.
    pub(crate) fn next_sqe(&mut self) -> Option<&mut Sqe> {
        // Acquire: the kernel's release of the head means it has read the
        // SQEs before it, so their slots may be reused.
        // SAFETY: sq_head points into our live mapping.
        let head = unsafe { (*self.sq_head).load(Ordering::Acquire) };
        if self.local_tail.wrapping_sub(head) >= self.sq_entries {
            return None;
        }
        let idx = (self.local_tail & self.sq_mask) as usize;
        self.local_tail = self.local_tail.wrapping_add(1);
        // SAFETY: idx < sq_entries; the slot is free (the kernel consumed it,
        // checked above) and only this thread fills SQEs.
        let sqe = unsafe { &mut *self.sqes.add(idx) };
        *sqe = Sqe::default();
        Some(sqe)
    }

    /// SQ slots free to fill.
    pub(crate) fn free_sqes(&self) -> u32 {
        // Acquire: see next_sqe.
        // SAFETY: sq_head points into our live mapping.
        let head = unsafe { (*self.sq_head).load(Ordering::Acquire) };
        self.sq_entries - self.local_tail.wrapping_sub(head)
    }

    /// Filled SQEs the kernel has not consumed yet. Counted from the
    /// kernel's head, not from our last publish: an enter that failed with
    /// EBUSY consumed nothing, and those entries must be offered again.
    pub(crate) fn unsubmitted(&self) -> u32 {
        // Acquire: see next_sqe.
        // SAFETY: sq_head points into our live mapping.
        let head = unsafe { (*self.sq_head).load(Ordering::Acquire) };
        self.local_tail.wrapping_sub(head)
    }

    /// Publishes filled SQEs, submits them, and (with `wait`) waits for at
    /// least one completion or the timeout. Returns how many SQEs the
    /// kernel consumed. EINTR and ETIME count as "nothing happened";
    /// EBUSY/EAGAIN (completions backed up) return Ok(0) so the caller
    /// reaps and tries again.
    pub(crate) fn enter(&mut self, wait: bool, timeout: Option<Duration>) -> io::Result<u32> {
        let to_submit = self.unsubmitted();
        // Release: the SQE contents are written before the kernel sees the
        // new tail.
        // SAFETY: sq_tail points into our live mapping.
        unsafe { (*self.sq_tail).store(self.local_tail, Ordering::Release) };
        let min_complete = u32::from(wait);
        let r = match (wait, timeout) {
            (true, Some(t)) => {
                let ts = rustix::io_uring::Timespec {
                    tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                    tv_nsec: t.subsec_nanos() as _,
                };
                let arg = io_uring_getevents_arg {
                    ts: io_uring_ptr::new(&ts as *const _ as *mut _),
                    ..Default::default()
                };
                // SAFETY: `arg` and `ts` outlive the call; the SQEs being
                // submitted were filled under the driver's contract.
                unsafe {
                    io_uring_enter_arg(
                        &self.fd,
                        to_submit,
                        min_complete,
                        IoringEnterFlags::GETEVENTS | IoringEnterFlags::EXT_ARG,
                        Some(&arg),
                    )
                }
            }
            _ => {
                // SAFETY: as above.
                unsafe {
                    io_uring_enter(
                        self.fd.as_fd(),
                        to_submit,
                        min_complete,
                        IoringEnterFlags::GETEVENTS,
                    )
                }
            }
        };
        match r {
            Ok(n) => Ok(n),
            Err(e) if e == rustix::io::Errno::INTR || e == rustix::io::Errno::TIME => Ok(0),
            Err(e) if e == rustix::io::Errno::BUSY || e == rustix::io::Errno::AGAIN => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether completions may be waiting inside the kernel for an enter
    /// to post them (task work under `DEFER_TASKRUN` or `COOP_TASKRUN`, or
    /// completions that overflowed the CQ ring). Without `TASKRUN_FLAG`
    /// there is no way to tell, and the answer is always yes.
    ///
    /// A flag raised just after this look is seen at the next one, or by
    /// the enter the carrier sleeps in: completions are never lost, at
    /// worst collected a driver turn later.
    pub(crate) fn kernel_has_completions(&self) -> bool {
        if !self.setup.contains(IoringSetupFlags::TASKRUN_FLAG) {
            return true;
        }
        // SAFETY: sq_flags points into our live mapping.
        // Relaxed: a hint; the enter that follows a yes synchronises with
        // the kernel, and the CQEs it posts are read with Acquire in reap.
        let flags = unsafe { &*self.sq_flags }.load(Ordering::Relaxed);
        flags & (IoringSqFlags::TASKRUN.bits() | IoringSqFlags::CQ_OVERFLOW.bits()) != 0
    }

    /// Takes every available completion, oldest first.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(Cqe)) -> usize {
        // SAFETY: cq_head/cq_tail point into our live mapping.
        let (head_atomic, tail_atomic) = unsafe { (&*self.cq_head, &*self.cq_tail) };
        // Relaxed: only we write the CQ head.
        let mut head = head_atomic.load(Ordering::Relaxed);
        // Acquire: the kernel writes CQEs before releasing the tail.
        let tail = tail_atomic.load(Ordering::Acquire);
        let n = tail.wrapping_sub(head) as usize;
        while head != tail {
            // SAFETY: the slot is within the CQ array (masked) and was
            // published by the kernel (before `tail`).
            let cqe = unsafe { self.cqes.add((head & self.cq_mask) as usize).read() };
            head = head.wrapping_add(1);
            f(cqe);
        }
        // Release: we are done reading the slots before the kernel may reuse
        // them.
        head_atomic.store(head, Ordering::Release);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Option<Uring> {
        match Uring::new(8) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("skipped: io_uring unavailable: {e}");
                None
            }
        }
    }

    #[test]
    fn nop_round_trip_and_probe() {
        let Some(mut r) = ring() else { return };
        assert!(r.supports(op::NOP));
        assert!(r.supports(op::READ));
        let (sq, cq) = r.sizes();
        assert!(cq >= 2 * sq);
        for i in 0..3u64 {
            let sqe = r.next_sqe().unwrap();
            sqe.opcode = op::NOP;
            sqe.user_data = 100 + i;
        }
        assert_eq!(r.unsubmitted(), 3);
        assert_eq!(r.enter(true, Some(Duration::from_secs(5))).unwrap(), 3);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            r.reap(|c| seen.push(c));
            if seen.len() < 3 {
                r.enter(true, Some(Duration::from_secs(5))).unwrap();
            }
        }
        assert_eq!(
            seen.iter()
                .map(|c| (c.user_data, c.res))
                .collect::<Vec<_>>(),
            vec![(100, 0), (101, 0), (102, 0)]
        );
    }

    #[test]
    fn full_sq_returns_none_until_submitted() {
        let Some(mut r) = ring() else { return };
        let (sq, _) = r.sizes();
        for i in 0..sq {
            let sqe = r.next_sqe().expect("room for sq entries");
            sqe.opcode = op::NOP;
            sqe.user_data = i as u64;
        }
        assert!(r.next_sqe().is_none());
        r.enter(false, None).unwrap();
        assert!(r.next_sqe().is_some());
    }

    #[test]
    fn io_worker_cap_is_accepted() {
        let Some(r) = ring() else { return };
        if let Err(e) = r.set_max_workers(64) {
            eprintln!("skipped: IORING_REGISTER_IOWQ_MAX_WORKERS unsupported: {e}");
        }
    }

    /// The contract that lets a driver turn skip the system call: while an
    /// operation is in flight and nothing has completed the flag is down;
    /// a completion raises it before the CQE can be collected, and the
    /// enter that posts the CQE lowers it again.
    #[test]
    fn taskrun_flag_tells_when_a_completion_waits() {
        let Some(mut r) = ring() else { return };
        let deferred = IoringSetupFlags::DEFER_TASKRUN | IoringSetupFlags::TASKRUN_FLAG;
        if !r.setup.contains(deferred) {
            eprintln!("skipped: set up without DEFER_TASKRUN|TASKRUN_FLAG");
            return;
        }
        let (rd, mut wr) = std::io::pipe().unwrap();
        let mut buf = Box::new([0u8; 8]);
        *r.next_sqe().unwrap() = Sqe {
            opcode: op::READ,
            fd: std::os::fd::AsRawFd::as_raw_fd(&rd),
            addr: buf.as_mut_ptr() as u64,
            len: 8,
            off: u64::MAX,
            user_data: 7,
            ..Sqe::default()
        };
        r.enter(false, None).unwrap();
        // The pipe is empty: the read stays in flight, nothing to collect.
        assert_eq!(r.reap(|_| ()), 0);
        assert!(!r.kernel_has_completions());
        std::io::Write::write_all(&mut wr, b"x").unwrap();
        // The write completed the read inside the kernel; its CQE waits
        // for an enter, and the flag says so.
        assert!(r.kernel_has_completions());
        assert_eq!(r.reap(|_| ()), 0);
        r.enter(false, None).unwrap();
        let mut seen = Vec::new();
        r.reap(|c| seen.push((c.user_data, c.res)));
        assert_eq!(seen, vec![(7, 1)]);
        assert_eq!(buf[0], b'x');
        assert!(!r.kernel_has_completions());
    }

    #[test]
    fn wait_times_out_with_nothing_in_flight() {
        let Some(mut r) = ring() else { return };
        let start = std::time::Instant::now();
        r.enter(true, Some(Duration::from_millis(20))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(r.reap(|_| ()), 0);
    }
}
