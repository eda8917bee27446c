//! The fuzz targets: each feeds bytes to one parser portico owns and checks
//! what came out, beyond "no panic".

use std::net::SocketAddr;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Target;
use crate::config::ForwardedAllow;
use crate::request::Peer;

pub static TARGETS: &[Target] = &[
    Target {
        name: "range",
        about: "Range header against a file length: ranges sorted, disjoint, non-empty, inside the file",
        seeds: range_seeds,
        dictionary: &[b"bytes=", b"-", b",", b", ", b"0", b"-0", b"999", b"bytes=0-"],
        check: check_range,
        max_len: 256,
    },
    Target {
        name: "static_path",
        about: "request path to a file under the root: never above it, no dot or empty segments",
        seeds: path_seeds,
        dictionary: &[b"/", b"..", b".", b"%2e", b"%2f", b"%5c", b"%00", b"%2E%2E", b"//"],
        check: check_static_path,
        max_len: 256,
    },
    Target {
        name: "cgi_head",
        about: "a CGI script's header block: parsed or refused, never a panic; the answer is renderable",
        seeds: cgi_seeds,
        dictionary: &[
            b"Status: ", b"Location: ", b"Content-Type: ", b"Content-Length: ", b"\r\n",
            b"\n\n", b"HTTP/1.1 ", b"Connection: ", b"Transfer-Encoding: chunked",
        ],
        check: check_cgi_head,
        max_len: 512,
    },
    Target {
        name: "uwsgi_packet",
        about: "a uwsgi packet as the listener reads it, then the request it describes",
        seeds: uwsgi_packet_seeds,
        dictionary: &[b"REQUEST_METHOD", b"REQUEST_URI", b"PATH_INFO", b"HTTP_HOST", b"CONTENT_LENGTH"],
        check: check_uwsgi_packet,
        max_len: 1024,
    },
    Target {
        name: "uwsgi_round_trip",
        about: "a request encoded by the uwsgi client and decoded by the uwsgi listener is the same request",
        seeds: round_trip_seeds,
        dictionary: &[b"\n", b":", b"?", b"%", b"%20", b"Host", b"Cookie", b"x-a"],
        check: check_uwsgi_round_trip,
        max_len: 512,
    },
    Target {
        name: "forwarded",
        about: "Forwarded / X-Forwarded-* from a trusted peer: the client view stays well formed",
        seeds: forwarded_seeds,
        dictionary: &[
            b"for=", b"proto=", b"host=", b"by=", b";", b",", b"\"[", b"]\"", b"::1",
            b"unknown", b"_hidden", b"https",
        ],
        check: check_forwarded,
        max_len: 512,
    },
    Target {
        name: "config_file",
        about: "a config file as TOML: parsed or refused with a message, never a panic",
        seeds: config_seeds,
        dictionary: &[
            b"[[route]]\n", b"[limits]\n", b"[[upstream]]\n", b"path = \"/\"\n", b" = ", b"\"",
            b"[", b"]", b"{", b"}", b"1g", b"30s",
        ],
        check: check_config_file,
        max_len: 1024,
    },
    Target {
        name: "proxy_chunked",
        about: "a chunked request body through the proxy's upload: the upstream gets a well-framed \
                body equal to what the client sent, or an incomplete one; never more",
        seeds: chunked_seeds,
        dictionary: &[b"\r\n", b"0\r\n\r\n", b";ext=1", b"\n", b"ffffffff", b"0000", b" "],
        check: super::chunked::check_proxy_chunked,
        max_len: 512,
    },
];

fn range_seeds() -> Vec<Vec<u8>> {
    [
        (1000, "bytes=0-99"),
        (1000, "bytes=-500"),
        (10, "bytes=5-"),
        (10, "bytes=0-1,3-4,2-2"),
        (10, "bytes=20-30"),
        (0, "bytes=0-0"),
    ]
    .iter()
    .map(|(len, value)| [&u64::to_be_bytes(*len)[..], value.as_bytes()].concat())
    .collect()
}

/// The first 8 bytes are the file's length (big endian), the rest the
/// header value.
fn check_range(input: &[u8]) {
    use crate::static_files::ranges::{decide, RangeDecision};
    if input.len() < 8 {
        return;
    }
    let len = u64::from_be_bytes(input[..8].try_into().expect("8 bytes"));
    let Ok(value) = HeaderValue::from_bytes(&input[8..]) else {
        return;
    };
    if let RangeDecision::Partial(ranges) = decide(Some(&value), len) {
        assert!(!ranges.is_empty(), "206 without a range");
        let mut previous_end = None;
        for r in &ranges {
            assert!(r.start < r.end, "empty or reversed range {r:?}");
            assert!(r.end <= len, "range {r:?} past the end of {len} bytes");
            if let Some(end) = previous_end {
                assert!(r.start > end, "ranges not sorted and coalesced: {ranges:?}");
            }
            previous_end = Some(r.end);
        }
    }
}

