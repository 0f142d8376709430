//! The control law: from one service's backend loads to the weights the controller wants.
//! Pure (no I/O, no clock): the daemon feeds it what Prometheus and Consul said, and it says
//! what to do and why, per backend and for the service. docs/development/load-controller.md
//! explains the law and its parameters.
//!
//! Weights are handled as *factors* of the operator's own weight (factor 1 = the operator's
//! weight), so the bounds (say 0.5x to 2x) are the operator's weight's, whatever the controller
//! did before. The law is multiplicative: a backend at `load` against the service's mean
//! `mean` has its factor multiplied by `(mean / load) ^ gain`, limited to `1 ± max_step` per
//! step and to `[min_factor, max_factor]` overall. It acts only outside a dead band, with
//! hysteresis: a backend at rest starts moving when it is more than `act_band` off the mean,
//! keeps moving the same way until it is within `dead_band`, and reverses only when it is more
//! than `act_band` off on the other side.
//!
//! What makes it change nothing at all (the service is *frozen*: factors kept, never reset):
//! no load data (Prometheus unreachable, an error, too few backends with data), or a fleet-wide
//! overload (more than `overload_share` of the backends above `overloaded_above`: moving load
//! from one overloaded backend to another only spreads the overload, the failure this guards
//! against).

use std::collections::BTreeMap;

use serde::Serialize;

/// Tuning of the law, per service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Exponent applied to `mean / load` per step (0 < gain <= 1): 1 would jump to the ratio
    /// that balances at once if load followed weight instantly; less damps.
    pub gain: f64,
    /// Largest relative change of a factor in one step (0.2 = at most 20 % up or down).
    pub max_step: f64,
    /// Bounds of the factor around the operator's weight.
    pub min_factor: f64,
    pub max_factor: f64,
    /// Relative deviation from the mean under which a moving backend stops.
    pub dead_band: f64,
    /// Relative deviation from the mean above which a backend at rest starts moving (or a
    /// moving one reverses). At least `dead_band`: the gap between them is the hysteresis.
    pub act_band: f64,
    /// A backend with a load above this counts as overloaded (in the units of the query).
    pub overloaded_above: f64,
    /// When more than this share of the backends with data is overloaded, change nothing.
    pub overload_share: f64,
    /// At least this share of the eligible backends must have usable data, or change nothing.
    pub min_data_share: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            gain: 0.5,
            max_step: 0.2,
            min_factor: 0.5,
            max_factor: 2.0,
            dead_band: 0.05,
            act_band: 0.1,
            overloaded_above: f64::INFINITY,
            overload_share: 0.5,
            min_data_share: 0.5,
        }
    }
}

/// Why a [`Params`] is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("gain must be above 0 and at most 1, found {0}")]
    Gain(f64),
    #[error("max_step must be above 0 and at most 1, found {0}")]
    MaxStep(f64),
    #[error(
        "the factor bounds must satisfy 0 < min_factor <= 1 <= max_factor, found {min} and {max}"
    )]
    Bounds { min: f64, max: f64 },
    #[error("the bands must satisfy 0 <= dead_band <= act_band < 1, found {dead} and {act}")]
    Bands { dead: f64, act: f64 },
    #[error("overload_share must be from 0 to 1, found {0}")]
    OverloadShare(f64),
    #[error("min_data_share must be from 0 to 1, found {0}")]
    MinDataShare(f64),
    #[error("overloaded_above must be a number above 0, found {0}")]
    Overloaded(f64),
}

impl Params {
    /// Every parameter in its range.
    pub fn check(&self) -> Result<(), ParamsError> {
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !(unit(self.gain) && self.gain > 0.0) {
            return Err(ParamsError::Gain(self.gain));
        }
        if !(unit(self.max_step) && self.max_step > 0.0) {
            return Err(ParamsError::MaxStep(self.max_step));
        }
        if !(self.min_factor > 0.0
            && self.min_factor <= 1.0
            && self.max_factor >= 1.0
            && self.max_factor.is_finite())
        {
            return Err(ParamsError::Bounds {
                min: self.min_factor,
                max: self.max_factor,
            });
        }
        if !(unit(self.dead_band) && unit(self.act_band))
            || self.dead_band > self.act_band
            || self.act_band >= 1.0
        {
            return Err(ParamsError::Bands {
                dead: self.dead_band,
                act: self.act_band,
            });
        }
        if !unit(self.overload_share) {
            return Err(ParamsError::OverloadShare(self.overload_share));
        }
        if !unit(self.min_data_share) {
            return Err(ParamsError::MinDataShare(self.min_data_share));
        }
        if self.overloaded_above.is_nan() || self.overloaded_above <= 0.0 {
            return Err(ParamsError::Overloaded(self.overloaded_above));
        }
        Ok(())
    }
}

