//! The only module that calls into the kernel's BPF objects: loads the redirector program, pins
//! it and its maps under `<bpffs_dir>/redirector`, attaches it to tc ingress, fills its maps and
//! reads its counters. `daemon::run` holds the skeleton [`load`] returns and hands its maps and
//! program back to these functions; everything else in the crate works on plain Rust values.
//!
//! State in bpffs (survives a daemon restart, so restarts are hitless):
//! `prog` (the attached program), `allowed_v4`, `allowed_v6`, `self_addrs`, `settings`,
//! `counters`. The per-CPU next-hop cache `nexthops` is not pinned: a new program starts cold.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject, TcHookBuilder, TC_INGRESS};

use crate::config::Cidr;
use crate::skel::types::{redir_addr, redir_lpm_v4, redir_lpm_v6, redir_settings};
use crate::skel::{RedirectorSkel, RedirectorSkelBuilder};
use crate::Error;

pub use crate::skel::types::redir_reason;

/// tc filter handle and priority of our filter: fixed, so a restart replaces its own filter in
/// place (atomically) and `detach` finds it without any state.
pub const TC_HANDLE: u32 = 0x584c; // "XL"
pub const TC_PRIORITY: u32 = 0x100;

/// Names of the pinned maps (as in `bpf/redirector.bpf.c`).
const PINNED_MAPS: [&str; 6] = [
    "allowed_v4",
    "allowed_v6",
    "self_addrs",
    "settings",
    "counters",
    "counter_bytes",
];
/// Name of the pinned program.
pub const PINNED_PROG: &str = "prog";

/// The ABI types are plain data: no padding, no pointers. Sizes pinned against abi.h.
const _: () = assert!(size_of::<redir_lpm_v4>() == 8);
const _: () = assert!(size_of::<redir_lpm_v6>() == 20);
const _: () = assert!(size_of::<redir_addr>() == 16);
const _: () = assert!(size_of::<redir_settings>() == 8);

fn bytes_of_v4(k: &redir_lpm_v4) -> [u8; 8] {
    let mut b = [0; 8];
    b[..4].copy_from_slice(&k.prefixlen.to_ne_bytes());
    b[4..].copy_from_slice(&k.addr);
    b
}

fn bytes_of_v6(k: &redir_lpm_v6) -> [u8; 20] {
    let mut b = [0; 20];
    b[..4].copy_from_slice(&k.prefixlen.to_ne_bytes());
    b[4..].copy_from_slice(&k.addr);
    b
}

impl From<IpAddr> for redir_addr {
    /// IPv4 becomes `::ffff:a.b.c.d`, as abi.h says.
    fn from(a: IpAddr) -> Self {
        let addr = match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        redir_addr { addr }
    }
}

/// How long the program reuses a next hop from `bpf_fib_lookup` unless told otherwise (ms), as
/// the director's `nexthop_ttl_ms`.
pub const DEFAULT_NEXTHOP_TTL_MS: u32 = 100;

/// [`load_with`] and the default next-hop TTL.
pub fn load<'o>(
    object: &'o mut MaybeUninit<OpenObject>,
    gue_port: u16,
    pin_dir: Option<&Path>,
) -> Result<RedirectorSkel<'o>, Error> {
    load_with(object, gue_port, DEFAULT_NEXTHOP_TTL_MS, pin_dir)
}

/// Open the skeleton, set the load-time knobs (GUE port, next-hop TTL in ms: 0 = no cache),
/// reuse maps pinned in `pin_dir` (if given and present: counters and tables survive
/// restarts) and load it into the kernel.
pub fn load_with<'o>(
    object: &'o mut MaybeUninit<OpenObject>,
    gue_port: u16,
    nexthop_ttl_ms: u32,
    pin_dir: Option<&Path>,
) -> Result<RedirectorSkel<'o>, Error> {
    daemon_support::check_kernel()?;
    let mut open = RedirectorSkelBuilder::default()
        .open(object)
        .map_err(Error::Open)?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has .rodata");
    rodata.gue_port = gue_port;
    rodata.nexthop_ttl_ms = nexthop_ttl_ms;
    if let Some(dir) = pin_dir {
        for map in [
            &mut open.maps.allowed_v4,
            &mut open.maps.allowed_v6,
            &mut open.maps.self_addrs,
            &mut open.maps.settings,
            &mut open.maps.counters,
            &mut open.maps.counter_bytes,
        ] {
            let path = dir.join(map.name());
            if path.exists() {
                map.reuse_pinned_map(&path)
                    .map_err(|source| Error::ReusePin { path, source })?;
            }
        }
    }
    open.load().map_err(Error::Load)
}

