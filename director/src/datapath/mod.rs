//! The only module that touches the kernel's BPF objects: loads the XDP program, pins and
//! reuses maps under `<bpffs_dir>/director`, attaches through pinned bpf_links, swaps table
//! versions, reads counters.
//!
//! Pinned layout (docs/setup/director.md): `<pin_dir>/<map name>` for every map,
//! `<pin_dir>/prog` for the program, `<pin_dir>/links/<ifname>` for each XDP link. A pinned
//! link keeps the program attached when the daemon exits; a new daemon loads its program, reuses
//! the pinned maps (tables keep forwarding) and swaps the program into the links atomically.
//!
//! Must not do: decide policy (which tables, when); that is the daemon's.
//!
//! One module per concern: [`load`] (the object, pins), [`attach`] (XDP links), [`install`]
//! (settings, tables, binds, hash states), [`counters`], [`view`] (the pinned maps read by
//! `status`), [`abi`] (the bytes of the abi.h types). This module holds the shared pieces: map
//! names and sizes.

mod abi;
mod attach;
mod counters;
mod install;
mod load;
mod view;

pub use abi::AbiBytes;
pub use attach::{detach_all, xdp_attached, AttachMode};
pub use counters::{Count, Counters, Slots};
pub use install::{hash_state, hash_state_index_v4, hash_state_index_v6, vip_slot};
pub use view::PinnedView;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{AsRawLibbpf, MapCore, MapHandle, Object};

use crate::bpf::types::{director_limit as Limit, director_slot};
use crate::error::DatapathError;
use crate::tables::VIP_RANGES;

/// The compiled program (build.rs writes it next to the skeleton).
pub(crate) const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/director.bpf.o"));
const PROG_NAME: &str = "xdplb_director";
const MAP_TABLES: &str = "director_tables";
const MAP_TABLES_FIXED: &str = "director_tables_fixed";
const MAP_VIPS: &str = "director_vips";
const MAP_CONFIG: &str = "director_config";
const MAP_VIP_FILTER: &str = "director_vip_filter";
const MAP_VIP_INDEX: &str = "director_vip_index";
const MAP_HASH_STATES: &str = "director_hash_states";
/// Maps older versions pinned and this one no longer uses: unpinned when the program loads.
const RETIRED_MAPS: &[&str] = &["director_slot_keys", MAP_SERVICE_TOTALS];
const MAP_REASON: &str = "stats_reason";
const MAP_SERVICE: &str = "stats_service_retired";
/// Older versions counted every packet for its service too, in this map: read once to carry
/// the removed binds' counts over (see `Datapath::open`), then unpinned.
const MAP_SERVICE_TOTALS: &str = "stats_service";
const MAP_BIND: &str = "stats_bind";
/// Inner maps must carry the template's flags exactly (the kernel compares them).
const INNER_FLAGS: u32 = libbpf_sys::BPF_F_INNER_MAP | libbpf_sys::BPF_F_MMAPABLE;
const FIXED_FLAGS: u32 = libbpf_sys::BPF_F_MMAPABLE;
/// Sizes from abi.h's `enum director_limit`, as the object's BTF has them.
const FIXED_ROWS: usize = Limit::DIRECTOR_FIXED_ROWS.0 as usize;
const VIP_FILTER_BITS: usize = Limit::DIRECTOR_VIP_FILTER_BITS.0 as usize;
const VIP_SLOTS: usize = Limit::DIRECTOR_VIP_SLOTS.0 as usize;
const SLOT_SIZE: usize = std::mem::size_of::<director_slot>();

const _: () = assert!(SLOT_SIZE == 72);

/// libbpf's own maps (".kconfig": the kernel's settings this boot, e.g. CONFIG_HZ) are named
/// "<object>.<section>". They belong to one load: never pinned, never reused.
fn is_internal(map_name: &str) -> bool {
    map_name.contains('.')
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths we build have no NUL")
}

