//! The redirector's program loads into the running kernel through the daemon's own code
//! (`datapath::load`), and what the verifier reports about it. The kernel test matrix
//! (`kernels/run.sh`) runs this before the packet tests on every kernel it boots, so a kernel
//! that refuses the program says so here first.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::libbpf_sys;
use redirector::datapath;

#[test]
fn the_redirector_program_loads() {
    let mut obj = MaybeUninit::uninit();
    let skel = datapath::load(&mut obj, 19523, None).expect("load the redirector program");
    let prog = &skel.progs.redirector;
    // SAFETY: bpf_prog_info is plain data; zero is its empty value.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: a valid program fd, and info/len describe a buffer of len bytes.
    let rc = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(prog.as_fd().as_raw_fd(), &mut info, &mut len)
    };
    assert_eq!(rc, 0, "bpf_prog_get_info_by_fd");
    assert_eq!(info.type_, libbpf_sys::BPF_PROG_TYPE_SCHED_CLS);
    assert!(info.xlated_prog_len > 0, "the kernel holds the program");
    // verified_insns: filled by kernels from 5.16 on; 0 before.
    if info.verified_insns > 0 {
        println!(
            "verified_insns redirector redirector {}",
            info.verified_insns
        );
    } else {
        println!("verified_insns redirector redirector not reported by this kernel (< 5.16)");
    }
    println!(
        "xlated_insns redirector redirector {}",
        info.xlated_prog_len / 8
    );
}
