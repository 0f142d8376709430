//! The client driver: real TCP connections to the VIP, each exchanging data throughout, and a
//! precise account of every connection that broke and how.
//!
//! - [`Pool`]: N long-lived connections, opened over a short ramp, each sending a numbered line
//!   every `interval` (jittered ±25 %) and checking the answer: same backend as the first answer,
//!   same sequence number, within `reply_timeout`. A connection breaks at most once and is then
//!   closed; the kinds are [`Broken`]'s variants.
//! - [`probe_tcp`] / [`probe_udp`]: many short exchanges (one per connection or datagram), counted
//!   per backend: where *new* flows land.
//! - [`throughput`] and the latencies of [`probe_tcp`]: the benchmarks.
//!
//! All sockets are opened from a thread inside the client namespace, so traffic starts where a
//! client would be. Everything is bounded: counts are fixed, every wait has a timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::netns::{Netns, NetnsError};

/// Why a connection counts as broken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Broken {
    /// The connection could not be opened.
    Connect(String),
    /// The connection was reset (RST).
    Reset,
    /// An answer did not come within the reply timeout.
    Timeout,
    /// A different backend answered than at the start of the connection.
    WrongBackend {
        /// Who answered first.
        first: String,
        /// Who answered now.
        now: String,
    },
    /// The connection ended in the middle of an answer, or before it.
    ShortRead,
    /// An answer that does not match the request.
    Garbled(String),
    /// Any other socket error.
    Io(String),
}

impl Broken {
    /// A short name for counting by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Broken::Connect(_) => "connect failed",
            Broken::Reset => "reset",
            Broken::Timeout => "timeout",
            Broken::WrongBackend { .. } => "wrong backend",
            Broken::ShortRead => "short read",
            Broken::Garbled(_) => "garbled answer",
            Broken::Io(_) => "socket error",
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Connect(e) => write!(f, "connect failed: {e}"),
            Broken::WrongBackend { first, now } => {
                write!(f, "wrong backend: started on {first}, now {now}")
            }
            Broken::Garbled(a) => write!(f, "garbled answer: {a:?}"),
            Broken::Io(e) => write!(f, "socket error: {e}"),
            other => f.write_str(other.kind()),
        }
    }
}

pub(crate) fn classify(e: std::io::Error) -> Broken {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => Broken::Reset,
        ErrorKind::UnexpectedEof => Broken::ShortRead,
        ErrorKind::TimedOut => Broken::Timeout,
        _ => Broken::Io(e.to_string()),
    }
}

/// How a [`Pool`] behaves.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Where to connect (a VIP and port, or a backend's own address).
    pub target: SocketAddr,
    /// How many connections.
    pub connections: usize,
    /// Time between two exchanges on one connection (jittered by ±25 %).
    pub interval: Duration,
    /// Spread the connection attempts evenly over this time.
    pub open_over: Duration,
    /// How long a connect may take.
    pub connect_timeout: Duration,
    /// How long an answer may take. TCP retransmits a lost segment after 200 ms at these
    /// round-trip times, so a few seconds tells a lost packet from a broken connection.
    pub reply_timeout: Duration,
    /// Padding bytes per request (the answer echoes them).
    pub payload: usize,
}

impl PoolConfig {
    /// `connections` connections to `target` with the defaults: an exchange every 80 ms,
    /// connections opened over 1 s, 3 s timeouts, 64 bytes of padding.
    pub fn new(target: SocketAddr, connections: usize) -> Self {
        Self {
            target,
            connections,
            interval: Duration::from_millis(80),
            open_over: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            reply_timeout: Duration::from_secs(3),
            payload: 64,
        }
    }
}

/// One connection as seen so far.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// The backend that answered first (None until the first answer).
    pub backend: Option<String>,
    /// Completed exchanges.
    pub exchanges: u64,
    /// Set once, when the connection broke.
    pub broken: Option<Broken>,
    /// The client closed it on purpose ([`Pool::close_backend`]).
    pub closed: bool,
    /// The client's end of the connection (its source address and port).
    pub local: Option<SocketAddr>,
}

