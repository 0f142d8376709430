//! A population of short-lived TCP connections: each of a fixed number of slots holds one
//! connection that lives a few seconds, exchanging numbered lines checked as the
//! [`crate::client::Pool`]'s are (same backend throughout, the sequence number back, within the
//! reply timeout), then closes it normally and opens the next. So new connections keep
//! arriving and land where the directors' table of the moment sends them: the traffic a
//! load-following controller steers, with every broken connection recorded.
//!
//! Everything runs on one thread inside the client namespace; every wait is bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::client::{classify, jitter, runtime, Broken};
use crate::netns::{Netns, NetnsError};

/// How a [`Churn`] behaves.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// Where to connect (a VIP and port).
    pub target: SocketAddr,
    /// How many connections are open at once (one per slot).
    pub slots: usize,
    /// Each connection lives a time drawn evenly from this range, then closes normally.
    pub lifetime: (Duration, Duration),
    /// Time between two exchanges on one connection (jittered by ±25 %).
    pub interval: Duration,
    /// How long a connect, and an answer, may take.
    pub timeout: Duration,
}

impl ChurnConfig {
    /// `slots` connections to `target`, each living 1 to 2 s with an exchange every 200 ms,
    /// 3 s timeouts.
    pub fn new(target: SocketAddr, slots: usize) -> Self {
        Self {
            target,
            slots,
            lifetime: (Duration::from_secs(1), Duration::from_secs(2)),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(3),
        }
    }
}

/// What the connections did so far.
#[derive(Debug, Clone, Default)]
pub struct ChurnStats {
    /// Connections that got a first answer, by the backend that gave it.
    pub per_backend: BTreeMap<String, u64>,
    /// Connections open now (answered, not yet ended), by backend.
    pub open_per_backend: BTreeMap<String, u64>,
    /// Connections that lived their time and closed normally.
    pub completed: u64,
    /// Completed exchanges, all connections together.
    pub exchanges: u64,
    /// Every broken connection: its backend ("-" if none answered) and why.
    pub broken: Vec<(String, Broken)>,
}

impl ChurnStats {
    /// Connections that got a first answer.
    pub fn answered(&self) -> u64 {
        self.per_backend.values().sum()
    }
}

impl fmt::Display for ChurnStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spread: Vec<String> = self
            .per_backend
            .iter()
            .map(|(b, n)| format!("{b} {n}"))
            .collect();
        write!(
            f,
            "{} connections (on {}), {} completed, {} exchanges, {} broken",
            self.answered(),
            spread.join(", "),
            self.completed,
            self.exchanges,
            self.broken.len()
        )?;
        if let Some((b, e)) = self.broken.first() {
            write!(f, " (first: on {b}, {e})")?;
        }
        Ok(())
    }
}

/// Short-lived connections, replaced as they end, in the background (see the module docs).
/// Dropping it stops it; [`Churn::stop`] also returns the counts.
#[derive(Debug)]
pub struct Churn {
    stats: Arc<Mutex<ChurnStats>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

impl Churn {
    /// Starts the slots from inside `ns` (their first connections spread over a second).
    pub fn start(ns: &Netns, cfg: ChurnConfig) -> Result<Self, NetnsError> {
        let stats = Arc::new(Mutex::new(ChurnStats::default()));
        let (stop, stop_rx) = watch::channel(false);
        let shared = stats.clone();
        let thread = ns.spawn(move || {
            runtime().block_on(async move {
                let cfg = Arc::new(cfg);
                let step = Duration::from_secs(1)
                    .checked_div(cfg.slots as u32)
                    .unwrap_or_default();
                let mut tasks = tokio::task::JoinSet::new();
                for slot in 0..cfg.slots {
                    tasks.spawn(run_slot(slot, cfg.clone(), shared.clone(), stop_rx.clone()));
                    tokio::time::sleep(step).await;
                }
                while tasks.join_next().await.is_some() {}
            })
        })?;
        Ok(Self {
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// The counts right now.
    pub fn stats(&self) -> ChurnStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops every slot (each connection closes normally) and returns the counts.
    pub fn stop(mut self) -> ChurnStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run_slot(
    slot: usize,
    cfg: Arc<ChurnConfig>,
    stats: Arc<Mutex<ChurnStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (slot as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    while !*stop.borrow() {
        let (min, max) = cfg.lifetime;
        // jitter() spreads over [0.75, 1.25) of its base: map that onto [min, max).
        let f = (jitter(&mut rng, Duration::from_secs(1)).as_secs_f64() - 0.75) * 2.0;
        let life = min + (max.saturating_sub(min)).mul_f64(f.clamp(0.0, 1.0));
        let mut backend: Option<String> = None;
        let result = one_connection(&cfg, life, &mut rng, &stats, &mut backend, &mut stop).await;
        let broke = result.is_err();
        {
            let mut s = stats.lock().unwrap();
            if let Some(n) = backend.as_ref().and_then(|b| s.open_per_backend.get_mut(b)) {
                *n -= 1;
            }
            match result {
                Ok(()) => s.completed += 1,
                Err(e) => s.broken.push((backend.unwrap_or_else(|| "-".into()), e)),
            }
        }
        if broke {
            // A pause before the slot's next connection, so a failure cannot spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One connection: exchanges until `life` has passed (or the churn stops), then a normal close.
async fn one_connection(
    cfg: &ChurnConfig,
    life: Duration,
    rng: &mut u64,
    stats: &Mutex<ChurnStats>,
    backend: &mut Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Broken> {
    let stream = match timeout(cfg.timeout, TcpStream::connect(cfg.target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Broken::Connect(e.to_string())),
        Err(_) => return Err(Broken::Connect("timed out".into())),
    };
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let end = Instant::now() + life;
    let mut line = String::new();
    for seq in 0u64.. {
        if seq > 0 {
            if Instant::now() >= end {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(jitter(rng, cfg.interval)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let req = format!("{seq} churn");
        let exchange = async {
            w.write_all(format!("{req}\n").as_bytes())
                .await
                .map_err(classify)?;
            line.clear();
            let n = r.read_line(&mut line).await.map_err(classify)?;
            if n == 0 || !line.ends_with('\n') {
                return Err(Broken::ShortRead);
            }
            Ok(())
        };
        timeout(cfg.timeout, exchange)
            .await
            .unwrap_or(Err(Broken::Timeout))?;
        let (name, echoed) = line
            .trim_end()
            .split_once(' ')
            .ok_or_else(|| Broken::Garbled(line.clone()))?;
        if echoed != req {
            return Err(Broken::Garbled(line.clone()));
        }
        let mut s = stats.lock().unwrap();
        match backend {
            Some(first) if first != name => {
                return Err(Broken::WrongBackend {
                    first: first.clone(),
                    now: name.to_owned(),
                })
            }
            Some(_) => {}
            None => {
                *backend = Some(name.to_owned());
                *s.per_backend.entry(name.to_owned()).or_default() += 1;
                *s.open_per_backend.entry(name.to_owned()).or_default() += 1;
            }
        }
        s.exchanges += 1;
    }
    let _ = w.shutdown().await;
    // Read to the server's end of stream, so the close is a normal one on both sides.
    line.clear();
    let _ = timeout(cfg.timeout, r.read_line(&mut line)).await;
    Ok(())
}
