//! The arena allocator and bounds-checked arena access, over heap memory:
//! no memfd, no syscalls, so these run under Miri too.

use green::shm::{Alloc, Arena, ArenaFull, ArenaMem, OutOfBounds, UnknownAlloc, GRANULE};

/// Small xorshift64 PRNG: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn alloc_is_aligned_and_disjoint() {
    let mut arena = Arena::heap(4096);
    let a = arena.alloc(1).unwrap();
    let b = arena.alloc(100).unwrap();
    let c = arena.alloc(0).unwrap();
    for x in [a, b, c] {
        assert_eq!(x.offset % GRANULE, 0);
    }
    assert_eq!(a, Alloc { offset: 0, len: 1 });
    assert_eq!(
        b,
        Alloc {
            offset: 64,
            len: 100
        }
    );
    assert_eq!(
        c,
        Alloc {
            offset: 192,
            len: 0
        }
    );
    assert_eq!(arena.outstanding(), 3);
    assert_eq!(arena.free_bytes(), 4096 - 256);
}

#[test]
fn free_coalesces_neighbours() {
    let mut arena = Arena::heap(64 * 8);
    let allocs: Vec<_> = (0..8).map(|_| arena.alloc(64).unwrap()).collect();
    assert_eq!(arena.largest_free(), 0);
    assert!(arena.alloc(1).is_err());
    // Free 1 and 3, then 2: the three merge into one range of 192.
    arena.free(allocs[1].offset).unwrap();
    arena.free(allocs[3].offset).unwrap();
    assert_eq!(arena.largest_free(), 64);
    arena.free(allocs[2].offset).unwrap();
    assert_eq!(arena.largest_free(), 192);
    assert_eq!(arena.alloc(192).unwrap().offset, 64);
    // Free everything: one range, the whole arena again.
    for a in [0, 4, 5, 6, 7] {
        arena.free(allocs[a].offset).unwrap();
    }
    arena.free(64).unwrap();
    assert_eq!(arena.outstanding(), 0);
    assert_eq!(arena.largest_free(), 64 * 8);
    assert_eq!(arena.free_bytes(), 64 * 8);
}

#[test]
fn best_fit_prefers_the_smallest_hole() {
    let mut arena = Arena::heap(64 * 10);
    let a: Vec<_> = (0..10).map(|_| arena.alloc(64).unwrap()).collect();
    arena.free(a[1].offset).unwrap(); // hole of 64 at 64
    arena.free(a[4].offset).unwrap();
    arena.free(a[5].offset).unwrap(); // hole of 128 at 256
    arena.free(a[8].offset).unwrap(); // hole of 64 at 512
    assert_eq!(arena.alloc(100).unwrap().offset, 256);
    assert_eq!(arena.alloc(10).unwrap().offset, 64);
    assert_eq!(arena.alloc(10).unwrap().offset, 512);
}

#[test]
fn exhaustion_is_a_clear_error() {
    let mut arena = Arena::heap(1024);
    let big = arena.alloc(1000).unwrap();
    let err = arena.alloc(100).unwrap_err();
    assert_eq!(
        err,
        ArenaFull {
            requested: 100,
            free: 0,
            largest: 0,
            capacity: 1024
        }
    );
    assert!(
        err.to_string().contains("cannot allocate 100 bytes"),
        "{err}"
    );
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::OutOfMemory);
    // Sizes that overflow when rounded up fail the same way.
    assert!(arena.alloc(u64::MAX).is_err());
    arena.free(big.offset).unwrap();
    assert!(arena.alloc(u64::MAX - 10).is_err());
    assert!(arena.alloc(1024).is_ok());
}

#[test]
fn bogus_and_double_free_are_errors() {
    let mut arena = Arena::heap(1024);
    let a = arena.alloc(10).unwrap();
    let b = arena.alloc(10).unwrap();
    // Not a start: interior, unaligned, out of range, huge.
    for bogus in [1, 32, a.offset + 1, 4096, u64::MAX] {
        let e = arena.free(bogus).unwrap_err();
        assert_eq!(
            e,
            UnknownAlloc {
                offset: bogus,
                len: 0,
                freeing: true
            }
        );
    }
    assert_eq!(arena.free(a.offset).unwrap(), a);
    let e = arena.free(a.offset).unwrap_err();
    assert!(e.to_string().contains("double free"), "{e}");
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    // Nothing changed by the failures: b is still there, a's space reusable.
    assert_eq!(arena.outstanding(), 1);
    assert_eq!(arena.lookup(b.offset, 10).unwrap(), b);
    assert_eq!(arena.alloc(10).unwrap().offset, a.offset);
}