/// Counters over a pool's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections started.
    pub started: usize,
    /// Connections that got a first answer.
    pub established: usize,
    /// Connections that got a first answer, by the backend that gave it.
    pub per_backend: BTreeMap<String, usize>,
    /// Completed exchanges, all connections together.
    pub exchanges: u64,
    /// Broken connections.
    pub broken: usize,
    /// Broken connections by kind.
    pub broken_by_kind: BTreeMap<&'static str, usize>,
    /// Broken connections by the backend they had (or "-" if none answered yet).
    pub broken_per_backend: BTreeMap<String, usize>,
    /// Connections the client closed on purpose.
    pub closed: usize,
    /// Connections still open (established, not closed, not broken), by backend.
    pub open_per_backend: BTreeMap<String, usize>,
}

impl PoolStats {
    fn from_conns(conns: &[ConnState]) -> Self {
        let mut s = PoolStats {
            started: conns.len(),
            ..Default::default()
        };
        for c in conns {
            s.exchanges += c.exchanges;
            if let Some(b) = &c.backend {
                s.established += 1;
                *s.per_backend.entry(b.clone()).or_default() += 1;
            }
            if c.closed {
                s.closed += 1;
            } else if let (Some(b), None) = (&c.backend, &c.broken) {
                *s.open_per_backend.entry(b.clone()).or_default() += 1;
            }
            if let Some(e) = &c.broken {
                s.broken += 1;
                *s.broken_by_kind.entry(e.kind()).or_default() += 1;
                let b = c.backend.clone().unwrap_or_else(|| "-".into());
                *s.broken_per_backend.entry(b).or_default() += 1;
            }
        }
        s
    }
}

impl PoolStats {
    /// Connections still open.
    pub fn open(&self) -> usize {
        self.open_per_backend.values().sum()
    }

    /// One short progress line: open connections by backend, exchanges, broken.
    pub fn progress(&self) -> String {
        let spread: Vec<String> = self
            .open_per_backend
            .iter()
            .map(|(b, n)| format!("{}:{n}", b.trim_start_matches("backend-")))
            .collect();
        format!(
            "{} open [{}], {} exchanges, {} broken",
            self.open(),
            spread.join(" "),
            self.exchanges,
            self.broken
        )
    }
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections, {} exchanges, {} broken",
            self.established, self.exchanges, self.broken
        )?;
        if !self.per_backend.is_empty() {
            let spread: Vec<String> = self
                .per_backend
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            write!(f, " (on {})", spread.join(", "))?;
        }
        if !self.broken_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .broken_by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            write!(f, " [broken: {}]", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// Everything a stopped pool knows: the counters and each connection's record, in the order the
/// connections were opened.
#[derive(Debug, Clone)]
pub struct PoolReport {
    /// The counters.
    pub stats: PoolStats,
    /// One record per connection.
    pub conns: Vec<ConnState>,
}

impl PoolReport {
    /// Every broken connection with its index and backend, for a failure message.
    pub fn broken_list(&self) -> Vec<String> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let b = c.backend.as_deref().unwrap_or("-");
                c.broken
                    .as_ref()
                    .map(|e| format!("#{i} on {b} after {} exchanges: {e}", c.exchanges))
            })
            .collect()
    }
}

