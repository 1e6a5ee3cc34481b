//! Keeps a runtime's floating carriers on different CPUs.
//!
//! The kernel balances threads by count, not by whose they are. Two
//! processes with two busy carriers each on two CPUs are balanced, to the
//! kernel, whichever two share a CPU; but when both carriers of one
//! process share a CPU, that process gets one CPU's worth of time and the
//! other process the other. With the ipc client and server that halves the
//! client's share: alternating 2-second runs of `ipc_client` (200
//! callers, 4 KiB) with the carriers placed by hand gave 1.47-1.70M
//! calls/s with one client carrier on each CPU (whichever server carrier
//! shared it) and 0.59-1.10M with both client carriers on one CPU, whose
//! p99 latency was 4 ms (a time slice): floating runs land in either
//! placement, and move between them.
//!
//! So a floating carrier that finds a sibling on its own CPU moves itself
//! to an allowed CPU where no sibling runs, if there is one. With one
//! carrier per allowed CPU (the default runtime's count), each carrier
//! has a home instead: carrier `i` goes to the `i`-th allowed CPU
//! whenever it finds itself elsewhere. That keeps them apart too, and it
//! makes the place the same in every process: an ipc lane's client
//! carrier and the server carrier that serves it share a CPU (the hello
//! names the home, as it names a pinned CPU; see [`crate::ipc`]), so the
//! bodies the lane carries stay in that core's caches. To move, it narrows
//! its affinity to that CPU (the kernel migrates it before the call
//! returns) and at once widens it back to the mask it had. It is not
//! pinned: the kernel may move it again at any time, and a carrier that
//! another busy thread crowds out of a CPU leaves as usual. What it
//! changes is where the kernel starts from.
//!
//! - Carriers look every millisecond of their running time (every 1024
//!   scheduler turns at most), one `getcpu` each; a sleeping carrier
//!   counts as nowhere, so carriers with nothing to do never move others.
//! - With homes, a carrier away from home moves there; without, of two
//!   carriers on one CPU the one with the higher index moves.
//! - Moves are spaced out: at least 10 ms apart. A carrier that finds
//!   itself off the CPU it moved to within 3 ms was put back by the kernel
//!   (another busy thread there, say), and doubles the gap, up to 1 s; a
//!   refused move does too. After 10 s without a move the gap is back to
//!   10 ms. So carriers do not fight the kernel, and a placement that
//!   drifts back (wake-ups pull threads next to their wakers) is fixed
//!   again within a few milliseconds.
//! - Only runtimes that do not pin ([`crate::runtime::Builder::pin_carriers`])
//!   and whose carriers are no more than the CPUs they may use.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::CpuSet;

/// A carrier that is asleep, or has not looked yet.
const NOWHERE: usize = usize::MAX;
/// How often a running carrier looks where it is.
const CHECK: Duration = Duration::from_millis(1);
/// The least time between two moves of one carrier.
const MIN_GAP: Duration = Duration::from_millis(10);
/// The most it grows to after moves the kernel undid.
const MAX_GAP: Duration = Duration::from_secs(1);
/// A carrier found off the CPU it moved to this soon after was put back.
const BOUNCE: Duration = Duration::from_millis(3);
/// Without a move for this long, the gap is back to [`MIN_GAP`].
const CALM: Duration = Duration::from_secs(10);

/// Where each carrier of a runtime last saw itself run.
pub(crate) struct Spread {
    on: Box<[Padded]>,
    /// With one carrier per allowed CPU: carrier `i`'s CPU (see the
    /// module docs).
    homes: Option<Box<[usize]>>,
}

#[repr(align(128))]
struct Padded(AtomicUsize);

impl Spread {
    /// For `carriers` floating carriers that may run on the `allowed`
    /// CPUs (ascending): `None` when spreading has nothing to do (one
    /// carrier) or cannot succeed (more carriers than CPUs). With as many
    /// carriers as CPUs, carrier `i`'s home is `allowed[i]`.
    pub(crate) fn new(carriers: usize, allowed: &[usize]) -> Option<Spread> {
        (carriers > 1 && carriers <= allowed.len()).then(|| Spread {
            on: (0..carriers)
                .map(|_| Padded(AtomicUsize::new(NOWHERE)))
                .collect(),
            homes: (carriers == allowed.len()).then(|| allowed.into()),
        })
    }

    /// Whether a carrier with an index below `i` runs on `cpu`.
    fn lower_on(&self, i: usize, cpu: usize) -> bool {
        // Relaxed: a hint.
        self.on[..i]
            .iter()
            .any(|c| c.0.load(Ordering::Relaxed) == cpu)
    }

    /// Each carrier's home CPU, by index, if carriers have homes.
    pub(crate) fn homes(&self) -> Option<&[usize]> {
        self.homes.as_deref()
    }

    /// The CPU carrier `i` last reported, if it is running.
    #[cfg(test)]
    fn cpu_of(&self, i: usize) -> Option<usize> {
        // Relaxed: a hint.
        Some(self.on[i].0.load(Ordering::Relaxed)).filter(|&c| c != NOWHERE)
    }

