//! `cargo bench -p xdplb-director --bench health`: the cost of applying a health change to a
//! table, at 1000 backends and 2^16 rows (the overlay the daemon builds before it swaps the
//! table in), from the published table's kept rankings.
//!
//! Prints the median and the 90th percentile of 200 runs per case, in milliseconds.

use std::collections::BTreeSet;
use std::time::Instant;

use director::health::overlay;
use tablegen::config::{Backend, Bind, Proto, Service, State};
use tablegen::hash::HashFields;
use tablegen::table::Planner;

fn service(n: usize, bits: u8) -> Service {
    Service {
        name: "web".into(),
        hash_key: [7; 16],
        seed: [9; 16],
        table_bits: bits,
        hops: 2,
        hash_fields: HashFields::ALL,
        binds: vec![Bind {
            vip: "10.100.0.1".parse().unwrap(),
            proto: Proto::Tcp,
            port_first: 80,
            port_last: 80,
        }],
        backends: (0..n)
            .map(|i| Backend {
                name: format!("backend-{i}"),
                address: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32)),
                weight: 1,
                state: State::Active,
            })
            .collect(),
        health: None,
    }
}

fn main() {
    let t0 = Instant::now();
    let planner = Planner::new(service(1000, 16));
    println!(
        "rankings kept at 1000 backends, 2^16 rows: {:.1} ms (once per reload)",
        t0.elapsed().as_secs_f64() * 1e3
    );
    for demoted in [1usize, 10, 100] {
        let names: BTreeSet<String> = (0..demoted).map(|i| format!("backend-{}", i * 7)).collect();
        let mut ms: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let table = overlay(&planner, &names);
                std::hint::black_box(&table);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "overlay, {demoted:>3} of 1000 backends demoted: median {:.2} ms, p90 {:.2} ms",
            ms[ms.len() / 2],
            ms[ms.len() * 9 / 10]
        );
    }
}