/// One backend's load as the query answered it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Sample {
    Value(f64),
    /// The query returned no series for the backend.
    Missing,
    /// The series' value is NaN or infinite.
    NotANumber,
    /// A negative load (a broken query).
    Negative(f64),
    /// More than one series for the backend (the query does not aggregate per backend).
    Ambiguous,
}

impl Sample {
    /// A load the law can use.
    pub fn usable(self) -> Option<f64> {
        match self {
            Sample::Value(v) => Some(v),
            _ => None,
        }
    }

    /// What a raw value from Prometheus means.
    pub fn from_value(v: f64) -> Sample {
        if !v.is_finite() {
            Sample::NotANumber
        } else if v < 0.0 {
            Sample::Negative(v)
        } else {
            Sample::Value(v)
        }
    }
}

/// Which way a backend's factor last moved: the hysteresis state, kept between steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Motion {
    #[default]
    Rest,
    Up,
    Down,
}

/// One backend as the law sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    /// Takes new flows (active or filling). Others (draining, inactive) are the operator's:
    /// left out of the mean, never changed.
    pub eligible: bool,
    /// The factor now in effect (1 = the operator's weight).
    pub factor: f64,
    pub sample: Sample,
    pub motion: Motion,
}

/// What the law decided for one backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub name: String,
    pub load: Option<f64>,
    /// Relative deviation from the mean ((load - mean) / mean), when both are known.
    pub deviation: Option<f64>,
    pub factor: f64,
    /// The factor wanted after this step (equal to `factor` when left alone).
    pub wanted: f64,
    pub motion: Motion,
    /// Why it moved or not, in words for `status` and the version comment.
    pub reason: String,
}

/// Why a whole service is left alone this step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Freeze {
    /// No load data at all (Prometheus unreachable, an error answer, a timeout).
    NoData { error: String },
    /// Too few eligible backends have usable data to trust the mean.
    TooFewSamples { usable: usize, eligible: usize },
    /// Too many backends overloaded at once: the whole service is short of capacity.
    FleetOverload { overloaded: usize, usable: usize },
    /// Nothing to balance (fewer than two eligible backends).
    NothingToBalance { eligible: usize },
}

impl std::fmt::Display for Freeze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Freeze::NoData { error } => write!(f, "no load data ({error}): weights frozen"),
            Freeze::TooFewSamples { usable, eligible } => write!(
                f,
                "only {usable} of {eligible} eligible backends have usable load data: weights frozen"
            ),
            Freeze::FleetOverload { overloaded, usable } => write!(
                f,
                "{overloaded} of {usable} backends overloaded: a fleet-wide overload, not an \
                 imbalance; weights frozen (moving load would only spread it)"
            ),
            Freeze::NothingToBalance { eligible } => {
                write!(f, "{eligible} eligible backend(s): nothing to balance")
            }
        }
    }
}

/// The law's answer for one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Mean load of the eligible backends with usable data.
    pub mean: Option<f64>,
    /// Set when the service is left alone; then every `wanted` equals its `factor`.
    pub frozen: Option<Freeze>,
    pub backends: Vec<Decision>,
}

impl Step {
    /// True when some backend's factor changes.
    pub fn changes(&self) -> bool {
        self.backends.iter().any(|d| d.wanted != d.factor)
    }

    /// The new motions, for the next step.
    pub fn motions(&self) -> BTreeMap<String, Motion> {
        self.backends
            .iter()
            .map(|d| (d.name.clone(), d.motion))
            .collect()
    }
}

