//! ICMP "fragmentation needed" (IPv4) and "packet too big" (IPv6) about a live flow, as a router
//! on the return path sends them to the VIP when a backend's answer does not fit; and a watcher
//! on a backend that sees which of them arrive there. Path MTU discovery under DSR works only if
//! the director sends such a message to the backend that owns the flow.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Netns, NetnsError};

/// Errors of the ICMP helpers.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    /// Running in the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A raw socket operation failed.
    #[error("raw ICMP socket")]
    Socket(#[from] std::io::Error),
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMP message (without the outer IP header) saying that the packet `from` → `to` (a TCP
/// segment the backend sent from the VIP to the client) did not fit `mtu`.
pub fn too_big_message(from: SocketAddr, to: SocketAddr, mtu: u16) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(8);
    tcp.extend_from_slice(&from.port().to_be_bytes());
    tcp.extend_from_slice(&to.port().to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // sequence number
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
            ip[2..4].copy_from_slice(&(mtu + 100).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut m = vec![3, 4, 0, 0, 0, 0];
            m.extend_from_slice(&mtu.to_be_bytes());
            m.extend_from_slice(&ip);
            m.extend_from_slice(&tcp);
            let c = checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            m
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(mtu + 100).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            // Type 2 (packet too big); the kernel fills in the ICMPv6 checksum.
            let mut m = vec![2, 0, 0, 0];
            m.extend_from_slice(&u32::from(mtu).to_be_bytes());
            m.extend_from_slice(&ip);
            m.extend_from_slice(&tcp);
            m
        }
        _ => panic!("one address family per flow"),
    }
}

fn raw_socket(family: IpAddr) -> std::io::Result<Socket> {
    if family.is_ipv4() {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
    } else {
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
    }
}

/// Sends, from inside `ns`, the "too big" message about the flow `vip` ← `client` to the VIP.
pub fn send_too_big(
    ns: &Netns,
    vip: SocketAddr,
    client: SocketAddr,
    mtu: u16,
) -> Result<(), IcmpError> {
    let msg = too_big_message(vip, client, mtu);
    ns.run(move || -> std::io::Result<()> {
        let s = raw_socket(vip.ip())?;
        let to = SockAddr::from(SocketAddr::new(vip.ip(), 0));
        s.send_to(&msg, &to)?;
        Ok(())
    })??;
    Ok(())
}

/// A raw ICMP socket in a backend's namespace, collecting the "too big" messages that arrive.
#[derive(Debug)]
pub struct TooBigWatch {
    socket: Socket,
    v6: bool,
}

impl TooBigWatch {
    /// Starts watching in `ns` for messages of `family`'s kind (the VIP's family).
    pub fn start(ns: &Netns, family: IpAddr) -> Result<Self, IcmpError> {
        let socket = ns.run(move || raw_socket(family))??;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            v6: family.is_ipv6(),
        })
    }

    /// The client ports quoted by the "too big" messages that arrived so far (within `wait`).
    pub fn quoted_client_ports(&self, wait: Duration) -> Vec<u16> {
        let mut ports = Vec::new();
        let start = Instant::now();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    // SAFETY: recv initialised the first n bytes.
                    let b: Vec<u8> = buf[..n]
                        .iter()
                        .map(|x| unsafe { x.assume_init() })
                        .collect();
                    if let Some(p) = self.parse(&b) {
                        ports.push(p);
                    }
                }
                Err(_) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return ports,
            }
        }
    }

    fn parse(&self, b: &[u8]) -> Option<u16> {
        if self.v6 {
            // Raw ICMPv6 sockets get the message without the IPv6 header.
            (b.first() == Some(&2) && b.len() >= 52).then(|| u16::from_be_bytes([b[50], b[51]]))
        } else {
            let ihl = usize::from(b.first()? & 0x0f) * 4;
            let icmp = b.get(ihl..)?;
            if icmp.len() < 8 + 20 + 4 || icmp[0] != 3 || icmp[1] != 4 {
                return None;
            }
            let q = &icmp[8..];
            let qihl = usize::from(q[0] & 0x0f) * 4;
            Some(u16::from_be_bytes([*q.get(qihl + 2)?, *q.get(qihl + 3)?]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_message_checksums_verify() {
        let m = too_big_message(
            "10.100.0.1:80".parse().unwrap(),
            "10.200.1.2:40000".parse().unwrap(),
            1400,
        );
        assert_eq!(checksum(&m), 0);
        assert_eq!(checksum(&m[8..28]), 0);
        assert_eq!(u16::from_be_bytes([m[28 + 2], m[28 + 3]]), 40000);
    }
}