/// Make sure `dir` (`<bpffs_dir>/redirector`) is on a bpffs
/// ([`daemon_support::check_bpffs`], which never mounts one), then create it.
pub fn ensure_pin_dir(dir: &Path) -> Result<(), Error> {
    daemon_support::check_bpffs(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Pin the program (replacing an older pin) and every map not pinned yet.
pub fn pin(skel: &mut RedirectorSkel<'_>, dir: &Path) -> Result<(), Error> {
    ensure_pin_dir(dir)?;
    for map in [
        &mut skel.maps.allowed_v4,
        &mut skel.maps.allowed_v6,
        &mut skel.maps.self_addrs,
        &mut skel.maps.settings,
        &mut skel.maps.counters,
        &mut skel.maps.counter_bytes,
    ] {
        let path = dir.join(map.name());
        if !path.exists() {
            map.pin(&path)
                .map_err(|source| Error::Pin { path, source })?;
        }
    }
    let path = dir.join(PINNED_PROG);
    // A pin is a name, not a reference the datapath depends on (the tc filter holds the
    // program): replacing it never interrupts traffic.
    let _ = std::fs::remove_file(&path);
    skel.progs
        .redirector
        .pin(&path)
        .map_err(|source| Error::Pin { path, source })
}

/// Remove every pin of ours under `dir` (and `dir` if it ends up empty).
pub fn unpin(dir: &Path) {
    for name in PINNED_MAPS.iter().chain([&PINNED_PROG]) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// The ifindex of `name`.
pub fn ifindex(name: &str) -> Result<i32, Error> {
    nix::net::if_::if_nametoindex(name)
        .map(|i| i as i32)
        .map_err(|_| Error::NoInterface { name: name.into() })
}

/// Attach `prog` to the tc ingress of `interface`, replacing our previous filter atomically
/// (creates the clsact qdisc when missing).
pub fn attach(prog: BorrowedFd<'_>, interface: &str) -> Result<(), Error> {
    let idx = ifindex(interface)?;
    let err = |source| Error::Attach {
        interface: interface.into(),
        source,
    };
    let mut hook = TcHookBuilder::new(prog)
        .ifindex(idx)
        .replace(true)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY)
        .hook(TC_INGRESS);
    // Creating the qdisc is exclusive: when it exists (every restart) the kernel refuses, and
    // libbpf prints the refusal to stderr although libbpf-rs then carries on. Ask first.
    if !tc::has_ingress_qdisc(idx).map_err(|source| Error::TcQuery {
        what: "qdiscs",
        interface: interface.into(),
        source,
    })? {
        hook.create().map_err(err)?;
    }
    hook.attach().map_err(err)?;
    Ok(())
}

/// Remove our filter from the tc ingress of `interface`. Other filters and the clsact qdisc stay:
/// they may belong to someone else. Returns false when there was nothing to remove.
pub fn detach(interface: &str) -> Result<bool, Error> {
    if attached_prog_id(interface)?.is_none() {
        return Ok(false);
    }
    let idx = ifindex(interface)?;
    // The hook API wants a program fd, which detaching does not use.
    let devnull = std::fs::File::open("/dev/null").map_err(|e| Error::Detach {
        interface: interface.into(),
        source: e.into(),
    })?;
    let mut hook = TcHookBuilder::new(devnull.as_fd())
        .ifindex(idx)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY)
        .hook(TC_INGRESS);
    hook.detach().map_err(|source| Error::Detach {
        interface: interface.into(),
        source,
    })?;
    Ok(true)
}

/// Remove our filter from every interface of this network namespace: our handle and priority
/// identify it, so this needs no config and no record (the config may be gone or broken when
/// the package is removed). Returns the interfaces it was removed from.
pub fn detach_all() -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    let names: Vec<String> = nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for name in names {
        match detach(&name) {
            Ok(true) => done.push(name),
            Ok(false) | Err(Error::NoInterface { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The id of the program our filter runs on `interface`, if it is attached.
pub fn attached_prog_id(interface: &str) -> Result<Option<u32>, Error> {
    let idx = ifindex(interface)?;
    // libbpf's query prints the kernel's refusal to stderr when there is no clsact qdisc or
    // no filter at our priority (most interfaces, for `status` and `detach`): look first.
    if !tc::has_our_filter(idx, TC_HANDLE, TC_PRIORITY).map_err(|source| Error::TcQuery {
        what: "ingress filters",
        interface: interface.into(),
        source,
    })? {
        return Ok(None);
    }
    let devnull = std::fs::File::open("/dev/null").map_err(|e| Error::Detach {
        interface: interface.into(),
        source: e.into(),
    })?;
    let mut hook = TcHookBuilder::new(devnull.as_fd())
        .ifindex(idx)
        .handle(TC_HANDLE)
        .priority(TC_PRIORITY)
        .hook(TC_INGRESS);
    Ok(hook.query().ok())
}

/// The id of a loaded program given its fd.
pub fn prog_id(prog: BorrowedFd<'_>) -> Option<u32> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = size_of_val(&info) as u32;
    // SAFETY: `info` is a valid, writable bpf_prog_info of `len` bytes.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
            std::os::fd::AsRawFd::as_raw_fd(&prog),
            &mut info,
            &mut len,
        )
    };
    (rc == 0).then_some(info.id)
}

/// The id of the program pinned in `pin_dir`, if one is.
pub fn pinned_prog_id(pin_dir: &Path) -> Option<u32> {
    let fd = libbpf_rs::Program::fd_from_pinned_path(pin_dir.join(PINNED_PROG)).ok()?;
    prog_id(fd.as_fd())
}

/// Maps opened from their pins, for a process that did not load the program (status, reload
/// from a second process).
#[derive(Debug)]
pub struct PinnedMaps {
    pub allowed_v4: MapHandle,
    pub allowed_v6: MapHandle,
    pub self_addrs: MapHandle,
    pub settings: MapHandle,
    pub counters: MapHandle,
    /// Absent in pins of a version that counted no bytes (until its successor's first run).
    pub counter_bytes: Option<MapHandle>,
}

impl PinnedMaps {
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let open = |name: &str| {
            let path: PathBuf = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|source| Error::OpenPinned { path, source })
        };
        Ok(PinnedMaps {
            allowed_v4: open("allowed_v4")?,
            allowed_v6: open("allowed_v6")?,
            self_addrs: open("self_addrs")?,
            settings: open("settings")?,
            counters: open("counters")?,
            counter_bytes: open("counter_bytes").ok(),
        })
    }
}

/// Make the allowed-source tries hold exactly `sources`. New entries go in before stale ones
/// go out, so a packet never sees a range that is in both the old and the new config missing.
pub fn set_allowed_sources(
    v4: &impl MapCore,
    v6: &impl MapCore,
    sources: &[Cidr],
) -> Result<(), Error> {
    let mut want4 = HashSet::new();
    let mut want6 = HashSet::new();
    for d in sources {
        match d.addr {
            IpAddr::V4(a) => {
                want4.insert(bytes_of_v4(&redir_lpm_v4 {
                    prefixlen: u32::from(d.prefix),
                    addr: a.octets(),
                }));
            }
            IpAddr::V6(a) => {
                want6.insert(bytes_of_v6(&redir_lpm_v6 {
                    prefixlen: u32::from(d.prefix),
                    addr: a.octets(),
                }));
            }
        }
    }
    sync_set(v4, "allowed_v4", want4.iter().map(|k| &k[..]))?;
    sync_set(v6, "allowed_v6", want6.iter().map(|k| &k[..]))
}

/// Make the self-address set hold exactly `addrs`, and tell the program how many there are
/// (with none it skips the lookup). A stale count only costs a lookup or, for a moment, one
/// packet sent back to ourselves, which then arrives with its index advanced: any order of
/// the two updates is safe.
pub fn set_self_addrs(
    map: &impl MapCore,
    settings: &impl MapCore,
    addrs: &[IpAddr],
) -> Result<(), Error> {
    let want: HashSet<[u8; 16]> = addrs.iter().map(|a| redir_addr::from(*a).addr).collect();
    sync_set(map, "self_addrs", want.iter().map(|k| &k[..]))?;
    update_settings(settings, |s| s.self_addr_count = want.len() as u32)
}

/// Move the next-hop generation on: every next hop a CPU has cached becomes stale, and the
/// next packet to each hop asks the kernel again (a route, neighbour or link changed).
pub fn bump_generation(settings: &impl MapCore) -> Result<(), Error> {
    update_settings(settings, |s| s.generation = s.generation.wrapping_add(1))
}

/// The current settings entry (the generation, mainly: tests and `status`).
pub fn read_settings(settings: &impl MapCore) -> Result<redir_settings, Error> {
    let bytes = settings
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|source| Error::MapUpdate {
            map: "settings",
            source,
        })?
        .unwrap_or_default();
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    Ok(redir_settings {
        self_addr_count: word(0),
        generation: word(4),
    })
}

