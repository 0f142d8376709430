//! Compiles the lab's XDP pass program (bpf/xdp_pass.bpf.c) with clang into OUT_DIR; the
//! library embeds the object and hands it to `ip link set ... xdp obj` at run time.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let src = "bpf/xdp_pass.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let obj = out.join("xdp_pass.o");
    let status = Command::new("clang")
        .args(["-target", "bpf"])
        .args(bpf_build::clang_args(&[]))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .status()
        .expect("clang is needed to build the lab's XDP pass program (run scripts/setup.sh)");
    assert!(status.success(), "clang failed on {src}");
}
