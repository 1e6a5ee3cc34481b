//! green::sync::{RwLock, Barrier}: concurrent readers, exclusive writers,
//! writer preference, poisoning; barrier leaders and reuse across carriers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use green::sync::{Arc, Barrier, RwLock, TryLockError};

#[test]
fn readers_hold_the_lock_at_the_same_time() {
    const READERS: usize = 16;
    let lock = Arc::new(RwLock::new(7));
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..READERS)
        .map(|_| {
            let (lock, inside, max_inside) = (lock.clone(), inside.clone(), max_inside.clone());
            green::spawn(move || {
                let g = lock.read().unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                // Hold the read lock across a green sleep.
                green::thread::sleep(Duration::from_millis(30));
                inside.fetch_sub(1, Ordering::SeqCst);
                *g
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 7);
    }
    assert!(max_inside.load(Ordering::SeqCst) > 1);
}

#[test]
fn writers_are_exclusive_across_carriers_and_os_threads() {
    const WORKERS: usize = 12;
    const ROUNDS: usize = 300;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let lock = Arc::new(RwLock::new(0usize));
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let work = {
        let (lock, readers, writers) = (lock.clone(), readers.clone(), writers.clone());
        move |id: usize| {
            for r in 0..ROUNDS {
                if (r + id) % 4 == 0 {
                    let mut g = lock.write().unwrap();
                    assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                    assert_eq!(
                        readers.load(Ordering::SeqCst),
                        0,
                        "a reader beside a writer"
                    );
                    *g += 1;
                    if r % 8 == 0 {
                        green::thread::yield_now();
                    }
                    writers.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let _g = lock.read().unwrap();
                    readers.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(
                        writers.load(Ordering::SeqCst),
                        0,
                        "a writer beside a reader"
                    );
                    if r % 8 == 1 {
                        green::thread::yield_now();
                    }
                    readers.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    };
    let green: Vec<_> = (0..WORKERS)
        .map(|id| {
            let work = work.clone();
            rt.spawn(move || work(id))
        })
        .collect();
    let os: Vec<_> = (0..2)
        .map(|id| {
            let work = work.clone();
            std::thread::spawn(move || work(WORKERS + id))
        })
        .collect();
    for h in green {
        h.join().unwrap();
    }
    for h in os {
        h.join().unwrap();
    }
    let writes_per_worker = ROUNDS / 4;
    assert_eq!(*lock.read().unwrap(), (WORKERS + 2) * writes_per_worker);
}

#[test]
fn a_waiting_writer_holds_back_new_readers() {
    let lock = Arc::new(RwLock::new(0));
    let first = lock.read().unwrap();
    let writer = {
        let lock = lock.clone();
        green::spawn(move || *lock.write().unwrap() = 1)
    };
    // Once the writer queues, new readers wait behind it.
    while lock.try_read().is_ok() {
        green::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(lock.try_read(), Err(TryLockError::WouldBlock)));
    assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    let late_reader = {
        let lock = lock.clone();
        green::spawn(move || *lock.read().unwrap())
    };
    drop(first);
    writer.join().unwrap();
    // The late reader queued behind the writer, so it sees its write.
    assert_eq!(late_reader.join().unwrap(), 1);
}

#[test]
fn panicking_writer_poisons_and_panicking_reader_does_not() {
    let lock = Arc::new(RwLock::new(1));
    let reader = {
        let lock = lock.clone();
        green::spawn(move || {
            let _g = lock.read().unwrap();
            panic!("reader fails");
        })
    };
    assert!(reader.join().is_err());
    assert!(!lock.is_poisoned());

    let writer = {
        let lock = lock.clone();
        green::spawn(move || {
            let mut g = lock.write().unwrap();
            *g = 2;
            panic!("writer fails");
        })
    };
    assert!(writer.join().is_err());
    assert!(lock.is_poisoned());
    assert_eq!(*lock.read().unwrap_err().into_inner(), 2);
    assert!(matches!(lock.try_write(), Err(TryLockError::Poisoned(_))));
    lock.clear_poison();
    assert_eq!(*lock.write().unwrap(), 2);
    let mut lock = Arc::try_unwrap(lock).unwrap();
    *lock.get_mut().unwrap() = 3;
    assert_eq!(lock.into_inner().unwrap(), 3);
}

#[test]
fn rwlock_debug_default_from() {
    let lock: RwLock<u8> = RwLock::default();
    assert_eq!(
        format!("{lock:?}"),
        "RwLock { data: 0, poisoned: false, .. }"
    );
    let w = lock.write().unwrap();
    assert_eq!(
        format!("{lock:?}"),
        "RwLock { data: <locked>, poisoned: false, .. }"
    );
    assert_eq!(format!("{w:?} {w}"), "0 0");
    drop(w);
    assert_eq!(*RwLock::from(4).read().unwrap(), 4);
}

#[test]
fn barrier_has_one_leader_per_generation_and_is_reusable() {
    const GREEN: usize = 7;
    const PARTIES: usize = GREEN + 1; // plus one OS thread
    const GENERATIONS: usize = 50;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let barrier = Arc::new(Barrier::new(PARTIES));
    let arrived: Arc<Vec<AtomicUsize>> =
        Arc::new((0..GENERATIONS).map(|_| AtomicUsize::new(0)).collect());
    let leaders: Arc<Vec<AtomicUsize>> =
        Arc::new((0..GENERATIONS).map(|_| AtomicUsize::new(0)).collect());
    let party = {
        let (barrier, arrived, leaders) = (barrier.clone(), arrived.clone(), leaders.clone());
        move || {
            for g in 0..GENERATIONS {
                arrived[g].fetch_add(1, Ordering::SeqCst);
                let res = barrier.wait();
                // Nobody leaves a generation before everyone arrived.
                assert_eq!(arrived[g].load(Ordering::SeqCst), PARTIES);
                if res.is_leader() {
                    leaders[g].fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };
    let green: Vec<_> = (0..GREEN)
        .map(|_| {
            let party = party.clone();
            rt.spawn(party)
        })
        .collect();
    let os = std::thread::spawn(party);
    for h in green {
        h.join().unwrap();
    }
    os.join().unwrap();
    for (g, l) in leaders.iter().enumerate() {
        assert_eq!(l.load(Ordering::SeqCst), 1, "generation {g}");
    }
}

#[test]
fn barrier_of_one_always_leads() {
    let b = Barrier::new(1);
    assert!(b.wait().is_leader());
    assert!(b.wait().is_leader());
    assert!(Barrier::new(0).wait().is_leader());
    assert_eq!(format!("{b:?}"), "Barrier { .. }");
    assert_eq!(
        format!("{:?}", b.wait()),
        "BarrierWaitResult { is_leader: true }"
    );
}
