//! An untrusted peer: whoever shares the ring memory scribbles on the
//! header, the indices or the entries. Every case must end in a clear
//! `Err` (or, for entries, garbage values), never a panic or an access
//! outside the region.

use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use green::ring::{
    Header, PushError, RawRing, RingError, RingLayout, HEADER_SIZE, MAGIC, MAX_CAPACITY, VERSION,
};

/// 128-byte aligned ring memory, standing in for a shared mapping.
struct Region {
    blocks: Vec<Block>,
    base: *mut u8,
}

#[repr(C, align(128))]
struct Block([u8; 128]);

impl Region {
    fn new(len: usize) -> Self {
        let mut blocks: Vec<Block> = (0..len.div_ceil(128)).map(|_| Block([0; 128])).collect();
        let base = blocks.as_mut_ptr().cast::<u8>();
        Region { blocks, base }
    }

    fn len(&self) -> usize {
        self.blocks.len() * 128
    }

    /// A fresh ring of `capacity` `u64` entries in this region.
    fn init(&self, capacity: u32) -> RawRing<u64> {
        // SAFETY: `base` is aligned and valid for `len()` bytes for the life
        // of `self`, which every test keeps beyond its handles; each test
        // takes each side at most once.
        unsafe { RawRing::init(self.base, self.len(), capacity) }.unwrap()
    }

    /// Attaches to whatever the region holds.
    fn attach<T: green::ring::Pod>(&self, len: usize) -> Result<RawRing<T>, RingError> {
        assert!(len <= self.len());
        // SAFETY: as in `init`.
        unsafe { RawRing::attach(self.base, len) }
    }

    /// The peer's view of a header word: an atomic store, like a process
    /// writing its own mapping.
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= HEADER_SIZE);
        // SAFETY: in bounds, 4-aligned, and only ever accessed atomically
        // (the ring handles use atomics for every header word).
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    fn set(&self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::SeqCst);
    }

    fn get(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::SeqCst)
    }
}

const TAIL: usize = offset_of!(Header, tail);
const HEAD: usize = offset_of!(Header, head);