/// Read, change and write back the one settings entry. Its two fields are written by two
/// threads (reloads: the self-address count; the route watcher: the generation), and the map
/// holds them in one value: the lock keeps one writer from putting back the other's old
/// value (a generation moved back would make stale next hops good again).
fn update_settings(
    settings: &impl MapCore,
    change: impl FnOnce(&mut redir_settings),
) -> Result<(), Error> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut value = read_settings(settings)?;
    change(&mut value);
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&value.self_addr_count.to_ne_bytes());
    bytes[4..].copy_from_slice(&value.generation.to_ne_bytes());
    settings
        .update(&0u32.to_ne_bytes(), &bytes, MapFlags::ANY)
        .map_err(|source| Error::MapUpdate {
            map: "settings",
            source,
        })
}

fn sync_set<'k>(
    map: &impl MapCore,
    name: &'static str,
    want: impl Iterator<Item = &'k [u8]> + Clone,
) -> Result<(), Error> {
    let err = |source| Error::MapUpdate { map: name, source };
    for k in want.clone() {
        map.update(k, &[1], MapFlags::ANY).map_err(err)?;
    }
    let want: HashSet<&[u8]> = want.collect();
    let stale: Vec<Vec<u8>> = map.keys().filter(|k| !want.contains(&k[..])).collect();
    for k in stale {
        map.delete(&k).map_err(err)?;
    }
    Ok(())
}

