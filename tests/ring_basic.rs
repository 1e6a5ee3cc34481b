//! Single-threaded ring behaviour: order, full/empty, wrap-around (laps and
//! the u32 index wrap), bulk partial fills, waits that time out, layout
//! facts.

use std::mem::{align_of, offset_of, size_of};
use std::time::{Duration, Instant};

use green::ring::{
    self, Consumer, Header, Pod, Producer, PushError, RawRing, RingError, RingLayout, WaitOutcome,
    HEADER_SIZE, MAX_CAPACITY,
};

#[test]
fn push_pop_in_order() {
    let (mut tx, mut rx) = ring::channel::<u32>(8).unwrap();
    for i in 0..5 {
        tx.push(i).unwrap();
    }
    assert_eq!(rx.len().unwrap(), 5);
    for i in 0..5 {
        assert_eq!(rx.pop().unwrap(), Some(i));
    }
    assert_eq!(rx.pop().unwrap(), None);
}

#[test]
fn empty_ring_pops_none() {
    let (_tx, mut rx) = ring::channel::<u64>(4).unwrap();
    assert_eq!(rx.pop().unwrap(), None);
    assert!(rx.is_empty().unwrap());
    let mut buf = [0u64; 4];
    assert_eq!(rx.pop_into(&mut buf).unwrap(), 0);
}

#[test]
fn peek_sees_entries_from_another_thread_until_they_are_popped() {
    let (mut tx, mut rx) = ring::channel::<u64>(4).unwrap();
    let peek = rx.peek();
    assert!(!peek.has_entries());
    // A push from another thread shows through the handle (which is Send).
    std::thread::spawn(move || {
        tx.push(7).unwrap();
        tx.push(8).unwrap();
        tx
    })
    .join()
    .unwrap();
    let seen = std::thread::spawn(move || peek.has_entries())
        .join()
        .unwrap();
    assert!(seen);
    let peek = rx.peek();
    assert_eq!(rx.pop().unwrap(), Some(7));
    assert!(peek.has_entries(), "one entry is left");
    assert_eq!(rx.pop().unwrap(), Some(8));
    assert!(!peek.has_entries());
}

#[test]
fn full_ring_hands_value_back() {
    let (mut tx, mut rx) = ring::channel::<u64>(4).unwrap();
    for i in 0..4 {
        tx.push(i).unwrap();
    }
    assert_eq!(tx.free_slots().unwrap(), 0);
    match tx.push(99) {
        Err(PushError::Full(v)) => assert_eq!(v, 99),
        other => panic!("expected Full(99), got {other:?}"),
    }
    assert_eq!(tx.push(98).unwrap_err().into_inner(), 98);
    assert_eq!(tx.push(97).unwrap_err().to_string(), "ring is full");
    // One pop frees exactly one slot.
    assert_eq!(rx.pop().unwrap(), Some(0));
    tx.push(4).unwrap();
    assert!(matches!(tx.push(5), Err(PushError::Full(5))));
    let mut out = [0u64; 8];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 4);
    assert_eq!(&out[..4], &[1, 2, 3, 4]);
}

#[test]
fn many_laps_keep_order() {
    let laps: u64 = if cfg!(miri) { 50 } else { 100_000 };
    let (mut tx, mut rx) = ring::channel::<u64>(4).unwrap();
    let (mut sent, mut received) = (0u64, 0u64);
    for lap in 0..laps {
        // Vary the fill level so every slot offset is exercised.
        let burst = 1 + lap % 4;
        for _ in 0..burst {
            tx.push(sent).unwrap();
            sent += 1;
        }
        for _ in 0..burst {
            assert_eq!(rx.pop().unwrap(), Some(received));
            received += 1;
        }
    }
    assert_eq!(rx.pop().unwrap(), None);
}