fn assert_corrupt(err: &RingError, index: &str) {
    match err {
        RingError::Corrupt { index: i, .. } => assert_eq!(*i, index, "{err}"),
        other => panic!("expected Corrupt({index}), got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("ring corrupt") && msg.contains(index),
        "unclear message: {msg}"
    );
}

/// [`assert_corrupt`], and the message names the value and the range.
fn assert_corrupt_saying(err: &RingError, index: &str, says: &str) {
    assert_corrupt(err, index);
    assert!(err.to_string().contains(says), "{err}");
}

#[test]
fn attach_rejects_wrong_magic() {
    let r = Region::new(4096);
    drop(r.init(8));
    r.set(offset_of!(Header, magic), 0xdead_beef);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert_eq!(err, RingError::BadMagic { found: 0xdead_beef });
    assert!(err.to_string().contains("magic is 0xdeadbeef"), "{err}");
}

#[test]
fn attach_rejects_a_zeroed_region() {
    let r = Region::new(4096);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert_eq!(err, RingError::BadMagic { found: 0 });
}

#[test]
fn attach_rejects_other_versions() {
    let r = Region::new(4096);
    drop(r.init(8));
    r.set(offset_of!(Header, version), VERSION + 1);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert_eq!(err, RingError::BadVersion { found: VERSION + 1 });
    assert!(
        err.to_string().contains("unsupported ring version"),
        "{err}"
    );
}

#[test]
fn attach_rejects_entry_size_mismatch() {
    let r = Region::new(4096);
    drop(r.init(8));
    let err = r.attach::<u32>(r.len()).err().unwrap();
    assert_eq!(
        err,
        RingError::EntrySizeMismatch {
            found: 8,
            expected: 4
        }
    );
    assert!(err.to_string().contains("header says 8 bytes"), "{err}");
    // The peer claiming a different size is the same error.
    r.set(offset_of!(Header, entry_size), 0);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert!(matches!(err, RingError::EntrySizeMismatch { found: 0, .. }));
}

#[test]
fn attach_rejects_bad_capacities() {
    for bad in [0, 3, 12, 1000, MAX_CAPACITY + 1, u32::MAX] {
        let r = Region::new(4096);
        drop(r.init(8));
        r.set(offset_of!(Header, capacity), bad);
        let err = r.attach::<u64>(r.len()).err().unwrap();
        assert_eq!(err, RingError::BadCapacity { capacity: bad });
        assert!(err.to_string().contains("not a power of two"), "{err}");
    }
}

#[test]
fn attach_rejects_a_region_too_small() {
    // Slots of `u64` entries are 16 bytes: the entry, its stamp, padding.
    let r = Region::new(HEADER_SIZE + 8 * 16);
    drop(r.init(8));
    // Too small for the header itself.
    let err = r.attach::<u64>(100).err().unwrap();
    assert_eq!(
        err,
        RingError::TooSmall {
            needed: HEADER_SIZE as u64,
            len: 100
        }
    );
    // Header fits, entries do not.
    let err = r.attach::<u64>(HEADER_SIZE + 8 * 16 - 1).err().unwrap();
    assert_eq!(
        err,
        RingError::TooSmall {
            needed: (HEADER_SIZE + 128) as u64,
            len: HEADER_SIZE + 127
        }
    );
    assert!(err.to_string().contains("too small"), "{err}");
    // A capacity that would need far more than the region: computed in
    // u64, reported, not wrapped around.
    r.set(offset_of!(Header, capacity), MAX_CAPACITY);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert_eq!(
        err,
        RingError::TooSmall {
            needed: HEADER_SIZE as u64 + (1u64 << 31) * 16,
            len: r.len()
        }
    );
}

#[test]
fn init_and_attach_reject_bad_pointers() {
    let r = Region::new(4096);
    // SAFETY: both calls fail their checks before touching memory.
    let err = unsafe { RawRing::<u64>::init(r.base.add(8), 4000, 8) }
        .err()
        .unwrap();
    assert!(matches!(err, RingError::BadPointer { .. }), "{err}");
    assert!(err.to_string().contains("not aligned to 128"), "{err}");
    // SAFETY: as above.
    let err = unsafe { RawRing::<u64>::attach(std::ptr::null_mut(), 4096) }
        .err()
        .unwrap();
    assert_eq!(err, RingError::BadPointer { addr: 0 });
}

#[test]
fn init_rejects_a_region_too_small() {
    let r = Region::new(1024);
    // SAFETY: `init` checks the length before writing.
    let err = unsafe { RawRing::<u64>::init(r.base, r.len(), 128) }
        .err()
        .unwrap();
    assert_eq!(
        err,
        RingError::TooSmall {
            needed: RingLayout::bytes(128, 8).unwrap() as u64,
            len: 1024
        }
    );
}

#[test]
fn attach_rejects_tail_more_than_capacity_ahead() {
    let r = Region::new(4096);
    drop(r.init(8));
    r.set(HEAD, 5);
    r.set(TAIL, 5 + 8 + 1);
    let err = r.attach::<u64>(r.len()).err().unwrap();
    assert_corrupt(&err, "tail");
    assert_eq!(
        err,
        RingError::Corrupt {
            index: "tail",
            found: 14,
            min: 5,
            max: 13
        }
    );
}

#[test]
fn consumer_rejects_tail_one_past_capacity() {
    let r = Region::new(4096);
    let mut rx = r.init(8).into_consumer();
    r.set(TAIL, 8 + 1);
    let err = rx.len().unwrap_err();
    assert_corrupt_saying(&err, "tail", "is 9, outside the valid range 0..=8");
    // Sticky: even after the peer "fixes" tail, the consumer stays failed.
    r.set(TAIL, 1);
    assert_eq!(rx.pop().unwrap_err(), err);
    assert_eq!(rx.pop_into(&mut [0; 4]).unwrap_err(), err);
    assert_eq!(rx.len().unwrap_err(), err);
    assert_eq!(
        rx.wait(Duration::ZERO, Some(Duration::ZERO)).unwrap_err(),
        err
    );
    assert_eq!(rx.error(), Some(&err));
}

#[test]
fn consumer_rejects_tail_far_ahead() {
    for tail in [1 << 31, u32::MAX, 100, 1 << 20] {
        let r = Region::new(4096);
        let mut rx = r.init(8).into_consumer();
        r.set(TAIL, tail);
        assert_corrupt(&rx.len().unwrap_err(), "tail");
        // Popping goes by the stamps, which say nothing is there; the
        // consumer catches the tail as it goes to sleep.
        let r = Region::new(4096);
        let mut rx = r.init(8).into_consumer();
        r.set(TAIL, tail);
        assert_eq!(rx.pop_into(&mut [0; 64]).unwrap(), 0);
        let err = rx.wait(Duration::ZERO, Some(Duration::from_secs(5)));
        assert_corrupt(&err.unwrap_err(), "tail");
        let r = Region::new(4096);
        let mut rx = r.init(8).into_consumer();
        r.set(TAIL, tail);
        assert_corrupt(&rx.prepare_sleep().unwrap_err(), "tail");
        assert_eq!(r.get(offset_of!(Header, need_wakeup)), 0);
    }
}

#[test]
fn consumer_rejects_tail_moving_backwards() {
    let r = Region::new(4096);
    let (mut tx, mut rx) = r.init(8).split();
    tx.push_slice(&[1, 2, 3, 4]).unwrap();
    assert_eq!(rx.pop().unwrap(), Some(1));
    assert_eq!(rx.len().unwrap(), 3);
    // Back to 2: still >= head (1), but behind the tail already seen.
    r.set(TAIL, 2);
    // Draining the stamped entries needs no read of tail...
    let mut out = [0u64; 3];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 3);
    assert_eq!(out, [2, 3, 4]);
    // ...the next read of tail catches it.
    assert_corrupt(&rx.len().unwrap_err(), "tail");
    assert_corrupt(&rx.pop().unwrap_err(), "tail");
}

