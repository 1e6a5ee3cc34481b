//! [`ArenaMem`] and [`PeerMem`]: bounds-checked access to the bytes of
//! an arena, this side's own (read-write) or the peer's (read-only), which
//! the peer may read, or write if it is the peer's, at any time.

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Alignment of an arena's base address (and of every allocation in it).
pub const ARENA_ALIGN: usize = 64;

/// The bytes of this side's own arena (to write outgoing bodies; the
/// peer's arena is a [`PeerMem`]). Also usable over any memory a peer may
/// write (a heap arena in tests, a writable shared mapping).
///
/// # Who may touch which bytes
///
/// Shared memory can be written by the peer at any time, whatever the
/// protocol says. So the safe methods never hand out a `&[u8]` over it:
/// [`copy_to`](Self::copy_to) and [`copy_from`](Self::copy_from) move bytes
/// between the arena and this process's own buffers, bounds-checked in
/// `u64`: on x86-64 with the processor's string move inside an `asm!`
/// block (machine instructions, not Rust loads and stores), elsewhere
/// and under Miri, and for copies under 32 bytes, with relaxed
/// `AtomicU64` accesses (plus an atomic read-modify-write for partial
/// words at the ends). A peer writing the same bytes concurrently, in
/// another process or through another handle in this one, can then only
/// make us copy garbage: there is no data race in the Rust sense, and
/// each byte is read once, into memory the peer cannot reach. Validate
/// what you copied, never the shared bytes.
///
/// The protocol on top (the IPC layer) decides who writes when: the owner
/// of an arena writes an allocation's bytes, then publishes a [`Desc`]
/// for it on a ring (the ring's `Release` stores of its tail and stamps
/// order the relaxed byte stores before them, and the consumer's `Acquire`
/// load of a stamp makes them visible); the peer only reads those bytes
/// until it hands the descriptor back, and the owner does not write them
/// meanwhile.
///
/// Zero-copy users may borrow the bytes with the `unsafe`
/// [`slice`](Self::slice) / [`slice_mut`](Self::slice_mut), whose contract
/// is that nobody writes them (or, for `slice_mut`, reads them) meanwhile.
///
/// [`Desc`]: super::Desc
#[derive(Clone)]
pub struct ArenaMem {
    /// Aligned to [`ARENA_ALIGN`], valid for reads and writes of `len`
    /// bytes while `_owner` lives.
    base: NonNull<u8>,
    len: usize,
    _owner: Arc<dyn Send + Sync>,
}

// SAFETY: the memory stays valid wherever the handle goes (`_owner` keeps
// it alive and is itself Send + Sync); safe methods access it with atomics
// only, so several threads may use clones or `&ArenaMem` at once; the
// unsafe accessors put the burden on their callers.
unsafe impl Send for ArenaMem {}
// SAFETY: as for Send: `&self` methods use atomics only.
unsafe impl Sync for ArenaMem {}

impl fmt::Debug for ArenaMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaMem")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A byte range outside an arena: usually a bad descriptor from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Start of the range, relative to the arena.
    pub offset: u64,
    /// Length of the range.
    pub len: u64,
    /// Size of the arena.
    pub arena_len: u64,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "byte range at offset {:#x}, len {:#x} is outside the arena of {:#x} bytes",
            self.offset, self.len, self.arena_len
        )
    }
}

impl std::error::Error for OutOfBounds {}

impl From<OutOfBounds> for io::Error {
    /// [`io::ErrorKind::InvalidData`]: a descriptor pointed outside the
    /// arena.
    fn from(e: OutOfBounds) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl ArenaMem {
    /// The `len` bytes at `base`, kept alive by `owner`.
    ///
    /// # Panics
    ///
    /// If `base` is not aligned to [`ARENA_ALIGN`].
    ///
    /// # Safety
    ///
    /// `base` is valid for reads and writes of `len` bytes rounded up to a
    /// multiple of 8 (whole words: partial words at the ends of a copy are
    /// accessed as words, changing only the bytes in range) for as long as
    /// `owner` lives, and in this process those bytes are accessed only
    /// through `ArenaMem` handles (or the raw pointers and slices they give
    /// out, under their own contracts) for that long.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize, owner: Arc<dyn Send + Sync>) -> Self {
        assert!(
            base.as_ptr() as usize % ARENA_ALIGN == 0,
            "arena base {base:p} is not {ARENA_ALIGN}-byte aligned"
        );
        ArenaMem {
            base,
            len,
            _owner: owner,
        }
    }

