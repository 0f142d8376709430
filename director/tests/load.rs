//! The director's program loads into the running kernel through the daemon's own code
//! (`Datapath::open`: the same object, map reuse and pins), and what the verifier reports about
//! it. The kernel test matrix (`kernels/run.sh`) runs this before the packet tests on every
//! kernel it boots, so a kernel that refuses the program says so here first.

mod common;

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use director::datapath::Datapath;
use libbpf_rs::libbpf_sys;

/// `bpf_prog_info` of the program pinned at `path`.
fn prog_info(path: &std::path::Path) -> libbpf_sys::bpf_prog_info {
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libbpf_sys::bpf_obj_get(cpath.as_ptr()) };
    assert!(fd >= 0, "open the pinned program {}", path.display());
    // SAFETY: bpf_prog_info is plain data; zero is its empty value.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: a valid fd, and info/len describe a buffer of len bytes.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    // SAFETY: bpf_obj_get returned a new fd that nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    assert_eq!(rc, 0, "bpf_prog_get_info_by_fd");
    info
}

#[test]
fn the_director_program_loads_and_pins() {
    let fs = common::Bpffs::new();
    let dp = Datapath::open(&fs.pin_dir()).expect("load the director program");
    let info = prog_info(&fs.pin_dir().join("prog"));
    assert_eq!(info.type_, libbpf_sys::BPF_PROG_TYPE_XDP);
    assert!(info.xlated_prog_len > 0, "the kernel holds the program");
    // verified_insns: filled by kernels from 5.16 on; 0 before.
    if info.verified_insns > 0 {
        println!(
            "verified_insns director xdplb_director {}",
            info.verified_insns
        );
    } else {
        println!("verified_insns director xdplb_director not reported by this kernel (< 5.16)");
    }
    println!(
        "xlated_insns director xdplb_director {}",
        info.xlated_prog_len / 8
    );
    drop(dp);
}
