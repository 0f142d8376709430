//! Compiles `bpf/redirector.bpf.c` into a libbpf-rs skeleton in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "../bpf/redirector.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    SkeletonBuilder::new()
        .source(SRC)
        // The object itself too: a test reads its BTF (src/counters.rs).
        .obj(out.join("redirector.bpf.o"))
        .clang_args(bpf_build::clang_args(&["../bpf/include"]))
        .build_and_generate(out.join("redirector.skel.rs"))
        .expect("compile bpf/redirector.bpf.c (needs clang and libbpf-dev headers)");
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=../bpf/include");
}
