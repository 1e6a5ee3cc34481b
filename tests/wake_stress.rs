//! Wake-ups are never lost: tokens passed around rings of green threads on
//! several carriers and OS threads, with park, park_timeout and sleep mixed
//! in. A lost wake-up would hang; the watchdog turns that into a failure.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn watchdog(name: &'static str, secs: u64) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        for _ in 0..secs * 10 {
            if d.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{name}: no progress for {secs} s: a wake-up was lost");
        std::process::abort();
    });
    done
}

/// One member of the ring: waits for its turn, passes the token on.
fn member(
    me: usize,
    members: usize,
    passes: usize,
    turn: Arc<AtomicUsize>,
    threads: Arc<Vec<OnceLock<green::thread::Thread>>>,
) {
    threads[me].set(green::thread::current()).unwrap();
    while threads.iter().any(|t| t.get().is_none()) {
        green::thread::yield_now();
    }
    let mut mine = me;
    while mine < passes {
        let mut spins = 0u32;
        while turn.load(Ordering::SeqCst) != mine {
            spins += 1;
            match spins % 3 {
                0 => green::thread::park(),
                1 => green::thread::park_timeout(Duration::from_micros(200)),
                _ => green::thread::yield_now(),
            }
        }
        turn.store(mine + 1, Ordering::SeqCst);
        threads[(me + 1) % members].get().unwrap().unpark();
        mine += members;
    }
}

#[test]
fn token_ring_over_carriers_and_os_threads() {
    let done = watchdog("token_ring_over_carriers_and_os_threads", 120);
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let members = 8;
    let passes = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let turn = Arc::new(AtomicUsize::new(0));
    let threads: Arc<Vec<OnceLock<green::thread::Thread>>> =
        Arc::new((0..members).map(|_| OnceLock::new()).collect());
    let mut green = Vec::new();
    let mut os = Vec::new();
    for me in 0..members {
        let (turn, threads) = (turn.clone(), threads.clone());
        let f = move || member(me, members, passes, turn, threads);
        // Members 0 and 4 are OS threads; the rest spread over two carriers.
        if me % 4 == 0 {
            os.push(std::thread::spawn(f));
        } else {
            green.push(rt.spawn(f));
        }
    }
    for h in green {
        h.join().unwrap();
    }
    for h in os {
        h.join().unwrap();
    }
    assert_eq!(turn.load(Ordering::SeqCst), passes);
    done.store(true, Ordering::SeqCst);
}

#[test]
fn spawn_storm_from_many_os_threads() {
    let done = watchdog("spawn_storm_from_many_os_threads", 120);
    let rt = Arc::new(green::Runtime::builder().carriers(2).build().unwrap());
    let per = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    let spawners: Vec<_> = (0..4)
        .map(|s| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..per).map(|i| rt.spawn(move || s * per + i)).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
            })
        })
        .collect();
    let total: usize = spawners.into_iter().map(|h| h.join().unwrap()).sum();
    let n = 4 * per;
    assert_eq!(total, n * (n - 1) / 2);
    done.store(true, Ordering::SeqCst);
}
