//! green::sync::{Once, OnceLock, LazyLock}: racing initialisers, blocking
//! initialisers on a shared carrier, poisoning and retry.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use green::sync::{Arc, LazyLock, Once, OnceLock};

#[test]
fn racing_get_or_init_runs_the_initialiser_once() {
    const GREEN: usize = 200;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let cell = Arc::new(OnceLock::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let init = {
        let runs = runs.clone();
        move || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            // Block inside the initialiser so the others pile up on it.
            green::thread::sleep(Duration::from_millis(20));
            format!("value from run {n}")
        }
    };
    let mut handles = Vec::new();
    for _ in 0..GREEN {
        let (cell, init) = (cell.clone(), init.clone());
        handles.push(rt.spawn(move || cell.get_or_init(init).clone()));
    }
    let os: Vec<_> = (0..2)
        .map(|_| {
            let (cell, init) = (cell.clone(), init.clone());
            std::thread::spawn(move || cell.get_or_init(init).clone())
        })
        .collect();
    let mut seen: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    seen.extend(os.into_iter().map(|h| h.join().unwrap()));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(seen.iter().all(|v| v == "value from run 0"));
}

#[test]
fn blocking_initialiser_does_not_deadlock_waiters_on_the_same_carrier() {
    // One carrier: the initialiser sleeps (a green sleep), and every other
    // green thread waiting on the cell shares its carrier. Waiting that
    // blocked the OS thread (as std's OnceLock does) would never let the
    // initialiser wake up.
    let rt = green::Runtime::builder().carriers(1).build().unwrap();
    static CELL: OnceLock<u64> = OnceLock::new();
    static ONCE: Once = Once::new();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            rt.spawn(move || {
                ONCE.call_once(|| green::thread::sleep(Duration::from_millis(20)));
                assert!(ONCE.is_completed());
                *CELL.get_or_init(|| {
                    green::thread::sleep(Duration::from_millis(20));
                    i
                })
            })
        })
        .collect();
    let values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(values.iter().all(|&v| v == values[0]));
}

#[test]
fn panicking_call_once_poisons_and_call_once_force_recovers() {
    let once = Arc::new(Once::new());
    let h = {
        let once = once.clone();
        green::spawn(move || once.call_once(|| panic!("init failed")))
    };
    assert!(h.join().is_err());
    assert!(!once.is_completed());

    let again = catch_unwind(AssertUnwindSafe(|| once.call_once(|| {})));
    assert!(again.is_err(), "call_once on a poisoned Once panics");

    let mut saw_poison = None;
    once.call_once_force(|state| saw_poison = Some(state.is_poisoned()));
    assert_eq!(saw_poison, Some(true));
    assert!(once.is_completed());
    once.call_once_force(|_| unreachable!("already completed"));
}

#[test]
fn waiters_on_a_panicking_initialiser_wake_up() {
    // The runner panics while others wait: call_once waiters panic too,
    // a call_once_force waiter takes over.
    let once = Arc::new(Once::new());
    let runner = {
        let once = once.clone();
        green::spawn(move || {
            once.call_once(|| {
                green::thread::sleep(Duration::from_millis(20));
                panic!("runner fails");
            })
        })
    };
    green::thread::sleep(Duration::from_millis(5));
    let plain = {
        let once = once.clone();
        green::spawn(move || once.call_once(|| {}))
    };
    let forced = {
        let once = once.clone();
        green::spawn(move || {
            let mut poisoned = false;
            once.call_once_force(|s| poisoned = s.is_poisoned());
            poisoned
        })
    };
    assert!(runner.join().is_err());
    // `plain` either ran after `forced` completed (Ok) or saw the poison
    // (panic); it never hangs.
    let _ = plain.join();
    forced.join().unwrap();
    assert!(once.is_completed());
}

#[test]
fn once_wait_blocks_until_completion() {
    let once = Arc::new(Once::new());
    let waiter = {
        let once = once.clone();
        green::spawn(move || {
            once.wait();
            once.is_completed()
        })
    };
    green::thread::sleep(Duration::from_millis(10));
    once.call_once(|| {});
    assert!(waiter.join().unwrap());
    once.wait_force();
}

#[test]
fn once_lock_initialiser_panic_leaves_the_cell_empty_for_a_retry() {
    let cell = OnceLock::new();
    let r = catch_unwind(AssertUnwindSafe(|| {
        cell.get_or_init(|| -> u32 { panic!("first try fails") })
    }));
    assert!(r.is_err());
    assert_eq!(cell.get(), None);
    assert_eq!(*cell.get_or_init(|| 2), 2);
    assert_eq!(cell.set(3), Err(3));
}

#[test]
fn once_lock_wait_returns_the_value_set_elsewhere() {
    let cell = Arc::new(OnceLock::new());
    let waiter = {
        let cell = cell.clone();
        green::spawn(move || *cell.wait())
    };
    green::thread::sleep(Duration::from_millis(5));
    cell.set(42).unwrap();
    assert_eq!(waiter.join().unwrap(), 42);
}

#[test]
fn once_lock_api() {
    let mut cell: OnceLock<String> = OnceLock::default();
    assert_eq!(format!("{cell:?}"), "OnceLock(<uninit>)");
    assert_eq!(cell.get_mut(), None);
    assert_eq!(cell.take(), None);
    assert_eq!(cell.set("a".into()), Ok(()));
    assert_eq!(cell.set("b".into()), Err("b".into()));
    cell.get_mut().unwrap().push('!');
    assert_eq!(format!("{cell:?}"), "OnceLock(\"a!\")");
    let copy = cell.clone();
    assert_eq!(copy, cell);
    assert_eq!(cell.take().as_deref(), Some("a!"));
    assert_eq!(cell.get(), None);
    assert_ne!(copy, cell);
    assert_eq!(OnceLock::from(5).into_inner(), Some(5));
    assert_eq!(copy.into_inner().as_deref(), Some("a!"));
}

#[test]
fn once_lock_drops_its_value() {
    let value = Arc::new(());
    let cell = OnceLock::new();
    cell.set(value.clone()).unwrap();
    assert_eq!(Arc::strong_count(&value), 2);
    drop(cell);
    assert_eq!(Arc::strong_count(&value), 1);
}

#[test]
fn lazy_lock_initialises_once_across_green_threads() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static TABLE: LazyLock<Vec<u32>> = LazyLock::new(|| {
        RUNS.fetch_add(1, Ordering::SeqCst);
        green::thread::sleep(Duration::from_millis(10));
        (0..100).collect()
    });
    let handles: Vec<_> = (0..50).map(|i| green::spawn(move || TABLE[i])).collect();
    let got: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(
        format!("{:?}", LazyLock::<u8>::default()),
        "LazyLock(<uninit>)"
    );
}

#[test]
fn lazy_lock_drops_the_initialiser_or_the_value() {
    let token = Arc::new(());
    let t = token.clone();
    let unused = LazyLock::new(move || t);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(unused);
    assert_eq!(Arc::strong_count(&token), 1);

    let t = token.clone();
    let used = LazyLock::new(move || t);
    assert_eq!(Arc::strong_count(&*used), 2);
    drop(used);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn lazy_lock_poisoned_by_a_panicking_initialiser() {
    let lazy: LazyLock<u8> = LazyLock::new(|| panic!("no value"));
    assert!(catch_unwind(AssertUnwindSafe(|| *lazy)).is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| *lazy)).is_err());
}
