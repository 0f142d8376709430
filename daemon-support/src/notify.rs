//! systemd readiness (`Type=notify`, sd_notify(3)) through the `sd-notify` crate: a no-op when
//! `$NOTIFY_SOCKET` is unset (not started by systemd, tests, the lab).
//!
//! A notification that cannot be sent is logged and the daemon goes on. Readiness is a report
//! about forwarding, not a part of it: by the time a daemon says READY=1 its program is
//! attached and forwarding, and a daemon that exited because the manager's socket was gone
//! (systemd re-executing, a unit run by hand with a stale variable) would take nothing away
//! from the data path but would stop reloads and status for no gain. If systemd really is
//! waiting, its start timeout says so, and the log line says why.

use sd_notify::NotifyState;
use tracing::warn;

/// READY=1: started (or reloaded) and forwarding with the current configuration.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// RELOADING=1, with the monotonic timestamp systemd 253+ wants beside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// WATCHDOG=1: alive (the unit's WatchdogSec= kills a daemon that stops saying so). Only
/// sent when systemd asked for it.
pub fn watchdog() {
    if sd_notify::watchdog_enabled().is_some() {
        send(&[NotifyState::Watchdog]);
    }
}

/// STOPPING=1: shutting down (the program stays attached).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        let socket = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        warn!(socket = %socket.to_string_lossy(), error = %e, "cannot notify systemd; going on");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    /// One test, because it sets the process-wide `$NOTIFY_SOCKET`.
    #[test]
    fn sends_to_the_socket_and_goes_on_when_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::ready();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        super::reloading();
        let n = socket.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        drop(socket);
        std::fs::remove_file(&path).unwrap();
        // Nobody listens any more: logged, not fatal, no panic.
        super::stopping();
        std::env::remove_var("NOTIFY_SOCKET");
    }
}