/// Long-lived connections running in the background (see the module docs). Dropping a pool stops
/// it; [`Pool::stop`] also returns the report.
#[derive(Debug)]
pub struct Pool {
    conns: Arc<Mutex<Vec<ConnState>>>,
    closing: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

impl Pool {
    /// Opens the pool's connections from inside `ns` and starts exchanging.
    pub fn start(ns: &Netns, cfg: PoolConfig) -> Result<Self, NetnsError> {
        let conns = Arc::new(Mutex::new(vec![ConnState::default(); cfg.connections]));
        let (stop, stop_rx) = watch::channel(false);
        let shared = conns.clone();
        let closing = Arc::new(Mutex::new(Vec::new()));
        let closing_shared = closing.clone();
        let thread = ns.spawn(move || {
            runtime().block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                let step = cfg
                    .open_over
                    .checked_div(cfg.connections as u32)
                    .unwrap_or_default();
                let cfg = Arc::new(cfg);
                for id in 0..cfg.connections {
                    if *stop_rx.borrow() {
                        break;
                    }
                    let ctx = ConnCtx {
                        id,
                        cfg: cfg.clone(),
                        conns: shared.clone(),
                        closing: closing_shared.clone(),
                    };
                    tasks.spawn(connection(ctx, stop_rx.clone()));
                    tokio::time::sleep(step).await;
                }
                while tasks.join_next().await.is_some() {}
            })
        })?;
        Ok(Self {
            conns,
            closing,
            stop,
            thread: Some(thread),
        })
    }

    /// The counters right now.
    pub fn stats(&self) -> PoolStats {
        PoolStats::from_conns(&self.conns.lock().unwrap())
    }

    /// Each connection's state right now.
    pub fn conns(&self) -> Vec<ConnState> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until every connection got its first answer or broke, or `within` passed.
    pub fn wait_established(&self, within: Duration) -> PoolStats {
        let start = Instant::now();
        loop {
            let settled = {
                let conns = self.conns.lock().unwrap();
                conns
                    .iter()
                    .all(|c| c.backend.is_some() || c.broken.is_some())
            };
            if settled || start.elapsed() > within {
                return self.stats();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes, normally, every connection on `backend` (its clients finish, as the clients of a
    /// drained backend eventually do). They count as closed, not broken.
    pub fn close_backend(&self, backend: &str) {
        self.closing.lock().unwrap().push(backend.to_owned());
    }

    /// Connections on `backend` that are still open (not closed, not broken).
    pub fn open_on(&self, backend: &str) -> usize {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .filter(|c| c.backend.as_deref() == Some(backend) && c.broken.is_none() && !c.closed)
            .count()
    }

    /// Exchanges so far on connections to `backend`.
    pub fn exchanges_on(&self, backend: &str) -> u64 {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .filter(|c| c.backend.as_deref() == Some(backend))
            .map(|c| c.exchanges)
            .sum()
    }

    /// Stops every connection (each closes normally) and returns the report.
    pub fn stop(mut self) -> PoolReport {
        self.halt();
        let conns = self.conns.lock().unwrap().clone();
        PoolReport {
            stats: PoolStats::from_conns(&conns),
            conns,
        }
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.halt();
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small xorshift for the exchange jitter: deterministic per connection, no dependency.
pub(crate) fn jitter(state: &mut u64, base: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let frac = (*state % 1000) as f64 / 1000.0; // [0, 1)
    base.mul_f64(0.75 + 0.5 * frac)
}

struct ConnCtx {
    id: usize,
    cfg: Arc<PoolConfig>,
    conns: Arc<Mutex<Vec<ConnState>>>,
    closing: Arc<Mutex<Vec<String>>>,
}

async fn connection(ctx: ConnCtx, mut stop: watch::Receiver<bool>) {
    let ConnCtx {
        id,
        cfg,
        conns,
        closing,
    } = ctx;
    let set = |f: &dyn Fn(&mut ConnState)| f(&mut conns.lock().unwrap()[id]);
    let stream = match timeout(cfg.connect_timeout, TcpStream::connect(cfg.target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return set(&|c| c.broken = Some(Broken::Connect(e.to_string()))),
        Err(_) => return set(&|c| c.broken = Some(Broken::Connect("timed out".into()))),
    };
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    set(&|c| c.local = local);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let pad = "x".repeat(cfg.payload);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut first: Option<String> = None;
    let mut line = String::new();
    for seq in 0u64.. {
        if seq > 0 {
            tokio::select! {
                _ = tokio::time::sleep(jitter(&mut rng, cfg.interval)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if first
                .as_ref()
                .is_some_and(|f| closing.lock().unwrap().contains(f))
            {
                set(&|c| c.closed = true);
                break;
            }
        }
        let req = format!("{seq} {pad}");
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
        let result = match timeout(cfg.reply_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Broken::Timeout),
        };
        let verdict = result.and_then(|()| {
            let (name, echoed) = line
                .trim_end()
                .split_once(' ')
                .ok_or_else(|| Broken::Garbled(line.clone()))?;
            if echoed != req {
                return Err(Broken::Garbled(line.clone()));
            }
            match &first {
                Some(f) if f != name => Err(Broken::WrongBackend {
                    first: f.clone(),
                    now: name.to_owned(),
                }),
                _ => Ok(name.to_owned()),
            }
        });
        match verdict {
            Ok(name) => {
                if first.is_none() {
                    first = Some(name.clone());
                }
                set(&|c| {
                    c.backend.get_or_insert_with(|| name.clone());
                    c.exchanges += 1;
                });
            }
            Err(e) => return set(&|c| c.broken = Some(e.clone())),
        }
    }
    let _ = w.shutdown().await;
}

/// Where short exchanges landed.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Answers by backend.
    pub per_backend: BTreeMap<String, usize>,
    /// Failed exchanges by reason.
    pub failed: BTreeMap<String, usize>,
    /// Time of each successful exchange (connect to answer), in completion order.
    pub latencies: Vec<Duration>,
}

impl ProbeReport {
    /// Successful exchanges.
    pub fn answered(&self) -> usize {
        self.per_backend.values().sum()
    }

    /// Failed exchanges.
    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.answered().max(1);
        let spread: Vec<String> = self
            .per_backend
            .iter()
            .map(|(b, n)| format!("{b} {n} ({:.0}%)", 100.0 * *n as f64 / total as f64))
            .collect();
        write!(f, "{} answered: {}", self.answered(), spread.join(", "))?;
        if self.failures() > 0 {
            write!(f, "; {} failed {:?}", self.failures(), self.failed)?;
        }
        Ok(())
    }
}

fn run_in<F, Fut, R>(ns: &Netns, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    ns.run(move || runtime().block_on(f()))
}

async fn one_tcp_request(
    target: SocketAddr,
    req: String,
    limit: Duration,
) -> Result<String, String> {
    let work = async {
        let mut s = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = s.set_nodelay(true);
        s.write_all(format!("{req}\n").as_bytes())
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        let mut r = BufReader::new(&mut s);
        let mut line = String::new();
        r.read_line(&mut line)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        match line.trim_end().split_once(' ') {
            Some((name, echoed)) if echoed == req => Ok(name.to_owned()),
            _ => Err("garbled or short answer".to_owned()),
        }
    };
    timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// `n` short TCP exchanges to `target` (connect, one request, answer, close), `concurrency` at
/// a time, from inside `ns`: where new connections land, and how long each took.
pub fn probe_tcp(
    ns: &Netns,
    target: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Result<ProbeReport, NetnsError> {
    run_in(ns, move || async move {
        let report = Arc::new(Mutex::new(ProbeReport::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (report, next) = (report.clone(), next.clone());
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let r = one_tcp_request(target, "GET /".into(), Duration::from_secs(3)).await;
                    let mut rep = report.lock().unwrap();
                    match r {
                        Ok(name) => {
                            rep.latencies.push(t.elapsed());
                            *rep.per_backend.entry(name).or_default() += 1;
                        }
                        Err(e) => *rep.failed.entry(e).or_default() += 1,
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let r = report.lock().unwrap().clone();
        r
    })
}

/// `n` UDP requests to `target`, each from a socket of its own (a new source port, so a new
/// flow), `concurrency` at a time. The sockets are connected: an answer counts only if it
/// comes from `target` itself (a DSR backend must answer from the VIP).
pub fn probe_udp(
    ns: &Netns,
    target: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Result<ProbeReport, NetnsError> {
    run_in(ns, move || async move {
        let report = Arc::new(Mutex::new(ProbeReport::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (report, next) = (report.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    let r = one_udp_request(target, format!("udp {i}")).await;
                    let mut rep = report.lock().unwrap();
                    match r {
                        Ok(name) => {
                            rep.latencies.push(t.elapsed());
                            *rep.per_backend.entry(name).or_default() += 1;
                        }
                        Err(e) => *rep.failed.entry(e).or_default() += 1,
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let r = report.lock().unwrap().clone();
        r
    })
}

/// The source ports UDP probes take in turn: below the kernel's ephemeral range (32768 and up
/// by default), so no socket that lets the kernel choose (a long-lived flow) ever holds one.
const PROBE_PORTS: std::ops::RangeInclusive<u16> = 10000..=32767;
static NEXT_PROBE_PORT: AtomicUsize = AtomicUsize::new(0);

/// A UDP socket for a new flow to `target`, on a source port no probe of this process has used
/// for as long as possible (22,768 probes). Letting the kernel choose would reuse a port of a
/// probe a few seconds old: a backend that keeps a connected socket per client (as QUIC servers
/// do) still has that client's socket, so the datagram is the old flow's and goes where it
/// went, not where the table sends new flows now (UDP second chance delivers it there, as it
/// should).
async fn fresh_udp_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let span = PROBE_PORTS.len();
    let mut last = None;
    for _ in 0..64 {
        let n = NEXT_PROBE_PORT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PROBE_PORTS.start() + n as u16;
        let local = match target {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], port)),
        };
        match UdpSocket::bind(local).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ErrorKind::AddrInUse.into()))
}

async fn one_udp_request(target: SocketAddr, req: String) -> Result<String, String> {
    let s = fresh_udp_socket(target)
        .await
        .map_err(|e| format!("bind: {}", e.kind()))?;
    s.connect(target)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let mut buf = vec![0u8; 2048];
    // One resend covers a datagram lost to a neighbour lookup on the path's first packet.
    for _ in 0..2 {
        s.send(req.as_bytes())
            .await
            .map_err(|e| format!("send: {}", e.kind()))?;
        if let Ok(r) = timeout(Duration::from_millis(1000), s.recv(&mut buf)).await {
            let n = r.map_err(|e| format!("recv: {}", e.kind()))?;
            let text = String::from_utf8_lossy(&buf[..n]);
            return match text.split_once(' ') {
                Some((name, echoed)) if echoed == req => Ok(name.to_owned()),
                _ => Err("garbled answer".into()),
            };
        }
    }
    Err("timeout".into())
}

/// The result of a single-stream upload.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// The backend that received the stream.
    pub backend: String,
    /// Bytes the backend counted.
    pub bytes: u64,
    /// From connect to the backend's answer.
    pub elapsed: Duration,
}

impl Throughput {
    /// Gigabits per second.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// One TCP stream to `target` sending as fast as it can for `duration`: the backend counts the
/// bytes and answers at the end of the stream.
pub fn throughput(
    ns: &Netns,
    target: SocketAddr,
    duration: Duration,
) -> Result<Result<Throughput, String>, NetnsError> {
    run_in(ns, move || async move {
        let start = Instant::now();
        let mut s = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"SINK\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let chunk = vec![b'x'; 128 * 1024];
        while start.elapsed() < duration {
            s.write_all(&chunk)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        let mut line = String::new();
        let mut r = BufReader::new(&mut s);
        timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        let elapsed = start.elapsed();
        let (name, count) = line.trim_end().split_once(' ').ok_or("garbled answer")?;
        let bytes = count
            .parse()
            .map_err(|_| format!("garbled answer {line:?}"))?;
        Ok(Throughput {
            backend: name.to_owned(),
            bytes,
            elapsed,
        })
    })
}