    /// A zeroed heap arena of `len` bytes, for in-process use and tests
    /// (including Miri).
    pub fn heap(len: usize) -> Self {
        let block = HeapBlock::new(len);
        let base = block.ptr;
        // SAFETY: the block is valid for `len` bytes (at least), aligned to
        // ARENA_ALIGN, owned by the Arc we hand over, and reachable only
        // through this handle.
        unsafe { ArenaMem::from_raw(base, len, Arc::new(block)) }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the arena has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range `offset .. offset + len` as `usize` indices, if it lies
    /// within the arena (checked in `u64`).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] otherwise.
    pub fn check(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, OutOfBounds> {
        let err = OutOfBounds {
            offset,
            len,
            arena_len: self.len as u64,
        };
        match offset.checked_add(len) {
            // `end <= self.len`, a usize, so both casts are lossless.
            Some(end) if end <= self.len as u64 => Ok(offset as usize..end as usize),
            _ => Err(err),
        }
    }

    /// A raw pointer to `offset .. offset + len`, bounds-checked. Reading
    /// or writing through it is up to the caller (prefer volatile or
    /// atomic accesses: the peer may write the bytes).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    pub fn ptr(&self, offset: u64, len: u64) -> Result<NonNull<u8>, OutOfBounds> {
        let range = self.check(offset, len)?;
        // SAFETY: `range.start <= self.len`, so the result is within (or one
        // past the end of) the arena's memory.
        Ok(unsafe { self.base.add(range.start) })
    }

    /// The arena's `i`-th 8-byte word.
    ///
    /// # Safety
    ///
    /// `8 * i < self.len`: some byte of the word is in the arena, and then
    /// the whole word is valid memory, because the memory behind an
    /// `ArenaMem` extends to a multiple of 8 bytes (constructor's
    /// contract).
    unsafe fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: in bounds (caller's contract); `base` is 64-aligned so
        // the word is 8-aligned; every bit pattern is a valid AtomicU64, and
        // atomics tolerate concurrent writers (the peer's included).
        unsafe { &*self.base.as_ptr().add(8 * i).cast::<AtomicU64>() }
    }

    /// Asks the CPU to start fetching the first `len` bytes at `offset`
    /// (at most [`PREFETCH_MAX`], clipped to the arena) into its caches,
    /// without waiting for them: a batch of bodies the peer just wrote is
    /// then fetched in parallel, not one miss after another as each is
    /// read. A hint only: it reads nothing and never faults.
    pub fn prefetch(&self, offset: u64, len: u64) {
        let end = offset
            .saturating_add(len.min(PREFETCH_MAX))
            .min(self.len as u64);
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            let mut at = offset;
            while at < end {
                // SAFETY: `at < end <= self.len`: an address inside the
                // arena's mapping. PREFETCHT0 loads nothing into a register
                // and raises no fault, whatever the memory holds.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        self.base.as_ptr().add(at as usize).cast::<i8>(),
                    );
                }
                at += 64;
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = end;
    }

    /// Copies `src` into the arena at `offset`. Only the bytes in range
    /// change, even if another thread or process writes the neighbouring
    /// bytes at the same time (partial 8-byte words at the ends are merged
    /// with an atomic read-modify-write).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `offset .. offset + src.len()` is not within the
    /// arena; nothing is written then.
    pub fn copy_to(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        self.copy_in(offset, src, false)
    }

