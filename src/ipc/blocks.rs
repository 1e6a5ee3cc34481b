//! [`Blocks`]: an owner's arena allocator with a cache of small blocks.

use slab::Slab;

use crate::shm::{Arena, ArenaFull, GRANULE};

/// The most blocks handed out at once: keys are below this, so they fit
/// the [`KEY_MASK`](super::KEY_MASK) bits of a descriptor's `flags`.
const MAX_LIVE: usize = super::KEY_MASK as usize + 1;

/// Bodies up to this size come in blocks of a size class (see
/// [`class_of`]) that are cached on free.
const MAX_CACHED: u64 = 64 << 10;
/// Size classes up to [`MAX_CACHED`]: 1 to 4 granules, then four per
/// doubling.
const CLASSES: usize = 4 + 4 * ((MAX_CACHED / GRANULE).trailing_zeros() as usize - 2);

/// The side's own arena with a cache in front: a freed block of up to
/// 64 KiB goes to a per-size free list instead of back to the arena's
/// coalescing best-fit lists, and the next body of that size class takes
/// it: two hash-map operations per call instead of a dozen B-tree ones.
/// Small bodies are rounded up to a size class, at most a quarter more
/// than they need; the cache holds at most a quarter of the arena, and when
/// the arena has no room for a body the cache is returned to it (so
/// coalesced space is found) before the arena reports itself full.
///
/// It also knows which blocks are handed out and with which length, so a
/// descriptor the peer hands back is checked against it (the server's
/// `RELEASE`). Each block handed out has a key, its index in a table of
/// the live blocks: whoever frees it names it by key and offset, and the
/// lookup is an index, not a hash. The server sends a response body's
/// key with it, and the client hands it back in the `RELEASE`.
pub(super) struct Blocks {
    arena: Arena,
    /// Handed out, by key.
    live: Slab<Live>,
    /// Free blocks per class (offsets), still allocated in `arena`.
    cache: [Vec<u64>; CLASSES],
    cached_bytes: u64,
    /// Bytes reserved by the blocks handed out.
    live_bytes: u64,
}

/// A block handed out.
struct Live {
    offset: u64,
    /// Length asked for (or set by [`Blocks::set_len`]).
    len: u64,
    /// Bytes reserved.
    reserved: u64,
}

/// A block for a body: where it is, its length, and its key in the
/// owner's [`Blocks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Block {
    /// Start in the arena, a multiple of [`GRANULE`].
    pub offset: u64,
    /// Bytes asked for.
    pub len: u64,
    /// Bytes reserved: room for a body written in place.
    pub reserved: u64,
    /// The block's key in its [`Blocks`] (below [`MAX_LIVE`]).
    pub key: u32,
}

/// The bytes reserved for a body of `len` bytes, and its cache class.
///
/// The classes are 1, 2, 3 and 4 granules, then four evenly spaced in
/// each doubling: 5, 6, 7, 8; 10, 12, 14, 16; 20, 24, ... granules (a body
/// just over 4 KiB takes 5 KiB). Not powers of two, which wasted up to
/// half of the arena: a 4 KiB body with its header took 8 KiB, so an
/// arena held 37% fewer of them, and they touched 2 pages each where they
/// now touch 1.25. (Blocks 8 KiB apart also use only half of the L2
/// cache's sets. In time per call at 4 KiB the ipc bench showed no
/// difference beyond its noise; `examples/ipc_floor.rs` was mixed: faster
/// with a client and a server on each CPU, even or slower elsewhere.)
fn class_of(len: u64) -> Option<(u64, usize)> {
    if len > MAX_CACHED {
        return None;
    }
    let g = len.max(1).div_ceil(GRANULE);
    if g <= 4 {
        return Some((g * GRANULE, g as usize - 1));
    }
    // 2^k < g <= 2^(k+1), k >= 2: classes 2^k + j * 2^(k-2), j in 1..=4.
    let k = 63 - (g - 1).leading_zeros();
    let step = 1u64 << (k - 2);
    let j = (g - (1 << k)).div_ceil(step);
    let size = ((1 << k) + j * step) * GRANULE;
    Some((size, 4 + 4 * (k as usize - 2) + j as usize - 1))
}

impl Blocks {
    pub(super) fn new(arena: Arena) -> Blocks {
        Blocks {
            arena,
            live: Slab::new(),
            cache: std::array::from_fn(|_| Vec::new()),
            cached_bytes: 0,
            live_bytes: 0,
        }
    }

    /// Usable bytes of the arena.
    pub(super) fn capacity(&self) -> u64 {
        self.arena.capacity()
    }

    /// Bytes reserved by the blocks handed out now.
    pub(super) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Reserves room for a body of `len` bytes.
    ///
    /// # Errors
    ///
    /// [`ArenaFull`] if there is no room even with the cache returned (or,
    /// in an arena of more than 16 GiB, if [`MAX_LIVE`] blocks are handed
    /// out).
    pub(super) fn alloc(&mut self, len: u64) -> Result<Block, ArenaFull> {
        if self.live.len() >= MAX_LIVE {
            return Err(ArenaFull {
                requested: len,
                free: self.arena.free_bytes(),
                largest: self.arena.largest_free(),
                capacity: self.arena.capacity(),
            });
        }
        let reserve = match class_of(len) {
            Some((size, class)) => {
                if let Some(offset) = self.cache[class].pop() {
                    self.cached_bytes -= size;
                    return Ok(self.hand_out(offset, len, size));
                }
                size
            }
            None => len,
        };
        let a = match self.arena.alloc(reserve) {
            Ok(a) => a,
            Err(_) if self.cached_bytes > 0 => {
                self.flush();
                self.arena.alloc(reserve).map_err(|e| ArenaFull {
                    requested: len,
                    ..e
                })?
            }
            Err(e) => {
                return Err(ArenaFull {
                    requested: len,
                    ..e
                })
            }
        };
        Ok(self.hand_out(a.offset, len, reserve))
    }