#[test]
fn lookup_validates_descriptors() {
    let mut arena = Arena::heap(4096);
    let a = arena.alloc(100).unwrap();
    assert_eq!(arena.lookup(a.offset, 100).unwrap(), a);
    assert_eq!(arena.lookup(a.offset + 10, 90).unwrap(), a);
    assert_eq!(arena.lookup(a.offset + 100, 0).unwrap(), a);
    // Past the bytes asked for (even within the reserved granule).
    assert!(arena.lookup(a.offset, 101).is_err());
    assert!(arena.lookup(a.offset + 50, 51).is_err());
    // Free space, beyond the arena, overflowing.
    assert!(arena.lookup(1024, 1).is_err());
    assert!(arena.lookup(1 << 40, 1).is_err());
    assert!(arena.lookup(a.offset + 1, u64::MAX).is_err());
    assert!(arena.lookup(u64::MAX, 1).is_err());
    arena.free(a.offset).unwrap();
    assert!(arena.lookup(a.offset, 1).is_err());
}

/// Random alloc/free against a model: a Vec of live ranges. Checks every
/// allocation is in bounds, aligned and disjoint from every live one,
/// that frees of bogus offsets fail, that the free byte count adds up, and
/// that the content written to each allocation survives.
#[test]
fn random_sequences_match_a_model() {
    const ARENA: u64 = 64 * 256;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut arena = Arena::heap(ARENA as usize);
    // (offset, len, reserved, fill byte)
    let mut live: Vec<(u64, u64, u64, u8)> = Vec::new();
    for step in 0..steps {
        match rng.below(10) {
            0..=4 => {
                let len = match rng.below(4) {
                    0 => rng.below(64),
                    1 => rng.below(512),
                    2 => rng.below(4096),
                    _ => rng.below(ARENA + 100),
                };
                let reserved = len.max(1).div_ceil(GRANULE) * GRANULE;
                match arena.alloc(len) {
                    Ok(a) => {
                        assert_eq!(a.len, len);
                        assert_eq!(a.offset % GRANULE, 0);
                        assert!(a.offset + reserved <= ARENA, "step {step}: {a:?}");
                        for &(o, _, r, _) in &live {
                            assert!(
                                a.offset + reserved <= o || o + r <= a.offset,
                                "step {step}: {a:?} overlaps {o}+{r}"
                            );
                        }
                        let fill = (step % 251) as u8;
                        let n = len.min(256) as usize;
                        arena.copy_to(a.offset, &vec![fill; n]).unwrap();
                        live.push((a.offset, len, reserved, fill));
                    }
                    Err(e) => {
                        // Full only if no free range fits.
                        assert!(e.largest < reserved, "step {step}: {e:?}");
                        assert_eq!(e.free, arena.free_bytes());
                    }
                }
            }
            5..=8 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let (offset, len, _, fill) = live.swap_remove(i);
                let n = len.min(256) as usize;
                let mut buf = vec![0u8; n];
                arena.copy_from(offset, &mut buf).unwrap();
                assert!(buf.iter().all(|&b| b == fill), "step {step}: content lost");
                assert_eq!(arena.free(offset).unwrap(), Alloc { offset, len });
            }
            _ => {
                // A bogus free: any offset that is not a live start.
                let offset = rng.below(ARENA * 2);
                if !live.iter().any(|&(o, ..)| o == offset) {
                    assert!(arena.free(offset).is_err());
                }
            }
        }
        let used: u64 = live.iter().map(|&(_, _, r, _)| r).sum();
        assert_eq!(arena.free_bytes(), ARENA - used, "step {step}");
        assert_eq!(arena.outstanding(), live.len());
    }
    for (offset, ..) in live.drain(..) {
        arena.free(offset).unwrap();
    }
    assert_eq!(arena.largest_free(), ARENA, "free ranges did not coalesce");
}

#[test]
fn copies_round_trip_at_every_alignment() {
    let mem = ArenaMem::heap(256);
    let data: Vec<u8> = (0..=255).collect();
    // Both copy paths (word by word below 32 bytes, the string move on
    // x86-64 from 32 up), through both entries (partial words merged
    // atomically, or by the sole writer).
    for (offset, owned) in (0..20u64).flat_map(|o| [(o, false), (o, true)]) {
        for len in [
            0usize, 1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 200, 236,
        ] {
            mem.copy_to(0, &[0xEE; 256]).unwrap();
            if owned {
                mem.copy_to_owned(offset, &data[..len]).unwrap();
            } else {
                mem.copy_to(offset, &data[..len]).unwrap();
            }
            let mut all = vec![0u8; 256];
            mem.copy_from(0, &mut all).unwrap();
            let o = offset as usize;
            assert!(
                all[..o].iter().all(|&b| b == 0xEE),
                "before, {offset}+{len}"
            );
            assert_eq!(&all[o..o + len], &data[..len], "{offset}+{len}");
            assert!(
                all[o + len..].iter().all(|&b| b == 0xEE),
                "after, {offset}+{len}"
            );
            let mut part = vec![0u8; len];
            mem.copy_from(offset, &mut part).unwrap();
            assert_eq!(part, &data[..len]);
        }
    }
}

