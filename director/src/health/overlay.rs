//! Health applied to a table: demoted backends are treated as draining, so in each row where
//! one is primary the row's first healthy backend takes its place and it stays in the hop list
//! (its established flows keep reaching it by second chance); a row whose every entry is
//! demoted gets the first healthy backend of its whole ranking as primary. Only rows where a
//! demoted backend was primary change.
//!
//! The published table's rankings are kept in a [`Planner`], so an overlay costs a copy of the
//! rankings and one pass over the rows, not a rebuild.

use std::collections::BTreeSet;

use tablegen::config::State;
use tablegen::table::{Planner, Table};

/// The table to install for `published` with `demoted` (backend names) treated as draining.
/// Backends already draining or inactive by the operator's config are left as they are.
pub fn overlay(published: &Planner, demoted: &BTreeSet<String>) -> Table {
    if demoted.is_empty() {
        return published.table();
    }
    let mut p = published.clone();
    for (i, b) in published.service().backends.iter().enumerate() {
        if demoted.contains(&b.name) && matches!(b.state, State::Active | State::Filling) {
            p.set_state(i, State::Draining);
        }
    }
    p.table()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tablegen::config::{Config, Service};

    /// A service of `n` equal backends `b0`.. with 2^10 rows, as backends.yaml says it.
    fn service(n: usize) -> Service {
        let mut text = String::from(
            "services:\n  - name: web\n    hash_key: 01010101010101010101010101010101\n    seed: 02020202020202020202020202020202\n    table_bits: 10\n    binds: []\n    backends:\n",
        );
        for i in 0..n {
            text.push_str(&format!(
                "      - {{ name: b{i}, address: 10.0.0.{} }}\n",
                i + 1
            ));
        }
        let mut c = Config::parse(std::path::Path::new("test.yaml"), &text).unwrap();
        c.services.remove(0)
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_demoted_primary_moves_behind_the_next_healthy_backend_and_nothing_else_moves() {
        let p = Planner::new(service(5));
        let published = p.table();
        assert_eq!(overlay(&p, &BTreeSet::new()), published);
        let t = overlay(&p, &names(&["b1"]));
        let mut moved = 0;
        for r in 0..t.rows {
            let (old, new) = (published.row(r), t.row(r));
            if old[0] == 1 {
                moved += 1;
                assert_eq!(new, [old[1], 1], "row {r}: demoted, kept second");
            } else {
                assert_eq!(old, new, "row {r}");
            }
        }
        assert!(moved > 0);
        assert_ne!(t.checksum, published.checksum);
    }

    /// When primary and secondary are both unhealthy, the first healthy backend of the row's
    /// whole ranking is primary: never an unhealthy one while a healthy one exists.
    #[test]
    fn rows_whose_primary_and_secondary_are_both_unhealthy_reach_a_healthy_backend() {
        let p = Planner::new(service(5));
        let published = p.table();
        let down = names(&["b0", "b1"]);
        let t = overlay(&p, &down);
        let mut both = 0;
        for r in 0..t.rows {
            let old = published.row(r);
            let new = t.row(r);
            assert!(new[0] >= 2, "row {r}: unhealthy primary {new:?}");
            if old[0] < 2 && old[1] < 2 {
                both += 1;
                assert_eq!(
                    new[1], old[0],
                    "row {r}: the old primary stays as second hop"
                );
            }
        }
        assert!(both > 0, "no row had both unhealthy; pick other names");
    }

    #[test]
    fn the_operators_own_states_are_kept() {
        let mut s = service(4);
        s.backends[2].state = State::Draining;
        let p = Planner::new(s);
        // Demoting a draining backend changes nothing; a demoted active one moves.
        assert_eq!(overlay(&p, &names(&["b2"])), p.table());
        assert_ne!(overlay(&p, &names(&["b3"])), p.table());
    }
}
