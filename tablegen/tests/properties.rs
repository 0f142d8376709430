//! Property tests of the table invariants (docs/development/table-algorithm.md, "What we need")
//! over random pools: sizes, weights, states,
//! seeds, table sizes and hops. Each property also checks that the incremental `Planner` gives
//! exactly the full build's table.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use tablegen::config::{Backend, Bind, Proto, Service, State};
use tablegen::hash::HashFields;
use tablegen::table::{build, Planner, Table};

fn backend(i: usize, weight: u32, state: State) -> Backend {
    Backend {
        name: format!("b{i}"),
        address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32)),
        weight,
        state,
    }
}

fn service(seed: [u8; 16], bits: u8, hops: u8, backends: Vec<Backend>) -> Service {
    Service {
        name: "svc".into(),
        hash_key: [9; 16],
        seed,
        table_bits: bits,
        hops,
        hash_fields: HashFields::ALL,
        binds: vec![Bind {
            vip: "10.100.0.1".parse().unwrap(),
            proto: Proto::Tcp,
            port_first: 80,
            port_last: 80,
        }],
        backends,
        health: None,
        udp_second_chance: false,
    }
}

/// A random valid service: at most `hops - 1 - reserve` backends in transition, so that
/// `reserve` more transitions stay within the limit.
fn pool(max_n: usize, reserve: usize) -> impl Strategy<Value = Service> {
    (any::<[u8; 16]>(), 8u8..=10, 2u8..=4, 1..=max_n).prop_flat_map(move |(seed, bits, hops, n)| {
        let states = prop::collection::vec(
            prop_oneof![
                6 => Just(State::Active),
                1 => Just(State::Filling),
                1 => Just(State::Draining),
                2 => Just(State::Inactive),
            ],
            n,
        );
        let weights = prop::collection::vec(1u32..=4, n);
        (Just(seed), Just(bits), Just(hops), states, weights).prop_map(
            move |(seed, bits, hops, states, weights)| {
                let limit = usize::from(hops) - 1;
                let mut in_transition = 0;
                let backends = states
                    .into_iter()
                    .zip(weights)
                    .enumerate()
                    .map(|(i, (mut st, w))| {
                        if st.in_transition() {
                            if in_transition + reserve >= limit {
                                st = State::Active;
                            } else {
                                in_transition += 1;
                            }
                        }
                        backend(i, w, st)
                    })
                    .collect();
                service(seed, bits, hops, backends)
            },
        )
    })
}

