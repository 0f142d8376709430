//! The network-namespace fixture of the workspace's root tests (the director's, the
//! redirector's): one namespace per test, named `<prefix>-<pid>-<n>` so tests of several
//! processes run side by side, loopback up, deleted when the value is dropped (a failed
//! assertion included). Used as a dev-dependency; its methods panic on failure, since a
//! fixture that cannot be built fails the test that wanted it.
//!
//! Owns only the namespace; what goes in it (veths, addresses, routes) is each test's.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::Netns;

/// Runs `args[0]` with the rest as arguments and panics, with its stderr, unless it succeeds.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<prefix><pid>-<n>`: a name no other test (of this process or another) has.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace that lives as long as the value.
#[derive(Debug)]
pub struct TestNetns {
    /// The name `ip netns` knows it by.
    pub name: String,
    ns: Netns,
}

impl TestNetns {
    /// A new namespace `<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> TestNetns {
        let name = unique(&format!("{prefix}-"));
        let ns = Netns::create(&name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        TestNetns { name, ns }
    }

    /// `ip -n <name> args...`; returns its output.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns
            .ip(args)
            .unwrap_or_else(|e| panic!("ip -n {} {args:?}: {e}", self.name))
    }

    /// `ip netns exec <name> args...`
    pub fn exec(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.ns
            .sysctl(&[(key, value)])
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", self.name));
    }

    /// Moves the calling thread into this namespace for good (other threads stay where they
    /// are).
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// Runs `f` on a thread that has entered this namespace (its sockets, test runs and `ip`
    /// children all see it) and waits for it; a panic in `f` is re-raised here.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                self.enter();
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e),
            }
        })
    }

    /// The index of interface `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        self.run(|| nix::net::if_::if_nametoindex(dev).expect("interface index"))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.ns.delete();
    }
}
