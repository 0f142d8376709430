//! The smallest whole-system check: one `xdplb-director` behind the router and two backends
//! running `xdplb-redirector`, all on veths in network namespaces; real TCP connections and UDP
//! requests through the VIPs get their answers, and the redirectors saw the GUE packets. The
//! kernel test matrix (`kernels/run.sh`) runs this in every kernel it boots; the lab's other
//! end-to-end tests (`e2e.rs`) go much further on the host.

use std::path::Path;

use lab::addr::{self, FAMILIES};
use lab::client::{probe_tcp, probe_udp};
use lab::system::{Binaries, System, SystemOptions};
use lab::{LabOptions, Node};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");

#[test]
fn tcp_and_udp_through_one_director_and_two_redirectors() {
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let opts = SystemOptions {
        lab: LabOptions {
            directors: 1,
            backends: 2,
            ..LabOptions::default()
        },
        configured: 2,
        consul: false,
        metrics: false,
    };
    let sys = System::start(bins, opts).expect("start xdplb in the lab");
    let client = sys.lab().ns(Node::Client);
    let mut tcp = 0;
    for f in FAMILIES {
        let t = probe_tcp(&client, addr::vip_tcp(f), 10, 2).unwrap();
        assert_eq!((t.answered(), t.failures()), (10, 0), "{f:?} TCP: {t}");
        let u = probe_udp(&client, addr::vip_udp(f), 10, 2).unwrap();
        assert_eq!((u.answered(), u.failures()), (10, 0), "{f:?} UDP: {u}");
        println!("{f:?}: TCP {t}; UDP {u}");
        tcp += t.answered();
    }
    // Every new connection's SYN came in as GUE and was taken in by a redirector.
    let syn: u64 = (1..=2)
        .map(|i| sys.redirector_counter(i, "syn").unwrap())
        .sum();
    assert!(
        syn >= tcp as u64,
        "redirectors accepted {syn} SYNs for {tcp} connections"
    );
}
