//! green::sync::mpsc: producers across carriers and OS threads, rendezvous,
//! backpressure, timeouts, disconnection in both directions.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use green::sync::mpsc::{self, RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};
use green::sync::Arc;

#[test]
fn producers_on_both_carriers_and_an_os_thread_feed_one_consumer() {
    const PRODUCERS: usize = 16;
    const EACH: usize = 2_000;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let tx = tx.clone();
        producers.push(rt.spawn(move || {
            for i in 0..EACH {
                tx.send((p, i)).unwrap();
                if i % 100 == 0 {
                    green::thread::yield_now();
                }
            }
        }));
    }
    let os = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..EACH {
                tx.send((PRODUCERS, i)).unwrap();
            }
        })
    };
    drop(tx);
    // The consumer is a green thread too; it ends when every sender is gone.
    let consumer = rt.spawn(move || {
        let mut next = vec![0usize; PRODUCERS + 1];
        for (p, i) in rx {
            assert_eq!(i, next[p], "messages of one producer arrive in order");
            next[p] += 1;
        }
        next
    });
    for p in producers {
        p.join().unwrap();
    }
    os.join().unwrap();
    assert_eq!(consumer.join().unwrap(), vec![EACH; PRODUCERS + 1]);
}

#[test]
fn rendezvous_send_returns_only_after_the_receiver_takes_it() {
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = sent.clone();
        green::spawn(move || {
            for v in 0..3 {
                tx.send(v).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    for v in 0..3 {
        green::thread::sleep(Duration::from_millis(10));
        // Message `v` is not received yet, so its send has not returned.
        assert!(sent.load(Ordering::SeqCst) <= v as usize);
        assert_eq!(rx.recv().unwrap(), v);
    }
    sender.join().unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 3);
}

#[test]
fn rendezvous_try_send_needs_a_waiting_receiver() {
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    let receiver = green::spawn(move || rx.recv().unwrap());
    // Retry until the receiver is parked in recv.
    let mut v = 2;
    loop {
        match tx.try_send(v) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                v = back;
                green::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(receiver.join().unwrap(), 2);
}

#[test]
fn rendezvous_between_green_threads_on_different_carriers() {
    const N: u64 = 2_000;
    let rt = green::Runtime::builder().carriers(2).build().unwrap();
    let (tx, rx) = mpsc::sync_channel::<u64>(0);
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let tx = tx.clone();
            rt.spawn(move || {
                for v in 0..N {
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let receiver = rt.spawn(move || rx.iter().sum::<u64>());
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(receiver.join().unwrap(), 2 * N * (N - 1) / 2);
}

#[test]
fn bounded_channel_blocks_senders_when_full() {
    let (tx, rx) = mpsc::sync_channel::<u32>(2);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (tx, sent) = (tx.clone(), sent.clone());
        green::spawn(move || {
            for v in 0..5 {
                tx.send(v).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while sent.load(Ordering::SeqCst) < 2 {
        green::thread::sleep(Duration::from_millis(1));
    }
    green::thread::sleep(Duration::from_millis(20));
    // Two in the buffer; the third send is blocked.
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));

    assert_eq!(rx.recv().unwrap(), 0);
    let got: Vec<u32> = rx.iter().take(4).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    sender.join().unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 5);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn recv_timeout_times_out_after_at_least_the_duration() {
    let dur = Duration::from_millis(30);
    let (tx, rx) = mpsc::channel::<u8>();
    let check = move |rx: &mpsc::Receiver<u8>| {
        let start = Instant::now();
        assert_eq!(rx.recv_timeout(dur), Err(RecvTimeoutError::Timeout));
        assert!(
            start.elapsed() >= dur,
            "returned after {:?}",
            start.elapsed()
        );
    };
    // On a green thread, then on this OS thread.
    let rx = green::spawn(move || {
        check(&rx);
        rx
    })
    .join()
    .unwrap();
    check(&rx);
    drop(tx);
}

#[test]
fn recv_timeout_returns_a_message_that_arrives_in_time() {
    let (tx, rx) = mpsc::channel();
    let h = green::spawn(move || rx.recv_timeout(Duration::from_secs(60)));
    green::thread::sleep(Duration::from_millis(5));
    tx.send("hello").unwrap();
    assert_eq!(h.join().unwrap(), Ok("hello"));
}

#[test]
fn receiver_sees_disconnection_after_the_last_sender_drops() {
    let (tx, rx) = mpsc::channel::<u32>();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    let receiver = green::spawn(move || {
        let first = rx.recv();
        // Blocks until both senders are gone.
        let second = rx.recv();
        (
            first,
            second,
            rx.try_recv(),
            rx.recv_timeout(Duration::from_secs(60)),
        )
    });
    green::thread::sleep(Duration::from_millis(5));
    drop(tx);
    green::thread::sleep(Duration::from_millis(5));
    drop(tx2);
    assert_eq!(
        receiver.join().unwrap(),
        (
            Ok(1),
            Err(RecvError),
            Err(TryRecvError::Disconnected),
            Err(RecvTimeoutError::Disconnected)
        )
    );
}

#[test]
fn send_after_the_receiver_drops_gives_the_value_back() {
    let (tx, rx) = mpsc::channel::<String>();
    drop(rx);
    assert_eq!(tx.send("back".into()), Err(SendError("back".to_owned())));

    let (tx, rx) = mpsc::sync_channel::<String>(1);
    drop(rx);
    assert_eq!(tx.send("again".into()), Err(SendError("again".to_owned())));
    assert_eq!(
        tx.try_send("try".into()),
        Err(TrySendError::Disconnected("try".to_owned()))
    );
}

#[test]
fn blocked_senders_get_their_values_back_when_the_receiver_drops() {
    // A full bounded channel and a rendezvous: both senders are parked when
    // the receiver goes away.
    let (full_tx, full_rx) = mpsc::sync_channel::<u32>(1);
    full_tx.send(0).unwrap();
    let (zero_tx, zero_rx) = mpsc::sync_channel::<u32>(0);
    let parked = Arc::new(AtomicBool::new(false));
    let a = green::spawn(move || full_tx.send(1));
    let b = {
        let parked = parked.clone();
        green::spawn(move || {
            parked.store(true, Ordering::SeqCst);
            zero_tx.send(2)
        })
    };
    while !parked.load(Ordering::SeqCst) {
        green::thread::sleep(Duration::from_millis(1));
    }
    green::thread::sleep(Duration::from_millis(10));
    drop(full_rx);
    drop(zero_rx);
    assert_eq!(a.join().unwrap(), Err(SendError(1)));
    assert_eq!(b.join().unwrap(), Err(SendError(2)));
}

#[test]
fn buffered_messages_are_dropped_with_the_receiver() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        tx.send(Counted(drops.clone())).unwrap();
    }
    drop(rx);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    drop(tx);
}

#[test]
fn iterators() {
    let (tx, rx) = mpsc::channel();
    for v in 0..5 {
        tx.send(v).unwrap();
    }
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(rx.try_iter().next(), None);
    let producer = green::spawn(move || {
        for v in 5..10 {
            tx.send(v).unwrap();
            green::thread::sleep(Duration::from_millis(1));
        }
    });
    let mut seen = Vec::new();
    for v in &rx {
        seen.push(v);
    }
    producer.join().unwrap();
    assert_eq!(seen, [5, 6, 7, 8, 9]);
    assert_eq!(rx.into_iter().count(), 0);
}

#[test]
fn os_thread_receives_from_green_threads() {
    let (tx, rx) = mpsc::sync_channel(4);
    let producers: Vec<_> = (0..8u64)
        .map(|p| {
            let tx = tx.clone();
            green::spawn(move || {
                for i in 0..100 {
                    tx.send(p * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let total: u64 = rx.iter().sum();
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(total, (0..8u64).map(|p| p * 1000 * 100 + 4950).sum());
}

#[test]
fn handles_are_send_and_debug() {
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    assert_send::<mpsc::Sender<String>>();
    assert_sync::<mpsc::Sender<String>>();
    assert_send::<mpsc::SyncSender<String>>();
    assert_sync::<mpsc::SyncSender<String>>();
    assert_send::<mpsc::Receiver<String>>();
    let (tx, rx) = mpsc::channel::<u8>();
    assert_eq!(format!("{tx:?} {rx:?}"), "Sender { .. } Receiver { .. }");
}
