//! The WSGI environ as the app sees it (PEP 3333): required keys, PATH_INFO
//! decoding, SCRIPT_NAME from a route prefix, header merging, the client
//! address, the truthful `wsgi.multi*` flags, no leaks from the process
//! environment, and forwarding headers believed only from trusted peers.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::util::raw::{connect, read_responses};
use crate::util::wsgi::{copy_fixtures, json, serve_app};
use crate::util::{Server, TestDir};

/// Sends `request` and returns the environ the probe app saw, plus the
/// client's local address.
fn environ_of(addr: SocketAddr, request: &[u8]) -> (Value, SocketAddr) {
    let mut s = connect(addr);
    let local = s.local_addr().unwrap();
    s.write_all(request).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(5));
    let res = ex.first();
    assert_eq!(res.status, 200, "{}", res.text());
    (json(&res.body), local)
}

fn get_environ(addr: SocketAddr, target: &str, headers: &[&str]) -> Value {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    environ_of(addr, req.as_bytes()).0
}

#[test]
fn environ_has_every_required_key_with_pep3333_types() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let (env, local) = environ_of(
        server.addr,
        b"POST /environ?a=1&b=%20 HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(env["__type__"], "dict", "environ must be a plain dict");
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["QUERY_STRING"], "a=1&b=%20");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "5");
    assert!(env.get("HTTP_CONTENT_TYPE").is_none(), "{env}");
    assert!(env.get("HTTP_CONTENT_LENGTH").is_none(), "{env}");
    assert_eq!(env["SERVER_NAME"], "localhost");
    assert_eq!(env["SERVER_PORT"], "80");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["HTTP_HOST"], "localhost");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["REMOTE_PORT"], local.port().to_string());
    assert_eq!(env["REQUEST_URI"], "/environ?a=1&b=%20");
    assert_eq!(env["RAW_URI"], "/environ?a=1&b=%20");
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["wsgi.input_terminated"], true);
    for key in ["wsgi.input", "wsgi.errors", "wsgi.file_wrapper"] {
        assert!(env[key].is_string(), "{key} missing: {env}");
    }
    assert_eq!(env["__input_read__"], "hello");
}

#[test]
fn path_info_is_percent_decoded_as_latin1_and_raw_uri_is_as_sent() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let env = get_environ(server.addr, "/caf%C3%A9/a%2Fb?q=caf%C3%A9", &[]);
    // UTF-8 bytes C3 A9, each decoded as one latin-1 character.
    assert_eq!(env["PATH_INFO"], "/caf\u{c3}\u{a9}/a/b");
    assert_eq!(env["QUERY_STRING"], "q=caf%C3%A9");
    assert_eq!(env["REQUEST_URI"], "/caf%C3%A9/a%2Fb?q=caf%C3%A9");
    assert_eq!(env["RAW_URI"], "/caf%C3%A9/a%2Fb?q=caf%C3%A9");
}

#[test]
fn non_ascii_bytes_in_query_and_headers_are_latin1() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let (env, _) = environ_of(
        server.addr,
        b"GET /environ?q=\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\nX-Latin: caf\xe9\r\n\r\n",
    );
    assert_eq!(env["HTTP_X_LATIN"], "caf\u{e9}");
    assert_eq!(env["QUERY_STRING"], "q=\u{c3}\u{a9}", "{env}");
    assert_eq!(env["REQUEST_URI"], "/environ?q=\u{c3}\u{a9}", "{env}");
}

#[test]
fn script_name_is_the_route_prefix_from_the_config_file() {
    let t = TestDir::new();
    copy_fixtures(&t);
    t.write(
        "portico.toml",
        "[[route]]\npath = \"/app\"\nwsgi = \"probe:application\"\n",
    );
    let server = t.serve(&["-c", "portico.toml", "-b", "127.0.0.1:0"]);
    let env = get_environ(server.addr, "/app/caf%C3%A9?x=1", &[]);
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "/caf\u{c3}\u{a9}");
    assert_eq!(env["REQUEST_URI"], "/app/caf%C3%A9?x=1");
    let env = get_environ(server.addr, "/app", &[]);
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "");
    let env = get_environ(server.addr, "/app/environ", &[]);
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "/environ");
}

