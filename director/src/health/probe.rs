//! The probes: `tcp` (a connect), `http` (a GET and its status code) and `gue` (a SYN to the
//! VIP sent through the tunnel as client traffic goes, answered directly by the backend).
//!
//! Each probe returns `Err(why)` in words an operator can act on; none panics or blocks the
//! runtime. Timeouts are the caller's (`tokio::time::timeout` around each probe).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use super::packet::{self, Answer, Flow};

/// `tcp`: a TCP connection to `addr` is accepted. It is closed with a reset (`SO_LINGER` 0),
/// as load balancers' TCP checks commonly do: no FIN exchange, and no connection left in
/// TIME_WAIT on the director for each probe (a thousand backends checked every second would
/// keep some 60 000 of them).
///
/// Six system calls a probe (the runtime's shared `epoll_wait` aside): `socket`, `setsockopt`
/// (the linger, set before connecting), `connect`, the registration with the runtime's epoll
/// and its removal, `close`. The connection's outcome is read from the readiness the
/// runtime's epoll reports: writable without a hang-up is connected, so only a failed probe
/// asks the socket for its error (`SO_ERROR`), to say why.
pub async fn tcp(addr: SocketAddr) -> Result<(), String> {
    let failed = |e: io::Error| format!("connect {addr}: {e}");
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.into()))?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    socket::setsockopt(&fd, socket::sockopt::Linger, &linger).map_err(|e| failed(e.into()))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(failed(e.into())),
    }
    // SAFETY: the AsyncFd owns the descriptor for its whole registration and closes it when
    // dropped; nothing else holds or closes it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }
        .map_err(|e| failed(e.into_parts().1))?;
    let ready = fd.writable().await.map_err(failed)?.ready();
    if !ready.is_write_closed() {
        return Ok(());
    }
    let why = match socket::getsockopt(fd.get_ref(), socket::sockopt::SocketError) {
        Ok(0) => io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed"),
        Ok(errno) => io::Error::from_raw_os_error(errno),
        Err(e) => e.into(),
    };
    Err(failed(why))
}

/// `http`: `GET path` on `addr` answers with one of `expect` (any 2xx when empty).
pub async fn http(addr: SocketAddr, host: &str, path: &str, expect: &[u16]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xdplb-director health check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    // The status line is all we read: a short buffer, whatever the body.
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        let got = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let line = line.lines().next().unwrap_or("");
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path} on {addr}: not an HTTP answer: {line:?}"))?;
    let ok = if expect.is_empty() {
        (200..300).contains(&code)
    } else {
        expect.contains(&code)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("GET {path} on {addr}: status {code}"))
    }
}

/// Waiting GUE probes by (VIP, port, probe port): the SYN's sequence number and where the
/// answer goes.
type Waiting = HashMap<(IpAddr, u16, u16), (u32, oneshot::Sender<Answer>)>;

/// `gue`: what sends GUE probes and reads their answers. One raw TCP socket per address family
/// sees the backends' direct answers (SYN-ACK or RST from the VIP); the director's kernel,
/// which has no socket for the probe's port, answers the SYN-ACK with a RST too, and the
/// prober also ends the half-open connection itself through the tunnel.
#[derive(Debug, Clone)]
pub struct GueProber {
    waiting: Arc<Mutex<Waiting>>,
    gue_port: u16,
}

impl GueProber {
    /// Opens the raw sockets (needs CAP_NET_RAW) and starts their readers on the current
    /// runtime.
    pub fn start(gue_port: u16) -> io::Result<GueProber> {
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let fd = socket::socket(
                family,
                SockType::Raw,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                SockProtocol::Tcp,
            )?;
            // SAFETY: the AsyncFd owns the descriptor for its whole registration and closes it
            // when dropped; nothing else holds or closes it.
            let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
            tokio::spawn(read_answers(fd, waiting.clone()));
        }
        Ok(GueProber { waiting, gue_port })
    }

    /// One probe of `backend` for VIP:port, from `src` (the director's address the backend
    /// answers to; `None`: the one the kernel picks towards the backend, which must then be of
    /// the VIP's family).
    pub async fn probe(
        &self,
        backend: IpAddr,
        vip: IpAddr,
        port: u16,
        src: Option<IpAddr>,
    ) -> Result<(), String> {
        let bind: SocketAddr = match backend {
            IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            IpAddr::V6(_) => "[::]:0".parse().unwrap(),
        };
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("gue to {backend}: {e}"))?;
        let dst = SocketAddr::new(backend, self.gue_port);
        udp.connect(dst)
            .await
            .map_err(|e| format!("gue to {dst}: {e}"))?;
        let src = match src {
            Some(s) => s,
            None => udp
                .local_addr()
                .map_err(|e| format!("gue to {dst}: {e}"))?
                .ip(),
        };
        if src.is_ipv4() != vip.is_ipv4() {
            return Err(format!(
                "gue to {dst}: no {} source address for VIP {vip} (set encap_source_v{} in director.yaml)",
                if vip.is_ipv4() { "IPv4" } else { "IPv6" },
                if vip.is_ipv4() { 4 } else { 6 }
            ));
        }
        let seq = random_u32();
        let (tx, rx) = oneshot::channel();
        let src_port = {
            let mut w = self.waiting.lock().unwrap();
            let mut p = 0;
            for _ in 0..64 {
                let cand = 49152 + (random_u32() % 16384) as u16;
                if !w.contains_key(&(vip, port, cand)) {
                    p = cand;
                    break;
                }
            }
            if p == 0 {
                return Err("gue: no free probe port".into());
            }
            w.insert((vip, port, p), (seq, tx));
            p
        };
        let _unregister = Unregister {
            waiting: &self.waiting,
            key: (vip, port, src_port),
        };
        let flow = Flow {
            src,
            src_port,
            vip,
            port,
        };
        let outer_v6 = backend.is_ipv6();
        udp.send(&packet::gue_payload(&flow, seq, outer_v6, false))
            .await
            .map_err(|e| format!("gue to {dst}: {e}"))?;
        match rx.await {
            Ok(Answer::Listening) => {
                // Take the half-open connection down at once instead of leaving it to the
                // backend's SYN-ACK retries; best effort.
                let _ = udp
                    .send(&packet::gue_payload(
                        &flow,
                        seq.wrapping_add(1),
                        outer_v6,
                        true,
                    ))
                    .await;
                Ok(())
            }
            Ok(Answer::Refused) => Err(format!(
                "gue to {dst}: {vip}:{port} refused (RST): nothing listens there"
            )),
            Err(_) => Err(format!("gue to {dst}: the prober stopped")),
        }
    }
}

