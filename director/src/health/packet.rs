//! The bytes of a GUE health probe: a TCP SYN to a VIP, wrapped in GUE with an empty hop list,
//! as the director's XDP program would send a client's SYN to one backend (no second chance:
//! the probe is about that backend alone), and the parsing of the backend's direct answer.
//!
//! Pure: no sockets, no clocks. The checker (`probe.rs`) sends what this builds over a UDP
//! socket to the backend's GUE port and reads the SYN-ACK (or RST) from a raw socket.

use std::net::IpAddr;

/// GUE private data type of an IPv4 hop list (GLB's) and of an IPv6 one.
const HOPS_IPV4: u16 = 0;
const HOPS_IPV6: u16 = 1;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// One probe's inner TCP flow: from the director's address and a probe port to VIP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub src_port: u16,
    pub vip: IpAddr,
    pub port: u16,
}

/// The UDP payload of a probe: the GUE header, a hop list with no hops (`outer_v6`: the
/// backend is reached over IPv6, so the list's type is the IPv6 one), and the inner SYN (or,
/// with `rst`, the RST that ends the half-open connection the SYN-ACK answered).
pub fn gue_payload(flow: &Flow, seq: u32, outer_v6: bool, rst: bool) -> Vec<u8> {
    let inner = match rst {
        false => tcp_packet(flow, seq, 0, TCP_SYN),
        true => tcp_packet(flow, seq, 0, TCP_RST),
    };
    let proto = if flow.vip.is_ipv4() { 4 } else { 41 };
    let mut out = Vec::with_capacity(8 + inner.len());
    // Version 0, C 0, hlen 1 (the hop list's first word, no addresses), inner protocol, flags 0.
    out.extend_from_slice(&[1, proto, 0, 0]);
    let kind = if outer_v6 { HOPS_IPV6 } else { HOPS_IPV4 };
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // next hop 0, hop count 0
    out.extend_from_slice(&inner);
    out
}

/// An IP packet holding one TCP segment with `flags`, a 20-byte header plus (on a SYN) an MSS
/// option, and correct checksums.
fn tcp_packet(flow: &Flow, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(24);
    tcp.extend_from_slice(&flow.src_port.to_be_bytes());
    tcp.extend_from_slice(&flow.port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    let syn = flags & TCP_SYN != 0;
    let words: u8 = if syn { 6 } else { 5 };
    tcp.push(words << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&(if syn { 64240u16 } else { 0 }).to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if syn {
        // MSS 1220: fits any path, even IPv6 through GUE at an MTU of 1280 + overhead.
        tcp.extend_from_slice(&[2, 4, 0x04, 0xc4]);
    }
    let mut pseudo = Vec::with_capacity(40);
    match (flow.src, flow.vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        }
        (s, d) => {
            pseudo.extend_from_slice(&v6_octets(s));
            pseudo.extend_from_slice(&v6_octets(d));
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        }
    }
    let sum = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    let mut ip = Vec::with_capacity(40 + tcp.len());
    match (flow.src, flow.vip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]); // id 0, DF, TTL 64, TCP
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&v6_octets(s));
            ip.extend_from_slice(&v6_octets(d));
        }
    }
    ip.extend_from_slice(&tcp);
    ip
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The Internet checksum of the concatenation of `parts` (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a backend answered a probe's SYN with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK acknowledging `seq + 1`: something listens on VIP:port behind that backend.
    Listening,
    /// RST: the backend's stack has the VIP but nothing listens on the port.
    Refused,
}

