//! The keyed flow hash shared by tablegen (`lookup`) and the director's XDP program.
//!
//! SipHash-1-3 with the service's 128-bit `hash_key`, over a fixed-layout flow key. The BPF
//! implementation in `bpf/include/siphash.h` must produce the same value for the same input;
//! a director test cross-checks both. Why SipHash-1-3: see docs/development/hashing.md.
//!
//! This module must stay pure (no I/O) and must never change its output for a given input:
//! directors of different versions in one ECMP group have to agree on every flow. (The flow
//! key's layout changed once, before the first release: destination first, so a director can
//! keep the SipHash state after it per VIP; see docs/development/hashing.md.)

use std::net::IpAddr;

/// Which flow fields a service hashes (bit set; the same bits as `XDPLB_HASH_*` in abi.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashFields(pub u8);

impl HashFields {
    pub const SRC_IP: u8 = 1;
    pub const SRC_PORT: u8 = 2;
    pub const DST_IP: u8 = 4;
    pub const DST_PORT: u8 = 8;
    pub const ALL: HashFields =
        HashFields(Self::SRC_IP | Self::SRC_PORT | Self::DST_IP | Self::DST_PORT);

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// A flow as the director sees it (client -> VIP direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Split a 128-bit key into SipHash's two little-endian 64-bit halves.
pub fn key_halves(key: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&key[..8]);
    b.copy_from_slice(&key[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

fn sip_init(k0: u64, k1: u64) -> [u64; 4] {
    [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ]
}

/// Absorb whole 8-byte words (the "1" of 1-3: one round per word).
fn sip_compress(v: &mut [u64; 4], data: &[u8]) {
    for c in data.chunks_exact(8) {
        let m = u64::from_le_bytes(c.try_into().unwrap());
        v[3] ^= m;
        sipround(v);
        v[0] ^= m;
    }
}

/// SipHash-1-3 of `data` under key (k0, k1), as specified by Aumasson and Bernstein.
pub fn siphash13(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = sip_init(k0, k1);
    sip_finish(&mut v, data, data.len())
}

/// The SipHash-1-3 state after the whole 8-byte words of `prefix` (its length must be a
/// multiple of 8): `siphash13(k0, k1, prefix ++ rest)` equals `siphash13_from(state, rest,
/// prefix.len() + rest.len())`. What the director keeps per VIP so a packet hashes only the
/// flow's source part.
pub fn siphash13_state(k0: u64, k1: u64, prefix: &[u8]) -> [u64; 4] {
    assert_eq!(prefix.len() % 8, 0, "a prefix of whole words");
    let mut v = sip_init(k0, k1);
    sip_compress(&mut v, prefix);
    v
}

/// Continue from a [`siphash13_state`] with the rest of the message; `total` is the whole
/// message's length.
pub fn siphash13_from(state: [u64; 4], rest: &[u8], total: usize) -> u64 {
    let mut v = state;
    sip_finish(&mut v, rest, total)
}

fn sip_finish(v: &mut [u64; 4], data: &[u8], total: usize) -> u64 {
    sip_compress(v, data);
    let rest = &data[data.len() / 8 * 8..];
    let mut last = (total as u64 & 0xff) << 56;
    for (i, b) in rest.iter().enumerate() {
        last |= u64::from(*b) << (8 * i);
    }
    v[3] ^= last;
    sipround(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sipround(v);
    sipround(v);
    sipround(v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The hash input, destination first; addresses and ports in network byte order, as on the
/// wire; fields the service does not hash are zero:
///
/// - IPv4, 14 bytes: `dst[4] dport[2] 0 0 | src[4] sport[2]`
/// - IPv6, 36 bytes: `dst[16] | src[16] sport[2] dport[2]`
///
/// The part before `|` ([`flow_key_split`]) is one (IPv4) or two (IPv6) whole SipHash words
/// that are the same for every packet to a VIP (and port, for IPv4): the director keeps the
/// state after them ([`siphash13_state`]) and hashes only the rest per packet. Returns the
/// buffer and its length.
pub fn flow_key_bytes(fields: HashFields, flow: &Flow) -> ([u8; 36], usize) {
    let mut buf = [0u8; 36];
    let sport = if fields.has(HashFields::SRC_PORT) {
        flow.sport.to_be_bytes()
    } else {
        [0; 2]
    };
    let dport = if fields.has(HashFields::DST_PORT) {
        flow.dport.to_be_bytes()
    } else {
        [0; 2]
    };
    match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if fields.has(HashFields::DST_IP) {
                buf[0..4].copy_from_slice(&d.octets());
            }
            buf[4..6].copy_from_slice(&dport);
            if fields.has(HashFields::SRC_IP) {
                buf[8..12].copy_from_slice(&s.octets());
            }
            buf[12..14].copy_from_slice(&sport);
            (buf, 14)
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            if fields.has(HashFields::DST_IP) {
                buf[0..16].copy_from_slice(&v6(d).octets());
            }
            if fields.has(HashFields::SRC_IP) {
                buf[16..32].copy_from_slice(&v6(s).octets());
            }
            buf[32..34].copy_from_slice(&sport);
            buf[34..36].copy_from_slice(&dport);
            (buf, 36)
        }
    }
}

/// Where [`flow_key_bytes`]'s destination part ends: 8 (IPv4) or 16 (IPv6) bytes.
pub fn flow_key_split(len: usize) -> usize {
    if len == 14 {
        8
    } else {
        16
    }
}

/// The flow hash: the row is `hash & (rows - 1)`.
pub fn flow_hash(key: &[u8; 16], fields: HashFields, flow: &Flow) -> u64 {
    let (k0, k1) = key_halves(key);
    let (buf, len) = flow_key_bytes(fields, flow);
    siphash13(k0, k1, &buf[..len])
}

/// The outer UDP source port for a flow: constant per flow, spread over 49152..=65535 so that
/// routers (ECMP) and NICs (RSS) spread GUE traffic.
pub fn gue_source_port(hash: u64) -> u16 {
    0xc000 | ((hash >> 32) as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    #[test]
    fn siphash13_matches_reference_implementation() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let (k0, k1) = key_halves(&key);
        for len in 0..64 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
            h.write(&data);
            assert_eq!(siphash13(k0, k1, &data), h.finish(), "len {len}");
        }
    }

    #[test]
    fn unhashed_fields_do_not_matter() {
        let key = [7u8; 16];
        let a = Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: "10.100.0.1".parse().unwrap(),
            sport: 1000,
            dport: 80,
        };
        let b = Flow {
            sport: 2000,
            dport: 443,
            dst: "10.100.0.2".parse().unwrap(),
            ..a
        };
        let src_only = HashFields(HashFields::SRC_IP);
        assert_eq!(flow_hash(&key, src_only, &a), flow_hash(&key, src_only, &b));
        assert_ne!(
            flow_hash(&key, HashFields::ALL, &a),
            flow_hash(&key, HashFields::ALL, &b)
        );
    }

    #[test]
    fn key_layout_is_wire_order_destination_first() {
        let f = Flow {
            src: "1.2.3.4".parse().unwrap(),
            dst: "5.6.7.8".parse().unwrap(),
            sport: 0x0102,
            dport: 0x0304,
        };
        let (buf, len) = flow_key_bytes(HashFields::ALL, &f);
        assert_eq!(&buf[..len], &[5, 6, 7, 8, 3, 4, 0, 0, 1, 2, 3, 4, 1, 2]);
        let f6 = Flow {
            src: "2001:db8::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            ..f
        };
        let (buf, len) = flow_key_bytes(HashFields::ALL, &f6);
        assert_eq!(len, 36);
        assert_eq!(&buf[0..2], &[0xfd, 0]);
        assert_eq!(buf[15], 2);
        assert_eq!(&buf[16..18], &[0x20, 0x01]);
        assert_eq!(buf[31], 1);
        assert_eq!(&buf[32..36], &[1, 2, 3, 4]);
    }

    #[test]
    fn hashing_on_from_the_destination_state_gives_the_same_hash() {
        let (k0, k1) = key_halves(&core::array::from_fn(|i| (i * 7) as u8));
        for (src, dst) in [("192.0.2.1", "10.0.0.1"), ("2001:db8::1", "fd00::1")] {
            let f = Flow {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                sport: 40000,
                dport: 443,
            };
            for fields in 0..16 {
                let (buf, len) = flow_key_bytes(HashFields(fields), &f);
                let split = flow_key_split(len);
                let state = siphash13_state(k0, k1, &buf[..split]);
                assert_eq!(
                    siphash13_from(state, &buf[split..len], len),
                    siphash13(k0, k1, &buf[..len]),
                    "{src} fields {fields}"
                );
            }
        }
    }
}