#[test]
fn consumer_rejects_tail_behind_what_the_stamps_published() {
    // Entries taken by their stamps, tail never read: a tail behind them
    // is caught all the same (the producer stores tail before stamps).
    let r = Region::new(4096);
    let (mut tx, mut rx) = r.init(8).split();
    tx.push_slice(&[1, 2, 3]).unwrap();
    assert_eq!(rx.pop_into(&mut [0; 8]).unwrap(), 3);
    r.set(TAIL, 2);
    let err = rx.len().unwrap_err();
    assert_corrupt_saying(&err, "tail", "is 2, outside the valid range 3..=11");
}

#[test]
fn consumer_wait_rejects_corrupt_tail() {
    let r = Region::new(4096);
    let mut rx = r.init(8).into_consumer();
    r.set(TAIL, 1000);
    let err = rx.wait(Duration::from_micros(10), Some(Duration::from_millis(10)));
    assert_corrupt(&err.unwrap_err(), "tail");
}

#[test]
fn producer_rejects_head_past_tail() {
    let r = Region::new(4096);
    let mut tx = r.init(4).into_producer();
    tx.push_slice(&[1, 2]).unwrap();
    r.set(HEAD, 3);
    let err = tx.free_slots().unwrap_err();
    assert_corrupt_saying(&err, "head", "head is 3, outside the valid range 0..=2");
    // Sticky, and pushes hand the value back.
    match tx.push(7) {
        Err(PushError::Corrupt(7, e)) => assert_eq!(e, err),
        other => panic!("expected Corrupt(7, ..), got {other:?}"),
    }
    assert_eq!(tx.push_slice(&[1]).unwrap_err(), err);
    assert_eq!(tx.error(), Some(&err));
}

#[test]
fn producer_rejects_head_moving_backwards() {
    let r = Region::new(4096);
    let (mut tx, mut rx) = r.init(4).split();
    tx.push_slice(&[1, 2, 3, 4]).unwrap();
    assert_eq!(rx.pop_into(&mut [0; 2]).unwrap(), 2);
    assert_eq!(tx.free_slots().unwrap(), 2);
    r.set(HEAD, u32::MAX);
    assert_corrupt(&tx.free_slots().unwrap_err(), "head");
}

