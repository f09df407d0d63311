//! The caller's address behind a reverse proxy. The audit trail must name the reader's
//! workstation, not the proxy; `X-Forwarded-For` is believed only when the connection
//! comes from a proxy the configuration trusts (anyone else could write the header).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serializer};

/// Parse a trusted proxy: an address (`10.0.0.5`) or a network (`172.18.0.0/16`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    IpNet::from_str(text)
        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or network"))
}

/// Serde: trusted proxies as a list of strings.
pub fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| parse_net(t).map_err(serde::de::Error::custom))
        .collect()
}

/// Serde: the inverse of [`deserialize_nets`].
pub fn serialize_nets<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(|n| n.to_string()))
}

/// The client of a request from `peer` carrying these `X-Forwarded-For` header values:
/// walking the list from the right (each proxy appends the address it saw), the first
/// address that is not a trusted proxy. Without a trusted peer, or with a malformed
/// header, the peer itself.
pub fn client_addr<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = IpAddr::from_str(hop.trim()) else {
            return Some(client);
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// The client address of an HTTP request, as the audit trail records it.
pub fn request_client(req: &actix_web::HttpRequest, trusted: &[IpNet]) -> Option<String> {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok());
    client_addr(req.peer_addr().map(|a| a.ip()), forwarded, trusted).map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let trusted = vec![
            parse_net("172.18.0.0/16").unwrap(),
            parse_net("10.0.0.5").unwrap(),
        ];
        // Straight from a workstation: the header is the caller's own claim, ignored.
        assert_eq!(
            client_addr(Some(ip("192.168.1.20")), ["1.2.3.4"].into_iter(), &trusted),
            Some(ip("192.168.1.20"))
        );
        // Through the proxy: the address the proxy saw.
        assert_eq!(
            client_addr(
                Some(ip("172.18.0.3")),
                ["192.168.1.20"].into_iter(),
                &trusted
            ),
            Some(ip("192.168.1.20"))
        );
        // A forged left part does not help: the rightmost untrusted hop counts.
        assert_eq!(
            client_addr(
                Some(ip("172.18.0.3")),
                ["6.6.6.6, 192.168.1.20, 10.0.0.5"].into_iter(),
                &trusted
            ),
            Some(ip("192.168.1.20"))
        );
        // A malformed header: the last address known for sure.
        assert_eq!(
            client_addr(Some(ip("172.18.0.3")), ["garbage"].into_iter(), &trusted),
            Some(ip("172.18.0.3"))
        );
        assert_eq!(
            client_addr(Some(ip("172.18.0.3")), std::iter::empty(), &trusted),
            Some(ip("172.18.0.3"))
        );
        assert!(parse_net("not-an-ip").is_err());
    }
}
