//! The stack pool: green-thread stacks carved out of large regions.
//!
//! Owns every stack a green thread runs on. It must never hand out a stack
//! that a suspended (or abandoned) green thread may still use, and it never
//! unmaps a region: a stack leaves the pool only to run a green thread and
//! comes back only when that green thread's coroutine has returned.
//!
//! ```text
//!  region (one mmap, MAP_NORESERVE, never unmapped)
//!  low address                                                 high address
//!  +-------+------------------+-------+------------------+-------+-- ...
//!  | guard |  usable stack 0  | guard |  usable stack 1  | guard |
//!  +-------+------------------+-------+------------------+-------+-- ...
//!  ^ slot 0 = guard page + usable (grows down from its top) ^ slot 1
//! ```
//!
//! A slot is one guard page followed by `usable` bytes, where `usable` is a
//! power of two from [`MIN_STACK_SIZE`] up (the size class). Guards are
//! installed with `MADV_GUARD_INSTALL` (Linux 6.13+), which marks the page
//! without splitting the mapping, so a million stacks cost a few hundred
//! mappings rather than two million. On older kernels the guard falls back to
//! `mprotect(PROT_NONE)`, which does split the mapping; when that exhausts
//! `vm.max_map_count` the allocation fails with an error that says so.
//!
//! Allocation is two-level: each carrier keeps a small cache per size class
//! (no lock, no syscall), refilled from and drained to the global pool in
//! batches under one short lock.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use corosensei::stack::{Stack, StackPointer};
use parking_lot::Mutex;

/// Default usable stack size of a green thread: 64 KiB.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;
/// Smallest usable stack size a green thread can ask for: 16 KiB.
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest usable stack size a green thread can ask for: 1 GiB.
pub const MAX_STACK_SIZE: usize = 1 << 30;

const MIN_CLASS_SHIFT: u32 = MIN_STACK_SIZE.trailing_zeros();
const CLASSES: usize = (MAX_STACK_SIZE.trailing_zeros() - MIN_CLASS_SHIFT + 1) as usize;
/// Bytes of address space a region of small stacks spans.
const REGION_BYTES: usize = 64 << 20;
/// Stacks a carrier keeps per class before it hands a batch back.
const CACHE_HIGH: usize = 256;
/// Stacks moved between a carrier cache and the global pool at once.
const BATCH: usize = 64;

// Linux uapi values (include/uapi/asm-generic/mman-common.h); libc does not
// export them yet.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// How guard pages are installed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GuardMode {
    /// `MADV_GUARD_INSTALL`: no extra mapping per stack.
    Madvise,
    /// `mprotect(PROT_NONE)`: one extra mapping per stack.
    Mprotect,
}

const MODE_UNKNOWN: u8 = 0;
const MODE_MADVISE: u8 = 1;
const MODE_MPROTECT: u8 = 2;
static GUARD_MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

/// The size class for a requested usable size, or an error for sizes out of
/// range.
pub(crate) fn class_of(size: usize) -> io::Result<usize> {
    if size > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "green thread stack size {size} bytes exceeds the maximum of {MAX_STACK_SIZE} bytes"
            ),
        ));
    }
    let usable = size.max(MIN_STACK_SIZE).next_power_of_two();
    Ok((usable.trailing_zeros() - MIN_CLASS_SHIFT) as usize)
}

fn usable_of(class: usize) -> usize {
    MIN_STACK_SIZE << class
}

/// One stack slot: `[top - usable - page, top - usable)` is the guard page,
/// `[top - usable, top)` the usable stack.
#[derive(Debug)]
pub(crate) struct PooledStack {
    top: usize,
    class: u8,
}

impl PooledStack {
    /// Usable bytes of this stack.
    pub(crate) fn usable(&self) -> usize {
        usable_of(self.class as usize)
    }

    /// The guard page range `[lo, hi)` below this stack.
    pub(crate) fn guard(&self) -> (usize, usize) {
        let hi = self.top - self.usable();
        (hi - page_size(), hi)
    }
}