#[test]
fn repeated_headers_are_merged_and_underscored_names_dropped() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let env = get_environ(
        server.addr,
        "/environ",
        &[
            "X-A: 1",
            "X-A: 2",
            "Cookie: a=1",
            "Cookie: b=2",
            "X-User-Id: real",
            "X-User_Id: spoofed",
            "X_Other: dropped",
            "Accept-Language: en",
        ],
    );
    assert_eq!(env["HTTP_X_A"], "1, 2");
    assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(env["HTTP_X_USER_ID"], "real", "{env}");
    assert!(env.get("HTTP_X_OTHER").is_none(), "{env}");
    assert_eq!(env["HTTP_ACCEPT_LANGUAGE"], "en");
}

/// Values repeated from the previous request are reused as the same Python
/// strings: a changed value must still reach the next request, and one that
/// is absent must not linger from the last.
#[test]
fn each_request_sees_its_own_values_when_they_change_and_repeat() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let requests = [
        ("/environ/a?x=1", "a.example:8080", Some("agent-1")),
        ("/environ/a?x=1", "a.example:8080", Some("agent-1")),
        ("/environ/b", "b.example", Some("agent-2")),
        ("/environ/a?x=1", "a.example:8080", None),
        ("/environ/caf%C3%A9", "b.example", Some("agent-\u{e9}")),
    ];
    for (target, host, agent) in requests {
        let agent_line = agent.map(|a| format!("User-Agent: {a}\r\n"));
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
            agent_line.unwrap_or_default()
        );
        let (env, _) = environ_of(server.addr, req.as_bytes());
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = path.replace("caf%C3%A9", "caf\u{c3}\u{a9}");
        assert_eq!(env["PATH_INFO"], path, "{target}");
        assert_eq!(env["QUERY_STRING"], query, "{target}");
        assert_eq!(env["REQUEST_URI"], target);
        assert_eq!(env["HTTP_HOST"], host);
        let (name, port) = host.split_once(':').unwrap_or((host, "80"));
        assert_eq!(env["SERVER_NAME"], name);
        assert_eq!(env["SERVER_PORT"], port);
        match agent {
            // Header bytes are UTF-8 here, so each byte is one latin-1 char.
            Some(a) => assert_eq!(
                env["HTTP_USER_AGENT"],
                a.bytes().map(char::from).collect::<String>()
            ),
            None => assert!(env.get("HTTP_USER_AGENT").is_none(), "{env}"),
        }
    }
    let (env, _) = environ_of(
        server.addr,
        b"POST /environ/a?x=1 HTTP/1.0\r\nCookie: a=1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.0");
    assert!(env.get("HTTP_HOST").is_none(), "no Host: {env}");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], server.addr.port().to_string());
    assert_eq!(env["HTTP_COOKIE"], "a=1");
    let env = get_environ(server.addr, "/environ/a?x=1", &[]);
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["HTTP_HOST"], "localhost");
    assert!(env.get("HTTP_COOKIE").is_none(), "{env}");
    assert!(env.get("CONTENT_LENGTH").is_none(), "{env}");
}

#[test]
fn multithread_is_true_with_two_threads_false_with_one() {
    let t = TestDir::new();
    let two = serve_app(&t, "probe:application", &["--threads", "2"]);
    let env = get_environ(two.addr, "/environ", &[]);
    assert_eq!(env["wsgi.multithread"], true);
    assert_eq!(env["wsgi.multiprocess"], false, "-w 1");
    let one = t.serve(&["probe:application", "--threads", "1"]);
    let env = get_environ(one.addr, "/environ", &[]);
    assert_eq!(env["wsgi.multithread"], false);
}

#[test]
fn multiprocess_is_true_with_two_workers() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &["-w", "2"]);
    let env = get_environ(server.addr, "/environ", &[]);
    assert_eq!(env["wsgi.multiprocess"], true);
}

