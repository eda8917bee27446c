//! What the HTTP parser lets through but RFC 9112 refuses, checked on every
//! request head before anything else sees it, in order:
//!
//! 1. `Host` (§3.2): exactly one in HTTP/1.1, at most one otherwise, and
//!    its value `host[:port]` (RFC 3986 §3.2.2: no userinfo, no path, a
//!    numeric port), else 400; the same for the target's authority;
//! 2. an authority in the target (absolute-form, HTTP/2 `:authority`)
//!    replaces `Host` (§3.2.2), so routing, the environ, CGI and the proxy
//!    all see the one the client addressed;
//! 3. the target form: CONNECT → 405, `*` only for OPTIONS (answered here,
//!    204), authority-form → 400;
//! 4. `Transfer-Encoding` (§6.1): hyper takes any list ending in `chunked`;
//!    portico decodes `chunked` alone, so another coding → 501 and
//!    `chunked` twice → 400, both closing the connection (the body's
//!    framing is unknown).

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Version};

use crate::request::refusal::Refusal;

/// What the head checks decided, when it is not "go on".
#[derive(Debug, PartialEq, Eq)]
pub enum Early {
    Refuse(Refusal),
    /// `OPTIONS *`: the server's own options (204 with `Allow`).
    ServerOptions,
}

/// Steps 1–4; rewrites `Host` (step 2) when the target names an authority.
pub fn check<B>(req: &mut Request<B>) -> Result<(), Early> {
    check_host(req.version(), req.headers()).map_err(Early::Refuse)?;
    if let Some(authority) = req.uri().authority().cloned() {
        if !valid_host(authority.as_str().as_bytes()) {
            return Err(Early::Refuse(Refusal::BadHost(
                "the request target's authority is not host[:port]",
            )));
        }
        adopt_authority(req.version(), req.headers_mut(), authority);
    }
    check_target(req)?;
    check_transfer_coding(req.headers()).map_err(Early::Refuse)
}

/// Step 1.
fn check_host(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => {
            Err(Refusal::BadHost("an HTTP/1.1 request needs a Host header"))
        }
        (Some(_), Some(_)) => Err(Refusal::BadHost("more than one Host header")),
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Err(Refusal::BadHost("the Host header is not host[:port]"))
        }
        _ => Ok(()),
    }
}

/// Step 2. HTTP/2 requests carry `:authority` and usually no `Host`; one
/// is not added for them (every reader falls back to the authority).
fn adopt_authority(version: Version, headers: &mut HeaderMap, authority: Authority) {
    if version == Version::HTTP_2 && !headers.contains_key(header::HOST) {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, value);
    }
}

/// Step 3.
fn check_target<B>(req: &Request<B>) -> Result<(), Early> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        return Err(Early::Refuse(Refusal::Connect));
    }
    if uri.path() == "*" && uri.authority().is_none() {
        return Err(if req.method() == Method::OPTIONS {
            Early::ServerOptions
        } else {
            Early::Refuse(Refusal::BadTarget("`*` is a target for OPTIONS only"))
        });
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(Early::Refuse(Refusal::BadTarget(
            "authority-form is a target for CONNECT only",
        )));
    }
    Ok(())
}

/// Step 4.
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(Refusal::UnknownTransferCoding);
        };
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(Refusal::UnknownTransferCoding);
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(Refusal::ChunkedTwice);
    }
    Ok(())
}

/// `uri-host [":" port]`, or empty (a client sends an empty Host when the
/// target has no authority). Names of letters, digits, `.` and `-` are
/// checked here; anything else (IP literals, the rarer characters a
/// reg-name may hold) by the `http` crate's authority parser, minus what it
/// allows and a Host does not: userinfo, a port that is not a number, an
/// empty host.
pub fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    if let Some(plain) = plain_host(value) {
        return plain;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let Ok(authority) = text.parse::<Authority>() else {
        return false;
    };
    let host = authority.host();
    !text.contains('@') && !host.is_empty() && valid_port(&text[host.len()..])
}

/// The common case, without the parser's copy: `Some(valid)` when `value`
/// is letters, digits, `.`, `-`, and maybe `:port`; `None` when it holds
/// anything else.
fn plain_host(value: &[u8]) -> Option<bool> {
    let colon = value.iter().position(|&b| b == b':');
    let (name, rest) = value.split_at(colon.unwrap_or(value.len()));
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-');
    if !name.iter().all(plain) {
        return None;
    }
    let rest = std::str::from_utf8(rest).ok()?;
    Some(!name.is_empty() && valid_port(rest))
}

/// What follows the host: nothing, `:`, or `:` and a port number.
fn valid_port(rest: &str) -> bool {
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some("") => true,
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        for good in [
            "localhost",
            "localhost:8080",
            "EXAMPLE.com",
            "example.com.",
            "[::1]",
            "[::1]:8000",
            "[2001:db8::1]:443",
            "127.0.0.1:80",
            "a_b.example",
            "x!$&'()*+,;=y",
            "",
            "localhost:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?} refused");
        }
        for bad in [
            "user@localhost",
            "user:pw@localhost",
            "local host",
            "a/b",
            "a?b",
            "a#b",
            "a\\b",
            "localhost:abc",
            "localhost:99999",
            "localhost:-1",
            ":80",
            "[::1",
            "[::1]x",
            "a:1:2",
            "ä.example",
            "a\"b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} accepted");
        }
    }

    fn req(lines: &[(&str, &str)], uri: &str, version: Version) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for (n, v) in lines {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let mut r = req(
            &[("host", "localhost")],
            "http://a.example/x",
            Version::HTTP_11,
        );
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()["host"], "a.example");
        // HTTP/2 without Host: none is added.
        let mut r = req(&[], "https://a.example:8443/x", Version::HTTP_2);
        assert_eq!(check(&mut r), Ok(()));
        assert!(!r.headers().contains_key("host"));
        // A bad Host is refused even when the target would replace it.
        let mut r = req(&[("host", "a b")], "http://a.example/x", Version::HTTP_11);
        assert!(matches!(
            check(&mut r),
            Err(Early::Refuse(Refusal::BadHost(_)))
        ));
        let mut r = req(
            &[("host", "a.example")],
            "http://u@a.example/x",
            Version::HTTP_11,
        );
        assert!(matches!(
            check(&mut r),
            Err(Early::Refuse(Refusal::BadHost(_)))
        ));
    }

    #[test]
    fn transfer_codings() {
        let te = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, v.parse().unwrap());
            }
            check_transfer_coding(&h)
        };
        assert_eq!(te(&[]), Ok(()));
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert_eq!(
            te(&["identity, chunked"]),
            Err(Refusal::UnknownTransferCoding)
        );
        assert_eq!(te(&["gzip, chunked"]), Err(Refusal::UnknownTransferCoding));
        assert_eq!(te(&["chunked", "chunked"]), Err(Refusal::ChunkedTwice));
        assert_eq!(te(&["chunked, chunked"]), Err(Refusal::ChunkedTwice));
    }

    #[test]
    fn target_forms() {
        let mut r = req(&[("host", "a")], "*", Version::HTTP_11);
        *r.method_mut() = Method::OPTIONS;
        assert_eq!(check(&mut r), Err(Early::ServerOptions));
        *r.method_mut() = Method::GET;
        assert!(matches!(
            check(&mut r),
            Err(Early::Refuse(Refusal::BadTarget(_)))
        ));
        *r.method_mut() = Method::CONNECT;
        assert_eq!(check(&mut r), Err(Early::Refuse(Refusal::Connect)));
    }
}