// SAFETY: `top` is page aligned (so 16-byte aligned) and is the end of
// `usable` bytes of read-write memory that only this `PooledStack` owns
// (the pool hands each slot to one owner at a time). Below the usable
// memory sits a guard page installed before the slot was first handed out,
// so an overflow faults instead of corrupting a neighbour. `usable` is at
// least 16 KiB, above corosensei's MIN_STACK_SIZE.
unsafe impl Stack for PooledStack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.top).expect("stack top is never null")
    }

    fn limit(&self) -> StackPointer {
        StackPointer::new(self.guard().0).expect("stack limit is never null")
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        // A stack dropped outside a carrier cache (for example when a
        // coroutine could not be created) goes straight back to the pool.
        let stack = PooledStack {
            top: self.top,
            class: self.class,
        };
        pool().classes[self.class as usize]
            .lock()
            .free
            .push(stack.into_raw());
    }
}

impl PooledStack {
    fn into_raw(self) -> RawSlot {
        let raw = RawSlot { top: self.top };
        std::mem::forget(self);
        raw
    }

    fn from_raw(raw: RawSlot, class: usize) -> Self {
        PooledStack {
            top: raw.top,
            class: class as u8,
        }
    }
}

/// A free slot, identified by the top of its usable stack.
#[derive(Clone, Copy, Debug)]
struct RawSlot {
    top: usize,
}

#[derive(Default)]
struct ClassPool {
    free: Vec<RawSlot>,
    /// The region slots are being carved from: (next slot address, end).
    fresh: Option<(usize, usize)>,
    /// Bytes of address space mapped for this class, for error messages.
    mapped: usize,
}

struct Pool {
    classes: Vec<Mutex<ClassPool>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        classes: (0..CLASSES)
            .map(|_| Mutex::new(ClassPool::default()))
            .collect(),
    })
}

fn guard_mode() -> GuardMode {
    match GUARD_MODE.load(Ordering::Relaxed) {
        MODE_MADVISE => GuardMode::Madvise,
        MODE_MPROTECT => GuardMode::Mprotect,
        _ => {
            // GREEN_STACK_GUARD=mprotect forces the fallback, to test it on
            // kernels that have MADV_GUARD_INSTALL.
            let forced = std::env::var("GREEN_STACK_GUARD").is_ok_and(|v| v == "mprotect");
            let mode = if forced { MODE_MPROTECT } else { MODE_MADVISE };
            // Relaxed: the mode is a hint that every thread may compute
            // independently; the only cost of a race is one extra probe.
            GUARD_MODE.store(mode, Ordering::Relaxed);
            if forced {
                GuardMode::Mprotect
            } else {
                GuardMode::Madvise
            }
        }
    }
}

/// Installs the guard page `[lo, lo + page)`.
fn install_guard(lo: usize) -> io::Result<()> {
    let page = page_size();
    if guard_mode() == GuardMode::Madvise {
        // SAFETY: `[lo, lo + page)` lies inside a region this pool mapped
        // and never unmaps, and no stack owns the guard page; marking it as a
        // guard region changes no memory anyone reads.
        let rc = unsafe { libc::madvise(lo as *mut libc::c_void, page, MADV_GUARD_INSTALL) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
        // EINVAL: this kernel predates MADV_GUARD_INSTALL. Relaxed: see
        // guard_mode.
        GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
    }
    // SAFETY: as above; the page belongs to the pool and holds no data.
    let rc = unsafe { libc::mprotect(lo as *mut libc::c_void, page, libc::PROT_NONE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOMEM) {
        let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot install a green thread stack guard page: the process reached \
                 vm.max_map_count ({max}) memory mappings. This kernel lacks \
                 MADV_GUARD_INSTALL (Linux 6.13+), so each stack guard costs a mapping; \
                 raise vm.max_map_count or keep fewer green threads alive at once"
            ),
        ));
    }
    Err(err)
}

impl ClassPool {
    /// Carves up to `n` fresh slots of `class` into `out`.
    fn carve(&mut self, class: usize, n: usize, out: &mut Vec<RawSlot>) -> io::Result<()> {
        let page = page_size();
        let usable = usable_of(class);
        let slot = usable + page;
        for _ in 0..n {
            let (next, end) = match self.fresh {
                Some((next, end)) if next + slot <= end => (next, end),
                _ => {
                    let len = (REGION_BYTES / slot).max(4) * slot;
                    let base = map_region(len).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot map {len} bytes for green thread stacks of {} KiB \
                                 ({} bytes already mapped for this size): {e}",
                                usable / 1024,
                                self.mapped
                            ),
                        )
                    })?;
                    self.mapped += len;
                    (base, base + len)
                }
            };
            install_guard(next)?;
            self.fresh = Some((next + slot, end));
            out.push(RawSlot { top: next + slot });
        }
        Ok(())
    }
}