fn last_os_error(rc: i32) -> io::Error {
    if rc < 0 {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::last_os_error()
    }
}

/// Runtime settings of the program (the `director_config` map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub src4: Option<std::net::Ipv4Addr>,
    pub src6: Option<std::net::Ipv6Addr>,
    /// Co-located mode: `src4` / `src6` are this host's backend addresses, and a row whose
    /// primary is one of them goes to this host's own stack (bpf/include/director_colocated.h).
    pub colocated: bool,
    pub gue_port: u16,
    pub nexthop_ttl_ms: u32,
}

/// The loaded program and its (pinned) maps.
#[derive(Debug)]
pub struct Datapath {
    obj: Object,
    /// The BTF the inner maps are created with: that of the templates (see [`InnerBtf`]).
    table_btf: InnerBtf,
    vip_index_btf: InnerBtf,
    /// The bind index this process last swapped in (slot -> slot bytes): a reload that
    /// changes only tables skips building and swapping an identical one (and its RCU wait).
    vip_index_written: std::sync::Mutex<Option<BTreeMap<usize, Vec<u8>>>>,
    pin_dir: PathBuf,
    tables: MapHandle,
    tables_fixed: MapHandle,
    vips: MapHandle,
    vip_filter: MapHandle,
    vip_index: MapHandle,
    hash_states: MapHandle,
    /// The hash states this process last wrote (entry -> value bytes), to write only changes.
    hash_states_written: std::sync::Mutex<BTreeMap<usize, Vec<u8>>>,
    /// Per health-checked service, the table maps this process keeps for its next swap.
    kept: std::sync::Mutex<BTreeMap<u32, install::KeptPair>>,
    /// The services whose slots this process last left filled (the others emptied).
    installed_ids: std::sync::Mutex<Option<std::collections::BTreeSet<u32>>>,
    config: MapHandle,
    reason: MapHandle,
    service: MapHandle,
    bind: MapHandle,
}

impl Datapath {
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Run the program once on `frame` (BPF_PROG_TEST_RUN) as if received on `ifindex` of the
    /// calling thread's network namespace. Returns the verdict and the frame it leaves.
    ///
    /// Kernels before 5.15 take no XDP context in a test run ([`xdp_test_ctx_supported`]):
    /// there the frame always comes in on the namespace's loopback device, so only
    /// [`LOOPBACK_IFINDEX`] can be asked for; any other interface is an error, never a silent
    /// substitution.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>), DatapathError> {
        let (ret, out, _) = self.test_run_repeat(frame, ifindex, 1)?;
        Ok((ret, out))
    }

    /// As [`Datapath::test_run`], `repeat` times on the same buffer (the kernel does not
    /// restore it between runs: see docs/development/benchmarking.md); returns the kernel's
    /// mean time per run.
    pub fn test_run_repeat(
        &self,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, Duration), DatapathError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == PROG_NAME)
            .expect("program exists");
        let mut ctx = xdp_test_ctx(frame.len(), ifindex)?;
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            context_in: ctx.as_mut().map(|c| &mut c[..]),
            repeat,
            ..Default::default()
        };
        let o = prog.test_run(input).map_err(DatapathError::TestRun)?;
        let ret = o.return_value;
        let dur = o.duration;
        let n = o.data.map(|d| d.len()).unwrap_or(0);
        out.truncate(n);
        Ok((ret, out, dur))
    }
}

/// The loopback device's interface index, the same in every network namespace: the ingress
/// of an XDP test run on a kernel that takes no context.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Whether this kernel's BPF_PROG_TEST_RUN takes an XDP program's context (`struct xdp_md`,
/// which names the ingress interface): from 5.15 on. Before, it refuses any context with
/// EINVAL and runs the program as if the frame came in on the loopback device of the caller's
/// network namespace. Probed once, with a two-instruction XDP program, and remembered.
/// `XDPLB_TEST_RUN_NO_CTX=1` runs the tests as on such a kernel on any kernel (the ingress is
/// then lo there too).
pub fn xdp_test_ctx_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::env::var_os("XDPLB_TEST_RUN_NO_CTX").is_none_or(|v| v != "1") && probe_xdp_test_ctx()
    })
}

