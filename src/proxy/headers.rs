//! Header rules both ways: hop-by-hop fields stay on their hop (RFC 9110
//! §7.6.1), and the upstream learns who the client is through
//! `X-Forwarded-For/-Proto/-Host` and `Forwarded` (RFC 7239). What earlier
//! proxies wrote is kept only when the direct peer is trusted
//! (`forwarded_allow_ips`); otherwise it is replaced.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::UpstreamUrl;
use crate::request::forwarded::{ClientView, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::request::headers::{HOP_BY_HOP, PROXY};

/// The `Upgrade` value when the request asks for a protocol switch
/// (`Connection: upgrade` + `Upgrade`, HTTP/1.1 only).
pub fn upgrade_request(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 || !connection_has(headers, "upgrade") {
        return None;
    }
    headers.get(header::UPGRADE).cloned()
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes every field it names, the hop-by-hop fields
/// ([`HOP_BY_HOP`]) and, since none is meant for the next hop, any other
/// `Proxy-*`. With `upgrade` set, `Upgrade` is kept and
/// `Connection: upgrade` put back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes what the client sent that must not reach the upstream: `Proxy`
/// (httpoxy: a CGI or WSGI upstream would see it as `HTTP_PROXY`, which
/// HTTP libraries read as their proxy), and, unless `keep_underscores`,
/// every field whose name holds `_`, which such an upstream would merge
/// with the `-` spelling of the name (`X_User` and `X-User` both become
/// `HTTP_X_USER`: a client could forge what a front proxy set). nginx drops
/// the latter too (`underscores_in_headers off`).
pub fn strip_unsafe(headers: &mut HeaderMap, keep_underscores: bool) {
    let unsafe_names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| *n == PROXY || (!keep_underscores && n.as_str().contains('_')))
        .cloned()
        .collect();
    for name in unsafe_names {
        if name != PROXY {
            tracing::debug!("header field {name} not forwarded: its name holds `_`");
        }
        headers.remove(name);
    }
}

/// Sets `Host` to the server's authority, for a request that has none
/// (HTTP/1.0 without Host, and no `proxy_host`): HTTP/1.1 requires one.
pub fn set_host(headers: &mut HeaderMap, url: &UpstreamUrl) {
    if let Ok(host) = HeaderValue::from_str(&url.authority()) {
        headers.insert(header::HOST, host);
    }
}

/// Who is asking, as the forwarding headers should say it.
pub struct Forwarding<'a> {
    /// The direct peer (None on a unix socket).
    pub peer: Option<IpAddr>,
    /// The peer may speak for earlier hops.
    pub trusted: bool,
    /// The client as we believe it (trusted headers applied).
    pub view: &'a ClientView,
    /// The Host the client asked for (header, or HTTP/2 authority).
    pub host: Option<&'a HeaderValue>,
}

/// Sets the request's forwarding headers: `X-Forwarded-For` gets the peer
/// appended (to the earlier hops' list when trusted), `X-Forwarded-Proto`
/// and `X-Forwarded-Host` say what the client used, and `Forwarded` gets
/// our element appended the same way.
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let peer_text = f.peer.map(|ip| ip.to_canonical().to_string());
    let earlier = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        if !f.trusted {
            return None;
        }
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let xff = match (earlier(headers, &X_FORWARDED_FOR), &peer_text) {
        (Some(list), Some(ip)) => Some(format!("{list}, {ip}")),
        (Some(list), None) => Some(list),
        (None, ip) => ip.clone(),
    };
    set(headers, &X_FORWARDED_FOR, xff);
    let proto = if f.view.https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    let host = match &f.view.host {
        Some(h) => HeaderValue::from_str(h).ok(),
        None => f.host.cloned(),
    };
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    let node = match f.peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(ip)) => format!("\"[{ip}]\""),
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(h) = headers.get(&X_FORWARDED_HOST).and_then(|h| h.to_str().ok()) {
        if !h.contains(['"', '\\']) {
            element.push_str(&format!(";host=\"{h}\""));
        }
    }
    let forwarded = match earlier(headers, &header::FORWARDED) {
        Some(list) => format!("{list}, {element}"),
        None => element,
    };
    set(headers, &header::FORWARDED, Some(forwarded));
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: Option<String>) {
    headers.remove(name);
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn view(ip: &str) -> ClientView {
        ClientView {
            remote_addr: ip.into(),
            remote_port: None,
            https: false,
            host: None,
        }
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end-to-end"]);
    }

    #[test]
    fn proxy_and_underscored_fields_are_not_forwarded() {
        let fields = [
            ("proxy", "http://evil:8080"),
            ("x_custom", "1"),
            ("x-custom", "2"),
        ];
        let mut h = map(&fields);
        strip_unsafe(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-custom"]);
        let mut h = map(&fields);
        strip_unsafe(&mut h, true);
        assert!(h.contains_key("x_custom") && h.contains_key("x-custom"));
        assert!(!h.contains_key("proxy"));
    }

    #[test]
    fn a_missing_host_is_the_servers_authority() {
        let mut h = HeaderMap::new();
        let url = |text| crate::config::parse_upstream_url(text).unwrap();
        set_host(&mut h, &url("http://10.0.0.2:8000"));
        assert_eq!(h["host"], "10.0.0.2:8000");
        set_host(&mut h, &url("http://app.internal"));
        assert_eq!(h["host"], "app.internal");
        set_host(&mut h, &url("http://[::1]:81"));
        assert_eq!(h["host"], "[::1]:81");
        set_host(&mut h, &url("http+unix:/run/app.sock"));
        assert_eq!(h["host"], "localhost");
    }

    #[test]
    fn upgrades_keep_their_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(upgrade_request(http::Version::HTTP_11, &h).is_some());
        assert!(upgrade_request(http::Version::HTTP_10, &h).is_none());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil"),
        ]);
        let host = HeaderValue::from_static("site.example");
        set_forwarding(
            &mut h,
            &Forwarding {
                peer: Some("10.1.2.3".parse().unwrap()),
                trusted: false,
                view: &view("10.1.2.3"),
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "site.example");
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;proto=http;host=\"site.example\""
        );
    }

    #[test]
    fn trusted_forwarding_headers_are_appended() {
        let mut h = map(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let mut v = view("1.2.3.4");
        v.https = true;
        v.host = Some("front.example".into());
        set_forwarding(
            &mut h,
            &Forwarding {
                peer: Some("::1".parse().unwrap()),
                trusted: true,
                view: &v,
                host: None,
            },
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "front.example");
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4, for=\"[::1]\";proto=https;host=\"front.example\""
        );
    }
}
