//! Bit-for-bit determinism: fixed configs must give these exact versions and checksums on
//! every machine, build and run. A change here changes every director's table: only with a
//! deliberate, documented algorithm change (and a new table format or seed-migration note).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use tablegen::config::{Backend, Config, State};
use tablegen::report::hex64;
use tablegen::table::{build, build_all};

#[test]
fn small_config_tables_are_stable() {
    let text = include_str!("data/two-services.yaml");
    let c = Config::parse(Path::new("two-services.yaml"), text).unwrap();
    let got: Vec<(String, String, String)> = build_all(&c)
        .iter()
        .map(|t| (t.service.clone(), hex64(t.version), hex64(t.checksum)))
        .collect();
    let want = GOLDEN_SMALL;
    let got_ref: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got_ref, want);
}

/// A 2^16-row table with 100 weighted backends exercises the whole score path (permutation,
/// the IEEE-only logarithm, weighted comparison, ties) at full size.
#[test]
fn large_weighted_table_is_stable() {
    let text = include_str!("data/two-services.yaml");
    let mut s = Config::parse(Path::new("x"), text)
        .unwrap()
        .services
        .remove(0);
    s.table_bits = 16;
    s.hops = 2;
    s.backends = (0..100)
        .map(|i| Backend {
            name: format!("node-{i:03}"),
            address: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)),
            weight: 1 + i % 5,
            state: if i == 7 {
                State::Draining
            } else {
                State::Active
            },
        })
        .collect();
    let t = build(&s);
    assert_eq!(hex64(t.checksum), GOLDEN_LARGE);
}

const GOLDEN_SMALL: [(&str, &str, &str); 2] = [
    ("web", "4b9d63d5a7fd0a87", "d006c1ed11ac06ca"),
    ("dns", "2763feb6cfbce47c", "1f0b7a2dc78df33e"),
];
const GOLDEN_LARGE: &str = "a585cb8ded64585b";
