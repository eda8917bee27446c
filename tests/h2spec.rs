//! HTTP/2 conformance, measured from outside: h2spec (strict mode, every
//! case of RFC 7540/7541 it knows) against the TLS listener and the
//! cleartext (h2c prior knowledge) listener. The route is an echo app that
//! reads its body, so cases with bad frames after the request are not
//! answered before the bad frame arrives (see
//! /work/shared/conformance/h2spec.md).

use std::path::PathBuf;
use std::process::Command;

use crate::util::client::{make_cert, KeyKind};
use crate::util::wsgi::copy_fixtures;
use crate::util::{Server, TestDir};

/// Cases that fail on purpose, with the reason; everything else must pass.
const H2C_DELIBERATE: &[(&str, &str, &str)] = &[(
    "http2/3.5",
    "Sends invalid connection preface",
    "a cleartext listener serves HTTP/1.1 and h2c on one port: bytes that are \
     not the exact HTTP/2 preface are an HTTP/1 request, answered 400 and closed",
)];

fn h2spec() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/h2spec/h2spec");
    assert!(
        path.is_file(),
        "h2spec is missing at {}: it is built for this machine in /work/shared/tools \
         (see /work/shared/conformance/h2spec.md)",
        path.display()
    );
    path
}

/// One h2spec case from its JUnit report.
#[derive(Debug)]
struct Case {
    package: String,
    name: String,
    failed: bool,
    skipped: bool,
}

fn attribute(tag: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    tag.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.replace("&#39;", "'").replace("&#34;", "\""))
        .unwrap_or_default()
}

fn parse_report(xml: &str) -> Vec<Case> {
    xml.split("<testcase ")
        .skip(1)
        .map(|case| {
            let body = case.split("</testcase>").next().unwrap_or(case);
            let tag = body.split('>').next().unwrap_or("");
            Case {
                package: attribute(tag, "package"),
                name: attribute(tag, "classname"),
                failed: body.contains("<failure") || body.contains("<error"),
                skipped: body.contains("<skipped"),
            }
        })
        .collect()
}

/// Runs strict h2spec against `port` and returns its cases.
fn run_h2spec(t: &TestDir, port: u16, tls: bool, report: &str) -> Vec<Case> {
    let report = t.join(report);
    let mut cmd = Command::new(h2spec());
    cmd.args(["-S", "-h", "127.0.0.1", "-p", &port.to_string(), "-o", "5"])
        .arg("-j")
        .arg(&report);
    if tls {
        cmd.args(["-t", "-k"]);
    }
    let out = cmd.output().expect("run h2spec");
    let xml = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "h2spec wrote no report ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let cases = parse_report(&xml);
    assert!(
        cases.len() >= 140,
        "h2spec ran only {} cases:\n{}",
        cases.len(),
        String::from_utf8_lossy(&out.stdout)
    );
    cases
}

fn unexpected_failures(cases: &[Case], deliberate: &[(&str, &str, &str)]) -> Vec<String> {
    cases
        .iter()
        .filter(|c| c.failed || c.skipped)
        .filter(|c| {
            !deliberate
                .iter()
                .any(|(package, name, _)| c.package == *package && c.name == *name)
        })
        .map(|c| format!("{} {}", c.package, c.name))
        .collect()
}

fn serve_echo_tls_and_h2c(t: &TestDir) -> Server {
    copy_fixtures(t);
    let (cert, key) = make_cert(t.path(), KeyKind::Pkcs8);
    t.write(
        "h2spec.toml",
        format!(
            r#"workers = 1
app = "echo:application"

[log]
access_log = "off"

[[listen]]
address = "127.0.0.1:0"
tls_cert = "{}"
tls_key = "{}"

[[listen]]
address = "127.0.0.1:0"
"#,
            cert.display(),
            key.display()
        ),
    );
    let s = Server::start_in(t.path(), &["-c", "h2spec.toml"], 2);
    assert_eq!(s.listeners[0].0, "https", "{}", s.logs());
    assert_eq!(s.listeners[1].0, "http", "{}", s.logs());
    s
}

#[test]
fn h2spec_strict_passes_on_tls_and_h2c_listeners() {
    let t = TestDir::new();
    let s = serve_echo_tls_and_h2c(&t);
    let tls = run_h2spec(&t, s.listeners[0].1.port(), true, "tls.xml");
    let h2c = run_h2spec(&t, s.listeners[1].1.port(), false, "h2c.xml");
    let tls_failed = unexpected_failures(&tls, &[]);
    let h2c_failed = unexpected_failures(&h2c, H2C_DELIBERATE);
    assert!(
        tls_failed.is_empty() && h2c_failed.is_empty(),
        "h2spec failures: TLS {tls_failed:#?}, h2c {h2c_failed:#?}\n{}",
        s.logs()
    );
    // The deliberate exceptions must still be what fails, or the list is stale.
    for (package, name, why) in H2C_DELIBERATE {
        let case = h2c
            .iter()
            .find(|c| c.package == *package && c.name == *name)
            .unwrap_or_else(|| panic!("h2spec no longer has {package} {name}"));
        assert!(
            case.failed,
            "{package} {name} passes now; remove it from H2C_DELIBERATE ({why})"
        );
    }
}

#[test]
fn the_junit_reader_sees_failures() {
    let xml = r#"<testsuites><testsuite name="x">
    <testcase package="http2/3.5" classname="Sends a&#39;b" time="0.1"></testcase>
    <testcase package="http2/6.1" classname="Bad" time="0.1">
      <error>Expected GOAWAY</error>
    </testcase>
    <testcase package="hpack/2" classname="Skip" time="0"><skipped/></testcase>
    </testsuite></testsuites>"#;
    let cases = parse_report(xml);
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0].name, "Sends a'b");
    assert!(!cases[0].failed && cases[1].failed && cases[2].skipped);
    assert_eq!(
        unexpected_failures(&cases, &[]),
        ["http2/6.1 Bad", "hpack/2 Skip"]
    );
}
