//! The source address of a request, which every per-address limit keys on: the TCP peer,
//! unless the peer is a trusted proxy (`trusted_proxies`); then the right-most
//! `X-Forwarded-For` hop that is not itself a trusted proxy. A header from anyone else
//! counts for nothing, so a forged one cannot buy a fresh allowance.

use actix_web::HttpMessage;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The resolved address, kept in the request's extensions by the outermost middleware.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddr(pub Option<IpAddr>);

/// Hops looked at, at most: a chain of proxies is short, a forged header may not be.
const MAX_HOPS: usize = 16;

pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: compare and keep
    // it as the IPv4 address it is, or `trusted_proxies` of IPv4 nets would never match.
    let mut source = peer?.to_canonical();
    if !is_trusted(&source) {
        return Some(source);
    }
    // Several headers are one list, in order (RFC 9110 §5.3); walk it from the right.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev().take(MAX_HOPS) {
        // A hop that is not an address ends the walk: what lies left of it is unknowable,
        // and the last trusted proxy stands for it (conservative: one shared allowance).
        let Ok(ip) = hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            break;
        };
        source = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(source)
}

/// The source address of a request that passed the outermost middleware.
pub fn source_addr(req: &impl HttpMessage) -> Option<IpAddr> {
    req.extensions().get::<SourceAddr>().and_then(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_source_whatever_it_forwards() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = resolve(Some(ip("203.0.113.9")), &headers(&["1.2.3.4"]), &trusted);
        assert_eq!(got, Some(ip("203.0.113.9")));
        let got = resolve(Some(ip("203.0.113.9")), &headers(&["1.2.3.4"]), &[]);
        assert_eq!(got, Some(ip("203.0.113.9")));
    }

    #[test]
    fn a_trusted_proxy_names_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged the left-most entry; the proxies appended the rest.
        let got = resolve(
            Some(ip("10.0.0.2")),
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.1"]),
            &trusted,
        );
        assert_eq!(got, Some(ip("198.51.100.7")));
    }

    #[test]
    fn an_ipv4_mapped_peer_of_a_trusted_ipv4_net_is_trusted() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let got = resolve(
            Some(ip("::ffff:127.0.0.1")),
            &headers(&["198.51.100.7"]),
            &trusted,
        );
        assert_eq!(got, Some(ip("198.51.100.7")));
        assert_eq!(
            resolve(Some(ip("::ffff:192.0.2.1")), &headers(&[]), &[]),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_last_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = resolve(Some(ip("10.0.0.2")), &headers(&["junk"]), &trusted);
        assert_eq!(got, Some(ip("10.0.0.2")));
        let got = resolve(Some(ip("10.0.0.2")), &headers(&[]), &trusted);
        assert_eq!(got, Some(ip("10.0.0.2")));
    }
}
