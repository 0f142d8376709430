//! The lab's address plan, in one place. Every address here exists only inside the lab's own
//! network namespaces (RFC 1918 10.200.0.0/16 for links, 10.100.0.0/24 for VIPs, ULA fd00::/8
//! for IPv6), so lab traffic cannot leave the machine.
//!
//! ```text
//! client  eth0 10.200.1.2/24      fd00:200:1::2/64      <-> router to-client .1 / ::1
//! director-i eth0 10.200.10.(4i-2)/30 fd00:200:10:i::2/64 <-> router to-di  10.200.10.(4i-3) / ::1
//! backend-i  eth0 10.200.2.(20+i)/24  fd00:200:2::(20+i)/64 on the router's bridge br-be (.1 / ::1)
//! VIPs    10.100.0.1 and fd00:100::1: TCP 80 and UDP 53
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The IPv4 VIP.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// The IPv6 VIP.
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
/// The TCP service port on both VIPs (and on the backends' own addresses).
pub const TCP_PORT: u16 = 80;
/// The UDP service port on both VIPs (and on the backends' own addresses).
pub const UDP_PORT: u16 = 53;
/// The UDP port where the lab server keeps a connected socket per client, as a QUIC server
/// does (the redirector's UDP second chance looks for those).
pub const UDP_CONNECTED_PORT: u16 = 443;
/// The range the directors' own addresses (the GUE sources) come from.
pub const DIRECTOR_RANGE_V4: &str = "10.200.10.0/24";
/// The IPv6 range the directors' own addresses come from.
pub const DIRECTOR_RANGE_V6: &str = "fd00:200:10::/48";
/// The backend network (second-chance GUE comes from other backends).
pub const BACKEND_NET_V4: &str = "10.200.2.0/24";
/// The backend network, IPv6.
pub const BACKEND_NET_V6: &str = "fd00:200:2::/64";
/// MTU of the links inside the data centre (router, directors, backends): room for the GUE
/// overhead (40 bytes over IPv4, 72 over IPv6 with one hop), as a real deployment has. The
/// client's link stays at 1500. Not 9000: a veth refuses native XDP when its peer's MTU does not
/// fit one page (about 3500 bytes) unless the program handles multi-buffer frames.
pub const INNER_MTU: u32 = 2000;

/// The address family of a test or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The VIP of this family.
    pub fn vip(self) -> IpAddr {
        match self {
            Family::V4 => VIP_V4.into(),
            Family::V6 => VIP_V6.into(),
        }
    }
}

/// The TCP service on the VIP of `family`.
pub fn vip_tcp(family: Family) -> SocketAddr {
    SocketAddr::new(family.vip(), TCP_PORT)
}

/// The UDP service on the VIP of `family`.
pub fn vip_udp(family: Family) -> SocketAddr {
    SocketAddr::new(family.vip(), UDP_PORT)
}

/// The connected-UDP service on the VIP of `family`.
pub fn vip_udp_connected(family: Family) -> SocketAddr {
    SocketAddr::new(family.vip(), UDP_CONNECTED_PORT)
}

/// The client's address.
pub fn client(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 1, 2).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 1, 0, 0, 0, 0, 2).into(),
    }
}

/// The router's address on the client link.
pub fn router_client_side(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 1, 1).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 1, 0, 0, 0, 0, 1).into(),
    }
}

/// Director `i`'s address (1-based): its GUE source.
pub fn director(family: Family, i: usize) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 10, (4 * i - 2) as u8).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 0x10, i as u16, 0, 0, 0, 2).into(),
    }
}

/// The router's address on the link to director `i`.
pub fn router_director_side(family: Family, i: usize) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 10, (4 * i - 3) as u8).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 0x10, i as u16, 0, 0, 0, 1).into(),
    }
}

/// Backend `i`'s own address (1-based).
pub fn backend(family: Family, i: usize) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 2, 20 + i as u8).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 2, 0, 0, 0, 0, 0x20 + i as u16).into(),
    }
}

/// The router's address on the backend network.
pub fn router_backend_side(family: Family) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(10, 200, 2, 1).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x200, 2, 0, 0, 0, 0, 1).into(),
    }
}

/// Prefix length of a link address of `family` on the client or backend network.
pub(crate) fn lan_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 24,
        Family::V6 => 64,
    }
}

/// Prefix length of a director link.
pub(crate) fn director_link_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 30,
        Family::V6 => 64,
    }
}

/// Host prefix length of `family` (/32, /128).
pub(crate) fn host_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// Both families, IPv4 first.
pub const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_reads_as_documented() {
        assert_eq!(director(Family::V4, 1).to_string(), "10.200.10.2");
        assert_eq!(
            router_director_side(Family::V4, 2).to_string(),
            "10.200.10.5"
        );
        assert_eq!(director(Family::V6, 2).to_string(), "fd00:200:10:2::2");
        assert_eq!(backend(Family::V4, 3).to_string(), "10.200.2.23");
        assert_eq!(backend(Family::V6, 1).to_string(), "fd00:200:2::21");
        assert_eq!(VIP_V6.to_string(), "fd00:100::1");
    }
}