    /// [`copy_to`](Self::copy_to) for a range whose first and last 8-byte
    /// words nobody else writes meanwhile: true inside a block of our own
    /// arena that we alone fill (allocations are [`GRANULE`]-aligned, so
    /// no two share a word). Partial words at the ends are merged with a
    /// plain load and store instead of a read-modify-write, which would
    /// first wait for the cache line to come back from the peer that last
    /// read it. If someone does write the other bytes of those words at
    /// the same time, their write may be lost; nothing worse happens.
    ///
    /// [`GRANULE`]: super::GRANULE
    ///
    /// # Errors
    ///
    /// As [`copy_to`](Self::copy_to).
    pub fn copy_to_owned(&self, offset: u64, src: &[u8]) -> Result<(), OutOfBounds> {
        self.copy_in(offset, src, true)
    }

    fn copy_in(&self, offset: u64, src: &[u8], owned: bool) -> Result<(), OutOfBounds> {
        let range = self.check(offset, src.len() as u64)?;
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if src.len() >= STRING_COPY_MIN {
            // SAFETY: `range` lies within the arena (checked above), valid
            // for writes while `self` lives; `src` is a live slice of the
            // same length that cannot overlap the arena (it is a `&[u8]`,
            // and no safe `&[u8]` into the arena exists).
            unsafe { asm_copy(self.base.as_ptr().add(range.start), src.as_ptr(), src.len()) };
            return Ok(());
        }
        let mut pos = range.start;
        let mut src = src;
        while !src.is_empty() {
            let (word, at) = (pos / 8, pos % 8);
            let n = (8 - at).min(src.len());
            if n == 8 {
                // Whole words: the common case (allocations are 64-byte
                // aligned): every whole word left, in one loop.
                let words = src.len() / 8;
                for (k, chunk) in src.chunks_exact(8).enumerate() {
                    let v = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                    // SAFETY: bytes `8 * (word + k) .. + 8` lie in `range`,
                    // within the arena.
                    let w = unsafe { self.word(word + k) };
                    // Relaxed: publication is the ring's job (the
                    // descriptor's Release push orders this store).
                    w.store(v, Ordering::Relaxed);
                }
                pos += 8 * words;
                src = &src[8 * words..];
                continue;
            }
            let mut bytes = [0u8; 8];
            let mut mask = [0u8; 8];
            bytes[at..at + n].copy_from_slice(&src[..n]);
            mask[at..at + n].fill(0xff);
            let (bytes, mask) = (u64::from_ne_bytes(bytes), u64::from_ne_bytes(mask));
            // SAFETY: byte `pos` of this partial word lies in `range`; only
            // the bytes in `range` change.
            let w = unsafe { self.word(word) };
            if owned {
                // Nobody else writes this word (the caller's contract): a
                // load and a store, no locked instruction. Relaxed: as
                // above.
                let old = w.load(Ordering::Relaxed);
                w.store(old & !mask | bytes, Ordering::Relaxed);
            } else {
                // One atomic read-modify-write, so the word's other bytes
                // (perhaps another writer's) are left as they are.
                // Relaxed: as above.
                let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(old & !mask | bytes)
                });
            }
            pos += n;
            src = &src[n..];
        }
        Ok(())
    }

    /// Copies bytes of the arena at `offset` into `dst`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `offset .. offset + dst.len()` is not within the
    /// arena; `dst` is untouched then.
    pub fn copy_from(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let range = self.check(offset, dst.len() as u64)?;
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if dst.len() >= STRING_COPY_MIN {
            // SAFETY: `range` lies within the arena (checked above); `dst`
            // is an exclusive slice of the same length, so it cannot
            // overlap the arena's bytes.
            unsafe {
                asm_copy(
                    dst.as_mut_ptr(),
                    self.base.as_ptr().add(range.start),
                    dst.len(),
                )
            };
            return Ok(());
        }
        let mut pos = range.start;
        let mut dst = dst;
        while !dst.is_empty() {
            let (word, at) = (pos / 8, pos % 8);
            let n = (8 - at).min(dst.len());
            if n == 8 {
                let words = dst.len() / 8;
                for (k, chunk) in dst.chunks_exact_mut(8).enumerate() {
                    // SAFETY: bytes `8 * (word + k) .. + 8` lie in `range`.
                    let w = unsafe { self.word(word + k) };
                    // Relaxed: the Acquire pop of the descriptor ordered the
                    // peer's writes before this load.
                    chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                }
                pos += 8 * words;
                dst = &mut dst[8 * words..];
                continue;
            }
            // SAFETY: byte `pos` of this partial word lies in `range`.
            let w = unsafe { self.word(word) };
            // Relaxed: as above.
            let bytes = w.load(Ordering::Relaxed).to_ne_bytes();
            dst[..n].copy_from_slice(&bytes[at..at + n]);
            pos += n;
            dst = &mut dst[n..];
        }
        Ok(())
    }

    /// The bytes `offset .. offset + len`, borrowed: zero-copy reading.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    ///
    /// # Safety
    ///
    /// While the slice lives, nobody writes those bytes: not this process
    /// (through any handle on the same memory) and not the peer. The
    /// protocol must guarantee the latter; for example, the body of a
    /// descriptor the peer handed over, until it is handed back, or the
    /// owner's own allocation before its descriptor is published. A peer
    /// that breaks the protocol and writes anyway makes this undefined
    /// behaviour (the compiler may assume the bytes do not change); use
    /// [`copy_from`](Self::copy_from) when the peer is not trusted that
    /// far.
    pub unsafe fn slice(&self, offset: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let range = self.check(offset, len)?;
        // SAFETY: in bounds and valid for reads (constructor's contract);
        // nobody writes the bytes while the slice lives (caller's
        // contract).
        Ok(unsafe { slice::from_raw_parts(self.base.as_ptr().add(range.start), range.len()) })
    }

    /// The bytes `offset .. offset + len`, mutably borrowed: building a
    /// body in place.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    ///
    /// # Safety
    ///
    /// While the slice lives, nobody else reads or writes those bytes: not
    /// this process (through any handle or other slice) and not the peer
    /// (in practice: an allocation of this side's own arena whose
    /// descriptor has not been published yet). A peer that accesses them
    /// anyway makes this undefined behaviour.
    #[allow(clippy::mut_from_ref)] // the contract above stands in for &mut self
    pub unsafe fn slice_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], OutOfBounds> {
        let range = self.check(offset, len)?;
        // SAFETY: in bounds and valid for writes (constructor's contract);
        // exclusive while the slice lives (caller's contract).
        Ok(unsafe { slice::from_raw_parts_mut(self.base.as_ptr().add(range.start), range.len()) })
    }
}

