//! The `health:` blocks of `backends.yaml`: the top-level one (defaults for every service) and
//! each service's own, merged field by field into the service's [`Health`].

use std::net::IpAddr;
use std::time::Duration;

use yaml::{Node, Pos};

use super::super::error::ErrorKind;
use super::super::types::*;
use super::{parse_port, Validator};

const HEALTH_FIELDS: &[&str] = &[
    "interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "hold",
    "fail_open_below",
    "announce_min_healthy",
    "checks",
];
const CHECK_FIELDS: &[&str] = &["type", "port", "path", "host", "expect", "vip"];
const CHECK_TYPES: &[&str] = &["tcp", "http", "gue"];

/// A `health:` block as written: each field only if given, the checks with their positions.
#[derive(Clone, Debug, Default)]
pub(super) struct Partial {
    pos: Option<Pos>,
    interval: Option<(Duration, Pos)>,
    timeout: Option<(Duration, Pos)>,
    rise: Option<u32>,
    fall: Option<u32>,
    jitter: Option<u8>,
    hold: Option<Duration>,
    fail_open_below: Option<u8>,
    announce_min_healthy: Option<u32>,
    checks: Option<Vec<PartialCheck>>,
}

#[derive(Clone, Debug)]
struct PartialCheck {
    pos: Pos,
    kind: usize,
    port: Option<u16>,
    path: Option<String>,
    host: Option<String>,
    expect: Vec<u16>,
    vip: Option<IpAddr>,
}

/// `2s`, `500ms`, `1m`, `1.5s`: a positive duration with its unit.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let n = num.trim();
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let v: f64 = n.parse().ok()?;
    let d = Duration::from_secs_f64(v * scale);
    (d >= Duration::from_millis(1) && d <= Duration::from_secs(3600)).then_some(d)
}

/// `10%` or `10`: a share in percent from 0 to 100.
fn parse_percent(s: &str) -> Option<u8> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse::<u8>().ok().filter(|v| *v <= 100)
}

