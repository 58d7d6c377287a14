//! The client's address: the socket peer, unless that peer is one of `server.trusted_proxies`; then
//! `X-Forwarded-For` is walked from the right (the hop nearest to tollgate first) past every trusted hop,
//! and the first untrusted address is the client. The leftmost entry is whatever the client chose to
//! write and is never taken for its own sake. A malformed entry ends the walk at the last good address:
//! everything left of it could have been written by anyone. IPv4-mapped IPv6 addresses count as IPv4.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::auth::policy::canonical;

/// The most `X-Forwarded-For` entries walked; a longer chain stops at the last one walked.
const MAX_HOPS: usize = 32;

/// The client address of a request that arrived from `peer`, with `trusted` the configured proxies.
/// Called once per request by the data plane and by the management login throttle.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = canonical(peer);
    if !is_trusted(client, trusted) {
        return client;
    }
    // Every header line, each a comma list, read right to left as one list.
    let entries = headers.get_all("x-forwarded-for").iter().rev().flat_map(|line| {
        let text = line.to_str().ok();
        let parts: Vec<&str> = text.map_or_else(|| vec![""], |t| t.split(',').collect());
        parts.into_iter().rev()
    });
    for entry in entries.take(MAX_HOPS) {
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            return client;
        }
    }
    client
}

/// The client address of a request by its extensions (the socket peer, [`crate::auth::ClientAddr`]) and
/// headers; `None` for a request that came through no socket (tests calling a handler directly).
pub fn of_request(extensions: &http::Extensions, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    extensions.get::<crate::auth::ClientAddr>().map(|peer| client_ip(peer.0.ip(), headers, trusted))
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", http::HeaderValue::from_str(line).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = headers(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &nets(&["10.0.0.0/8"])), ip("9.9.9.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_walk_goes_right_to_left_past_trusted_hops_only() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The spoofed leftmost entry is never reached: 2.2.2.2 is the first untrusted hop from the right.
        let h = headers(&["6.6.6.6, 2.2.2.2, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2.2.2.2"));
        // Several header lines are one list, the last line nearest.
        let h = headers(&["6.6.6.6", "2.2.2.2", "192.168.1.1, 10.9.9.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2.2.2.2"));
        // Nothing forwarded: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        // Every hop trusted: the leftmost one walked.
        let h = headers(&["10.3.3.3, 10.2.2.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.3.3.3"));
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_last_good_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&["1.1.1.1, garbage, 10.2.2.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.2.2.2"));
        let h = headers(&["1.1.1.1, "]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        let h = headers(&["[2001:db8::1]:443, 10.0.0.5:80"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&["::ffff:5.6.7.8"]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &h, &trusted), ip("5.6.7.8"));
        assert_eq!(client_ip(ip("::ffff:9.9.9.9"), &h, &trusted), ip("9.9.9.9"));
    }
}
