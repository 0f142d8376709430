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
//! Every value changed is first recorded with the value it had (`SysctlLog`, next to the
//! state file), and `detach` puts those values back: detaching leaves the host as it was.
//! A value the operator changed since is theirs and stays.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// (path, value) for each setting `kernel_fallback` makes on `iface`.
pub fn fallback_sysctls(iface: &str, v6: bool) -> Vec<(PathBuf, &'static str)> {
    let mut out = vec![
        (
            format!("/proc/sys/net/ipv4/conf/{iface}/forwarding").into(),
            "1",
        ),
        (
            format!("/proc/sys/net/ipv4/conf/{iface}/accept_local").into(),
            "1",
        ),
        (
            format!("/proc/sys/net/ipv4/conf/{iface}/send_redirects").into(),
            "0",
        ),
    ];
    if v6 {
        out.push((
            format!("/proc/sys/net/ipv6/conf/{iface}/forwarding").into(),
            "1",
        ));
        let force: PathBuf = format!("/proc/sys/net/ipv6/conf/{iface}/force_forwarding").into();
        if force.exists() {
            out.push((force, "1"));
        } else {
            out.push(("/proc/sys/net/ipv6/conf/all/forwarding".into(), "1"));
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
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
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

/// One sysctl the daemon changed: what it was before, what the daemon wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    pub path: PathBuf,
    pub before: String,
    pub set: String,
}

/// The sysctls the daemon changed and not yet put back (`<state_dir>/director-sysctls.json`).
/// An entry is written before its sysctl, and a path keeps its first `before`: restarts,
/// which find the value already set, never record the daemon's own value as the original.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlLog {
    pub changes: Vec<SysctlChange>,
}

impl SysctlLog {
    pub fn read(path: &Path) -> SysctlLog {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Atomically (temp file + rename); an empty log removes the file.
    fn write(&self, path: &Path) -> Result<(), DaemonError> {
        let err = |source| DaemonError::Sysctl {
            path: path.into(),
            source,
        };
        if self.changes.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("plain data serializes");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// Apply [`fallback_sysctls`], skipping values already set, recording each change in `log`.
pub fn apply_fallback_sysctls(iface: &str, v6: bool, log: &Path) -> Result<(), DaemonError> {
    let mut rec = SysctlLog::read(log);
    for (path, value) in fallback_sysctls(iface, v6) {
        let cur = std::fs::read_to_string(&path).map_err(|source| DaemonError::Sysctl {
            path: path.clone(),
            source,
        })?;
        let cur = cur.trim();
        if cur == value {
            continue;
        }
        if !rec.changes.iter().any(|c| c.path == path) {
            rec.changes.push(SysctlChange {
                path: path.clone(),
                before: cur.to_string(),
                set: value.to_string(),
            });
            rec.write(log)?;
        }
        std::fs::write(&path, value).map_err(|source| DaemonError::Sysctl {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), before = cur, value, "sysctl set");
    }
    Ok(())
}

/// What [`restore_sysctls`] did with each recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// Put back to its value from before the daemon.
    Reverted(SysctlChange),
    /// Changed by someone else since, or gone with its interface (`now` is "(gone)"): left
    /// as it is.
    Kept { change: SysctlChange, now: String },
}

/// Put back the sysctls recorded in `log`: all of them (`iface` None, for `detach`), or only
/// those of one interface (it is no longer configured; host-wide ones stay until detach).
pub fn restore_sysctls(log: &Path, iface: Option<&str>) -> Result<Vec<Restored>, DaemonError> {
    let mut rec = SysctlLog::read(log);
    let mut done = Vec::new();
    let mut keep = Vec::new();
    for c in rec.changes.drain(..) {
        let mine = match iface {
            None => true,
            Some(i) => c.path.to_string_lossy().contains(&format!("/conf/{i}/")),
        };
        if !mine {
            keep.push(c);
            continue;
        }
        // Unreadable: the interface is gone, and its settings with it.
        let now = std::fs::read_to_string(&c.path)
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "(gone)".to_string());
        if now != c.set {
            tracing::info!(path = %c.path.display(), now, "sysctl changed since: left as it is");
            done.push(Restored::Kept { change: c, now });
            continue;
        }
        std::fs::write(&c.path, &c.before).map_err(|source| DaemonError::Sysctl {
            path: c.path.clone(),
            source,
        })?;
        tracing::info!(path = %c.path.display(), value = c.before, "sysctl restored");
        done.push(Restored::Reverted(c));
    }
    rec.changes = keep;
    rec.write(log)?;
    Ok(done)
}
