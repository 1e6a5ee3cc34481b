//! green::sync::Condvar: huge numbers of parked green threads, random-order
//! release, notify_all, timeouts, green/OS mixes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use green::sync::{Arc, Condvar, Mutex};

/// Green threads in the big scenarios (fewer under Miri).
const MANY: usize = if cfg!(miri) { 100 } else { 100_000 };

/// The two 100,000-thread tests take turns, to keep peak memory modest.
static BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Small stacks: a waiter needs little, and 100,000 of them add up.
fn spawn_small<F, T>(f: F) -> green::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    green::thread::Builder::new()
        .stack_size(32 * 1024)
        .spawn(f)
        .expect("spawn a green thread")
}

/// xorshift64: a tiny PRNG for shuffles, so the tests need no rand crate.
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

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Waits (on this OS thread) until `counter` reaches `n`.
fn wait_for(counter: &AtomicUsize, n: usize) {
    while counter.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn hundred_thousand_green_threads_on_own_condvars_released_in_random_order() {
    let _big = BIG.lock().unwrap_or_else(|e| e.into_inner());
    let slots: Arc<Vec<(Mutex<bool>, Condvar)>> = Arc::new(
        (0..MANY)
            .map(|_| (Mutex::new(false), Condvar::new()))
            .collect(),
    );
    let parked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..MANY)
        .map(|i| {
            let (slots, parked, done) = (slots.clone(), parked.clone(), done.clone());
            spawn_small(move || {
                let (flag, cvar) = &slots[i];
                let mut set = flag.lock().unwrap();
                // Counted under the mutex: once the releaser holds this
                // mutex, we are queued on the condvar.
                parked.fetch_add(1, Ordering::SeqCst);
                while !*set {
                    set = cvar.wait(set).unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    wait_for(&parked, MANY);
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "nobody leaves before release"
    );

    let mut order: Vec<usize> = (0..MANY).collect();
    XorShift(0x9E37_79B9_7F4A_7C15).shuffle(&mut order);
    for i in order {
        let (flag, cvar) = &slots[i];
        *flag.lock().unwrap() = true;
        cvar.notify_one();
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), MANY);
}

#[test]
fn notify_all_wakes_hundred_thousand_green_threads() {
    let _big = BIG.lock().unwrap_or_else(|e| e.into_inner());
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let parked = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..MANY)
        .map(|_| {
            let (state, parked) = (state.clone(), parked.clone());
            spawn_small(move || {
                let (go, cvar) = &*state;
                let mut go = go.lock().unwrap();
                parked.fetch_add(1, Ordering::SeqCst);
                while !*go {
                    go = cvar.wait(go).unwrap();
                }
            })
        })
        .collect();
    wait_for(&parked, MANY);
    // Release from a green thread this time.
    let releaser = {
        let state = state.clone();
        green::spawn(move || {
            *state.0.lock().unwrap() = true;
            state.1.notify_all();
        })
    };
    releaser.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn wait_timeout_times_out_after_at_least_the_duration() {
    let dur = Duration::from_millis(30);
    let check = move || {
        let lock = Mutex::new(());
        let cvar = Condvar::new();
        let start = Instant::now();
        let (_g, res) = cvar.wait_timeout(lock.lock().unwrap(), dur).unwrap();
        assert!(res.timed_out());
        assert!(
            start.elapsed() >= dur,
            "returned after {:?}",
            start.elapsed()
        );
    };
    green::spawn(check).join().unwrap();
    check();
}

#[test]
fn wait_timeout_while_stops_when_the_condition_clears() {
    let state = Arc::new((Mutex::new(0), Condvar::new()));
    let waiter = {
        let state = state.clone();
        green::spawn(move || {
            let (n, cvar) = &*state;
            let (n, res) = cvar
                .wait_timeout_while(n.lock().unwrap(), Duration::from_secs(60), |n| *n < 3)
                .unwrap();
            (*n, res.timed_out())
        })
    };
    for _ in 0..3 {
        green::thread::sleep(Duration::from_millis(2));
        *state.0.lock().unwrap() += 1;
        state.1.notify_all();
    }
    assert_eq!(waiter.join().unwrap(), (3, false));

    // And one that runs out of time.
    let (lock, cvar) = (Mutex::new(false), Condvar::new());
    let dur = Duration::from_millis(20);
    let start = Instant::now();
    let (_g, res) = cvar
        .wait_timeout_while(lock.lock().unwrap(), dur, |ready| !*ready)
        .unwrap();
    assert!(res.timed_out());
    assert!(start.elapsed() >= dur);
}

#[test]
fn os_thread_and_green_thread_ping_pong() {
    const ROUNDS: usize = 1_000;
    // turn: even = the OS thread's move, odd = the green thread's.
    let state = Arc::new((Mutex::new(0usize), Condvar::new()));
    let green_side = {
        let state = state.clone();
        green::spawn(move || {
            let (turn, cvar) = &*state;
            for r in 0..ROUNDS {
                let mut t = cvar
                    .wait_while(turn.lock().unwrap(), |t| *t != 2 * r + 1)
                    .unwrap();
                *t += 1;
                cvar.notify_all();
            }
        })
    };
    let (turn, cvar) = &*state;
    for r in 0..ROUNDS {
        let mut t = cvar
            .wait_while(turn.lock().unwrap(), |t| *t != 2 * r)
            .unwrap();
        *t += 1;
        cvar.notify_all();
    }
    green_side.join().unwrap();
    assert_eq!(*turn.lock().unwrap(), 2 * ROUNDS);
}

#[test]
fn timeouts_racing_notify_one_lose_no_wakeup() {
    // Consumers take tokens one by one. Half wait with tiny timeouts, so
    // their timeouts constantly race the producer's notify_one; the other
    // half wait without one and would hang if a notification were lost.
    const CONSUMERS: usize = 40;
    const EACH: usize = 200;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let state = Arc::new((Mutex::new(0usize), Condvar::new()));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|i| {
            let state = state.clone();
            rt.spawn(move || {
                let (tokens, cvar) = &*state;
                for _ in 0..EACH {
                    let mut t = tokens.lock().unwrap();
                    while *t == 0 {
                        t = if i % 2 == 0 {
                            cvar.wait(t).unwrap()
                        } else {
                            let micros = 1 + (i as u64 * 7) % 50;
                            cvar.wait_timeout(t, Duration::from_micros(micros))
                                .unwrap()
                                .0
                        };
                    }
                    *t -= 1;
                }
            })
        })
        .collect();
    let (tokens, cvar) = &*state;
    for n in 0..CONSUMERS * EACH {
        *tokens.lock().unwrap() += 1;
        cvar.notify_one();
        if n % 64 == 0 {
            std::thread::yield_now();
        }
    }
    for c in consumers {
        c.join().unwrap();
    }
    assert_eq!(*tokens.lock().unwrap(), 0);
}

#[test]
fn timeouts_racing_notify_all_leave_the_queue_intact() {
    // Phase 1: waiters with tiny timeouts unlink themselves while
    // notify_all keeps cutting the whole queue off. Phase 2: the same
    // condvar must still wake every plain waiter with one notify_all.
    const WAITERS: usize = 40;
    const ROUNDS: usize = 100;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let parked = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            let (state, parked) = (state.clone(), parked.clone());
            rt.spawn(move || {
                let (go, cvar) = &*state;
                for _ in 0..ROUNDS {
                    let g = go.lock().unwrap();
                    let micros = 1 + (i as u64 * 13) % 40;
                    drop(cvar.wait_timeout(g, Duration::from_micros(micros)).unwrap());
                }
                let mut g = go.lock().unwrap();
                parked.fetch_add(1, Ordering::SeqCst);
                while !*g {
                    g = cvar.wait(g).unwrap();
                }
            })
        })
        .collect();
    let (go, cvar) = &*state;
    while parked.load(Ordering::SeqCst) < WAITERS {
        cvar.notify_all();
        std::thread::yield_now();
    }
    *go.lock().unwrap() = true;
    cvar.notify_all();
    for w in waiters {
        w.join().unwrap();
    }
}

#[test]
fn poisoned_mutex_is_reported_by_wait() {
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let parked = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (state, parked) = (state.clone(), parked.clone());
        green::spawn(move || {
            let (lock, cvar) = &*state;
            let guard = lock.lock().unwrap();
            parked.store(1, Ordering::SeqCst);
            let r = cvar.wait_while(guard, |ready| !*ready);
            let poisoned = r.is_err();
            let ready = match r {
                Ok(g) => *g,
                Err(e) => *e.into_inner(),
            };
            (poisoned, ready)
        })
    };
    // The poisoner can lock only once the waiter is in its wait.
    wait_for(&parked, 1);
    let poisoner = {
        let state = state.clone();
        green::spawn(move || {
            let mut g = state.0.lock().unwrap();
            *g = true;
            state.1.notify_all();
            panic!("poison while the waiter waits");
        })
    };
    assert!(poisoner.join().is_err());
    assert_eq!(waiter.join().unwrap(), (true, true));
}

#[test]
fn notify_without_waiters_is_a_no_op() {
    let cvar = Condvar::default();
    cvar.notify_one();
    cvar.notify_all();
    assert_eq!(format!("{cvar:?}"), "Condvar { .. }");
}