fn check_rows(s: &Service, t: &Table) -> Result<(), TestCaseError> {
    let eligible = s.backends.iter().filter(|b| b.state.eligible()).count();
    prop_assert_eq!(usize::from(t.width), eligible.min(usize::from(s.hops)));
    prop_assert_eq!(t.entries.len(), t.rows as usize * usize::from(t.width));
    let any_non_draining = s
        .backends
        .iter()
        .any(|b| b.state.eligible() && b.state != State::Draining);
    for r in 0..t.rows {
        let row = t.row(r);
        for (i, &b) in row.iter().enumerate() {
            prop_assert!(
                s.backends[b as usize].state.eligible(),
                "ineligible in row {}",
                r
            );
            prop_assert!(!row[i + 1..].contains(&b), "backend twice in row {}", r);
        }
        if any_non_draining && !row.is_empty() {
            prop_assert!(s.backends[row[0] as usize].state != State::Draining);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rows_are_distinct_eligible_and_deterministic(s in pool(14, 0)) {
        let t = build(&s);
        check_rows(&s, &t)?;
        prop_assert_eq!(&t, &build(&s.clone()));
    }

    #[test]
    fn drain_moves_only_its_primary_rows_and_stays_as_alternate(
        s in pool(12, 1),
        pick in any::<prop::sample::Index>(),
    ) {
        let candidates: Vec<usize> = (0..s.backends.len())
            .filter(|&i| matches!(s.backends[i].state, State::Active))
            .collect();
        prop_assume!(!candidates.is_empty());
        let x = candidates[pick.index(candidates.len())] as u32;
        let before = build(&s);
        let mut planner = Planner::new(s.clone());
        planner.set_state(x as usize, State::Draining);
        let mut drained = s.clone();
        drained.backends[x as usize].state = State::Draining;
        let after = build(&drained);
        check_rows(&drained, &after)?;
        prop_assert_eq!(&planner.table(), &after);
        for r in 0..before.rows {
            let (a, b) = (before.row(r), after.row(r));
            if a[0] == x {
                if a.len() > 1 {
                    prop_assert!(b.contains(&x), "row {}: drained backend left the row", r);
                }
            } else {
                prop_assert_eq!(a, b, "row {} changed although {} was not its primary", r, x);
            }
        }
        // Then take it out completely.
        planner.set_state(x as usize, State::Inactive);
        drained.backends[x as usize].state = State::Inactive;
        let gone = build(&drained);
        check_rows(&drained, &gone)?;
        prop_assert_eq!(&planner.table(), &gone);
        prop_assert!(!gone.entries.contains(&x));
    }

    /// Adding a backend is a transition (GLB adds it as `filling`), so the pool keeps one
    /// transition free; then the property holds whether the new backend is active or filling.
    #[test]
    fn add_keeps_the_old_primary_as_an_alternate(
        s in pool(12, 1),
        weight in 1u32..=4,
        filling in any::<bool>(),
    ) {
        let before = build(&s);
        let n = s.backends.len();
        let state = if filling { State::Filling } else { State::Active };
        let mut grown = s.clone();
        grown.backends.push(backend(n, weight, state));
        let after = build(&grown);
        check_rows(&grown, &after)?;
        let mut planner = Planner::new(s.clone());
        planner.add_backend(backend(n, weight, state));
        prop_assert_eq!(&planner.table(), &after);
        for r in 0..before.rows {
            if before.width == 0 {
                break;
            }
            let (a, b) = (before.row(r), after.row(r));
            if a[0] != b[0] {
                prop_assert!(b.contains(&a[0]), "row {}: old primary lost ({:?} -> {:?})", r, a, b);
            }
        }
    }

    #[test]
    fn weight_changes_match_full_builds(s in pool(10, 0), pick in any::<prop::sample::Index>(), w in 1u32..=6) {
        let x = pick.index(s.backends.len());
        let mut planner = Planner::new(s.clone());
        planner.set_weight(x, w);
        let mut changed = s.clone();
        changed.backends[x].weight = w;
        prop_assert_eq!(planner.table(), build(&changed));
    }

    /// Shares of rows as primary follow the weights: within 10% of the expected count plus four
    /// binomial standard deviations.
    #[test]
    fn primary_shares_follow_weights(
        seed in any::<[u8; 16]>(),
        weights in prop::collection::vec(1u32..=4, 2..=8),
    ) {
        let backends = weights.iter().enumerate().map(|(i, &w)| backend(i, w, State::Active)).collect();
        let s = service(seed, 12, 2, backends);
        let t = build(&s);
        let total: u32 = weights.iter().sum();
        let mut count = vec![0u32; weights.len()];
        for r in 0..t.rows {
            count[t.row(r)[0] as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let p = f64::from(w) / f64::from(total);
            let expected = p * f64::from(t.rows);
            let sigma = (expected * (1.0 - p)).sqrt();
            let tol = 0.1 * expected + 4.0 * sigma;
            prop_assert!(
                (f64::from(count[i]) - expected).abs() <= tol,
                "backend {} weight {}: {} rows, expected {:.0} +- {:.0}", i, w, count[i], expected, tol
            );
        }
    }
}

#[test]
fn four_thousand_backends_build_in_debug() {
    let backends = (0..4096)
        .map(|i| backend(i, 1 + (i % 3) as u32, State::Active))
        .collect();
    let s = service([5; 16], 8, 2, backends);
    let t = build(&s);
    assert_eq!((t.rows, t.width), (256, 2));
    let mut p = Planner::new(s.clone());
    p.set_state(17, State::Draining);
    let mut d = s.clone();
    d.backends[17].state = State::Draining;
    assert_eq!(p.table(), build(&d));
}