    /// Says carrier `i` runs on `cpu`.
    #[cfg(test)]
    fn set(&self, i: usize, cpu: usize) {
        self.on[i].0.store(cpu, Ordering::Relaxed);
    }
}

/// One carrier's side of [`Spread`].
pub(crate) struct SpreadLocal {
    next_check: Cell<Instant>,
    /// When this carrier last moved, and where to.
    last_move: Cell<Option<(Instant, usize)>>,
    gap: Cell<Duration>,
}

impl SpreadLocal {
    pub(crate) fn new() -> SpreadLocal {
        SpreadLocal {
            next_check: Cell::new(Instant::now()),
            last_move: Cell::new(None),
            gap: Cell::new(MIN_GAP),
        }
    }

    /// Carrier `i` goes to sleep: it is nowhere until it looks again,
    /// which it does as soon as it runs.
    pub(crate) fn sleep(&self, spread: &Spread, i: usize) {
        // Relaxed: a hint; a stale value costs at most one needless move.
        spread.on[i].0.store(NOWHERE, Ordering::Relaxed);
        self.next_check.set(Instant::now());
    }

    /// Carrier `i` looks where it runs, and moves home if it has a home
    /// and is elsewhere, or else if a sibling with a lower index runs
    /// there too (see the module docs).
    pub(crate) fn check(&self, spread: &Spread, i: usize) {
        let now = Instant::now();
        if now < self.next_check.get() {
            return;
        }
        self.next_check.set(now + CHECK);
        let cpu = rustix::thread::sched_getcpu();
        // Relaxed: a hint, as above.
        spread.on[i].0.store(cpu, Ordering::Relaxed);
        if let Some((at, to)) = self.last_move.get() {
            if now.duration_since(at) < self.gap.get() {
                if to != NOWHERE && cpu != to && now.duration_since(at) < BOUNCE {
                    // Put back at once: the kernel wants it elsewhere
                    // (another busy thread on `to`). Try less often.
                    self.back_off(at);
                }
                return;
            }
            if now.duration_since(at) >= CALM {
                self.gap.set(MIN_GAP);
            }
        }
        let home = spread.homes.as_ref().map(|h| h[i]);
        match home {
            Some(h) if h == cpu => return,
            None if !spread.lower_on(i, cpu) => return,
            _ => {}
        }
        // One read of the mask: where to go, and what to restore.
        let Ok(mask) = rustix::thread::sched_getaffinity(None) else {
            return;
        };
        let to = match home {
            Some(h) => mask.is_set(h).then_some(h),
            None => free_cpu(spread, cpu, &mask),
        };
        match to {
            Some(to) if move_to(to, &mask).is_ok() => {
                spread.on[i].0.store(to, Ordering::Relaxed);
                self.last_move.set(Some((now, to)));
            }
            // A refusal, or a home the mask no longer holds (a cpuset
            // that changed under us), is not retried every millisecond;
            // no free CPU for a carrier without a home is the usual case
            // when all are taken, and costs only a look.
            Some(_) => self.back_off(now),
            None if home.is_some() => self.back_off(now),
            None => {}
        }
    }

    /// Spaces this carrier's next move out further: its last one was
    /// undone or refused.
    fn back_off(&self, at: Instant) {
        // Moved nowhere: no CPU to be found off, only a gap to wait out.
        self.last_move.set(Some((at, NOWHERE)));
        self.gap.set((self.gap.get() * 2).min(MAX_GAP));
    }
}

/// An allowed CPU (in `mask`) other than `mine` where no carrier runs now.
fn free_cpu(spread: &Spread, mine: usize, mask: &CpuSet) -> Option<usize> {
    (0..CpuSet::MAX_CPU).find(|&c| {
        c != mine && mask.is_set(c) && !spread.on.iter().any(|o| o.0.load(Ordering::Relaxed) == c)
    })
}