/// One step of the law for one service. `fetch_error`: the load query failed as a whole.
pub fn step(p: &Params, inputs: &[Input], fetch_error: Option<&str>) -> Step {
    let hold = |i: &Input, reason: String| Decision {
        name: i.name.clone(),
        load: i.sample.usable(),
        deviation: None,
        factor: i.factor,
        wanted: i.factor,
        motion: i.motion,
        reason,
    };
    let frozen = |why: Freeze, mean: Option<f64>| {
        let reason = why.to_string();
        Step {
            mean,
            backends: inputs.iter().map(|i| hold(i, reason.clone())).collect(),
            frozen: Some(why),
        }
    };
    if let Some(e) = fetch_error {
        return frozen(
            Freeze::NoData {
                error: e.to_string(),
            },
            None,
        );
    }
    let eligible = inputs.iter().filter(|i| i.eligible).count();
    if eligible < 2 {
        return frozen(Freeze::NothingToBalance { eligible }, None);
    }
    let loads: Vec<f64> = inputs
        .iter()
        .filter(|i| i.eligible)
        .filter_map(|i| i.sample.usable())
        .collect();
    let usable = loads.len();
    if usable < 2 || (usable as f64) < p.min_data_share * eligible as f64 {
        return frozen(Freeze::TooFewSamples { usable, eligible }, None);
    }
    let mean = loads.iter().sum::<f64>() / usable as f64;
    let overloaded = loads.iter().filter(|&&l| l > p.overloaded_above).count();
    if overloaded as f64 > p.overload_share * usable as f64 {
        return frozen(Freeze::FleetOverload { overloaded, usable }, Some(mean));
    }
    if mean <= 0.0 {
        // Idle service: nothing tells the backends apart.
        let backends = inputs
            .iter()
            .map(|i| hold(i, "the service is idle (mean load 0)".into()))
            .collect();
        return Step {
            mean: Some(mean),
            frozen: None,
            backends,
        };
    }
    let backends = inputs
        .iter()
        .map(|i| {
            if !i.eligible {
                return hold(i, "not taking new flows (the operator's state)".into());
            }
            let Some(load) = i.sample.usable() else {
                let why = match i.sample {
                    Sample::Missing => "no series for it in the query's answer".to_string(),
                    Sample::NotANumber => "its load is NaN or infinite".to_string(),
                    Sample::Negative(v) => format!("its load is negative ({v})"),
                    Sample::Ambiguous => {
                        "several series for it (the query must give one per backend)".to_string()
                    }
                    Sample::Value(_) => unreachable!("usable"),
                };
                return hold(i, format!("{why}: weight left alone"));
            };
            decide(p, i, load, mean)
        })
        .collect();
    Step {
        mean: Some(mean),
        frozen: None,
        backends,
    }
}