#[test]
fn full_ring_with_garbage_head_is_an_error_not_a_write() {
    let r = Region::new(4096);
    let mut tx = r.init(4).into_producer();
    tx.push_slice(&[1, 2, 3, 4]).unwrap();
    // The peer claims to have consumed 100 entries of 4.
    r.set(HEAD, 100);
    assert!(matches!(tx.push(5), Err(PushError::Corrupt(5, _))));
    assert_eq!(r.get(TAIL), 4, "tail moved despite the corrupt head");
}

#[test]
fn scribbled_entries_are_only_garbage_values() {
    let r = Region::new(4096);
    let (mut tx, mut rx) = r.init(8).split();
    tx.push_slice(&[1, 2, 3]).unwrap();
    let layout = RingLayout::for_entry::<u64>(8).unwrap();
    let slot = |i: usize| HEADER_SIZE + i * layout.slot_size();
    for i in 0..8 {
        // SAFETY: the entry bytes are in the region; nothing reads them
        // concurrently (single thread).
        unsafe { std::ptr::write_bytes(r.base.add(slot(i)), 0xFF, 8) };
    }
    assert_eq!(rx.pop().unwrap(), Some(u64::MAX));
    let mut out = [0; 2];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 2);
    assert_eq!(out, [u64::MAX; 2]);
    // A stamp for an index the producer never pushed publishes whatever
    // its slot holds (here the scribble): garbage, read in bounds.
    let stamp = |i: usize| {
        // SAFETY: in bounds, 4-aligned, only ever accessed atomically.
        unsafe { AtomicU32::from_ptr(r.base.add(slot(i) + layout.stamp_offset()).cast()) }
    };
    stamp(3).store(4, Ordering::SeqCst);
    assert_eq!(rx.pop().unwrap(), Some(u64::MAX));
    // Any other stamp hides the entry: the consumer sees an empty ring.
    for bad in [0, 4, 6, u32::MAX] {
        stamp(4).store(bad, Ordering::SeqCst);
        assert_eq!(rx.pop().unwrap(), None);
        assert!(rx.is_empty().unwrap());
    }
    stamp(4).store(5, Ordering::SeqCst);
    assert_eq!(rx.pop_into(&mut [0; 8]).unwrap(), 1);
}

#[test]
fn header_changes_after_attach_are_ignored() {
    // Configuration is copied at attach; a peer growing `capacity` or
    // changing `entry_size` afterwards cannot widen our accesses.
    let r = Region::new(HEADER_SIZE + 4 * 8);
    let (mut tx, mut rx) = r.init(4).split();
    r.set(offset_of!(Header, capacity), MAX_CAPACITY);
    r.set(offset_of!(Header, entry_size), u32::MAX);
    r.set(offset_of!(Header, magic), 0);
    for i in 0..100u64 {
        tx.push(i).unwrap();
        assert_eq!(rx.pop().unwrap(), Some(i));
    }
    assert_eq!(tx.capacity(), 4);
    assert_eq!(tx.push_slice(&[0; 10]).unwrap(), 4);
    // A tail claiming a full "huge" ring is still judged against 4.
    r.set(TAIL, r.get(HEAD).wrapping_add(1000));
    assert_corrupt(&rx.len().unwrap_err(), "tail");
}

#[test]
fn garbage_wake_words_cost_only_wakeups() {
    let r = Region::new(4096);
    let (mut tx, mut rx) = r.init(8).split();
    // A consumer that always claims to sleep: every notify is a (harmless)
    // FUTEX_WAKE.
    r.set(offset_of!(Header, need_wakeup), 0xFFFF_FFFF);
    tx.push(1).unwrap();
    assert!(tx.notify().unwrap());
    // A producer that keeps bumping the futex word: the consumer's waits
    // still end by data or timeout.
    r.set(offset_of!(Header, futex), 12345);
    assert_eq!(rx.pop().unwrap(), Some(1));
    let outcome = rx
        .wait(Duration::ZERO, Some(Duration::from_millis(5)))
        .unwrap();
    assert_eq!(outcome, green::ring::WaitOutcome::TimedOut);
    assert_eq!(MAGIC, r.get(offset_of!(Header, magic)));
}

#[test]
fn errors_convert_to_io_invalid_data() {
    let err = RingError::BadMagic { found: 1 };
    let io: std::io::Error = err.clone().into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(io.to_string(), err.to_string());
}
