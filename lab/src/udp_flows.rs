//! Long-lived UDP "connections" (flows with a fixed source port), as QUIC clients keep them:
//! each [`UdpFlows`] flow sends a numbered datagram every `interval` and checks the answer,
//! `<backend> <request>`. What matters is whether a flow's backend ever changes mid-stream;
//! a flow that does is counted as moved (with the first and the new backend), and keeps
//! going. A datagram without an answer is resent twice; three losses in a row count as lost.
//!
//! The sockets are opened from a thread inside the client namespace. Everything is bounded:
//! counts are fixed, every wait has a timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::netns::{Netns, NetnsError};

/// One flow's account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowState {
    /// The target it talks to.
    pub target: Option<SocketAddr>,
    /// Who answered first.
    pub first: Option<String>,
    /// Who answers now.
    pub now: Option<String>,
    /// How many times the answering backend changed.
    pub moves: u32,
    /// Answered exchanges.
    pub exchanges: u64,
    /// Exchanges that got no answer after the resends.
    pub lost: u64,
    /// A socket error that ended the flow.
    pub error: Option<String>,
    /// The flow's own address (the client's side of its 4-tuple).
    pub local: Option<SocketAddr>,
    /// The request number of its first answer from another backend.
    pub first_move: Option<u64>,
}

/// The flows' totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowsReport {
    /// Every flow's account, by flow index.
    pub flows: Vec<FlowState>,
}

impl FlowsReport {
    /// Flows that changed backend at least once.
    pub fn moved(&self) -> usize {
        self.flows.iter().filter(|f| f.moves > 0).count()
    }

    /// Exchanges that got no answer, over all flows.
    pub fn lost(&self) -> u64 {
        self.flows.iter().map(|f| f.lost).sum()
    }

    /// Flows ended by a socket error.
    pub fn errors(&self) -> usize {
        self.flows.iter().filter(|f| f.error.is_some()).count()
    }

    /// Flows that have had an answer.
    pub fn answered(&self) -> usize {
        self.flows.iter().filter(|f| f.first.is_some()).count()
    }

    /// Flows per first backend.
    pub fn per_backend(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for f in &self.flows {
            if let Some(b) = &f.first {
                *m.entry(b.clone()).or_default() += 1;
            }
        }
        m
    }

    /// Answered exchanges of the flows that started on `backend`.
    pub fn exchanges_on(&self, backend: &str) -> u64 {
        self.flows
            .iter()
            .filter(|f| f.first.as_deref() == Some(backend))
            .map(|f| f.exchanges)
            .sum()
    }

    /// `first -> now` of every flow that moved.
    pub fn moves(&self) -> Vec<String> {
        self.flows
            .iter()
            .filter(|f| f.moves > 0)
            .map(|f| {
                format!(
                    "{} -> {}: {} -> {} ({} moves, the first at request {})",
                    f.local.map(|a| a.to_string()).unwrap_or_default(),
                    f.target.map(|t| t.to_string()).unwrap_or_default(),
                    f.first.as_deref().unwrap_or("-"),
                    f.now.as_deref().unwrap_or("-"),
                    f.moves,
                    f.first_move.unwrap_or(0)
                )
            })
            .collect()
    }
}

impl fmt::Display for FlowsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} flows, {} answered, {} moved, {} exchanges lost, {} errors, per backend {:?}",
            self.flows.len(),
            self.answered(),
            self.moved(),
            self.lost(),
            self.errors(),
            self.per_backend()
        )
    }
}

/// UDP flows running in the background; [`UdpFlows::stop`] ends them and returns the report.
#[derive(Debug)]
pub struct UdpFlows {
    flows: Arc<Mutex<Vec<FlowState>>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

impl UdpFlows {
    /// Starts one flow per target in `targets` from inside `ns`, each exchanging a datagram
    /// every `interval`.
    pub fn start(
        ns: &Netns,
        targets: Vec<SocketAddr>,
        interval: Duration,
    ) -> Result<Self, NetnsError> {
        let flows = Arc::new(Mutex::new(vec![FlowState::default(); targets.len()]));
        let (stop, stop_rx) = watch::channel(false);
        let shared = flows.clone();
        let thread = ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (id, target) in targets.into_iter().enumerate() {
                    tasks.spawn(flow(id, target, interval, shared.clone(), stop_rx.clone()));
                    // Spread the flows' sends over the interval.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                while tasks.join_next().await.is_some() {}
            })
        })?;
        Ok(Self {
            flows,
            stop,
            thread: Some(thread),
        })
    }

    /// The flows' account right now.
    pub fn report(&self) -> FlowsReport {
        FlowsReport {
            flows: self.flows.lock().unwrap().clone(),
        }
    }

    /// Stops every flow and returns the final account.
    pub fn stop(mut self) -> FlowsReport {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for UdpFlows {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn flow(
    id: usize,
    target: SocketAddr,
    interval: Duration,
    flows: Arc<Mutex<Vec<FlowState>>>,
    mut stop: watch::Receiver<bool>,
) {
    let set = |f: &dyn Fn(&mut FlowState)| f(&mut flows.lock().unwrap()[id]);
    set(&|s| s.target = Some(target));
    let local: SocketAddr = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .unwrap();
    let sock = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return set(&|s| s.error = Some(format!("bind: {}", e.kind()))),
    };
    if let Err(e) = sock.connect(target).await {
        return set(&|s| s.error = Some(format!("connect: {}", e.kind())));
    }
    let me = sock.local_addr().ok();
    set(&|s| s.local = me);
    let mut buf = vec![0u8; 2048];
    let mut seq = 0u64;
    while !*stop.borrow() {
        seq += 1;
        let req = format!("{id} {seq}");
        let mut answer = None;
        for _ in 0..3 {
            if let Err(e) = sock.send(req.as_bytes()).await {
                return set(&|s| s.error = Some(format!("send: {}", e.kind())));
            }
            // Answers to earlier, resent requests may still arrive: skip them.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
            while let Ok(r) = timeout(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
                sock.recv(&mut buf),
            )
            .await
            {
                let Ok(n) = r else { break };
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some((name, echoed)) = text.split_once(' ') {
                    if echoed == req {
                        answer = Some(name.to_owned());
                        break;
                    }
                }
            }
            if answer.is_some() {
                break;
            }
        }
        match answer {
            Some(name) => set(&|s| {
                if s.first.is_none() {
                    s.first = Some(name.clone());
                } else if s.now.as_deref() != Some(name.as_str()) {
                    s.moves += 1;
                    s.first_move.get_or_insert(seq);
                }
                s.now = Some(name.clone());
                s.exchanges += 1;
            }),
            None => set(&|s| s.lost += 1),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}
