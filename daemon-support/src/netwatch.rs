//! Route and neighbour changes as they happen: the kernel's rtnetlink notifications.
//!
//! Both programs reuse a next hop (route + neighbour from `bpf_fib_lookup`) per CPU until
//! their `nexthop_ttl_ms` runs out or the generation in their settings map moves on (the
//! director's `director_config`, the redirector's `settings`). This module listens to every
//! link, route and neighbour notification of the daemon's network namespace and turns each
//! burst into one call of the daemon's callback, which moves the generation on, so the next
//! packet to every next hop asks the kernel again. A change is used within milliseconds; the
//! TTL stays the bound when a notification is lost (socket overrun) or no daemon runs.
//!
//! The messages are not parsed: any change may move a next hop, and a lookup per next hop and
//! CPU after it costs less than telling changes apart.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};
use tracing::{debug, warn};

/// rtnetlink multicast groups: links (a link going down takes its routes with it), IPv4 and
/// IPv6 routes, neighbours.
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE)
        as u32;

/// How often the listening thread looks at its stop flag.
const POLL_MS: i64 = 200;

/// At most one event per this long: every event makes each CPU look every backend up again
/// (one `bpf_fib_lookup` each), and a busy LAN can report neighbours changing state many
/// times a second. A change after a quiet spell is reported at once.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The listening thread; dropping it stops the thread.
#[derive(Debug)]
pub struct NetWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for NetWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Subscribe in the calling thread's network namespace and call `changed` on a thread of its
/// own after every burst of notifications, until it returns `false` or the [`NetWatch`] is
/// dropped.
pub fn watch<F>(changed: F) -> nix::Result<NetWatch>
where
    F: FnMut() -> bool + Send + 'static,
{
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::milliseconds(POLL_MS),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("netwatch".into())
        .spawn(move || listen(&fd, &flag, changed))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
    Ok(NetWatch {
        stop,
        thread: Some(thread),
    })
}

fn listen(fd: &OwnedFd, stop: &AtomicBool, mut changed: impl FnMut() -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            // ENOBUFS: notifications were lost, so something changed.
            Ok(_) | Err(Errno::ENOBUFS) => {}
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "route/neighbour notifications: reading failed; next hops now follow nexthop_ttl_ms only");
                return;
            }
        }
        if let Some(wait) = last.and_then(|t| MIN_INTERVAL.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        // The rest of the burst (a route change is often several messages): one event.
        loop {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > 0 => continue,
                Err(Errno::ENOBUFS) => continue,
                _ => break,
            }
        }
        last = Some(Instant::now());
        debug!("route, neighbour or link changed");
        if !changed() {
            return; // the daemon is gone
        }
    }
}