/// Moves the calling thread to `cpu` and leaves it free to move again:
/// pins it there (the kernel migrates a thread off a CPU it may no longer
/// use before the call returns), then restores `mask`, the one it had.
fn move_to(cpu: usize, mask: &CpuSet) -> std::io::Result<()> {
    super::pin_to(cpu)?;
    rustix::thread::sched_setaffinity(None, mask)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreading_is_for_several_carriers_that_fit_the_cpus() {
        assert!(Spread::new(1, &[0, 1, 2, 3]).is_none());
        assert!(Spread::new(3, &[0, 1]).is_none());
        // One carrier per CPU: each has a home, in the order of the CPUs.
        let s = Spread::new(2, &[3, 5]).unwrap();
        assert_eq!(s.homes(), Some(&[3, 5][..]));
        // Fewer carriers than CPUs: they keep apart, with no homes.
        assert_eq!(Spread::new(2, &[0, 1, 2]).unwrap().homes(), None);
    }

    fn allowed() -> CpuSet {
        rustix::thread::sched_getaffinity(None).unwrap()
    }

    /// Runs `f` on a fresh thread (its affinity changes are its own).
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_carrier_sharing_a_cpu_with_a_lower_one_moves_and_stays_free() {
        if allowed().count() < 2 {
            return; // nowhere to move to
        }
        on_thread(|| {
            let s = Spread::new(2, &[0, 1, 2]).unwrap();
            let local = SpreadLocal::new();
            let mask = allowed();
            let here = rustix::thread::sched_getcpu();
            // Carrier 0 runs where this thread (carrier 1) does.
            s.set(0, here);
            local.check(&s, 1);
            let to = s.cpu_of(1).expect("carrier 1 reported its CPU");
            assert_ne!(to, here, "carrier 1 stayed on carrier 0's CPU");
            assert!(mask.is_set(to), "moved to CPU {to}, which it may not use");
            // Not pinned: the mask it had is back.
            assert_eq!(allowed(), mask);
        });
    }

    #[test]
    fn a_carrier_alone_on_its_cpu_or_the_lowest_stays() {
        if allowed().count() < 2 {
            return;
        }
        on_thread(|| {
            let s = Spread::new(2, &[0, 1, 2]).unwrap();
            let local = SpreadLocal::new();
            // Carrier 1 is here too, but carrier 0 (the lower) stays.
            s.set(1, rustix::thread::sched_getcpu());
            local.check(&s, 0);
            assert!(s.cpu_of(0).is_some());
            assert!(local.last_move.get().is_none(), "carrier 0 moved");
        });
        on_thread(|| {
            let s = Spread::new(2, &[0, 1, 2]).unwrap();
            let local = SpreadLocal::new();
            // Carrier 0 asleep: nobody to make room for.
            local.check(&s, 1);
            assert!(s.cpu_of(1).is_some());
            assert_eq!(s.cpu_of(0), None);
            assert!(local.last_move.get().is_none(), "carrier 1 moved");
        });
    }

    /// The first two CPUs this thread may use.
    fn two_cpus() -> Option<[usize; 2]> {
        let mask = allowed();
        let mut cpus = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c));
        Some([cpus.next()?, cpus.next()?])
    }

    #[test]
    fn a_carrier_away_from_home_goes_home_and_stays_free() {
        let Some(homes) = two_cpus() else {
            return;
        };
        on_thread(move || {
            let mask = allowed();
            let s = Spread::new(2, &homes).unwrap();
            // The carrier whose home this thread is not on moves there.
            // (Should the kernel move this thread home between the two
            // looks, there is nothing to do: look again.)
            for _ in 0..100 {
                let here = rustix::thread::sched_getcpu();
                let i = if homes[0] == here { 1 } else { 0 };
                let local = SpreadLocal::new();
                local.check(&s, i);
                if let Some((_, to)) = local.last_move.get() {
                    assert_eq!(to, homes[i], "carrier {i} moved, but not home");
                    assert_eq!(s.cpu_of(i), Some(homes[i]));
                    assert_eq!(allowed(), mask, "carrier {i} stayed pinned");
                    return;
                }
            }
            panic!("no carrier away from home moved there in 100 tries");
        });
    }

    #[test]
    fn a_carrier_at_home_stays_and_one_whose_home_it_may_not_use_backs_off() {
        let Some(homes) = two_cpus() else {
            return;
        };
        on_thread(move || {
            // Held on carrier 0's home: carrier 0 is at home, and carrier
            // 1's home is outside the mask.
            crate::runtime::pin_to(homes[0]).unwrap();
            let s = Spread::new(2, &homes).unwrap();
            let at_home = SpreadLocal::new();
            at_home.check(&s, 0);
            assert_eq!(s.cpu_of(0), Some(homes[0]));
            assert!(at_home.last_move.get().is_none(), "carrier 0 left home");
            let barred = SpreadLocal::new();
            barred.check(&s, 1);
            assert_eq!(rustix::thread::sched_getcpu(), homes[0]);
            assert_eq!(barred.last_move.get().map(|(_, to)| to), Some(NOWHERE));
            assert_eq!(barred.gap.get(), MIN_GAP * 2, "a refused move backs off");
            // Looking again within the gap is no second refusal.
            barred.next_check.set(Instant::now());
            barred.check(&s, 1);
            assert_eq!(
                barred.gap.get(),
                MIN_GAP * 2,
                "backed off twice for one refusal"
            );
        });
    }

    #[test]
    fn moves_are_spaced_out_and_a_sleeping_carrier_is_nowhere() {
        if allowed().count() < 2 {
            return;
        }
        on_thread(|| {
            let s = Spread::new(2, &[0, 1, 2]).unwrap();
            let local = SpreadLocal::new();
            s.set(0, rustix::thread::sched_getcpu());
            local.check(&s, 1);
            let (at, first) = local.last_move.get().expect("carrier 1 moved");
            // Carrier 0 follows it at once: within the gap (and the check
            // interval) carrier 1 does not move again.
            s.set(0, first);
            local.sleep(&s, 1);
            assert_eq!(s.cpu_of(1), None, "a sleeping carrier counts as nowhere");
            local.check(&s, 1);
            assert!(s.cpu_of(1).is_some(), "a waking carrier looks at once");
            assert_eq!(local.last_move.get().map(|(t, _)| t), Some(at));
        });
    }
}