fn map_region(len: usize) -> io::Result<usize> {
    use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
    // SAFETY: a fresh anonymous mapping at an address of the kernel's
    // choosing aliases nothing. NORESERVE: stacks are mostly untouched, so
    // their address space must not count against overcommit.
    let ptr = unsafe {
        mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::STACK,
        )
    }?;
    Ok(ptr as usize)
}

/// Takes one stack of `class` from the global pool (used off-carrier).
pub(crate) fn alloc_global(class: usize) -> io::Result<PooledStack> {
    let mut cp = pool().classes[class].lock();
    if let Some(raw) = cp.free.pop() {
        return Ok(PooledStack::from_raw(raw, class));
    }
    let mut out = Vec::with_capacity(1);
    cp.carve(class, 1, &mut out)?;
    Ok(PooledStack::from_raw(out[0], class))
}

/// A carrier's private cache of free stacks, one list per size class.
pub(crate) struct StackCache {
    lists: Vec<Vec<RawSlot>>,
}

impl StackCache {
    pub(crate) fn new() -> Self {
        StackCache {
            lists: (0..CLASSES).map(|_| Vec::new()).collect(),
        }
    }

    /// Takes a stack of `class`, refilling from the global pool when empty.
    pub(crate) fn alloc(&mut self, class: usize) -> io::Result<PooledStack> {
        let list = &mut self.lists[class];
        if let Some(raw) = list.pop() {
            return Ok(PooledStack::from_raw(raw, class));
        }
        // Large classes move one at a time: a batch of 1 GiB stacks is
        // address space nobody asked for.
        let want = if usable_of(class) <= 1 << 20 {
            BATCH
        } else {
            1
        };
        {
            let mut cp = pool().classes[class].lock();
            let take = cp.free.len().min(want);
            let at = cp.free.len() - take;
            list.extend(cp.free.drain(at..));
            if list.is_empty() {
                if let Err(e) = cp.carve(class, want, list) {
                    // Use what was carved before the failure, if anything.
                    if list.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        let raw = list.pop().expect("refill produced at least one stack");
        Ok(PooledStack::from_raw(raw, class))
    }

    /// Returns a stack whose coroutine has finished.
    pub(crate) fn free(&mut self, stack: PooledStack) {
        let class = stack.class as usize;
        let list = &mut self.lists[class];
        list.push(stack.into_raw());
        if list.len() > CACHE_HIGH {
            let at = list.len() - BATCH;
            pool().classes[class].lock().free.extend(list.drain(at..));
        }
    }
}

impl Drop for StackCache {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter_mut().enumerate() {
            if !list.is_empty() {
                pool().classes[class].lock().free.append(list);
            }
        }
    }
}

/// Bytes of stack address space the pool has mapped, over all classes.
pub(crate) fn mapped_bytes() -> usize {
    pool().classes.iter().map(|c| c.lock().mapped).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(usable_of(class_of(0).unwrap()), MIN_STACK_SIZE);
        assert_eq!(usable_of(class_of(16 * 1024).unwrap()), 16 * 1024);
        assert_eq!(usable_of(class_of(16 * 1024 + 1).unwrap()), 32 * 1024);
        assert_eq!(
            usable_of(class_of(DEFAULT_STACK_SIZE).unwrap()),
            DEFAULT_STACK_SIZE
        );
        assert_eq!(usable_of(class_of(MAX_STACK_SIZE).unwrap()), MAX_STACK_SIZE);
        assert!(class_of(MAX_STACK_SIZE + 1).is_err());
    }

    #[test]
    fn cache_reuses_freed_stacks() {
        let mut cache = StackCache::new();
        let class = class_of(DEFAULT_STACK_SIZE).unwrap();
        let a = cache.alloc(class).unwrap();
        let top = a.top;
        let (lo, hi) = a.guard();
        assert_eq!(hi - lo, page_size());
        assert_eq!(top - hi, DEFAULT_STACK_SIZE);
        cache.free(a);
        let b = cache.alloc(class).unwrap();
        assert_eq!(b.top, top, "the most recently freed stack is reused first");
        cache.free(b);
    }
}
