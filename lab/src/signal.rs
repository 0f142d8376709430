//! Ctrl-C for the lab's binaries: SIGINT, SIGTERM and SIGHUP only set a flag, and the long
//! waits of the demo and the benchmarks check it, return an error, and so unwind into the
//! [`crate::topology::Lab`] guard, which tears the lab down. A second Ctrl-C leaves at once
//! (`xdplb-lab cleanup` then removes what is left).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// The run was interrupted by a signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal; cleaning up")]
pub struct Interrupted;

extern "C" fn on_signal(_: libc::c_int) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
        const MSG: &[u8] =
            b"\nsecond signal: leaving now; `xdplb-lab cleanup` removes what is left\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a valid static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(130);
        }
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic and async-signal-safe calls.
        unsafe { sigaction(sig, &action) }.expect("install a signal handler");
    }
}

/// Whether a signal arrived.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Fails if a signal arrived.
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps for `d`, waking early (with an error) if a signal arrives.
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