#[test]
// The paths this covers are machine code that Miri does not run (it takes
// the word loop, covered by copies_round_trip_at_every_alignment), and a
// page of slides takes it minutes.
#[cfg_attr(miri, ignore)]
fn long_copies_are_exact_at_every_distance_from_the_arena() {
    // Copies of 32 bytes and up take different machine paths by length
    // and by where the private buffer lies relative to the arena modulo
    // 4 KiB (see ArenaMem::copy_to): slide the private buffer across a
    // whole page so that every distance is taken, both ways.
    const SPAN: usize = 4100 + 64;
    let mem = ArenaMem::heap(SPAN);
    let data: Vec<u8> = (0..SPAN + 4096).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut back = vec![0u8; SPAN + 4096];
    for len in [32usize, 33, 63, 64, 65, 127, 1024, 1025, 1100, 4100] {
        for start in 0..4096 {
            let offset = (start % 3) as u64 * 32;
            let o = offset as usize;
            mem.copy_to(0, &[0xEE; SPAN]).unwrap();
            mem.copy_to_owned(offset, &data[start..start + len])
                .unwrap();
            mem.copy_from(offset, &mut back[start..start + len])
                .unwrap();
            assert_eq!(
                &back[start..start + len],
                &data[start..start + len],
                "{len} from {start}"
            );
            let mut all = vec![0u8; SPAN];
            mem.copy_from(0, &mut all).unwrap();
            assert!(all[..o].iter().all(|&b| b == 0xEE), "before, {len} at {o}");
            assert_eq!(&all[o..o + len], &data[start..start + len], "{len} at {o}");
            assert!(
                all[o + len..].iter().all(|&b| b == 0xEE),
                "after, {len} at {o}"
            );
        }
    }
}

#[test]
fn copies_out_of_bounds_are_errors() {
    let mem = ArenaMem::heap(100);
    let mut buf = [7u8; 16];
    assert_eq!(mem.len(), 100);
    assert!(mem.copy_to(84, &buf).is_ok());
    assert!(mem.copy_to_owned(84, &buf).is_ok());
    assert!(mem.copy_from(84, &mut buf).is_ok());
    for (offset, len) in [
        (85u64, 16usize),
        (100, 1),
        (u64::MAX, 1),
        (u64::MAX - 3, 16),
    ] {
        let e = mem.copy_to(offset, &buf[..len]).unwrap_err();
        assert_eq!(
            e,
            OutOfBounds {
                offset,
                len: len as u64,
                arena_len: 100
            }
        );
        assert_eq!(mem.copy_to_owned(offset, &buf[..len]).unwrap_err(), e);
        assert!(mem.copy_from(offset, &mut buf[..len]).is_err());
        assert!(mem.ptr(offset, len as u64).is_err());
    }
    assert!(mem.check(100, 0).is_ok());
    assert!(mem.check(0, u64::MAX).is_err());
    let io: std::io::Error = mem.copy_to(200, &buf).unwrap_err().into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert!(io.to_string().contains("outside the arena"), "{io}");
}

#[test]
fn unsafe_slices_see_the_copies() {
    let mem = ArenaMem::heap(128);
    // SAFETY: nobody else accesses this heap arena while the slice lives.
    let s = unsafe { mem.slice_mut(8, 4) }.unwrap();
    s.copy_from_slice(b"abcd");
    let mut out = [0u8; 4];
    mem.copy_from(8, &mut out).unwrap();
    assert_eq!(&out, b"abcd");
    // SAFETY: as above, no writer while the slice lives.
    let s = unsafe { mem.slice(8, 4) }.unwrap();
    assert_eq!(s, b"abcd");
    // SAFETY: the range is rejected before any slice is made.
    assert!(unsafe { mem.slice(125, 4) }.is_err());
}

#[test]
fn arena_mem_is_shared_across_threads() {
    let arena = Arena::heap(1024);
    let mem = arena.mem().clone();
    let writer = std::thread::spawn(move || {
        for i in 0..16u8 {
            mem.copy_to(u64::from(i) * 64 + 3, &[i; 50]).unwrap();
        }
    });
    writer.join().unwrap();
    for i in 0..16u8 {
        let mut buf = [0u8; 50];
        arena.copy_from(u64::from(i) * 64 + 3, &mut buf).unwrap();
        assert_eq!(buf, [i; 50]);
    }
}
