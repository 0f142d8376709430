//! Host settings the data path relies on: per-interface sysctls.
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

use std::path::PathBuf;

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

/// Apply [`fallback_sysctls`], skipping values already set.
pub fn apply_fallback_sysctls(iface: &str, v6: bool) -> Result<(), DaemonError> {
    for (path, value) in fallback_sysctls(iface, v6) {
        let cur = std::fs::read_to_string(&path).unwrap_or_default();
        if cur.trim() == value {
            continue;
        }
        std::fs::write(&path, value).map_err(|source| DaemonError::Sysctl {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), value, "sysctl set");
    }
    Ok(())
}