#[test]
fn u32_index_wrap_is_seamless() {
    // Start 10 entries before the u32 wrap and run far past it, single and
    // bulk, so head and tail each cross 2^32 -> 0 mid-batch.
    for start in [u32::MAX - 10, u32::MAX, u32::MAX - 3] {
        let (mut tx, mut rx) = ring::channel_with_start::<u32>(8, start).unwrap();
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..40u32 {
            let batch: Vec<u32> = (0..1 + round % 8).map(|k| next_in + k).collect();
            let pushed = tx.push_slice(&batch).unwrap();
            assert_eq!(pushed, batch.len());
            next_in += pushed as u32;
            assert_eq!(tx.free_slots().unwrap(), 8 - pushed as u32);
            let mut out = [0u32; 8];
            let n = rx
                .pop_into(&mut out[..(1 + round as usize % 3).min(pushed)])
                .unwrap();
            for v in &out[..n] {
                assert_eq!(*v, next_out);
                next_out += 1;
            }
            while let Some(v) = rx.pop().unwrap() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
        assert_eq!(next_in, next_out);
    }
}

#[test]
fn bulk_push_fills_partially_when_nearly_full() {
    let (mut tx, mut rx) = ring::channel::<u16>(8).unwrap();
    assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5]).unwrap(), 5);
    assert_eq!(tx.push_slice(&[6, 7, 8, 9, 10]).unwrap(), 3);
    assert_eq!(tx.push_slice(&[11]).unwrap(), 0);
    assert_eq!(tx.push_slice(&[]).unwrap(), 0);
    let mut out = [0u16; 3];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 3);
    assert_eq!(out, [1, 2, 3]);
    // The next bulk push wraps around the end of the entry array.
    assert_eq!(tx.push_slice(&[9, 10, 11, 12]).unwrap(), 3);
    let mut all = [0u16; 16];
    assert_eq!(rx.pop_into(&mut all).unwrap(), 8);
    assert_eq!(&all[..8], &[4, 5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(rx.pop_into(&mut all).unwrap(), 0);
}

#[test]
fn bulk_pop_takes_what_is_there() {
    let (mut tx, mut rx) = ring::channel::<u8>(16).unwrap();
    tx.push_slice(&[1, 2, 3]).unwrap();
    let mut out = [0u8; 10];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 3);
    assert_eq!(&out[..3], &[1, 2, 3]);
    assert_eq!(rx.pop_into(&mut []).unwrap(), 0);
}

#[test]
fn user_entry_struct_round_trips() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Sqe {
        user_data: u64,
        opcode: u32,
        len: u32,
        offset: u64,
    }
    // SAFETY: repr(C), integer fields only, no padding, no pointers.
    unsafe impl Pod for Sqe {}

    let (mut tx, mut rx) = ring::channel::<Sqe>(2).unwrap();
    let e = Sqe {
        user_data: 7,
        opcode: 3,
        len: 4096,
        offset: 1 << 40,
    };
    tx.push(e).unwrap();
    assert_eq!(rx.pop().unwrap(), Some(e));
}

#[test]
fn capacity_must_be_a_power_of_two() {
    for bad in [0, 3, 6, 100, MAX_CAPACITY + 1, u32::MAX] {
        let err = ring::channel::<u64>(bad)
            .err()
            .expect("bad capacity accepted");
        assert_eq!(err, RingError::BadCapacity { capacity: bad });
        assert!(err.to_string().contains("not a power of two"), "{err}");
    }
    for good in [1, 2, 64, 1024] {
        let (tx, _rx) = ring::channel::<u8>(good).unwrap();
        assert_eq!(tx.capacity(), good);
    }
}

#[test]
fn capacity_one_alternates() {
    let (mut tx, mut rx) = ring::channel::<u64>(1).unwrap();
    for i in 0..100 {
        tx.push(i).unwrap();
        assert!(matches!(tx.push(0), Err(PushError::Full(_))));
        assert_eq!(rx.pop().unwrap(), Some(i));
    }
}

#[test]
fn zero_sized_and_overaligned_entries_are_refused() {
    let err = ring::channel::<[u8; 0]>(4).err().unwrap();
    assert!(
        matches!(err, RingError::UnsupportedEntry { size: 0, .. }),
        "{err}"
    );

    #[derive(Clone, Copy)]
    #[repr(C, align(256))]
    struct Big([u8; 256]);
    // SAFETY: a byte array: any bits valid, no pointers.
    unsafe impl Pod for Big {}
    let err = ring::channel::<Big>(4).err().unwrap();
    assert!(
        matches!(err, RingError::UnsupportedEntry { align: 256, .. }),
        "{err}"
    );
}

#[test]
fn header_layout_is_fixed() {
    assert_eq!(HEADER_SIZE, 512);
    assert_eq!(size_of::<Header>(), 512);
    assert_eq!(align_of::<Header>(), 128);
    assert_eq!(offset_of!(Header, magic), 0);
    assert_eq!(offset_of!(Header, version), 4);
    assert_eq!(offset_of!(Header, entry_size), 8);
    assert_eq!(offset_of!(Header, capacity), 12);
    assert_eq!(offset_of!(Header, tail), 128);
    assert_eq!(offset_of!(Header, head), 256);
    assert_eq!(offset_of!(Header, need_wakeup), 384);
    assert_eq!(offset_of!(Header, futex), 388);
}

