//! Who the client really is when portico sits behind a trusted proxy: from
//! `Forwarded` (RFC 7239) or `X-Forwarded-For/-Proto/-Host`, believed only
//! when the direct peer is in `forwarded_allow_ips`.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::config::ForwardedAllow;
use crate::request::Peer;

/// The client as the application should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// `REMOTE_ADDR`: an IP address, or "" for a unix-socket peer.
    pub remote_addr: String,
    pub remote_port: Option<u16>,
    /// `wsgi.url_scheme`.
    pub https: bool,
    /// Replaces the Host header when a trusted proxy says so.
    pub host: Option<String>,
}

/// The de-facto forwarding fields, read here and written by the proxy.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub fn client_view(headers: &HeaderMap, peer: &Peer, trust: &ForwardedAllow) -> ClientView {
    let mut view = ClientView {
        remote_addr: peer.ip_text.as_str().to_owned(),
        // Port 0: a uwsgi front named the client without its port.
        remote_port: peer.addr.map(|p| p.port()).filter(|&p| p != 0),
        https: peer.tls,
        host: None,
    };
    if !trust.allows(peer.addr.map(|p| p.ip())) {
        return view;
    }
    // Most requests carry none of them: one pass over the names costs less
    // than looking each up (hashing it), which was 3 % of a WSGI request.
    if !headers.keys().any(is_forwarding) {
        return view;
    }
    if let Some(forwarded) = last_forwarded_element(headers) {
        apply_forwarded(&mut view, &forwarded);
        return view;
    }
    if let Some(ip) =
        header_list(headers, X_FORWARDED_FOR).and_then(|list| rightmost_untrusted(&list, trust))
    {
        view.remote_addr = ip.to_string();
        view.remote_port = None;
    }
    if let Some(proto) = header_list(headers, X_FORWARDED_PROTO).and_then(|l| l.last().cloned()) {
        view.https = proto.eq_ignore_ascii_case("https");
    }
    if let Some(host) = header_list(headers, X_FORWARDED_HOST).and_then(|l| l.last().cloned()) {
        view.host = Some(host);
    }
    view
}

fn is_forwarding(name: &HeaderName) -> bool {
    [
        &http::header::FORWARDED,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
    ]
    .contains(&name)
}

/// Comma-separated values across every field of that name, trimmed.
fn header_list(headers: &HeaderMap, name: HeaderName) -> Option<Vec<String>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The nearest hop that is not one of our trusted proxies; if every hop is
/// trusted, the first.
fn rightmost_untrusted(list: &[String], trust: &ForwardedAllow) -> Option<IpAddr> {
    let ips: Vec<IpAddr> = list.iter().filter_map(|s| parse_node(s)).collect();
    ips.iter()
        .rev()
        .find(|ip| !trust.allows(Some(**ip)) || matches!(trust, ForwardedAllow::Any))
        .or(ips.first())
        .copied()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `"[::1]:80"`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.split(']').next())
        .and_then(|t| t.parse().ok())
}

/// The element added by the proxy nearest to us.
fn last_forwarded_element(headers: &HeaderMap) -> Option<String> {
    header_list(headers, http::header::FORWARDED).and_then(|l| l.last().cloned())
}

fn apply_forwarded(view: &mut ClientView, element: &str) {
    for pair in element.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "for" => {
                if let Some(ip) = parse_node(value) {
                    view.remote_addr = ip.to_string();
                    view.remote_port = None;
                }
            }
            "proto" => view.https = value.eq_ignore_ascii_case("https"),
            "host" => view.host = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn local() -> ForwardedAllow {
        ForwardedAllow::Only(vec!["127.0.0.1".parse().unwrap()])
    }

    #[test]
    fn untrusted_peers_cannot_forge() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let v = client_view(
            &h,
            &Peer::new(Some("10.0.0.9:5000".parse().unwrap()), None, false, None),
            &local(),
        );
        assert_eq!(v.remote_addr, "10.0.0.9");
        assert!(!v.https);
    }

    #[test]
    fn trusted_proxy_headers_apply() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
        ]);
        let v = client_view(
            &h,
            &Peer::new(Some("127.0.0.1:5000".parse().unwrap()), None, false, None),
            &local(),
        );
        assert_eq!(v.remote_addr, "1.2.3.4");
        assert_eq!(v.remote_port, None);
        assert!(v.https);
        assert_eq!(v.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn forwarded_header_wins() {
        let h = headers(&[
            (
                "forwarded",
                "for=9.9.9.9, for=\"[2001:db8::1]:4711\";proto=https;host=a.example",
            ),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let v = client_view(
            &h,
            &Peer::new(Some("127.0.0.1:1".parse().unwrap()), None, false, None),
            &local(),
        );
        assert_eq!(v.remote_addr, "2001:db8::1");
        assert!(v.https);
        assert_eq!(v.host.as_deref(), Some("a.example"));
    }
}
