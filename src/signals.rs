//! Signals no process of portico may die of. The master and the workers
//! handle the signals they use (see docs/config.md, "Signals"); every other
//! signal whose default action would end the process, and that is not the
//! sign of a fault in the process itself, gets a handler that does nothing:
//! SIGHUP (in a worker; the master reloads), SIGUSR1 and SIGUSR2 until
//! their handlers are installed, SIGALRM, SIGVTALRM, SIGPROF, SIGIO,
//! SIGPWR, SIGSTKFLT, SIGXCPU, SIGXFSZ, the real-time signals, and
//! SIGTTIN / SIGTTOU (whose default stops a background process).
//!
//! A handler rather than `SIG_IGN`: an ignored signal stays ignored across
//! `exec`, so the CGI scripts a worker starts would inherit it, while a
//! caught one is reset to its default there.
//!
//! Left alone: SIGKILL and SIGSTOP (cannot be caught), the fault signals
//! (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS: a process
//! that faulted must die, and the master names what it was running),
//! SIGTSTP and SIGCONT (job control from a terminal), SIGPIPE (ignored by
//! the Rust runtime), SIGCHLD, SIGWINCH and SIGURG (ignored by default).

use nix::libc;

/// The signals given a no-op handler at start, besides the real-time ones.
const STRAYS: [libc::c_int; 13] = [
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

extern "C" fn nothing(_signal: libc::c_int) {}

/// Installs the no-op handler for every stray signal. Call first thing in
/// `main`: the handlers the process uses (tokio's) replace these later.
pub fn survive_strays() {
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    for signal in STRAYS.into_iter().chain(realtime) {
        // SAFETY: a zeroed sigaction with an empty mask, SA_RESTART (so no
        // system call fails with EINTR) and a handler that does nothing,
        // which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stray_signal_does_not_end_the_process() {
        survive_strays();
        // SAFETY: raising a signal whose handler we just set to do nothing.
        unsafe {
            libc::raise(libc::SIGALRM);
            libc::raise(libc::SIGRTMIN() + 3);
            libc::raise(libc::SIGXFSZ);
        }
    }
}