fn path_seeds() -> Vec<Vec<u8>> {
    [
        "/index.html",
        "/a/b/../c",
        "/a/./b/",
        "/%2e%2e/etc/passwd",
        "/a%2fb",
        "/.git/config",
        "",
        "/",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn check_static_path(input: &[u8]) {
    use crate::static_files::resolve::{join, parse_rel};
    let Ok(rel) = std::str::from_utf8(input) else {
        return;
    };
    for dotfiles in [false, true] {
        let Ok(parsed) = parse_rel(rel, dotfiles) else {
            continue;
        };
        let root = Path::new("/srv/root");
        let joined = join(root, &parsed.path);
        assert!(
            joined.starts_with(root),
            "{rel:?} left the root: {joined:?}"
        );
        for part in parsed.path.components() {
            use std::path::Component;
            assert!(
                matches!(part, Component::Normal(_)),
                "{rel:?} kept a {part:?} component"
            );
            let bytes = part.as_os_str().as_encoded_bytes();
            assert!(!bytes.contains(&0) && !bytes.contains(&b'\\'), "{rel:?}");
            assert!(
                dotfiles || !bytes.starts_with(b"."),
                "{rel:?}: hidden name served"
            );
        }
        assert_eq!(parsed.is_root, parsed.path.as_os_str().is_empty());
    }
}

fn cgi_seeds() -> Vec<Vec<u8>> {
    [
        "Content-Type: text/plain\n\nhello",
        "Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n",
        "Location: /other?x=1\n\n",
        "Location: http://example.com/\nStatus: 301 Moved\n\n",
        "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n",
        "Content-Length: 5\nConnection: close, X-A\nX-A: 1\n\nhello",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// The first byte says nph (odd) or not; the rest is the script's output.
fn check_cgi_head(input: &[u8]) {
    use crate::cgi::head::{find_end, parse};
    use crate::cgi::response::{decide, Outcome};
    let Some((&mode, output)) = input.split_first() else {
        return;
    };
    let nph = mode % 2 == 1;
    let Some(end) = find_end(output) else {
        return;
    };
    assert!(end <= output.len());
    let Ok(head) = parse(&output[..end], nph) else {
        return;
    };
    if let Some((status, _)) = &head.status {
        assert!((100..=599).contains(&status.as_u16()));
    }
    for name in head.headers.keys() {
        assert!(
            !crate::request::headers::is_hop_by_hop(name),
            "hop-by-hop {name} kept"
        );
    }
    match decide(head, nph) {
        Outcome::LocalRedirect(target) => assert!(target.as_str().starts_with('/')),
        Outcome::Respond(answer) => assert!(answer.status.as_u16() >= 100),
    }
}

fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let vars: Vec<_> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    crate::uwsgi::codec::encode(0, &vars).expect("small packet")
}

fn uwsgi_packet_seeds() -> Vec<Vec<u8>> {
    vec![
        packet(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/a?b=c"),
            ("PATH_INFO", "/a"),
            ("QUERY_STRING", "b=c"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("HTTP_HOST", "example.com"),
        ]),
        packet(&[
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/up load"),
            ("CONTENT_LENGTH", "12"),
            ("CONTENT_TYPE", "text/plain"),
            ("REMOTE_ADDR", "10.0.0.1"),
            ("REMOTE_PORT", "5555"),
            ("HTTPS", "on"),
        ]),
        vec![0, 0, 0, 0],
    ]
}

fn socket_peer() -> Peer {
    let addr: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let local: SocketAddr = "127.0.0.1:8000".parse().expect("address");
    Peer::new(Some(addr), Some(local), false, None)
}

fn check_uwsgi_packet(input: &[u8]) {
    use crate::uwsgi::codec::{decode_vars, read_packet};
    const LIMIT: usize = 24 * 1024;
    let mut reader = input;
    let read = futures_executor::block_on(read_packet(&mut reader, LIMIT));
    let Ok(vars) = read else {
        return;
    };
    // What was read re-encodes to the bytes it came from.
    let block_len = usize::from(u16::from_le_bytes([input[1], input[2]]));
    assert!(block_len <= LIMIT);
    assert_eq!(
        decode_vars(&input[4..4 + block_len]).ok(),
        Some(vars.clone())
    );
    let encoded = crate::uwsgi::codec::encode(0, &vars).expect("it fit before");
    // modifier2 (byte 3) is not read; everything else must be the same.
    assert_eq!(encoded[..3], input[..3], "re-encoded header differs");
    assert_eq!(encoded[4..], input[4..4 + block_len], "re-encoding differs");
    if let Ok(decided) = crate::server::uwsgi::request::decide(vars, socket_peer()) {
        let uri = decided.request.uri();
        assert!(uri.path().starts_with('/') || uri.path() == "*", "{uri}");
    }
}

fn round_trip_seeds() -> Vec<Vec<u8>> {
    [
        "GET\n/\n",
        "POST\n/api/items?page=2&sort=-name\nHost:example.com\nContent-Type:application/json\n",
        "GET\n/%E2%82%AC/%20x?q=%25\nCookie:a=1\nCookie:b=2\nX-A:1\nx-a:2\n",
        "DELETE\n/a;b/c\nAuthorization:Bearer x\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Lines: method, target, then `name:value` headers. Requests the http
/// crate refuses, and headers the gateway drops on purpose, are skipped.
fn check_uwsgi_round_trip(input: &[u8]) {
    use crate::request::gateway_env::{field_var, FieldVar};
    use crate::request::headers::is_hop_by_hop;
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    if parts.uri.scheme().is_some() || !parts.uri.path().starts_with('/') {
        return;
    }
    let ctx = crate::request::HandlerContext {
        script_name: "",
        max_body_size: u64::MAX,
        buffering: crate::request::spool::Buffering::streaming(),
        peer: socket_peer(),
        sendfile: None,
    };
    let vars = crate::uwsgi::client::request_vars(&parts, &ctx, None);
    let Ok(packet) = crate::uwsgi::codec::encode(0, &vars) else {
        return; // over the protocol's 64 KiB
    };
    let mut reader = &packet[..];
    let read = futures_executor::block_on(crate::uwsgi::codec::read_packet(&mut reader, 65535))
        .expect("our own packet reads back");
    let decided = crate::server::uwsgi::request::decide(read, socket_peer())
        .unwrap_or_else(|e| panic!("our own packet for {parts:?} was refused: {e}"));
    let back = decided.request;
    assert_eq!(back.method(), parts.method);
    // Bytes a target may not hold raw come back percent-encoded: the same
    // request once decoded.
    let decoded = |uri: &http::Uri| -> Vec<u8> {
        let text = uri.path_and_query().map_or("", |pq| pq.as_str());
        percent_encoding::percent_decode_str(text).collect()
    };
    assert_eq!(decoded(back.uri()), decoded(&parts.uri), "target changed");
    // The uwsgi client passes Authorization on.
    let kept = |name: &HeaderName| {
        matches!(field_var(name), FieldVar::Http | FieldVar::Authorization) && !is_hop_by_hop(name)
    };
    for name in parts.headers.keys().filter(|n| kept(n)) {
        let separator: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let sent: Vec<u8> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect::<Vec<_>>()
            .join(separator);
        let got = back.headers().get(name).map(|v| v.as_bytes());
        assert_eq!(got, Some(&sent[..]), "header {name} changed on the way");
    }
}

fn forwarded_seeds() -> Vec<Vec<u8>> {
    [
        "forwarded:for=192.0.2.60;proto=https;host=example.com",
        "forwarded:for=\"[2001:db8:cafe::17]:4711\"",
        "x-forwarded-for:203.0.113.195, 70.41.3.18, 150.172.238.178\nx-forwarded-proto:https\nx-forwarded-host:shop.example",
        "x-forwarded-for:unknown\nforwarded:for=_hidden, for=198.51.100.17",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Lines of `name:value` headers from a trusted peer.
fn check_forwarded(input: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in input.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let peer = socket_peer();
    let view = crate::request::forwarded::client_view(&headers, &peer, &ForwardedAllow::Any);
    assert!(
        view.remote_addr == peer.ip_text.as_str()
            || view.remote_addr.parse::<std::net::IpAddr>().is_ok(),
        "REMOTE_ADDR {:?} is not an address",
        view.remote_addr
    );
    if let Some(host) = &view.host {
        assert!(
            HeaderValue::from_str(host).is_ok(),
            "host {host:?} cannot be a header value"
        );
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    [
        "workers = 2\n[limits]\nmax_body_size = \"10m\"\n",
        "[[route]]\npath = \"/\"\nstatic = \"public\"\nwsgi = \"app:app\"\n",
        "[[listen]]\naddress = \"0.0.0.0:443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        "[[upstream]]\nname = \"a\"\nservers = [{ url = \"http://10.0.0.2:8000\", weight = 2 }]\n",
        "[log]\naccess_log = \"off\"\nlevel = \"debug\"\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn check_config_file(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Err(message) = crate::config::file::parse(&text) {
        assert!(!message.is_empty(), "a refusal without a message");
    }
}

fn chunked_seeds() -> Vec<Vec<u8>> {
    [
        "5\r\nhello\r\n0\r\n\r\n",
        "3;name=value\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
        "1\r\na\r\n1\r\nb\r\n0\r\n\r\n",
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
