//! Stack overflow on a green thread: a clear message, then abort.
//!
//! Owns the process's SIGSEGV/SIGBUS handler while a runtime exists. A fault
//! inside the guard page of the green thread running on the faulting carrier
//! prints which green thread overflowed and aborts, as std does for OS
//! threads. Any other fault goes to the handler that was installed before
//! (std's, which reports OS thread overflows), or to the default action.
//!
//! The handler runs on an alternate signal stack (the overflowed stack has
//! no room), uses only async-signal-safe calls, and allocates nothing.

use std::mem::MaybeUninit;
use std::sync::Once;

use super::carrier::carrier_ptr;

static INSTALL: Once = Once::new();
static mut PREV_SEGV: MaybeUninit<libc::sigaction> = MaybeUninit::uninit();
static mut PREV_BUS: MaybeUninit<libc::sigaction> = MaybeUninit::uninit();

/// Size of the alternate signal stack given to carriers that have none.
const ALTSTACK: usize = 64 * 1024;

/// Installs the handler once per process.
pub(crate) fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a zeroed struct plus the fields we set is a
        // valid request; PREV_* are written here once, before any carrier
        // exists (so before the handler can run and read them), under Once.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(
                libc::SIGSEGV,
                &act,
                (*std::ptr::addr_of_mut!(PREV_SEGV)).as_mut_ptr(),
            );
            libc::sigaction(
                libc::SIGBUS,
                &act,
                (*std::ptr::addr_of_mut!(PREV_BUS)).as_mut_ptr(),
            );
        }
    });
}

/// Gives this thread an alternate signal stack if it has none.
pub(crate) fn ensure_altstack() {
    // SAFETY: querying the current alternate stack writes only `old`.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut old) != 0 {
            return;
        }
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return;
        }
    }
    let page = rustix::param::page_size();
    // SAFETY: a fresh anonymous mapping aliases nothing. It is never unmapped:
    // a carrier's alternate stack lives as long as the thread, and leaking
    // one per carrier thread is bounded.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            ALTSTACK + page,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::STACK,
        )
    };
    let Ok(base) = base else { return };
    // SAFETY: the lowest page of our own fresh mapping becomes its guard;
    // the rest is handed to the kernel as this thread's signal stack.
    unsafe {
        libc::mprotect(base, page, libc::PROT_NONE);
        let st = libc::stack_t {
            ss_sp: (base as *mut u8).add(page) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: ALTSTACK,
        };
        libc::sigaltstack(&st, std::ptr::null_mut());
    }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 from a valid slice; async-signal-safe.
    unsafe { libc::write(2, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
}

fn write_num(mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_stderr(&buf[i..]);
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let carrier = carrier_ptr();
    // SAFETY: the carrier pointer is this thread's live carrier or null; its
    // `current` task is alive while it runs (the slab owns it), and the
    // faulting code is that task's, so nothing mutates these fields now.
    unsafe {
        if let Some(c) = carrier.as_ref() {
            if let Some(task) = c.current.get() {
                let task = task.as_ref();
                let (lo, hi) = task.guard;
                if addr >= lo && addr < hi {
                    write_stderr(b"\nthread '");
                    match &task.name {
                        Some(n) => write_stderr(n.as_bytes()),
                        None => write_stderr(b"<unnamed>"),
                    }
                    write_stderr(b"' has overflowed its stack (green thread");
                    let id = task.id_if_assigned();
                    if id != 0 {
                        write_stderr(b" ");
                        write_num(id);
                    }
                    write_stderr(b", stack size ");
                    write_num((task.stack_size / 1024) as u64);
                    write_stderr(b" KiB)\nfatal runtime error: stack overflow, aborting\n");
                    libc::abort();
                }
            }
        }
    }
    // Not ours: hand over to whoever handled this signal before us.
    // SAFETY: PREV_* were written once before this handler was installed.
    let prev = unsafe {
        if sig == libc::SIGBUS {
            (*std::ptr::addr_of!(PREV_BUS)).assume_init_ref()
        } else {
            (*std::ptr::addr_of!(PREV_SEGV)).assume_init_ref()
        }
    };
    let action = prev.sa_sigaction;
    if action != libc::SIG_DFL && action != libc::SIG_IGN {
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was registered with SA_SIGINFO, so
            // it has this signature and expects these arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(action) };
            f(sig, info, ctx);
        } else {
            // SAFETY: a handler registered without SA_SIGINFO takes the signal
            // number only.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
            f(sig);
        }
        return;
    }
    // Default action: restore it and return; the faulting instruction runs
    // again and the kernel applies it (core dump, exit by signal).
    // SAFETY: resetting a signal to SIG_DFL is always valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut());
    }
}
