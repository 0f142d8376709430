//! The controller's `/metrics`: its view as `status` shows it, rendered at scrape time.

use daemon_support::metrics::{Def, Exposition, Kind};

use crate::daemon::Status;

pub const ACTIVE: Def = Def {
    name: "xdplb_controller_active",
    kind: Kind::Gauge,
    help: "1 when this controller holds the cluster's controller lock (the one that publishes).",
    labels: &[],
};
pub const PUBLISHES: Def = Def {
    name: "xdplb_controller_publishes_total",
    kind: Kind::Counter,
    help: "Versions this controller published.",
    labels: &[],
};
pub const LAST_PUBLISH: Def = Def {
    name: "xdplb_controller_last_publish_timestamp_seconds",
    kind: Kind::Gauge,
    help: "Unix time of the newest controller version in the chain of current.",
    labels: &[],
};
pub const STEP_OK: Def = Def {
    name: "xdplb_controller_step_ok",
    kind: Kind::Gauge,
    help: "1 when the last step read Consul and the current version without error.",
    labels: &[],
};
pub const FROZEN: Def = Def {
    name: "xdplb_controller_frozen",
    kind: Kind::Gauge,
    help: "1 when the service's weights are frozen (no data, fleet overload; see status).",
    labels: &["service"],
};
pub const MEAN: Def = Def {
    name: "xdplb_controller_mean_load",
    kind: Kind::Gauge,
    help: "Mean load of the service's eligible backends with usable data.",
    labels: &["service"],
};
pub const LOAD: Def = Def {
    name: "xdplb_controller_backend_load",
    kind: Kind::Gauge,
    help: "Load of a backend as the query answered it (absent without a usable value).",
    labels: &["service", "backend"],
};
pub const WEIGHT: Def = Def {
    name: "xdplb_controller_backend_weight",
    kind: Kind::Gauge,
    help: "The backend's weight in the current version.",
    labels: &["service", "backend"],
};
pub const WANTED: Def = Def {
    name: "xdplb_controller_backend_wanted_weight",
    kind: Kind::Gauge,
    help: "The weight the control law wants for the backend now.",
    labels: &["service", "backend"],
};
pub const FACTOR: Def = Def {
    name: "xdplb_controller_backend_factor",
    kind: Kind::Gauge,
    help: "The backend's weight as a multiple of the operator's weight.",
    labels: &["service", "backend"],
};

/// Every family, for docs and tests.
pub const ALL: &[&Def] = &[
    &ACTIVE,
    &PUBLISHES,
    &LAST_PUBLISH,
    &STEP_OK,
    &FROZEN,
    &MEAN,
    &LOAD,
    &WEIGHT,
    &WANTED,
    &FACTOR,
];

/// The exposition of `s`.
pub fn render(s: &Status) -> String {
    let mut e = Exposition::new();
    e.family(&ACTIVE)
        .sample(&[], f64::from(u8::from(s.role == "active")));
    e.family(&PUBLISHES).sample(&[], s.publishes as f64);
    if let Some(p) = &s.last_publish {
        e.family(&LAST_PUBLISH).sample(&[], p.at_unix as f64);
    }
    e.family(&STEP_OK)
        .sample(&[], f64::from(u8::from(s.last_error.is_none())));
    {
        let mut f = e.family(&FROZEN);
        for svc in &s.services {
            f.sample(&[&svc.name], f64::from(u8::from(svc.frozen.is_some())));
        }
    }
    {
        let mut f = e.family(&MEAN);
        for svc in &s.services {
            if let Some(m) = svc.mean {
                f.sample(&[&svc.name], m);
            }
        }
    }
    {
        let mut f = e.family(&LOAD);
        for svc in &s.services {
            for b in &svc.backends {
                if let Some(l) = b.load {
                    f.sample(&[&svc.name, &b.name], l);
                }
            }
        }
    }
    for (def, get) in [
        (
            &WEIGHT,
            (|b| f64::from(b.weight)) as fn(&crate::daemon::BackendStatus) -> f64,
        ),
        (&WANTED, |b| f64::from(b.wanted_weight)),
        (&FACTOR, |b| b.factor),
    ] {
        let mut f = e.family(def);
        for svc in &s.services {
            for b in &svc.backends {
                f.sample(&[&svc.name, &b.name], get(b));
            }
        }
    }
    e.encode()
}
