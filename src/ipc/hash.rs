//! The hasher for call ids the server's direct table cannot hold (see
//! [`InFlight`](super::ids::InFlight)): two multiplies with secret keys,
//! where std's SipHash costs a few dozen instructions per lookup.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Multiplies `a` by `b` as 128-bit numbers and folds the halves: every
/// bit of the result depends on every bit of both.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyedHasher`]s with two secret keys drawn when the map is
/// made, for maps whose keys the peer chooses (the server's call ids).
///
/// A peer that could predict which ids share a bucket could make every
/// lookup walk one long probe chain. With the keys unknown to it, ids
/// spread as if at random: two folded multiplies by secret odd keys (of
/// the id xor a third key, then of the result) leave no bit of the id
/// without effect on the bucket.
/// This is the construction of the `foldhash` and `ahash` crates' fast
/// paths, which make the same claim (minimal resistance to crafted
/// collisions, not a cryptographic guarantee); the maps it serves are
/// per connection and bounded by the calls a connection may have in
/// flight, so a peer that still found collisions would slow only its own
/// connection.
#[derive(Clone, Copy)]
pub(super) struct Keyed {
    k0: u64,
    k1: u64,
    k2: u64,
}

impl Keyed {
    /// Fresh keys, from std's per-process random seed (stepped for every
    /// `RandomState`).
    pub(super) fn new() -> Keyed {
        let s = RandomState::new();
        Keyed {
            k0: s.hash_one(0x243F_6A88_85A3_08D3_u64),
            // Odd: multipliers that keep every bit.
            k1: s.hash_one(0x1319_8A2E_0370_7344_u64) | 1,
            k2: s.hash_one(0xA409_3822_299F_31D0_u64) | 1,
        }
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            h: self.k0,
            k1: self.k1,
            k2: self.k2,
        }
    }
}

/// See [`Keyed`].
pub(super) struct KeyedHasher {
    h: u64,
    k1: u64,
    k2: u64,
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = folded_multiply(self.h ^ x, self.k1);
    }

    /// A second multiply: after one, ids that differ only in a run of
    /// middle bits (sequence numbers above a fixed slab key) took as few
    /// as a quarter of the buckets for some keys.
    fn finish(&self) -> u64 {
        folded_multiply(self.h, self.k2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keyed_hashes_differ_between_maps_and_agree_within_one() {
        let (a, b) = (Keyed::new(), Keyed::new());
        let id = 7u64 << 32 | 3;
        assert_eq!(a.hash_one(id), a.hash_one(id));
        assert_ne!(a.hash_one(id), b.hash_one(id), "the keys are not fresh");
    }

    #[test]
    // Safe arithmetic over thousands of ids: minutes under Miri, which
    // has nothing to check in it.
    #[cfg_attr(miri, ignore)]
    fn ids_that_differ_only_in_their_high_bits_spread_over_the_buckets() {
        // Ids a peer might pick to collide under a hash of the low bits
        // alone: the same slab key with different sequence numbers, or
        // the same sequence with keys 2^k apart. Their low 10 bits (a
        // 1024-bucket table) should take most of the 1024 values.
        let s = Keyed::new();
        for ids in [
            (0..4096u64).map(|seq| seq << 32 | 5).collect::<Vec<_>>(),
            (0..4096u64).map(|k| 9 << 32 | k << 20).collect(),
            (0..4096u64).map(|k| k << 52).collect(),
        ] {
            let buckets: HashSet<u64> = ids.iter().map(|&id| s.hash_one(id) & 1023).collect();
            assert!(buckets.len() > 900, "{} of 1024 buckets", buckets.len());
        }
    }
}
