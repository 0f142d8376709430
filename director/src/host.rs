//! Host settings the data path relies on: per-interface sysctls, and what the kernel driver of
//! an attached interface implies (a veth needs help from its peer and from local senders).
//!
//! bpf_fib_lookup refuses to route (FWD_DISABLED) unless forwarding is on for the ingress
//! interface, and the packets the program hands to the kernel (unresolved neighbour, too big
//! without DF) arrive with the director's own address as source, which the kernel drops as a
//! martian unless accept_local is on. send_redirects off: the kernel would otherwise answer
//! those packets with ICMP redirects to itself.
//!
//! IPv6 is stricter: ip6_forward (which the handed-over packets go through) ignores
//! conf/<iface>/forwarding and checks conf/all/forwarding, or from Linux 6.17 the ingress
//! interface's force_forwarding. So on kernels that have force_forwarding we set that (only the
//! listed interface changes); on older ones the global switch is the only one the kernel
//! honours, and we set it: without it every IPv6 packet whose neighbour is unresolved is lost.
//!
//! Must not do: change anything on interfaces the operator did not list, except
//! net.ipv6.conf.all.forwarding on kernels without force_forwarding (documented in
//! docs/setup/director.md).
//!
//! Every value changed is first recorded with the value it had (the sysctl journal of
//! `daemon_support::sysctl`, next to the state file), and `detach` puts those values back:
//! detaching leaves the host as it was. A value the operator changed since is theirs and stays.

use std::path::{Path, PathBuf};

use daemon_support::sysctl::{conf_path, Journal};
pub use daemon_support::sysctl::{Restored, SysctlChange};

use crate::error::DaemonError;

/// (path, value) for each setting `kernel_fallback` makes on `iface`.
pub fn fallback_sysctls(iface: &str, v6: bool) -> Vec<(PathBuf, &'static str)> {
    let mut out = vec![
        (conf_path("ipv4", iface, "forwarding"), "1"),
        (conf_path("ipv4", iface, "accept_local"), "1"),
        (conf_path("ipv4", iface, "send_redirects"), "0"),
    ];
    if v6 {
        out.push((conf_path("ipv6", iface, "forwarding"), "1"));
        let force = conf_path("ipv6", iface, "force_forwarding");
        if force.exists() {
            out.push((force, "1"));
        } else {
            out.push((conf_path("ipv6", "all", "forwarding"), "1"));
        }
    }
    out
}

/// The kernel driver behind `iface` (what `ethtool -i` calls "driver": `veth`, `mlx5_core`,
/// `dummy`, ...), asked with the `ETHTOOL_GDRVINFO` ioctl on a socket of the calling thread's
/// network namespace. (sysfs would answer for the namespace it was mounted in, which is not
/// necessarily the caller's.)
pub fn driver(iface: &str) -> std::io::Result<String> {
    /// `struct ethtool_drvinfo` of linux/ethtool.h.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;

    let name = iface.as_bytes();
    // Also what makes the copy into ifr_name below safe: under IFNAMSIZ bytes, no NUL.
    if !daemon_support::valid_ifname(iface) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{iface:?} is not an interface name"),
        ));
    }
    // SAFETY: plain C structs, all-zero is a valid value of each.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: socket() returns a new descriptor or -1; OwnedFd closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads `req` and writes `info`, both alive and of the kernel's layout.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCETHTOOL,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// Whether `iface` is up and has its carrier (IFF_UP and IFF_RUNNING), asked of the kernel in
/// the daemon's own network namespace.
pub fn link_running(iface: &str) -> std::io::Result<bool> {
    if !daemon_support::valid_ifname(iface) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{iface:?} is not an interface name"),
        ));
    }
    // SAFETY: a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.as_bytes()) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket() returns a new descriptor or -1; OwnedFd closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, alive, kernel layout.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFFLAGS,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}

/// Whether `iface` is a veth. Unknown (the driver cannot be asked) counts as not.
pub fn is_veth(iface: &str) -> bool {
    match driver(iface) {
        Ok(d) => d == "veth",
        Err(e) => {
            tracing::debug!(iface, error = %e, "driver unknown");
            false
        }
    }
}

/// Apply [`fallback_sysctls`], skipping values already set, each change in the journal at
/// `log` before it is made.
pub fn apply_fallback_sysctls(iface: &str, v6: bool, log: &Path) -> Result<(), DaemonError> {
    let journal = Journal::new(log);
    for (path, value) in fallback_sysctls(iface, v6) {
        journal.set(&path, value)?;
    }
    Ok(())
}

/// Put back the sysctls recorded in `log`: all of them (`iface` None, for `detach`), or only
/// those of one interface (it is no longer configured; host-wide ones stay until detach).
/// Values changed by someone since are left as they are.
pub fn restore_sysctls(log: &Path, iface: Option<&str>) -> Result<Vec<Restored>, DaemonError> {
    let mine = |p: &Path| match iface {
        None => true,
        Some(i) => p.to_string_lossy().contains(&format!("/conf/{i}/")),
    };
    Ok(Journal::new(log).restore(mine)?)
}
