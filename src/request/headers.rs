//! Header rules every layer applies the same way: which fields belong to
//! one connection (hop-by-hop), the field no gateway or upstream is ever
//! given (`Proxy`, httpoxy), and what a `Content-Length` value may be.

use http::header::{self, HeaderMap, HeaderName};

/// `Proxy`: a client-sent field that a CGI/WSGI program would see as
/// `HTTP_PROXY`, which HTTP libraries read as their outgoing proxy
/// (httpoxy, CVE-2016-5385). Dropped before any gateway or upstream.
pub static PROXY: HeaderName = HeaderName::from_static("proxy");

/// The fields that belong to one connection: RFC 9110 §7.6.1's list
/// (`Connection`, `Proxy-Connection`, `Keep-Alive`, `TE`,
/// `Transfer-Encoding`, `Upgrade`), `Trailer`, and the
/// `Proxy-Authenticate`/`Proxy-Authorization` pair, meant for the proxy
/// next to the client (RFC 9110 §11.7). Fields that `Connection` names are
/// hop-by-hop too; callers that forward a message remove those themselves.
/// Names, not `HeaderName`s: a `const` array of those is built and dropped
/// at every use, which showed in a WSGI request's instruction count.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One more name PEP 3333 lists as hop-by-hop: RFC 2616 §13.5.1 spelled
/// `Trailer` as `Trailers`, and wsgiref (so every WSGI server since)
/// refuses it in `start_response`. Gateways refuse it from their programs;
/// the proxy has no reason to strip a field of that name.
const PEP_3333_TRAILERS: &str = "trailers";

/// A response field a gateway's program must not set (CGI drops it from a
/// script's answer, WSGI refuses it in `start_response`): one of
/// [`HOP_BY_HOP`], or PEP 3333's `Trailers`.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || name == PEP_3333_TRAILERS
}

/// A `Content-Length` value (RFC 9110 §8.6: `1*DIGIT`), from a header or
/// a gateway variable. Whitespace around it is not part of the value
/// (RFC 9110 §5.5) and is ignored. `None` for everything else: empty, a
/// sign (`+5`, `-1`), any other byte, a number past `u64`, and a list
/// (`5, 5`) — RFC 9110 lets a recipient either refuse a list of equal
/// values or take one of them; portico refuses it everywhere (hyper
/// already refuses a list of differing values on an HTTP/1 request, and
/// a request whose list it accepts is measured as it streams instead).
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// The length a message's `Content-Length` field declares, if it holds a
/// valid one (the first field, when there are several: hyper has refused
/// differing ones on requests already).
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_accepts_digits_only() {
        let table: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("5", Some(5)),
            ("007", Some(7)),
            (" 5\t", Some(5)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("  ", None),
            ("+5", None),
            ("-1", None),
            ("5, 5", None),
            ("5,5", None),
            ("5 5", None),
            ("0x10", None),
            ("5.0", None),
            ("1e3", None),
            ("٥", None),
        ];
        for (text, want) in table {
            assert_eq!(content_length(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn declared_length_reads_the_first_field() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.append(header::CONTENT_LENGTH, "12".parse().unwrap());
        h.append(header::CONTENT_LENGTH, "13".parse().unwrap());
        assert_eq!(declared_length(&h), Some(12));
        h.insert(header::CONTENT_LENGTH, "+12".parse().unwrap());
        assert_eq!(declared_length(&h), None);
    }

    #[test]
    fn hop_by_hop_names() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "trailers",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-length", "x-trailer", "proxy", "set-cookie"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