fn decide(p: &Params, i: &Input, load: f64, mean: f64) -> Decision {
    let dev = (load - mean) / mean;
    // Hysteresis: which way (if any) the backend should move now.
    let want = if dev > 0.0 { Motion::Down } else { Motion::Up };
    let motion = match i.motion {
        m if m == want && dev.abs() > p.dead_band => want,
        _ if dev.abs() > p.act_band => want,
        _ => Motion::Rest,
    };
    let mut d = Decision {
        name: i.name.clone(),
        load: Some(load),
        deviation: Some(dev),
        factor: i.factor,
        wanted: i.factor,
        motion,
        reason: String::new(),
    };
    if motion == Motion::Rest {
        d.reason = if dev.abs() <= p.dead_band {
            format!("{:+.1}% from the mean: within the dead band", dev * 100.0)
        } else {
            format!(
                "{:+.1}% from the mean: under the {:.0}% needed to start moving",
                dev * 100.0,
                p.act_band * 100.0
            )
        };
        return d;
    }
    // (mean / load) ^ gain; an idle backend (load 0) gets the largest step up.
    let ratio = if load <= 0.0 {
        f64::INFINITY
    } else {
        (mean / load).powf(p.gain)
    };
    let ratio = ratio.clamp(1.0 / (1.0 + p.max_step), 1.0 + p.max_step);
    let wanted = (i.factor * ratio).clamp(p.min_factor, p.max_factor);
    d.wanted = wanted;
    let dir = if motion == Motion::Up { "up" } else { "down" };
    d.reason = if wanted == i.factor {
        format!(
            "{:+.1}% from the mean, but at its bound ({:.2}x the operator's weight)",
            dev * 100.0,
            wanted
        )
    } else {
        format!(
            "{:+.1}% from the mean: factor {:.3} -> {:.3} ({dir})",
            dev * 100.0,
            i.factor,
            wanted
        )
    };
    if wanted == i.factor {
        // Pinned at a bound: nothing moves, so it is at rest (a later reversal needs act_band).
        d.motion = Motion::Rest;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            overloaded_above: 0.9,
            ..Params::default()
        }
    }

    fn input(name: &str, load: f64) -> Input {
        Input {
            name: name.into(),
            eligible: true,
            factor: 1.0,
            sample: Sample::from_value(load),
            motion: Motion::Rest,
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_params_are_named() {
        params().check().unwrap();
        let bad = Params {
            dead_band: 0.2,
            act_band: 0.1,
            ..params()
        };
        assert_eq!(
            bad.check(),
            Err(ParamsError::Bands {
                dead: 0.2,
                act: 0.1
            })
        );
        assert!(Params {
            gain: 0.0,
            ..params()
        }
        .check()
        .is_err());
        assert!(Params {
            min_factor: 1.5,
            ..params()
        }
        .check()
        .is_err());
        assert!(Params {
            overloaded_above: f64::NAN,
            ..params()
        }
        .check()
        .is_err());
    }

    #[test]
    fn the_step_is_proportional_and_bounded() {
        let p = params();
        // mean 0.4: a is 50 % over, b and c 25 % under.
        let s = step(
            &p,
            &[input("a", 0.6), input("b", 0.3), input("c", 0.3)],
            None,
        );
        assert!(s.frozen.is_none());
        assert!((s.mean.unwrap() - 0.4).abs() < 1e-12);
        let a = &s.backends[0];
        // (0.4/0.6)^0.5 = 0.816, limited to 1/1.2 = 0.833.
        assert!((a.wanted - 1.0 / 1.2).abs() < 1e-12, "{a:?}");
        assert_eq!(a.motion, Motion::Down);
        let b = &s.backends[1];
        // (0.4/0.3)^0.5 = 1.155, under the 1.2 limit.
        assert!((b.wanted - (0.4f64 / 0.3).sqrt()).abs() < 1e-12, "{b:?}");
        assert_eq!(b.motion, Motion::Up);
        assert!(s.changes());
    }

    #[test]
    fn factors_stay_within_the_bounds() {
        let p = params();
        let mut hot = input("a", 0.8);
        hot.factor = 0.52;
        let mut cold = input("b", 0.1);
        cold.factor = 1.95;
        let s = step(&p, &[hot, cold, input("c", 0.3)], None);
        assert_eq!(s.backends[0].wanted, 0.5);
        assert_eq!(s.backends[1].wanted, 2.0);
        // Pinned: no change, at rest, and the reason says so.
        let mut pinned = input("a", 0.8);
        pinned.factor = 0.5;
        let s = step(&p, &[pinned, input("b", 0.1), input("c", 0.3)], None);
        assert_eq!(s.backends[0].wanted, 0.5);
        assert_eq!(s.backends[0].motion, Motion::Rest);
        assert!(
            s.backends[0].reason.contains("bound"),
            "{:?}",
            s.backends[0]
        );
    }

    #[test]
    fn dead_band_and_hysteresis() {
        let p = params();
        // 8 % over the mean: at rest it does not start (act_band 10 %)...
        let loads = [0.54, 0.46, 0.5];
        let at_rest: Vec<Input> = ["a", "b", "c"]
            .iter()
            .zip(loads)
            .map(|(n, l)| input(n, l))
            .collect();
        let s = step(&p, &at_rest, None);
        assert!(!s.changes(), "{s:?}");
        assert!(s.backends[0].reason.contains("under the 10% needed"));
        // ...but a backend already moving down keeps going until within 5 %.
        let mut moving = at_rest.clone();
        moving[0].motion = Motion::Down;
        let s = step(&p, &moving, None);
        assert!(s.backends[0].wanted < 1.0);
        assert_eq!(s.backends[0].motion, Motion::Down);
        // A backend that moved down and now sits 8 % *under* the mean does not reverse.
        let mut under = at_rest.clone();
        under[1].motion = Motion::Down;
        let s = step(&p, &under, None);
        assert_eq!(s.backends[1].wanted, 1.0);
        assert_eq!(s.backends[1].motion, Motion::Rest);
        // Within the dead band: nothing, whatever the motion.
        let mut close = vec![input("a", 0.51), input("b", 0.49), input("c", 0.5)];
        close[0].motion = Motion::Down;
        let s = step(&p, &close, None);
        assert!(!s.changes());
        assert!(s.backends[0].reason.contains("dead band"));
    }

    #[test]
    fn a_fleet_wide_overload_changes_nothing_and_says_so() {
        let p = params();
        let mut inputs = vec![input("a", 0.95), input("b", 0.99), input("c", 0.5)];
        inputs[0].factor = 0.8;
        let s = step(&p, &inputs, None);
        assert!(matches!(
            s.frozen,
            Some(Freeze::FleetOverload {
                overloaded: 2,
                usable: 3
            })
        ));
        assert!(!s.changes());
        assert_eq!(s.backends[0].wanted, 0.8, "frozen, not reset");
        assert!(s.backends[2].reason.contains("fleet-wide overload"));
        // One overloaded out of three is an imbalance: corrected.
        let s = step(
            &p,
            &[input("a", 0.95), input("b", 0.5), input("c", 0.5)],
            None,
        );
        assert!(s.frozen.is_none());
        assert!(s.backends[0].wanted < 1.0);
    }

    #[test]
    fn no_data_freezes_and_keeps_the_factors() {
        let p = params();
        let mut inputs = vec![input("a", 0.9), input("b", 0.1), input("c", 0.5)];
        inputs[0].factor = 0.7;
        let s = step(&p, &inputs, Some("connection refused"));
        assert!(matches!(s.frozen, Some(Freeze::NoData { .. })));
        assert_eq!(s.backends[0].wanted, 0.7);
        assert!(s.backends[0].reason.contains("connection refused"));
        // Two of three missing: under min_data_share, frozen too.
        inputs[0].sample = Sample::Missing;
        inputs[1].sample = Sample::NotANumber;
        let s = step(&p, &inputs, None);
        assert!(matches!(
            s.frozen,
            Some(Freeze::TooFewSamples {
                usable: 1,
                eligible: 3
            })
        ));
        assert!(!s.changes());
    }

    #[test]
    fn bad_samples_leave_that_backend_alone_with_a_reason() {
        let p = Params {
            min_data_share: 0.4,
            ..params()
        };
        let mut inputs = vec![
            input("a", 0.9),
            input("b", 0.1),
            input("c", 0.5),
            input("d", 0.5),
            input("e", 0.5),
        ];
        inputs[2].sample = Sample::Missing;
        inputs[3].sample = Sample::NotANumber;
        inputs[4].sample = Sample::Negative(-1.0);
        let s = step(&p, &inputs, None);
        assert!(s.frozen.is_none(), "{s:?}");
        // The mean is over a and b only.
        assert!((s.mean.unwrap() - 0.5).abs() < 1e-12);
        assert!(s.backends[0].wanted < 1.0 && s.backends[1].wanted > 1.0);
        for (i, words) in [(2, "no series"), (3, "NaN"), (4, "negative")] {
            assert_eq!(s.backends[i].wanted, 1.0);
            assert!(s.backends[i].reason.contains(words), "{:?}", s.backends[i]);
            assert!(s.backends[i].reason.contains("left alone"));
        }
    }

    #[test]
    fn drained_backends_are_the_operators() {
        let p = params();
        let mut inputs = vec![input("a", 0.9), input("b", 0.1), input("c", 0.5)];
        inputs[0].eligible = false;
        let s = step(&p, &inputs, None);
        assert_eq!(s.backends[0].wanted, 1.0);
        assert!(s.backends[0].reason.contains("operator"));
        assert!((s.mean.unwrap() - 0.3).abs() < 1e-12);
        // Only one eligible left: nothing to balance.
        inputs[1].eligible = false;
        let s = step(&p, &inputs, None);
        assert!(matches!(
            s.frozen,
            Some(Freeze::NothingToBalance { eligible: 1 })
        ));
    }
}