#[test]
fn nothing_from_the_process_environment_leaks_into_environ() {
    let t = TestDir::new();
    copy_fixtures(&t);
    let server = Server::start_in_env(
        t.path(),
        &["-b", "127.0.0.1:0", "-w", "1", "probe:application"],
        1,
        &[("PORTICO_LEAK_CANARY", "secret"), ("HTTP_X_LEAK", "secret")],
    );
    let env = get_environ(server.addr, "/environ", &[]);
    let text = env.to_string();
    assert!(!text.contains("PORTICO_LEAK_CANARY"), "{text}");
    assert!(!text.contains("HTTP_X_LEAK"), "{text}");
    assert!(
        env.get("PATH").is_none() && env.get("HOME").is_none(),
        "{text}"
    );
}

const FORWARDED: &[&str] = &[
    "X-Forwarded-For: 203.0.113.7",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: example.org",
];

#[test]
fn forwarded_headers_are_trusted_from_allowed_peers() {
    let t = TestDir::new();
    let server = serve_app(
        &t,
        "probe:application",
        &["--forwarded-allow-ips", "127.0.0.1"],
    );
    let env = get_environ(server.addr, "/environ", FORWARDED);
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.7", "{env}");
    assert_eq!(env["wsgi.url_scheme"], "https", "{env}");
    assert_eq!(env["HTTP_HOST"], "example.org", "{env}");
    assert_eq!(env["SERVER_NAME"], "example.org", "{env}");
    assert_eq!(env["SERVER_PORT"], "443", "{env}");
    // REMOTE_PORT belongs with REMOTE_ADDR: never the proxy's port beside
    // the forwarded client's address.
    let (env, local) = environ_of(
        server.addr,
        b"GET /environ HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.7");
    assert_ne!(
        env.get("REMOTE_PORT").and_then(Value::as_str),
        Some(local.port().to_string().as_str()),
        "REMOTE_PORT of the proxy mixed with the forwarded REMOTE_ADDR: {env}"
    );
}

#[test]
fn rfc7239_forwarded_header_is_trusted_from_allowed_peers() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let env = get_environ(
        server.addr,
        "/environ",
        &["Forwarded: for=\"[2001:db8::1]:4711\";proto=https;host=fwd.example"],
    );
    assert_eq!(env["REMOTE_ADDR"], "2001:db8::1", "{env}");
    assert_eq!(env["wsgi.url_scheme"], "https", "{env}");
    assert_eq!(env["HTTP_HOST"], "fwd.example", "{env}");
}

#[test]
fn forwarded_headers_are_ignored_from_other_peers() {
    let t = TestDir::new();
    let server = serve_app(
        &t,
        "probe:application",
        &["--forwarded-allow-ips", "10.9.9.9"],
    );
    let env = get_environ(server.addr, "/environ", FORWARDED);
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env}");
    assert_eq!(env["wsgi.url_scheme"], "http", "{env}");
    assert_eq!(env["HTTP_HOST"], "localhost", "{env}");
}

#[test]
fn http2_requests_reach_the_app_with_their_authority() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let res = crate::util::client::get_h2c(server.addr, "/environ?h2=1");
    assert_eq!(res.status, 200);
    let env = json(&res.body);
    // RFC 9113 names the protocol "HTTP/2"; Apache's CGI/WSGI environ says
    // "HTTP/2.0". Either tells the app the truth.
    assert!(
        env["SERVER_PROTOCOL"] == "HTTP/2" || env["SERVER_PROTOCOL"] == "HTTP/2.0",
        "{env}"
    );
    assert_eq!(env["HTTP_HOST"], server.addr.to_string(), "{env}");
    assert_eq!(env["SERVER_PORT"], server.addr.port().to_string(), "{env}");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["QUERY_STRING"], "h2=1");
    assert_eq!(env["REQUEST_URI"], "/environ?h2=1", "{env}");
}

/// httpoxy: a `Proxy:` request header must not become `HTTP_PROXY`, which
/// HTTP libraries in the app read as their outgoing proxy.
#[test]
fn the_proxy_header_is_not_in_the_environ() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let env = get_environ(
        server.addr,
        "/environ",
        &["Proxy: http://evil.example:8080", "X-Kept: yes"],
    );
    assert!(env.get("HTTP_PROXY").is_none(), "{env}");
    assert_eq!(env["HTTP_X_KEPT"], "yes", "{env}");
}
