//! [`InFlight`]: the server's set of call ids taken off the ring and not
//! yet answered.

use std::collections::HashSet;

use super::hash::Keyed;

/// Ids whose low 32 bits are below this go in the direct table (a client
/// of this crate numbers its calls with a slot number there, below its
/// calls in flight); the table grows to the highest slot seen, so at most
/// 128 KiB.
const DIRECT_MAX: u64 = 1 << 14;

/// Marks an empty slot of the direct table. The id `u64::MAX` itself goes
/// to the hash set.
const EMPTY: u64 = u64::MAX;

/// A set of call ids, for the duplicate check.
///
/// The client chooses the ids, and any `u64` is allowed. A client of this
/// crate puts a sequence number in the high 32 bits and the slot of the
/// call in its table in the low 32 bits, a small number reused as calls
/// finish; so the set is a table indexed by those bits (one load and one
/// compare per insert and per remove, no hashing), holding the whole id.
/// An id whose slot is taken by another id, or too large to index, goes
/// to a hash set with secret keys (see [`Keyed`]). The set is the union of
/// the two, and an id is in at most one of them: its own slot or the hash
/// set.
pub(super) struct InFlight {
    direct: Vec<u64>,
    other: HashSet<u64, Keyed>,
}

impl InFlight {
    pub(super) fn new() -> InFlight {
        InFlight {
            direct: Vec::new(),
            other: HashSet::with_hasher(Keyed::new()),
        }
    }

    /// Adds `id`; false if it is already in the set.
    pub(super) fn insert(&mut self, id: u64) -> bool {
        match slot(&mut self.direct, id) {
            Some(s) if *s == id => false,
            Some(s) if *s == EMPTY => {
                // It may sit in the hash set, put there while another id
                // held the slot.
                if !self.other.is_empty() && self.other.contains(&id) {
                    return false;
                }
                *s = id;
                true
            }
            _ => self.other.insert(id),
        }
    }

    /// Removes `id`; false if it was not in the set.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match slot(&mut self.direct, id) {
            Some(s) if *s == id => {
                *s = EMPTY;
                true
            }
            _ => self.other.remove(&id),
        }
    }
}

/// The slot of `direct` for `id`, growing the table to reach it; `None`
/// if the id goes to the hash set.
fn slot(direct: &mut Vec<u64>, id: u64) -> Option<&mut u64> {
    let k = id & u64::from(u32::MAX);
    if k >= DIRECT_MAX || id == EMPTY {
        return None;
    }
    let k = k as usize;
    if k >= direct.len() {
        let len = (k + 1).next_power_of_two().max(64);
        direct.resize(len, EMPTY);
    }
    Some(&mut direct[k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_a_set_whatever_their_bits() {
        let mut s = InFlight::new();
        let mut model = HashSet::new();
        // Slots shared by several ids, slots out of the table's reach,
        // the empty marker itself, and zero.
        let ids = [
            0,
            1,
            1 << 32 | 1,
            2 << 32 | 1,
            DIRECT_MAX - 1,
            DIRECT_MAX,
            u64::MAX,
            u64::MAX - 1,
            7 << 32 | 5,
            5,
        ];
        // A fixed pseudo-random walk of inserts and removes over them.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let rounds = if cfg!(miri) { 2_000 } else { 20_000 };
        for _ in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = ids[(x % ids.len() as u64) as usize];
            if x & (1 << 40) == 0 {
                assert_eq!(s.insert(id), model.insert(id), "insert {id:#x}");
            } else {
                assert_eq!(s.remove(id), model.remove(&id), "remove {id:#x}");
            }
        }
    }

    #[test]
    fn a_duplicate_is_caught_after_its_slot_changed_hands() {
        let mut s = InFlight::new();
        let (a, b) = (1 << 32 | 3, 2 << 32 | 3);
        assert!(s.insert(a));
        // Same slot: b goes to the hash set.
        assert!(s.insert(b));
        assert!(s.remove(a));
        // The slot is free, but b is still in the set.
        assert!(!s.insert(b), "duplicate accepted");
        assert!(s.remove(b));
        assert!(!s.remove(b));
        assert!(s.insert(b));
        assert!(!s.insert(b));
    }
}
