//! The valid half of gunicorn's request corpus
//! (/work/shared/conformance/gunicorn-requests/valid) through an echo app:
//! for every case, the app must see the method, raw target, protocol,
//! headers (as PEP 3333 environ keys) and body the case's .py expects
//! (a chunked body's `Transfer-Encoding` becoming its measured
//! `CONTENT_LENGTH`: portico buffers request bodies, gunicorn streams them).
//!
//! The expectations are read by tests/fixtures/wsgi/gunicorn_expect.py (the
//! .py files are Python); the requests are the .http files, decoded by the
//! corpus decoder of tests/conformance.rs and sent byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::conformance::decode_http;
use crate::util::raw::{connect, read_responses};
use crate::util::wsgi::{fixtures, json, serve_app, venv_python};
use crate::util::TestDir;

/// gunicorn settings portico has no equivalent of: cases that need them are
/// not applicable (listed in the report, never counted as passed).
const NO_EQUIVALENT: &[&str] = &[
    "proxy_protocol",
    "permit_obsolete_folding",
    "permit_unconventional_http_method",
    "casefold_http_method",
    "header_map",
    "strip_header_spaces",
];

/// Cases whose .http bytes cannot mean what the .py says, with the reason.
const INCONSISTENT: &[(&str, &str)] = &[(
    "099",
    "the .http body is 8599 bytes under `Content-Length: 17914` (the corpus copy is \
     truncated): a server must wait for the rest",
)];

/// Cases where the app deliberately sees something other than what gunicorn
/// expects, with the reason.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "012",
        "request trailers are refused: hyper reads a trailer section up to the next CRLF, so \
         a bare LF after the last chunk hides what a lenient front takes for the next request \
         (found by the proxy_chunked fuzz target); WSGI has no way to hand an app trailers",
    ),
    (
        "005",
        "the `#fragment` is dropped by the HTTP parser: no request-target form of RFC 9112 \
         §3.2 has one, so the app sees the target without it",
    ),
    (
        "009",
        "`Transfer-Encoding: identity` with Content-Length is refused (400) by the HTTP \
         parser: `identity` is no transfer coding since RFC 7230, and TE beside CL is a \
         smuggling vector",
    ),
    (
        "014",
        "a raw `\"` in the target is refused (400) by the HTTP parser: RFC 3986 does not \
         allow it unescaped",
    ),
    (
        "rfc9112_target_asterisk_options_01",
        "`OPTIONS *` is about the server, not a resource: portico answers it (204) without \
         calling an app",
    ),
    (
        "rfc9112_target_authority_connect_01",
        "CONNECT is for proxies; portico is an origin server and answers 405",
    ),
    (
        "rfc9112_target_authority_ipv6_01",
        "CONNECT is for proxies; portico is an origin server and answers 405",
    ),
    ("025", GZIP_CODING),
    ("025_line", GZIP_CODING),
    ("rfc9112_smuggle_gzip_chunked_01", GZIP_CODING),
    ("029", IDENTITY_CODING),
    ("030", IDENTITY_CODING),
    ("rfc9112_smuggle_te_identity_chunked_01", IDENTITY_CODING),
    (
        "rfc9112_target_absolute_userinfo_01",
        "userinfo in the target's authority is refused (400): RFC 9110 §4.2.4 asks a \
         recipient to treat it as an error, and it is no part of a Host (RFC 9112 §3.2)",
    ),
];

const GZIP_CODING: &str = "`Transfer-Encoding: gzip, chunked` is answered 501 (RFC 9112 §6.1): \
     portico decodes chunked only, and gunicorn hands the app the still-gzipped body as if it \
     were plain";

const IDENTITY_CODING: &str = "`Transfer-Encoding: identity, chunked` is answered 501 (RFC 9112 \
     §6.1): `identity` is no transfer coding since RFC 7230";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gunicorn-requests/valid")
}

