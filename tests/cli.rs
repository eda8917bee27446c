//! The command line: the listening line, --check-config, --help.

use crate::util::{run, TestDir};

#[test]
fn port_0_prints_the_real_port_in_the_listening_line() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let line = s
        .stdout
        .lines()
        .into_iter()
        .find(|l| l.starts_with("listening on "))
        .unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert_ne!(s.addr.port(), 0, "{line}");
    assert_eq!(
        crate::util::get(s.addr, "/hello.txt", &[]).status,
        200,
        "{}",
        s.logs()
    );
}

#[test]
fn check_config_accepts_a_valid_file() {
    let t = TestDir::new();
    t.site();
    t.write(
        "portico.toml",
        "workers = 2\n[[listen]]\naddress = \"127.0.0.1:0\"\n[limits]\nmax_body_size = \"2m\"\n\
         [[route]]\npath = \"/\"\nstatic = \"site\"\nexpires = \"1h\"\n",
    );
    let out = run(t.path(), &["-c", "portico.toml", "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

fn check_fails(file: &str, key: &str) {
    let t = TestDir::new();
    t.site();
    t.write("bad.toml", file);
    let out = run(t.path(), &["-c", "bad.toml", "--check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.toml"),
        "message should name the file: {stderr}"
    );
    assert!(
        stderr.contains(key),
        "message should name `{key}`: {stderr}"
    );
}

#[test]
fn check_config_refuses_an_unknown_key_naming_it_and_the_file() {
    check_fails(
        "[[route]]\npath = \"/\"\nstatic = \"site\"\nautoindx = true\n",
        "autoindx",
    );
    check_fails("wrokers = 2\n", "wrokers");
    check_fails("[limits]\nmax_header = 10\n", "max_header");
}

#[test]
fn check_config_refuses_a_bad_value_naming_the_key_and_the_file() {
    check_fails(
        "[limits]\nheader_timeout = \"soon\"\n",
        "limits.header_timeout",
    );
    check_fails(
        "[limits]\nmax_body_size = \"12x\"\n",
        "limits.max_body_size",
    );
    check_fails(
        "[[route]]\npath = \"/\"\nstatic = \"site\"\nautoindex = \"yes\"\n",
        "autoindex",
    );
    check_fails(
        "[[route]]\npath = \"/\"\nstatic = \"no-such-dir\"\n",
        "route[0].static",
    );
    check_fails("[[listen]]\naddress = \"nowhere\"\n", "listen[0].address");
}

#[test]
fn a_bad_config_makes_the_server_exit_1_without_listening() {
    let t = TestDir::new();
    t.write("bad.toml", "[log]\naccess_log_format = \"xml\"\n");
    let out = run(t.path(), &["-c", "bad.toml", "-b", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access_log_format"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

#[test]
fn help_mentions_every_flag() {
    let t = TestDir::new();
    let out = run(t.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "-b,",
        "--static",
        "--config",
        "-c,",
        "--check-config",
        "--workers",
        "-w,",
        "--no-master",
        "--graceful-timeout",
        "--drain-grace",
        "--start-timeout",
        "--error-log",
        "--access-log ",
        "--access-log-format",
        "--log-level",
        "--tls-cert",
        "--tls-key",
        "--max-body-size",
        "--no-request-buffering",
        "--body-buffer-size",
        "--body-temp-dir",
        "--keepalive-timeout",
        "--header-timeout",
        "--max-connections",
        "--help",
        "--version",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        !help.contains("--worker "),
        "the internal --worker flag is hidden"
    );
    assert!(
        !help.contains("--max-buffered-body-size"),
        "the deprecated flag is hidden"
    );
}

#[test]
fn start_timeout_and_error_log_are_validated() {
    let t = TestDir::new();
    let out = run(t.path(), &["--check-config", "--start-timeout", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--start-timeout"), "{stderr}");
    t.write("site.toml", "start_timeout = \"soon\"\n");
    let out = run(t.path(), &["--check-config", "-c", "site.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("start_timeout"), "{stderr}");
    std::fs::create_dir_all(t.join("logs")).unwrap();
    let out = run(t.path(), &["--check-config", "--error-log", "nodir/e.log"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check-config opens the error log"
    );
    t.write(
        "ok.toml",
        "start_timeout = \"90s\"\n[log]\nerror_log = \"logs/error.log\"\n",
    );
    let out = run(t.path(), &["--check-config", "-c", "ok.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_error_log_that_cannot_be_opened_stops_start_up_naming_it() {
    let t = TestDir::new();
    let out = run(
        t.path(),
        &["-b", "127.0.0.1:0", "--error-log", "no/such/dir/error.log"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the error log") && stderr.contains("--error-log"),
        "{stderr}"
    );
}