/// The bytes of the peer's arena, read-only: bodies the peer hands over
/// are read here (see [`ArenaMem`] for how, and why there is no safe
/// `&[u8]`). Over shared memory the mapping behind it is read-only
/// (`PROT_READ` on a memfd its owner sealed against other writers, see
/// [`PeerArena`](super::PeerArena)), so this type has no way to write.
#[derive(Clone)]
pub struct PeerMem {
    /// Invariant: only `mem`'s reading methods are called (its memory may
    /// be mapped read-only).
    mem: ArenaMem,
}

impl fmt::Debug for PeerMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerMem")
            .field("base", &self.mem.base)
            .field("len", &self.mem.len)
            .finish_non_exhaustive()
    }
}

impl PeerMem {
    /// The `len` bytes at `base`, kept alive by `owner`, to read only.
    ///
    /// # Panics
    ///
    /// If `base` is not aligned to [`ARENA_ALIGN`].
    ///
    /// # Safety
    ///
    /// `base` is valid for reads of `len` bytes rounded up to a multiple
    /// of 8 for as long as `owner` lives (writes are never made through
    /// this handle).
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize, owner: Arc<dyn Send + Sync>) -> Self {
        // SAFETY: `ArenaMem::from_raw` asks for read and write validity;
        // a PeerMem only ever reads through its ArenaMem (the field's
        // invariant), for which the caller's read validity suffices.
        let mem = unsafe { ArenaMem::from_raw(base, len, owner) };
        PeerMem { mem }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the arena has no bytes.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// As [`ArenaMem::check`].
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    pub fn check(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, OutOfBounds> {
        self.mem.check(offset, len)
    }

    /// As [`ArenaMem::prefetch`].
    pub fn prefetch(&self, offset: u64, len: u64) {
        self.mem.prefetch(offset, len)
    }

    /// As [`ArenaMem::copy_from`]: copies bytes of the arena at `offset`
    /// into `dst`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `offset .. offset + dst.len()` is not within the
    /// arena; `dst` is untouched then.
    pub fn copy_from(&self, offset: u64, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        self.mem.copy_from(offset, dst)
    }

    /// As [`ArenaMem::slice`]: the bytes, borrowed, for zero-copy reading.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if the range is not within the arena.
    ///
    /// # Safety
    ///
    /// As [`ArenaMem::slice`]: nobody (the peer above all) writes those
    /// bytes while the slice lives.
    pub unsafe fn slice(&self, offset: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        // SAFETY: the caller's contract is ArenaMem::slice's.
        unsafe { self.mem.slice(offset, len) }
    }
}

impl ArenaMem {
    /// A read-only handle on the same bytes (in-process use and tests:
    /// the peer's view of a heap arena).
    pub fn read_only(&self) -> PeerMem {
        PeerMem { mem: self.clone() }
    }
}

/// A zeroed heap allocation, rounded up to [`ARENA_ALIGN`] bytes.
struct HeapBlock {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain memory owned by this value; accessed only through
// `ArenaMem` handles (atomics, or unsafe accessors under their
// contracts), freed once in `drop`.
unsafe impl Send for HeapBlock {}
// SAFETY: `&HeapBlock` gives no access to the memory.
unsafe impl Sync for HeapBlock {}

impl HeapBlock {
    fn new(len: usize) -> Self {
        let size = len.max(1).div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        let layout = Layout::from_size_align(size, ARENA_ALIGN)
            .unwrap_or_else(|_| panic!("heap arena of {len} bytes is too large"));
        // SAFETY: `layout` has a nonzero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        HeapBlock { ptr, layout }
    }
}

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The most bytes one [`ArenaMem::prefetch`] asks for: enough for small
/// bodies; a large body is streamed by the copy itself.
pub const PREFETCH_MAX: u64 = 512;

/// Copies from this many bytes up go through [`asm_copy`] (as fast as the
/// word loop from 32 bytes up); shorter ones go word by word with atomics.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const STRING_COPY_MIN: usize = 32;

/// Copies up to this many bytes go through [`vector_copy`]; longer ones
/// through [`string_copy`], unless their distance is one it is slow at.
/// Measured here with one core writing a buffer and the other copying it
/// out, per round trip: 1 KiB 223-245 ns with 16-byte words against
/// 246-267 ns with `rep movsb`, 4 KiB 1.87-1.98 µs against 1.34-1.59 µs.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const VECTOR_COPY_MAX: usize = 1024;

/// Copies `len` (at least [`STRING_COPY_MIN`]) bytes from `src` to `dst`
/// in machine instructions inside `asm!` blocks, so its memory accesses
/// are not Rust loads and stores: a peer process (or a thread using the
/// unsafe accessors) that writes the same bytes at the same time races at
/// the hardware level only, where each byte read is some value that byte
/// held (the same guarantee the atomic loop gives, byte by byte), not a
/// data race in Rust's memory model.
///
/// Up to [`VECTOR_COPY_MAX`] bytes it moves 16-byte words
/// ([`vector_copy`]): at 64-256 bytes in cache that took a third to half
/// the time of `rep movsb` here. Longer copies use `rep movsb`
/// ([`string_copy`]), except when `dst` lies 1 to 63 bytes past `src`
/// modulo 4 KiB: there the string move of some processors (AMD Zen 3,
/// this machine) falls back to a slow path that took 15-40 times as long
/// as at other distances (1 MiB in 356 µs instead of 29 µs), and a body
/// copied into a caller's buffer lands at such a distance whenever the
/// two addresses happen to line up.
///
/// # Safety
///
/// `src` valid for reads and `dst` valid for writes of `len` bytes, not
/// overlapping, and no Rust reference to any of `dst`'s bytes alive.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn asm_copy(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!(len >= STRING_COPY_MIN);
    let dist = (dst as usize).wrapping_sub(src as usize) & 4095;
    if len <= VECTOR_COPY_MAX || (1..64).contains(&dist) {
        // SAFETY: the caller's contract, and len >= 32 (above).
        unsafe { vector_copy(dst, src, len) }
    } else {
        // SAFETY: the caller's contract.
        unsafe { string_copy(dst, src, len) }
    }
}

/// [`asm_copy`] with unaligned 16-byte loads and stores (SSE2, part of
/// x86-64): 64 bytes per round, then the last 64 bytes again (ending at
/// `len`); under 64 bytes, the first 32 and the last 32.
///
/// # Safety
///
/// As [`asm_copy`], and `len >= 32`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn vector_copy(dst: *mut u8, src: *const u8, len: usize) {
    if len < 64 {
        // SAFETY: 32 <= len, so both 32-byte halves lie within the `len`
        // bytes of `src` and of `dst` that the caller's contract covers;
        // the block uses no stack and sets no flags.
        unsafe {
            std::arch::asm!(
                "movdqu xmm0, [rsi]",
                "movdqu xmm1, [rsi + 16]",
                "movdqu xmm2, [rsi + rcx - 32]",
                "movdqu xmm3, [rsi + rcx - 16]",
                "movdqu [rdi], xmm0",
                "movdqu [rdi + 16], xmm1",
                "movdqu [rdi + rcx - 32], xmm2",
                "movdqu [rdi + rcx - 16], xmm3",
                in("rcx") len,
                in("rdi") dst,
                in("rsi") src,
                out("xmm0") _,
                out("xmm1") _,
                out("xmm2") _,
                out("xmm3") _,
                options(nostack, preserves_flags),
            );
        }
        return;
    }
    // SAFETY: the loop moves 64 bytes while at least 64 remain, so every
    // access lies below src + len and dst + len; the tail then moves the
    // 64 bytes that end at len (len >= 64: they start at or after src and
    // dst). The caller's contract covers all of them; the block uses no
    // stack (its flags are clobbered, which asm! allows without
    // preserves_flags).
    unsafe {
        std::arch::asm!(
            "2:",
            "movdqu xmm0, [rsi]",
            "movdqu xmm1, [rsi + 16]",
            "movdqu xmm2, [rsi + 32]",
            "movdqu xmm3, [rsi + 48]",
            "movdqu [rdi], xmm0",
            "movdqu [rdi + 16], xmm1",
            "movdqu [rdi + 32], xmm2",
            "movdqu [rdi + 48], xmm3",
            "add rsi, 64",
            "add rdi, 64",
            "sub rcx, 64",
            "cmp rcx, 64",
            "jae 2b",
            "test rcx, rcx",
            "jz 3f",
            "movdqu xmm0, [rsi + rcx - 64]",
            "movdqu xmm1, [rsi + rcx - 48]",
            "movdqu xmm2, [rsi + rcx - 32]",
            "movdqu xmm3, [rsi + rcx - 16]",
            "movdqu [rdi + rcx - 64], xmm0",
            "movdqu [rdi + rcx - 48], xmm1",
            "movdqu [rdi + rcx - 32], xmm2",
            "movdqu [rdi + rcx - 16], xmm3",
            "3:",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            out("xmm0") _,
            out("xmm1") _,
            out("xmm2") _,
            out("xmm3") _,
            options(nostack),
        );
    }
}

/// [`asm_copy`] with the processor's string move (`rep movsb`, fast on
/// x86-64 processors with ERMS: measured here at 4-5 times the
/// word-by-word atomic loop for a 4 KiB body in cache, 1.6 times for 1
/// MiB out of cache).
///
/// # Safety
///
/// As [`asm_copy`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn string_copy(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract covers every byte `rep movsb` touches
    // (rcx = len bytes from rsi to rdi, ascending: the ABI guarantees the
    // direction flag is clear, and asm! requires it); the block uses no
    // stack and leaves the flags as they were.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}