/// Takes a probe out of the waiting list however it ends (answer, timeout, error).
struct Unregister<'a> {
    waiting: &'a Mutex<Waiting>,
    key: (IpAddr, u16, u16),
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.waiting.lock().unwrap().remove(&self.key);
    }
}

async fn read_answers(fd: AsyncFd<OwnedFd>, waiting: Arc<Mutex<Waiting>>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let got = guard.try_io(|inner| {
            socket::recvfrom::<SockaddrStorage>(inner.get_ref().as_raw_fd(), &mut buf)
                .map_err(io::Error::from)
        });
        let (n, from) = match got {
            Ok(Ok((n, Some(from)))) => (n, from),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health: reading probe answers");
                continue;
            }
            Err(_would_block) => continue,
        };
        let from = if let Some(a) = from.as_sockaddr_in() {
            IpAddr::V4(a.ip())
        } else if let Some(a) = from.as_sockaddr_in6() {
            IpAddr::V6(a.ip())
        } else {
            continue;
        };
        let pkt = &buf[..n];
        let ports = match from {
            IpAddr::V4(_) => {
                let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
                pkt.get(ihl..ihl + 4)
            }
            IpAddr::V6(_) => pkt.get(..4),
        };
        let Some(ports) = ports else { continue };
        let key = (
            from,
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        );
        let mut w = waiting.lock().unwrap();
        let Some((seq, _)) = w.get(&key) else {
            continue;
        };
        let flow = Flow {
            src: from, // unused by `answer` beyond the ports
            src_port: key.2,
            vip: from,
            port: key.1,
        };
        if let Some(answer) = packet::answer(&flow, *seq, from, pkt) {
            if let Some((_, tx)) = w.remove(&key) {
                let _ = tx.send(answer);
            }
        }
    }
}

/// Not for secrets: probe ports, sequence numbers and jitter only need to differ.
pub fn random_u32() -> u32 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from(std::process::id()));
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection-at-a-time HTTP server on loopback that answers every request with
    /// `status_line` and remembers the request line.
    async fn server(status_line: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = vec![0u8; 1024];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                s.lock()
                    .unwrap()
                    .push(req.lines().next().unwrap_or("").to_string());
                let _ = c
                    .write_all(format!("{status_line}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn http_checks_the_status_against_expect_or_any_2xx() {
        let (ok, seen) = server("HTTP/1.1 204 No Content").await;
        assert_eq!(http(ok, "h", "/healthz", &[]).await, Ok(()));
        assert_eq!(seen.lock().unwrap()[0], "GET /healthz HTTP/1.1");
        assert_eq!(http(ok, "h", "/", &[204]).await, Ok(()));
        let e = http(ok, "h", "/", &[200]).await.unwrap_err();
        assert!(e.ends_with("status 204"), "{e}");

        let (bad, _) = server("HTTP/1.0 503 Service Unavailable").await;
        let e = http(bad, "h", "/", &[]).await.unwrap_err();
        assert!(e.ends_with("status 503"), "{e}");

        let (junk, _) = server("SSH-2.0-OpenSSH").await;
        let e = http(junk, "h", "/", &[]).await.unwrap_err();
        assert!(e.contains("not an HTTP answer"), "{e}");

        // Nothing listens: refused, said as such.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = l.local_addr().unwrap();
        drop(l);
        let e = tcp(gone).await.unwrap_err();
        assert!(e.contains("refused"), "{e}");
        assert_eq!(tcp(ok).await, Ok(()));
    }
}
