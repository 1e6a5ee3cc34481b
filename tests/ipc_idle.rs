//! An idle IPC connection costs no CPU: once calls stop and the spin
//! windows have passed, the server (a child process, this binary
//! re-executed with GREEN_IPC_IDLE_SERVE set) and the client sleep.
//!
//! The test has a binary of its own: the client's CPU time is the whole
//! process's, which no other test may use meanwhile.
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use green::ipc::{Client, Server};

mod common;
use common::{spawn_server, watchdog};

#[test]
fn child_server() {
    let Some(path) = std::env::var_os("GREEN_IPC_IDLE_SERVE") else {
        return;
    };
    Server::bind(path)
        .unwrap()
        .serve(|req, resp| resp.write_all(&req.to_vec()))
        .unwrap();
}

/// CPU time (user + system) of process `pid`, from /proc (clock ticks).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time of this process, all threads.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes the struct we pass; zeroed is a valid
    // `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn an_idle_connection_uses_no_cpu_on_either_side() {
    if std::env::var_os("GREEN_IPC_IDLE_SERVE").is_some() {
        return;
    }
    let server = spawn_server("GREEN_IPC_IDLE_SERVE", "idle", &[]);
    let (pid, path) = (server.child.id(), server.path.clone());
    watchdog(move || {
        let client = Arc::new(Client::connect(&path).unwrap());
        // Busy first: every lane and the server's handlers have run.
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let c = client.clone();
                green::spawn(move || {
                    for k in 0..500usize {
                        let req = vec![(i + k) as u8; 1 + k % 3000];
                        assert_eq!(c.call(&req).unwrap().to_vec(), req);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // Past every spin window (microseconds to a few milliseconds).
        std::thread::sleep(Duration::from_millis(300));
        let (server0, client0) = (cpu_of(pid), own_cpu());
        let idle = Duration::from_secs(1);
        std::thread::sleep(idle);
        let (server_used, client_used) = (cpu_of(pid) - server0, own_cpu() - client0);
        // A thread that kept spinning would use the whole second; sleepers
        // that wake to re-check their connection now and then use far
        // less than a tenth of it.
        assert!(
            server_used < idle / 10,
            "idle server used {server_used:?} of CPU in {idle:?}"
        );
        assert!(
            client_used < idle / 10,
            "idle client used {client_used:?} of CPU in {idle:?}"
        );
        // And the connection still works.
        assert_eq!(client.call(b"again").unwrap().to_vec(), b"again");
    });
    drop(server);
}