/// A TCP segment as a raw socket hands it over (for IPv4 with its IP header, for IPv6
/// without: the kernel strips it), from `from`: the answer to the probe `flow` whose SYN
/// carried `seq`, if it is one.
pub fn answer(flow: &Flow, seq: u32, from: IpAddr, packet: &[u8]) -> Option<Answer> {
    if from != flow.vip {
        return None;
    }
    let tcp = match from {
        IpAddr::V4(_) => {
            let ihl = usize::from(*packet.first()? & 0x0f) * 4;
            if ihl < 20 || packet.get(9) != Some(&6) {
                return None;
            }
            packet.get(ihl..)?
        }
        IpAddr::V6(_) => packet,
    };
    if tcp.len() < 20 {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let flags = tcp[13];
    if sport != flow.port || dport != flow.src_port {
        return None;
    }
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK && ack == seq.wrapping_add(1) {
        return Some(Answer::Listening);
    }
    if flags & TCP_RST != 0 {
        return Some(Answer::Refused);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::IpSlice;

    fn flow(src: &str, vip: &str) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            src_port: 40001,
            vip: vip.parse().unwrap(),
            port: 80,
        }
    }

    /// The inner packet parses and its checksums verify, for both families.
    #[test]
    fn the_inner_syn_is_a_valid_packet_for_both_families() {
        for (src, vip, proto) in [
            ("10.0.1.1", "10.100.0.1", 4u8),
            ("fd00:1::1", "fd00:100::1", 41),
        ] {
            let f = flow(src, vip);
            let p = gue_payload(&f, 7, false, false);
            assert_eq!(&p[..8], &[1, proto, 0, 0, 0, 0, 0, 0]);
            let ip = IpSlice::from_slice(&p[8..]).unwrap();
            let tcp = etherparse::TcpSlice::from_slice(ip.payload().payload).unwrap();
            assert!(tcp.syn() && !tcp.ack() && !tcp.rst());
            assert_eq!((tcp.source_port(), tcp.destination_port()), (40001, 80));
            assert_eq!(tcp.sequence_number(), 7);
            let expected = match &ip {
                IpSlice::Ipv4(v4) => {
                    let h = v4.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum());
                    tcp.to_header()
                        .calc_checksum_ipv4(&h, tcp.payload())
                        .unwrap()
                }
                IpSlice::Ipv6(v6) => tcp
                    .to_header()
                    .calc_checksum_ipv6(&v6.header().to_header(), tcp.payload())
                    .unwrap(),
            };
            assert_eq!(tcp.checksum(), expected, "{src}");
        }
        // Over an IPv6 outer header the hop list says so.
        let p = gue_payload(&flow("10.0.1.1", "10.100.0.1"), 7, true, false);
        assert_eq!(&p[4..6], &HOPS_IPV6.to_be_bytes());
        // The closing RST has no options.
        let p = gue_payload(&flow("10.0.1.1", "10.100.0.1"), 8, false, true);
        assert_eq!(p.len(), 8 + 20 + 20);
        assert_eq!(p[8 + 20 + 13], TCP_RST);
    }

    #[test]
    fn only_the_matching_syn_ack_or_rst_is_an_answer() {
        let f = flow("10.0.1.1", "10.100.0.1");
        let vip: IpAddr = f.vip;
        // A SYN-ACK as the backend's stack sends it, with an IPv4 header in front.
        let mut reply = tcp_packet(
            &Flow {
                src: f.vip,
                src_port: 80,
                vip: f.src,
                port: 40001,
            },
            1000,
            8,
            TCP_SYN | TCP_ACK,
        );
        assert_eq!(answer(&f, 7, vip, &reply), Some(Answer::Listening));
        assert_eq!(answer(&f, 6, vip, &reply), None, "acks another probe's seq");
        assert_eq!(answer(&f, 7, f.src, &reply), None, "not from the VIP");
        reply[20 + 13] = TCP_RST | TCP_ACK;
        assert_eq!(answer(&f, 7, vip, &reply), Some(Answer::Refused));
        reply[20 + 2] = 0;
        assert_eq!(answer(&f, 7, vip, &reply), None, "another port");
        assert_eq!(answer(&f, 7, vip, &reply[..30]), None, "truncated");
        assert_eq!(answer(&f, 7, vip, &[]), None);
    }
}