    fn hand_out(&mut self, offset: u64, len: u64, reserved: u64) -> Block {
        self.live_bytes += reserved;
        let key = self.live.insert(Live {
            offset,
            len,
            reserved,
        });
        Block {
            offset,
            len,
            reserved,
            // Below MAX_LIVE, checked in `alloc`.
            key: key as u32,
        }
    }

    /// The live block with key `key`, if it is at `offset`.
    fn get(&mut self, key: u32, offset: u64) -> Option<&mut Live> {
        self.live
            .get_mut(key as usize)
            .filter(|b| b.offset == offset)
    }

    /// Frees the block with key `key` if it is handed out at `offset` with
    /// length `len` (`None`: any length); returns whether it was.
    pub(super) fn free(&mut self, key: u32, offset: u64, len: Option<u64>) -> bool {
        match self.get(key, offset) {
            Some(b) if len.is_none_or(|len| len == b.len) => {}
            _ => return false,
        }
        let reserved = self.live.remove(key as usize).reserved;
        self.live_bytes -= reserved;
        match class_of(reserved) {
            Some((size, class))
                if size == reserved && self.cached_bytes + size <= self.arena.capacity() / 4 =>
            {
                self.cache[class].push(offset);
                self.cached_bytes += size;
            }
            // Ours: cannot fail unless our own bookkeeping is wrong.
            _ => drop(self.arena.free(offset)),
        }
        true
    }

    /// Sets the length of a handed-out block (at most its reservation):
    /// a body written in place that came out shorter than reserved.
    pub(super) fn set_len(&mut self, key: u32, offset: u64, len: u64) -> bool {
        match self.get(key, offset) {
            Some(b) if len <= b.reserved => {
                b.len = len;
                true
            }
            _ => false,
        }
    }

    /// Returns every cached block to the arena.
    fn flush(&mut self) {
        for class in &mut self.cache {
            for offset in class.drain(..) {
                let _ = self.arena.free(offset);
            }
        }
        self.cached_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_fit_every_length_within_a_quarter_and_map_to_themselves() {
        let mut last = (0, 0);
        for len in 0..=MAX_CACHED {
            let (size, class) = class_of(len).unwrap();
            assert!(size >= len.max(1) && size % GRANULE == 0, "{len}: {size}");
            // Less than a quarter more than the granules it needs.
            let need = len.max(1).next_multiple_of(GRANULE);
            assert!(size * 4 < need * 5 || size == need, "{len}: {size}");
            assert!(class < CLASSES);
            assert_eq!(
                class_of(size),
                Some((size, class)),
                "{size} is not its own class"
            );
            // Classes grow with the size, one at a time.
            if size != last.0 {
                assert!(size > last.0 && (class == last.1 + 1 || len == 0), "{len}");
            }
            last = (size, class);
        }
        assert_eq!(last, (MAX_CACHED, CLASSES - 1));
        assert_eq!(class_of(MAX_CACHED + 1), None);
    }

    #[test]
    fn blocks_are_reused_checked_and_returned_when_the_arena_fills() {
        let mut b = Blocks::new(Arena::heap(64 << 10));
        let x = b.alloc(100).unwrap();
        assert_eq!(x.reserved, 128);
        assert_eq!(b.live_bytes(), 128);
        assert!(!b.free(x.key, x.offset, Some(99)), "wrong length accepted");
        assert!(
            !b.free(x.key, x.offset + 64, None),
            "interior offset accepted"
        );
        assert!(!b.free(x.key + 1, x.offset, None), "wrong key accepted");
        assert!(b.free(x.key, x.offset, Some(100)));
        assert_eq!(b.live_bytes(), 0);
        assert!(!b.free(x.key, x.offset, Some(100)), "double free accepted");
        // Same class: the cached block comes back.
        let again = b.alloc(65).unwrap();
        assert_eq!(again.offset, x.offset);
        assert!(b.free(again.key, again.offset, Some(65)));
        // A body just over 4 KiB takes 5 KiB, not 8.
        let z = b.alloc(4100).unwrap();
        assert_eq!(z.reserved, 5 << 10);
        // Another block under the same key is not this one.
        let y = b.alloc(100).unwrap();
        assert!(b.free(z.key, z.offset, None));
        let w = b.alloc(4100).unwrap();
        assert_eq!((w.key, w.offset), (z.key, z.offset));
        assert!(
            !b.free(w.key, y.offset, None),
            "another block's offset accepted"
        );
        assert!(b.free(w.key, w.offset, None));
        // A body the size of the whole arena: the cache is returned and
        // coalesced, and it fits once everything else is freed.
        assert!(b.alloc(64 << 10).is_err());
        assert!(b.free(y.key, y.offset, None));
        let big = b.alloc(64 << 10).unwrap();
        assert_eq!(big.len, 64 << 10);
        assert_eq!(b.live_bytes(), 64 << 10);
        let full = b.alloc(1).unwrap_err();
        assert_eq!(full.requested, 1);
        assert!(b.free(big.key, big.offset, Some(64 << 10)));
        // In-place bodies shorter than reserved.
        let y = b.alloc(1000).unwrap();
        assert!(b.set_len(y.key, y.offset, 10));
        assert!(!b.set_len(y.key, y.offset, 1025), "beyond the reservation");
        assert!(
            !b.set_len(y.key, y.offset + 64, 10),
            "wrong offset accepted"
        );
        assert!(!b.free(y.key, y.offset, Some(1000)));
        assert!(b.free(y.key, y.offset, Some(10)));
    }
}