impl Validator<'_> {
    /// A `health:` block, `None` when it has errors (each reported).
    pub(super) fn health_block(&mut self, n: &Node) -> Option<Partial> {
        let f = self.c.fields(n, HEALTH_FIELDS, "health", "`health`")?;
        let mut p = Partial {
            pos: Some(n.start),
            ..Partial::default()
        };
        let mut ok = true;
        for field in ["interval", "timeout", "hold"] {
            let Some(v) = f.get(field) else { continue };
            let Some(s) = self.c.scalar(v, field, "a duration like 2s or 500ms") else {
                ok = false;
                continue;
            };
            match parse_duration(s) {
                Some(d) => match field {
                    "interval" => p.interval = Some((d, v.start)),
                    "timeout" => p.timeout = Some((d, v.start)),
                    _ => p.hold = Some(d),
                },
                None => {
                    self.err(
                        v.start,
                        ErrorKind::BadDuration {
                            field,
                            text: s.to_string(),
                        },
                    );
                    ok = false;
                }
            }
        }
        for field in ["rise", "fall"] {
            let Some(v) = f.get(field) else { continue };
            match self.c.uint(v, field, 1u32, HEALTH_COUNT_MAX) {
                Some(x) if field == "rise" => p.rise = Some(x),
                Some(x) => p.fall = Some(x),
                None => ok = false,
            }
        }
        if let Some(v) = f.get("announce_min_healthy") {
            match self
                .c
                .uint(v, "announce_min_healthy", 0u32, HEALTH_ANNOUNCE_MIN_MAX)
            {
                Some(x) => p.announce_min_healthy = Some(x),
                None => ok = false,
            }
        }
        for field in ["jitter", "fail_open_below"] {
            let Some(v) = f.get(field) else { continue };
            let Some(s) = self.c.scalar(v, field, "a percentage like 10%") else {
                ok = false;
                continue;
            };
            match parse_percent(s) {
                Some(x) if field == "jitter" => p.jitter = Some(x),
                Some(x) => p.fail_open_below = Some(x),
                None => {
                    self.err(
                        v.start,
                        ErrorKind::BadPercent {
                            field,
                            text: s.to_string(),
                        },
                    );
                    ok = false;
                }
            }
        }
        if let Some(v) = f.get("checks") {
            match self.c.seq(v, "checks") {
                Some(items) => {
                    let mut checks = Vec::new();
                    for it in items {
                        match self.check(it) {
                            Some(c) => checks.push(c),
                            None => ok = false,
                        }
                    }
                    p.checks = Some(checks);
                }
                None => ok = false,
            }
        }
        if let (Some((i, _)), Some((t, tpos))) = (p.interval, p.timeout) {
            if t >= i {
                self.err(
                    tpos,
                    ErrorKind::TimeoutNotBelowInterval {
                        timeout: t,
                        interval: i,
                    },
                );
                ok = false;
            }
        }
        ok.then_some(p)
    }

    fn check(&mut self, n: &Node) -> Option<PartialCheck> {
        let f = self
            .c
            .fields(n, CHECK_FIELDS, "health check", "a health check")?;
        let kind = self
            .c
            .required(&f, "type")
            .and_then(|t| self.c.one_of(t, "type", CHECK_TYPES))?;
        let mut ok = true;
        // Fields that do not apply to this type are refused, not ignored.
        let applies: &[&str] = match kind {
            0 => &["type", "port"],
            1 => &["type", "port", "path", "host", "expect"],
            _ => &["type", "port", "vip"],
        };
        for field in CHECK_FIELDS {
            if !applies.contains(field) && f.get(field).is_some() {
                self.err(
                    f.key_pos(field),
                    ErrorKind::CheckFieldNotApplicable {
                        field,
                        check: CHECK_TYPES[kind],
                    },
                );
                ok = false;
            }
        }
        let port = match f.get("port") {
            // A gue check defaults to the service's first bind's port; the others need one.
            None if kind == 2 => None,
            None => {
                self.c.required(&f, "port");
                ok = false;
                None
            }
            Some(p) => {
                let s = self.c.scalar(p, "port", "a port number")?;
                match parse_port(s) {
                    Ok(0) | Err(_) => {
                        self.err(
                            p.start,
                            ErrorKind::BadCheckPort {
                                text: s.to_string(),
                            },
                        );
                        ok = false;
                        None
                    }
                    Ok(v) => Some(v),
                }
            }
        };
        let path = match (kind, f.get("path")) {
            (1, None) => Some("/".to_string()),
            (_, None) => None,
            (_, Some(p)) => {
                let s = self.c.scalar(p, "path", "a path like /healthz")?;
                if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.err(
                        p.start,
                        ErrorKind::BadCheckPath {
                            text: s.to_string(),
                        },
                    );
                    ok = false;
                }
                Some(s.to_string())
            }
        };
        let host = match f.get("host") {
            None => None,
            Some(h) => {
                let s = self.c.scalar(h, "host", "a host name")?;
                if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.err(
                        h.start,
                        ErrorKind::BadCheckHost {
                            text: s.to_string(),
                        },
                    );
                    ok = false;
                }
                Some(s.to_string())
            }
        };
        let mut expect = Vec::new();
        if let Some(e) = f.get("expect") {
            for (s, it) in self.c.scalar_list(e, "expect", "a status code")? {
                match s
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                {
                    Some(c) => expect.push(c),
                    None => {
                        self.err(
                            it.start,
                            ErrorKind::BadStatusCode {
                                text: s.to_string(),
                            },
                        );
                        ok = false;
                    }
                }
            }
        }
        let vip = match f.get("vip") {
            None => None,
            Some(v) => {
                let a = self.address(v, "vip");
                ok &= a.is_some();
                a
            }
        };
        ok.then_some(PartialCheck {
            pos: n.start,
            kind,
            port,
            path,
            host,
            expect,
            vip,
        })
    }

    /// A service's health: its own block over the defaults over the built-in values. `None`
    /// when no block names any check (or `checks: []`): the service is not checked.
    pub(super) fn health_of(
        &mut self,
        defaults: Option<&Partial>,
        own: Option<&Partial>,
        binds: &[Bind],
    ) -> Option<Option<Health>> {
        let d = Partial::default();
        let (d, o) = (defaults.unwrap_or(&d), own.unwrap_or(&d));
        let Some(checks) = o.checks.as_ref().or(d.checks.as_ref()) else {
            return Some(None);
        };
        if checks.is_empty() {
            return Some(None);
        }
        let interval = o.interval.or(d.interval);
        let timeout = o.timeout.or(d.timeout);
        let h = Health {
            interval: interval.map_or(HEALTH_INTERVAL_DEFAULT, |x| x.0),
            timeout: timeout.map_or(HEALTH_TIMEOUT_DEFAULT, |x| x.0),
            rise: o.rise.or(d.rise).unwrap_or(HEALTH_RISE_DEFAULT),
            fall: o.fall.or(d.fall).unwrap_or(HEALTH_FALL_DEFAULT),
            jitter_percent: o.jitter.or(d.jitter).unwrap_or(HEALTH_JITTER_DEFAULT),
            hold: o.hold.or(d.hold).unwrap_or(HEALTH_HOLD_DEFAULT),
            fail_open_below: o
                .fail_open_below
                .or(d.fail_open_below)
                .unwrap_or(HEALTH_FAIL_OPEN_DEFAULT),
            announce_min_healthy: o
                .announce_min_healthy
                .or(d.announce_min_healthy)
                .unwrap_or(HEALTH_ANNOUNCE_MIN_DEFAULT),
            checks: Vec::new(),
        };
        let mut ok = true;
        // One block may set the interval and the other the timeout: check the result, at the
        // timeout's place if it was written, else at the service's block.
        if h.timeout >= h.interval {
            let pos = timeout.map(|t| t.1).or(o.pos).or(d.pos).unwrap_or(Pos {
                line: 1,
                column: 1,
                offset: 0,
            });
            self.err(
                pos,
                ErrorKind::TimeoutNotBelowInterval {
                    timeout: h.timeout,
                    interval: h.interval,
                },
            );
            ok = false;
        }
        let mut out = Vec::with_capacity(checks.len());
        for c in checks {
            out.push(match c.kind {
                0 => HealthCheck::Tcp {
                    port: c.port.unwrap_or_default(),
                },
                1 => HealthCheck::Http {
                    port: c.port.unwrap_or_default(),
                    path: c.path.clone().unwrap_or_else(|| "/".into()),
                    host: c.host.clone(),
                    expect: c.expect.clone(),
                },
                _ => {
                    let first = binds.first();
                    let vip = c.vip.or(first.map(|b| b.vip));
                    let port = c.port.or(first.map(|b| b.port_first).filter(|p| *p != 0));
                    match (vip, port) {
                        (Some(vip), Some(port)) => HealthCheck::Gue { vip, port },
                        _ => {
                            self.err(c.pos, ErrorKind::GueCheckTarget);
                            ok = false;
                            continue;
                        }
                    }
                }
            });
        }
        ok.then_some(Some(Health { checks: out, ..h }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percentages() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        for bad in ["2", "s", "-1s", "0s", "2h", "1e3ms", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_percent("10%"), Some(10));
        assert_eq!(parse_percent("50"), Some(50));
        assert_eq!(parse_percent("101%"), None);
        assert_eq!(parse_percent("-1%"), None);
    }
}