#[test]
fn layout_sizes() {
    // A slot is the entry, its 4-byte stamp, then padding: to a power of
    // two up to 64 bytes, else to a multiple of 128.
    assert_eq!(RingLayout::bytes(64, 8).unwrap(), 512 + 64 * 16);
    let l = RingLayout::new(64, 8).unwrap();
    assert_eq!((l.slot_size(), l.stamp_offset()), (16, 8));
    for (entry, slot, stamp) in [
        (1, 8, 4),
        (4, 8, 4),
        (5, 16, 8),
        (12, 16, 12),
        (13, 32, 16),
        (32, 64, 32),
        (60, 64, 60),
        (61, 128, 64),
        (64, 128, 64),
        (124, 128, 124),
        (125, 256, 128),
    ] {
        let l = RingLayout::new(8, entry).unwrap();
        assert_eq!(
            (l.slot_size(), l.stamp_offset()),
            (slot, stamp),
            "entry {entry}"
        );
        assert_eq!(l.size(), 512 + 8 * slot);
    }
    let l = RingLayout::for_entry::<[u64; 8]>(256).unwrap();
    assert_eq!(l.size(), 512 + 256 * 128);
    assert_eq!(l.align(), 128);
    assert_eq!(l.entries_offset(), 512);
    assert_eq!(l.to_alloc_layout().align(), 128);
    // The largest legal ring is computed without overflow (u64 arithmetic).
    if cfg!(target_pointer_width = "64") {
        // Slots of 2^32 + 128 bytes: above isize::MAX in all, refused.
        let slot = (u64::from(u32::MAX) + 1 + 4).div_ceil(128) * 128;
        assert_eq!(
            RingLayout::new(MAX_CAPACITY, u32::MAX as usize).unwrap_err(),
            RingError::TooLarge {
                bytes: 512 + (1u64 << 31) * slot
            }
        );
        let l = RingLayout::new(MAX_CAPACITY / 2, u32::MAX as usize).unwrap();
        assert_eq!(l.slot_size() as u64, slot);
        assert_eq!(l.size() as u64, 512 + (1u64 << 30) * slot);
    }
    assert!(RingLayout::new(64, 0).is_err());
}

#[test]
fn handles_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Producer<u64>>();
    assert_send::<Consumer<[u8; 64]>>();
}

#[test]
fn wait_returns_ready_at_once_when_entries_exist() {
    let (mut tx, mut rx) = ring::channel::<u64>(4).unwrap();
    tx.push(1).unwrap();
    let outcome = rx
        .wait(Duration::from_secs(10), Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Ready);
}

#[test]
fn wait_times_out_on_an_empty_ring() {
    let (_tx, mut rx) = ring::channel::<u64>(4).unwrap();
    let t = Instant::now();
    let outcome = rx
        .wait(Duration::from_millis(1), Some(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(outcome, WaitOutcome::TimedOut);
    assert!(t.elapsed() >= Duration::from_millis(20));
    let outcome = rx.wait(Duration::ZERO, Some(Duration::ZERO)).unwrap();
    assert_eq!(outcome, WaitOutcome::TimedOut);
}

#[test]
fn notify_without_a_sleeper_makes_no_syscall() {
    let (mut tx, _rx) = ring::channel::<u64>(4).unwrap();
    tx.push(1).unwrap();
    assert!(!tx.notify().unwrap());
}

#[test]
fn init_and_attach_in_caller_memory() {
    #[repr(C, align(128))]
    struct Block([u8; 128]);
    let layout = RingLayout::for_entry::<u64>(16).unwrap();
    let mut mem: Vec<Block> = (0..layout.size().div_ceil(128))
        .map(|_| Block([0xAA; 128]))
        .collect();
    let len = mem.len() * 128;
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: `mem` is aligned, `len` bytes long, outlives the handles
    // (dropped at the end of the test, after them); one producer from
    // `init`, one consumer from `attach`.
    let mut tx = unsafe { RawRing::<u64>::init(base, len, 16) }
        .unwrap()
        .into_producer();
    tx.push_slice(&[10, 20, 30]).unwrap();
    // SAFETY: as above; this RawRing only plays the consumer.
    let mut rx = unsafe { RawRing::<u64>::attach(base, len) }
        .unwrap()
        .into_consumer();
    assert_eq!(rx.capacity(), 16);
    assert_eq!(rx.len().unwrap(), 3);
    assert_eq!(rx.pop().unwrap(), Some(10));
    let mut out = [u64::MAX; 2];
    assert_eq!(rx.pop_into(&mut out).unwrap(), 2);
    assert_eq!(out, [20, 30]);
    drop((tx, rx));
    drop(mem);
}

#[test]
fn entries_taken_by_their_stamps_keep_len_exact() {
    // The consumer takes entries by their slots' stamps without reading
    // `tail`; `len` (which reads it) must agree afterwards, also when a
    // whole ring was taken between two reads, and across the u32 wrap.
    let (mut tx, mut rx) = ring::channel_with_start::<u64>(4, u32::MAX - 5).unwrap();
    for round in 0..4u64 {
        assert_eq!(tx.push_slice(&[round; 4]).unwrap(), 4);
        assert_eq!(rx.pop_into(&mut [0; 8]).unwrap(), 4);
        assert_eq!(rx.len().unwrap(), 0);
        tx.push(round).unwrap();
        assert_eq!(rx.len().unwrap(), 1);
        assert!(!rx.is_empty().unwrap());
        assert_eq!(rx.pop().unwrap(), Some(round));
        assert!(rx.is_empty().unwrap());
    }
}
