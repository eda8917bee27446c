//! gunicorn's corpus of invalid requests (/work/shared/conformance), sent
//! byte for byte to the real server: each must be refused.
//!
//! Refused means: no 2xx response, and a 4xx response or the connection
//! closed. The summary also tells which refusals came from the HTTP parser
//! (400/414/431/501/505 or a close) and which only from the handler (404/405:
//! the parser accepted the head; the static handler never reads a body).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::raw::{connect, parse_all};
use crate::util::TestDir;

/// Cases hyper parses as valid heads, so only the handler answers them (404
/// or 405), with the reason. Every other applicable case must be refused by
/// the parser itself.
const HANDLER_ONLY: &[(&str, &str)] = &[
    (
        "003c",
        "method `-bl` is a valid token (RFC 9110 §9.1); gunicorn is stricter",
    ),
    (
        "006",
        "4112-byte target: under portico's max_uri_length (8192)",
    ),
    (
        "007",
        "8203-byte field: under portico's max_header_size (16k)",
    ),
    (
        "008",
        "12 KiB header block: under portico's max_header_size (16k)",
    ),
    (
        "017",
        "8189-byte field: under portico's max_header_size (16k)",
    ),
    (
        "041",
        "duplicate Content-Type: hyper keeps both; the static handler ignores it",
    ),
    (
        "chunked_01",
        "bad chunk size in a body the static handler never reads; closed after",
    ),
    (
        "chunked_02",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_03",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_04",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_09",
        "`0 ` (BWS after the size) is accepted by hyper; body unread",
    ),
    (
        "chunked_10",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_11",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_12",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_13",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "chunked_14",
        "bad chunk in an unread body; connection closed after the response",
    ),
    (
        "rfc9110_trailer_forbidden_cl_01",
        "hyper discards trailer fields; body unread",
    ),
    (
        "rfc9110_trailer_forbidden_host_01",
        "hyper discards trailer fields; body unread",
    ),
    (
        "rfc9110_trailer_forbidden_te_01",
        "hyper discards trailer fields; body unread",
    ),
    (
        "rfc9112_chunked_missing_final_crlf_01",
        "unread body; connection closed after",
    ),
    (
        "rfc9112_chunked_size_minus_sign_01",
        "unread body; connection closed after",
    ),
    (
        "rfc9112_chunked_size_plus_sign_01",
        "unread body; connection closed after",
    ),
    (
        "rfc9112_smuggle_cl_te_chunked_01",
        "CL + TE: hyper uses TE (allowed by RFC 9112 §6.1) and closes the connection after",
    ),
    // src bugs, each with a failing test in protocols.rs:
    (
        "042",
        "BUG: two Host fields must be 400 (RFC 9112 §3.2): duplicate_host_header_is_400",
    ),
    (
        "rfc9112_target_asterisk_non_options_01",
        "BUG: `*` is only for OPTIONS: asterisk_target_outside_options_is_400",
    ),
    (
        "rfc9112_target_authority_non_connect_01",
        "BUG: authority-form is only for CONNECT: authority_form_target_outside_connect_is_400",
    ),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gunicorn-requests")
}

/// Decodes the corpus's .http escape format (see its README).
pub fn decode_http(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'r') if bytes.get(i + 2) == Some(&b'\\') && bytes.get(i + 3) == Some(&b'n') => {
                out.extend_from_slice(b"\r\n");
                i += 4;
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b'0') => {
                out.push(0);
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape at byte {i}"))?;
                out.push(hex);
                i += 4;
            }
            other => {
                return Err(format!(
                    "unknown escape `\\{}` at byte {i}",
                    other.map_or("<end>".into(), |c| (*c as char).to_string())
                ))
            }
        }
    }
    Ok(out)
}

/// The gunicorn setting a case's .py changes, if any.
fn setting(py: &str) -> Option<String> {
    let at = py.find("cfg.set(")?;
    let rest = &py[at + "cfg.set(".len()..];
    let name = rest.split(',').next()?.trim().trim_matches(['"', '\'']);
    Some(name.to_string())
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    /// 400/414/431/501/505, 408, or closed without any response.
    ParserRefused,
    /// 404/405 from the handler (or another 4xx), no 2xx.
    HandlerRefused,
    /// A 2xx, or the connection left open without any answer.
    Accepted,
}

