//! green::sync::Mutex: contention across carriers and OS threads, carriers
//! left free while green threads wait, poisoning, the non-blocking API.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use green::sync::{Arc, Mutex, TryLockError};

fn two_carriers() -> green::Runtime {
    green::Runtime::builder()
        .carriers(2)
        .build()
        .expect("start a two-carrier runtime")
}

#[test]
fn green_threads_on_two_carriers_and_an_os_thread_count_exactly() {
    const GREEN: usize = 16;
    const ROUNDS: usize = 2_000;
    let rt = two_carriers();
    let count = Arc::new(Mutex::new(0usize));
    let mut green = Vec::new();
    for i in 0..GREEN {
        let count = count.clone();
        let f = move || {
            for r in 0..ROUNDS {
                let mut c = count.lock().unwrap();
                *c += 1;
                // Now and then hold the lock across a switch, so other green
                // threads on this carrier have to park on it.
                if r % 16 == i % 16 {
                    green::thread::yield_now();
                }
            }
        };
        green.push(if i % 2 == 0 {
            rt.spawn(f)
        } else {
            green::thread::Builder::new().spawn_on(&rt, f).unwrap()
        });
    }
    let os = {
        let count = count.clone();
        std::thread::spawn(move || {
            for r in 0..ROUNDS {
                let mut c = count.lock().unwrap();
                *c += 1;
                if r % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    for h in green {
        h.join().unwrap();
    }
    os.join().unwrap();
    assert_eq!(*count.lock().unwrap(), (GREEN + 1) * ROUNDS);
}

#[test]
fn waiting_for_a_mutex_leaves_the_carrier_free() {
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    let lock = Arc::new(Mutex::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let others_ran = Arc::new(AtomicUsize::new(0));

    let holder = {
        let (lock, held) = (lock.clone(), held.clone());
        rt.spawn(move || {
            let mut g = lock.lock().unwrap();
            held.store(true, Ordering::SeqCst);
            // A green sleep with the lock held: the waiter below must park,
            // not spin the one carrier.
            green::thread::sleep(Duration::from_millis(50));
            *g += 1;
        })
    };
    while !held.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let waiter = {
        let lock = lock.clone();
        rt.spawn(move || {
            *lock.lock().unwrap() += 10;
        })
    };
    let bystanders: Vec<_> = (0..10)
        .map(|_| {
            let others_ran = others_ran.clone();
            rt.spawn(move || {
                others_ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for b in bystanders {
        b.join().unwrap();
    }
    assert_eq!(others_ran.load(Ordering::SeqCst), 10);
    holder.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(*lock.lock().unwrap(), 11);
}

#[test]
fn a_waiter_gets_the_lock_while_another_thread_relocks_in_a_loop() {
    // The holder never stops wanting the lock; the waiter must still get it
    // (handoff to the oldest waiter at least every 0.5 ms).
    let rt = two_carriers();
    let lock = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let hog = {
        let (lock, stop) = (lock.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _g = lock.lock().unwrap();
                std::hint::spin_loop();
            }
        })
    };
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let lock = lock.clone();
            rt.spawn(move || {
                for _ in 0..100 {
                    drop(lock.lock().unwrap());
                }
            })
        })
        .collect();
    for w in waiters {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    hog.join().unwrap();
}

#[test]
fn panicking_green_thread_poisons_the_mutex() {
    let lock = Arc::new(Mutex::new(vec![1, 2, 3]));
    let h = {
        let lock = lock.clone();
        green::spawn(move || {
            let mut g = lock.lock().unwrap();
            g.push(4);
            panic!("boom while holding the lock");
        })
    };
    assert!(h.join().is_err());
    assert!(lock.is_poisoned());
    let err = lock.lock().expect_err("the mutex is poisoned");
    let guard = err.into_inner();
    assert_eq!(*guard, [1, 2, 3, 4]);
    drop(guard);
    assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned(_))));

    lock.clear_poison();
    assert!(!lock.is_poisoned());
    lock.lock().unwrap().push(5);

    let lock = Arc::try_unwrap(lock).unwrap();
    assert_eq!(lock.into_inner().unwrap(), [1, 2, 3, 4, 5]);
}

#[test]
fn poisoned_mutex_gives_data_through_into_inner_and_get_mut() {
    let mut lock = Mutex::new(7);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = lock.lock().unwrap();
        panic!("poison it");
    }));
    assert!(r.is_err());
    *lock.get_mut().unwrap_err().into_inner() += 1;
    assert_eq!(lock.into_inner().unwrap_err().into_inner(), 8);
}

#[test]
fn guard_taken_while_already_panicking_does_not_poison() {
    struct LockOnDrop<'a>(&'a Mutex<i32>);
    impl Drop for LockOnDrop<'_> {
        fn drop(&mut self) {
            *self.0.lock().unwrap() += 1;
        }
    }
    let lock = Mutex::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _d = LockOnDrop(&lock);
        panic!("unwind through a drop that locks");
    }));
    assert!(r.is_err());
    assert!(!lock.is_poisoned());
    assert_eq!(*lock.lock().unwrap(), 1);
}

#[test]
fn try_lock_fails_while_held_elsewhere() {
    let lock = Arc::new(Mutex::new(1));
    let g = lock.lock().unwrap();
    let other = {
        let lock = lock.clone();
        green::spawn(move || matches!(lock.try_lock(), Err(TryLockError::WouldBlock)))
    };
    assert!(other.join().unwrap());
    drop(g);
    assert_eq!(*lock.try_lock().unwrap(), 1);
}

#[test]
fn debug_default_and_from() {
    let lock: Mutex<u8> = Mutex::default();
    assert_eq!(
        format!("{lock:?}"),
        "Mutex { data: 0, poisoned: false, .. }"
    );
    let g = lock.lock().unwrap();
    assert_eq!(
        format!("{lock:?}"),
        "Mutex { data: <locked>, poisoned: false, .. }"
    );
    assert_eq!(format!("{g:?} {g}"), "0 0");
    drop(g);
    assert_eq!(*Mutex::from(3).lock().unwrap(), 3);
    static GLOBAL: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    GLOBAL.lock().unwrap().push(1);
    assert_eq!(*GLOBAL.lock().unwrap(), [1]);
}

#[test]
fn unsized_data() {
    let lock: &Mutex<[u32]> = &Mutex::new([1, 2, 3]);
    lock.lock().unwrap()[1] = 5;
    assert_eq!(&*lock.lock().unwrap(), &[1, 5, 3]);
}

#[test]
fn guards_are_not_send_and_locks_are_sync() {
    fn assert_sync<T: Sync>() {}
    fn assert_send<T: Send>() {}
    assert_sync::<Mutex<Vec<u8>>>();
    assert_send::<Mutex<Vec<u8>>>();
    assert_sync::<green::sync::MutexGuard<'static, u8>>();
}