fn expectations() -> BTreeMap<String, Value> {
    let out = Command::new(venv_python())
        .arg(fixtures().join("gunicorn_expect.py"))
        .arg(corpus())
        .output()
        .expect("run gunicorn_expect.py");
    assert!(
        out.status.success(),
        "gunicorn_expect.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The environ key a request field becomes; `None` when PEP 3333 servers
/// must drop it (a `_` in the name would alias a `-`).
fn environ_key(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if upper.contains('_') {
        return None;
    }
    Some(match upper.as_str() {
        "CONTENT-TYPE" | "CONTENT-LENGTH" => upper.replace('-', "_"),
        _ => format!("HTTP_{}", upper.replace('-', "_")),
    })
}

fn expected_headers(headers: &Value) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for pair in headers.as_array().unwrap() {
        let (name, value) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let Some(key) = environ_key(name) else {
            continue;
        };
        let sep = if key == "HTTP_COOKIE" { "; " } else { ", " };
        out.entry(key)
            .and_modify(|v| {
                v.push_str(sep);
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    out
}

/// HTTP/1.1 requests without Host are refused by portico with 400, as RFC
/// 9112 §3.2 requires ("MUST respond with a 400"), where gunicorn accepts
/// them. So that such cases still test what the app sees, `Host: localhost`
/// is added after their request line, and to their expected headers.
fn add_missing_host(bytes: Vec<u8>, wants: &mut [Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut at = 0;
    for want in wants.iter_mut() {
        let has_host = want["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("host"));
        let Some(line_end) = bytes[at..]
            .windows(11)
            .position(|w| w.starts_with(b" HTTP/1.") && w.ends_with(b"\r\n"))
            .map(|p| at + p + 11)
        else {
            break;
        };
        out.extend_from_slice(&bytes[at..line_end]);
        at = line_end;
        if want["version"] == serde_json::json!([1, 1]) && !has_host {
            out.extend_from_slice(b"Host: localhost\r\n");
            want["headers"]
                .as_array_mut()
                .unwrap()
                .insert(0, serde_json::json!(["HOST", "localhost"]));
        }
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// gunicorn streams a chunked body and the app sees `Transfer-Encoding`;
/// portico buffers it (request buffering, the default) and the app sees its
/// measured length instead, as behind nginx (docs/config.md#request-buffering).
fn measured_by_buffering(headers: &mut BTreeMap<String, String>, body: &str) {
    let chunked = headers
        .get("HTTP_TRANSFER_ENCODING")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked && !headers.contains_key("CONTENT_LENGTH") {
        headers.remove("HTTP_TRANSFER_ENCODING");
        // The body is latin-1 text: one char per byte.
        headers.insert("CONTENT_LENGTH".into(), body.chars().count().to_string());
    }
}

/// What differs between what the case expects and what the app saw.
fn differences(want: &Value, got: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, w: &Value, g: &Value| {
        if w != g {
            diffs.push(format!("{what}: expected {w}, app saw {g}"));
        }
    };
    check("method", &want["method"], &got["method"]);
    check("RAW_URI", &want["uri"], &got["raw_uri"]);
    let v = &want["version"];
    let protocol = Value::from(format!("HTTP/{}.{}", v[0], v[1]));
    check("SERVER_PROTOCOL", &protocol, &got["protocol"]);
    check("body", &want["body"], &got["body"]);
    let mut want_h = expected_headers(&want["headers"]);
    measured_by_buffering(&mut want_h, want["body"].as_str().unwrap_or_default());
    let got_h: BTreeMap<String, String> = got["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    if want_h != got_h {
        diffs.push(format!("headers: expected {want_h:?}, app saw {got_h:?}"));
    }
    diffs
}

#[test]
fn gunicorn_valid_requests_reach_the_app_as_expected() {
    let t = TestDir::new();
    let server = serve_app(&t, "echo:application", &["--threads", "2"]);
    let mut failed = Vec::new();
    let mut not_applicable = Vec::new();
    let mut deliberate_now_passing = Vec::new();
    let mut passed = 0;
    for (name, case) in expectations() {
        let settings: Vec<&str> = case["settings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        if let Some(s) = settings.iter().find(|s| NO_EQUIVALENT.contains(s)) {
            not_applicable.push(format!("{name} (gunicorn setting {s})"));
            continue;
        }
        if let Some((_, why)) = INCONSISTENT.iter().find(|(n, _)| *n == name) {
            not_applicable.push(format!("{name} ({why})"));
            continue;
        }
        let text = std::fs::read_to_string(corpus().join(format!("{name}.http"))).unwrap();
        let bytes = decode_http(&text).unwrap_or_else(|e| panic!("{name}.http: {e}"));
        let mut wants = case["requests"].as_array().unwrap().clone();
        let bytes = add_missing_host(bytes, &mut wants);
        let mut s = connect(server.addr);
        let _ = s.write_all(&bytes);
        let ex = read_responses(&mut s, wants.len(), Duration::from_secs(5));
        let mut diffs = Vec::new();
        if ex.responses.len() < wants.len() {
            diffs.push(format!(
                "{} of {} responses: {:?}",
                ex.responses.len(),
                wants.len(),
                String::from_utf8_lossy(&ex.bytes)
            ));
        }
        for (i, (want, res)) in wants.iter().zip(&ex.responses).enumerate() {
            if res.status != 200 {
                diffs.push(format!("request {i}: status {} {}", res.status, res.text()));
                continue;
            }
            for d in differences(want, &json(&res.body)) {
                diffs.push(format!("request {i}: {d}"));
            }
        }
        let documented = DELIBERATE.iter().any(|(n, _)| *n == name);
        match (diffs.is_empty(), documented) {
            (true, false) => passed += 1,
            (true, true) => deliberate_now_passing.push(name),
            (false, true) => {}
            (false, false) => failed.push(format!("{name}:\n    {}", diffs.join("\n    "))),
        }
    }
    eprintln!(
        "gunicorn valid corpus through WSGI: {passed} passed, {} deliberate ({}), \
         {} not applicable: {}",
        DELIBERATE.len(),
        DELIBERATE
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
        not_applicable.len(),
        not_applicable.join(", ")
    );
    assert!(
        deliberate_now_passing.is_empty(),
        "documented deviations that now match gunicorn (remove them from DELIBERATE): {deliberate_now_passing:?}"
    );
    assert!(
        failed.is_empty(),
        "{} case(s) where the app saw something else:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
