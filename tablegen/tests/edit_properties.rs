//! In-place edits over randomly written config files (flow and block backends, quoting,
//! comments, odd spacing): the edit changes exactly that backend's state or weight, every other
//! byte of the file survives (one line changed, or one line added for a block backend), and the
//! result is a valid config with nothing else different.

use std::path::Path;

use proptest::prelude::*;
use tablegen::config::{Config, State};
use tablegen::edit::{apply, Change};

#[derive(Clone, Debug)]
struct Spec {
    block: bool,
    weight: Option<u32>,
    state: Option<State>,
    quote: bool,
    comment: bool,
    spaces: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        proptest::option::of(1u32..5),
        proptest::option::of(prop_oneof![Just(State::Active), Just(State::Inactive)]),
        any::<bool>(),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(block, weight, state, quote, comment, spaces)| Spec {
            block,
            weight,
            state,
            quote,
            comment,
            spaces,
        })
}

fn render(specs: &[Spec]) -> String {
    let mut t = String::from(
        "# pools\nservices:\n  - name: web   # main\n    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5\n    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n    binds: []\n    backends:\n",
    );
    for (i, s) in specs.iter().enumerate() {
        let q = |v: &str| {
            if s.quote {
                format!("\"{v}\"")
            } else {
                v.to_string()
            }
        };
        let mut fields = vec![
            format!("name: b{i}"),
            format!("address: {}", q(&format!("10.0.0.{}", i + 1))),
        ];
        if let Some(w) = s.weight {
            fields.push(format!("weight: {w}"));
        }
        if let Some(st) = s.state {
            fields.push(format!("state: {}", q(st.as_str())));
        }
        let comment = if s.comment { "   # note é" } else { "" };
        if s.block {
            t.push_str(&format!("      - {}{comment}\n", fields[0]));
            for f in &fields[1..] {
                t.push_str(&format!("        {f}\n"));
            }
        } else {
            let pad = " ".repeat(s.spaces);
            t.push_str(&format!(
                "      - {{{pad} {} }}{comment}\n",
                fields.join(", ")
            ));
        }
    }
    t.push_str("# end\n");
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn edits_change_one_backend_and_nothing_else(
        specs in prop::collection::vec(spec(), 1..6),
        pick in any::<prop::sample::Index>(),
        change in prop_oneof![
            Just(Change::State(State::Draining)),
            Just(Change::State(State::Filling)),
            Just(Change::State(State::Active)),
            Just(Change::State(State::Inactive)),
            (1u32..9).prop_map(Change::Weight),
        ],
    ) {
        let text = render(&specs);
        let before = Config::parse(Path::new("x"), &text).unwrap();
        let x = pick.index(specs.len());
        let name = format!("b{x}");
        let e = apply(Path::new("x"), &text, None, &name, change).unwrap();
        let after = Config::parse(Path::new("x"), &e.text).unwrap();
        let (b, a) = (&before.services[0], &after.services[0]);
        for (i, (ob, nb)) in b.backends.iter().zip(&a.backends).enumerate() {
            if i == x {
                match change {
                    Change::State(st) => prop_assert_eq!(nb.state, st),
                    Change::Weight(w) => prop_assert_eq!(nb.weight, w),
                }
            } else {
                prop_assert_eq!(ob, nb);
            }
        }
        // Byte-level: at most one line differs, or exactly one line was inserted.
        let (ol, nl): (Vec<&str>, Vec<&str>) = (text.lines().collect(), e.text.lines().collect());
        if nl.len() == ol.len() {
            let diffs = ol.iter().zip(&nl).filter(|(p, q)| p != q).count();
            prop_assert!(diffs <= 1, "{} lines changed:\n{}", diffs, e.text);
            prop_assert_eq!(diffs == 1, e.changed);
        } else {
            prop_assert_eq!(nl.len(), ol.len() + 1);
            prop_assert!(specs[x].block, "a flow backend got a new line:\n{}", e.text);
            let at = ol.iter().zip(&nl).position(|(p, q)| p != q).unwrap_or(ol.len());
            let mut rebuilt = nl.clone();
            rebuilt.remove(at);
            prop_assert_eq!(rebuilt, ol);
        }
        prop_assert!(e.text.ends_with("# end\n"));
    }
}
