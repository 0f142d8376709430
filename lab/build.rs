//! Compiles the lab's XDP pass program (bpf/xdp_pass.bpf.c) with clang into OUT_DIR; the
//! library embeds the object and hands it to `ip link set ... xdp obj` at run time.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let src = "bpf/xdp_pass.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = match arch.as_str() {
        "aarch64" => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    let obj = out.join("xdp_pass.o");
    let status = Command::new("clang")
        .args([
            "-target", "bpf", "-O2", "-g", "-Wall", "-I", multiarch, "-c", src, "-o",
        ])
        .arg(&obj)
        .status()
        .expect("clang is needed to build the lab's XDP pass program (run scripts/setup.sh)");
    assert!(status.success(), "clang failed on {src}");
}