/// Per-reason packet counts summed over CPUs, indexed by `redir_reason`.
pub fn read_counters(map: &impl MapCore) -> Result<Vec<u64>, Error> {
    sum_per_reason(map, "counters")
}

/// Per-reason byte counts summed over CPUs, indexed by `redir_reason`.
pub fn read_bytes(map: &impl MapCore) -> Result<Vec<u64>, Error> {
    sum_per_reason(map, "counter_bytes")
}

fn sum_per_reason(map: &impl MapCore, name: &'static str) -> Result<Vec<u64>, Error> {
    let n = crate::counters::NAMES.len() as u32;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let per_cpu = map
            .lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| Error::MapUpdate { map: name, source })?
            .unwrap_or_default();
        let sum = per_cpu
            .iter()
            .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("u64 counters")))
            .sum();
        out.push(sum);
    }
    Ok(out)
}

/// Read-only rtnetlink dumps of tc objects, to look before asking libbpf to act.
mod tc {
    use std::io;

    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };

    const RTM_NEWQDISC: u16 = 36;
    const RTM_GETQDISC: u16 = 38;
    const RTM_NEWTFILTER: u16 = 44;
    const RTM_GETTFILTER: u16 = 46;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    /// Parent of the clsact (and ingress) qdisc.
    const TC_H_INGRESS: u32 = 0xffff_fff1;
    /// Parent of clsact's ingress filters (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`).
    const TC_H_CLSACT_INGRESS: u32 = 0xffff_fff2;
    const NLMSG_HDRLEN: usize = 16;
    const TCMSG_LEN: usize = 20;

    /// `struct tcmsg` fields of one dumped object.
    struct TcMsg {
        ifindex: i32,
        handle: u32,
        parent: u32,
        info: u32,
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// Dump `request` objects (`tcmsg` with `ifindex`, `parent`) and return those of type
    /// `reply`.
    fn dump(request: u16, reply: u16, ifindex: i32, parent: u32) -> io::Result<Vec<TcMsg>> {
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let mut req = Vec::with_capacity(NLMSG_HDRLEN + TCMSG_LEN);
        req.extend_from_slice(&((NLMSG_HDRLEN + TCMSG_LEN) as u32).to_ne_bytes());
        req.extend_from_slice(&request.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
        req.extend_from_slice(&[0; 4]); // family AF_UNSPEC, padding
        req.extend_from_slice(&ifindex.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes()); // handle
        req.extend_from_slice(&parent.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes()); // info
        sendto(fd, &req, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;

        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(fd, &mut buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let len = u32_at(&buf, at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if len < NLMSG_HDRLEN || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &buf[at + NLMSG_HDRLEN..at + len];
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    k if k == reply && body.len() >= TCMSG_LEN => out.push(TcMsg {
                        ifindex: u32_at(body, 4) as i32,
                        handle: u32_at(body, 8),
                        parent: u32_at(body, 12),
                        info: u32_at(body, 16),
                    }),
                    _ => {}
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Whether `ifindex` has a clsact (or ingress) qdisc.
    pub(super) fn has_ingress_qdisc(ifindex: i32) -> io::Result<bool> {
        // The qdisc dump lists every interface: filter here.
        Ok(dump(RTM_GETQDISC, RTM_NEWQDISC, ifindex, 0)?
            .iter()
            .any(|q| q.ifindex == ifindex && q.parent == TC_H_INGRESS))
    }

    /// Whether the tc ingress of `ifindex` has a filter with `handle` at `priority`.
    pub(super) fn has_our_filter(ifindex: i32, handle: u32, priority: u32) -> io::Result<bool> {
        // Without a clsact qdisc the dump is simply empty.
        Ok(
            dump(RTM_GETTFILTER, RTM_NEWTFILTER, ifindex, TC_H_CLSACT_INGRESS)?
                .iter()
                .any(|f| f.handle == handle && f.info >> 16 == priority),
        )
    }
}