fn send_case(addr: std::net::SocketAddr, bytes: &[u8]) -> (Verdict, String) {
    let mut s = connect(addr);
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut got = Vec::new();
    let mut closed = false;
    let mut last_data = Instant::now();
    let mut buf = [0u8; 8192];
    loop {
        let responses = parse_all(&got);
        if !responses.is_empty() && last_data.elapsed() > Duration::from_millis(300) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let responses = parse_all(&got);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    let desc = format!("statuses {statuses:?}, closed {closed}");
    let verdict = if statuses.iter().any(|s| (200..300).contains(s)) {
        Verdict::Accepted
    } else if statuses
        .first()
        .is_some_and(|s| matches!(s, 400 | 408 | 413 | 414 | 431 | 501 | 505))
        || (statuses.is_empty() && closed)
    {
        Verdict::ParserRefused
    } else if statuses.iter().any(|s| (400..500).contains(s)) {
        Verdict::HandlerRefused
    } else {
        Verdict::Accepted
    };
    (verdict, desc)
}

#[test]
fn gunicorn_invalid_requests_are_refused() {
    let dir = corpus_dir().join("invalid");
    assert!(
        dir.is_dir(),
        "conformance corpus missing: {} (expected next to the project, in /work/shared)",
        dir.display()
    );
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .collect();
    cases.sort();

    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "2", "--access-log", "off"]);

    let mut not_applicable = Vec::new();
    let mut applicable = Vec::new();
    for case in &cases {
        let name = case.file_stem().unwrap().to_string_lossy().into_owned();
        let py = std::fs::read_to_string(case.with_extension("py")).unwrap_or_default();
        if let Some(setting) = setting(&py) {
            not_applicable.push((name, setting));
            continue;
        }
        let text = std::fs::read_to_string(case).unwrap();
        let bytes = decode_http(&text).unwrap_or_else(|e| panic!("{name}.http: {e}"));
        applicable.push((name, bytes));
    }

    // Several cases at a time: some wait for a timeout.
    let results: Vec<(String, Verdict, String)> = std::thread::scope(|scope| {
        let chunks: Vec<_> = applicable.chunks(applicable.len().div_ceil(8)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let addr = s.addr;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, bytes)| {
                            let (v, d) = send_case(addr, bytes);
                            (name.clone(), v, d)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    let parser = results
        .iter()
        .filter(|r| r.1 == Verdict::ParserRefused)
        .count();
    let handler: Vec<_> = results
        .iter()
        .filter(|r| r.1 == Verdict::HandlerRefused)
        .collect();
    let failures: Vec<_> = results
        .iter()
        .filter(|r| r.1 == Verdict::Accepted)
        .collect();
    let unexpected_handler: Vec<_> = handler
        .iter()
        .filter(|r| !HANDLER_ONLY.iter().any(|(n, _)| *n == r.0))
        .collect();
    let stale: Vec<_> = HANDLER_ONLY
        .iter()
        .filter(|(n, _)| !handler.iter().any(|r| r.0 == *n))
        .collect();

    eprintln!("gunicorn invalid corpus: {} cases", cases.len());
    eprintln!(
        "  refused: {} ({parser} by the parser, {} only by the handler)",
        parser + handler.len(),
        handler.len()
    );
    for (name, _, desc) in &handler {
        let why = HANDLER_ONLY
            .iter()
            .find(|(n, _)| n == name)
            .map_or("NOT EXPECTED", |(_, w)| w);
        eprintln!("    handler only: {name}: {desc}: {why}");
    }
    eprintln!("  not applicable: {}", not_applicable.len());
    for (name, setting) in &not_applicable {
        eprintln!("    {name}: gunicorn setting `{setting}`");
    }
    eprintln!("  failures: {}", failures.len());
    for (name, _, desc) in &failures {
        eprintln!("    {name}: {desc}");
    }

    // The corpus holds 74 cases, 11 of which test a gunicorn setting.
    assert!(
        results.len() >= 60,
        "only {} applicable cases: is the corpus complete?",
        results.len()
    );
    assert!(
        failures.is_empty(),
        "accepted invalid requests: {failures:#?}"
    );
    assert!(
        unexpected_handler.is_empty(),
        "refused only by the handler (the parser accepted them): {unexpected_handler:#?}"
    );
    assert!(
        stale.is_empty(),
        "HANDLER_ONLY lists cases the parser now refuses: {stale:?}"
    );
}

#[test]
fn decoder_follows_the_corpus_format() {
    assert_eq!(
        decode_http("GET / HTTP/1.1\\r\\n\nHost: a\\t\\x41\\0\\n\\r\\n\n").unwrap(),
        b"GET / HTTP/1.1\r\nHost: a\tA\0\n\r\n"
    );
    assert!(decode_http("bad \\q").is_err());
}