fn probe_xdp_test_ctx() -> bool {
    // r0 = XDP_PASS; exit
    let insns = [
        libbpf_sys::bpf_insn {
            code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
            _bitfield_align_1: [],
            _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm: 2,
        },
        libbpf_sys::bpf_insn {
            code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8,
            _bitfield_align_1: [],
            _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm: 0,
        },
    ];
    let license = CString::new("GPL").expect("no NUL");
    // SAFETY: two valid instructions, a NUL-terminated license, default options.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            std::ptr::null(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        // Cannot tell (no privilege, no BPF): the real run then reports the real error.
        return true;
    }
    // SAFETY: bpf_prog_load returned a new fd that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut data = [0u8; 64];
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes()); // data_end
                                                                   // SAFETY: bpf_test_run_opts is plain data; zero is its empty value.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
    opts.data_in = data.as_mut_ptr().cast();
    opts.data_size_in = data.len() as u32;
    opts.ctx_in = ctx.as_mut_ptr().cast();
    opts.ctx_size_in = ctx.len() as u32;
    opts.repeat = 1;
    // SAFETY: a valid program fd; opts points at live buffers of the sizes it says.
    let rc = unsafe {
        libbpf_sys::bpf_prog_test_run_opts(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut opts)
    };
    rc != -(nix::errno::Errno::EINVAL as i32)
}

/// The `xdp_md` a test run of `len` bytes received on `ifindex` takes, or none on a kernel
/// that takes no XDP context, where only the loopback device can be the ingress.
pub fn xdp_test_ctx(len: usize, ifindex: u32) -> Result<Option<[u8; 24]>, DatapathError> {
    if !xdp_test_ctx_supported() {
        if ifindex == LOOPBACK_IFINDEX {
            return Ok(None);
        }
        return Err(DatapathError::TestRunIngress { ifindex });
    }
    let mut ctx = [0u8; 24]; // struct xdp_md
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes()); // data_end
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes()); // ingress_ifindex
    Ok(Some(ctx))
}

/// The BTF of an inner-map template, for creating inner maps the kernel takes for the same
/// kind of map. libbpf creates each template with the object's BTF; kernels 5.15 to 6.1 compare
/// where a map's BTF puts a `bpf_timer`, which a map created without BTF has nowhere ("invalid")
/// and a BTF'd one "not found": swapping a BTF-less inner map in fails there with EINVAL.
#[derive(Debug, Clone, Copy)]
struct InnerBtf {
    fd: u32,
    key: u32,
    value: u32,
}

impl InnerBtf {
    /// Of the map `template` in `obj` (whose BTF fd lives as long as `obj`).
    fn of(obj: &Object, template: &str) -> InnerBtf {
        let map = obj
            .maps()
            .find(|m| m.name() == template)
            .expect("the object defines the template");
        // SAFETY: valid pointers to the loaded object and one of its maps.
        unsafe {
            let fd = libbpf_sys::bpf_object__btf_fd(obj.as_libbpf_object().as_ptr());
            let m = map.as_libbpf_object().as_ptr();
            InnerBtf {
                fd: u32::try_from(fd).unwrap_or(0),
                key: libbpf_sys::bpf_map__btf_key_type_id(m),
                value: libbpf_sys::bpf_map__btf_value_type_id(m),
            }
        }
    }

    /// Map-creation options carrying this BTF (none when the object has no BTF fd).
    fn opts(self, map_flags: u32) -> libbpf_sys::bpf_map_create_opts {
        let (fd, key, value) = if self.fd > 0 {
            (self.fd, self.key, self.value)
        } else {
            (0, 0, 0)
        };
        libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags,
            btf_fd: fd,
            btf_key_type_id: key,
            btf_value_type_id: value,
            ..Default::default()
        }
    }
}
