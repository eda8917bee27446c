//! Loading the app: `module`, `module:callable`, `module:factory()`,
//! `--chdir`, `--pythonpath`, `--venv`; an import error stops start-up;
//! try-files with `--static /=DIR` and a Django-style `--static /static=DIR`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::wsgi::{copy_fixtures, json, serve_app, venv};
use crate::util::{bin, get, TestDir};

#[test]
fn module_alone_means_module_application() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe", &[]);
    assert_eq!(get(server.addr, "/hello", &[]).text(), "hello\n");
}

#[test]
fn module_callable_and_factory() {
    let t = TestDir::new();
    let server = serve_app(&t, "factory:app", &[]);
    assert_eq!(get(server.addr, "/", &[]).text(), "from app");
    let server = t.serve(&["factory:create_app()"]);
    assert_eq!(get(server.addr, "/", &[]).text(), "from factory");
}

#[test]
fn chdir_changes_directory_and_imports_from_it() {
    let t = TestDir::new();
    let server = serve_app(&t, "chdirapp:application", &["--chdir", "sub"]);
    let res = get(server.addr, "/", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    let want = t.join("sub").canonicalize().unwrap();
    assert_eq!(res.text(), want.to_str().unwrap());
}

#[test]
fn pythonpath_adds_an_import_directory() {
    let t = TestDir::new();
    let server = serve_app(&t, "ppapp:application", &["--pythonpath", "libdir"]);
    assert_eq!(get(server.addr, "/", &[]).text(), "from pythonpath");
}

#[test]
fn venv_gives_the_venv_prefix_and_packages() {
    let t = TestDir::new();
    let venv = venv();
    let server = serve_app(
        &t,
        "sysinfo:application",
        &["--venv", venv.to_str().unwrap()],
    );
    let info = json(&get(server.addr, "/", &[]).body);
    let prefix = std::path::Path::new(info["prefix"].as_str().unwrap());
    assert_eq!(
        prefix.canonicalize().unwrap(),
        venv.canonicalize().unwrap(),
        "{info}"
    );
    assert!(
        info["flask"]
            .as_str()
            .unwrap()
            .starts_with(venv.to_str().unwrap()),
        "flask must come from the venv: {info}"
    );
    // The venv's python is the interpreter portico embeds.
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .unwrap();
    let want = String::from_utf8(out.stdout).unwrap();
    assert!(
        info["version"].as_str().unwrap().starts_with(want.trim()),
        "embedded {} vs venv python {want}",
        info["version"]
    );
}

#[test]
fn an_import_error_stops_start_up_with_the_traceback_and_exit_code_1() {
    let t = TestDir::new();
    copy_fixtures(&t);
    let mut child = Command::new(bin())
        .args(["-b", "127.0.0.1:0", "-w", "1", "broken:application"])
        .current_dir(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("portico kept running with an app that cannot be imported");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Traceback") && stderr.contains("portico_no_such_module_for_tests"),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("broken.py"),
        "traceback names the file: {stderr}"
    );
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
}

#[test]
fn try_files_serves_existing_files_and_passes_the_rest_to_the_app() {
    let t = TestDir::new();
    t.write("public/robots.txt", "User-agent: *\n");
    let server = serve_app(&t, "probe:application", &["--static", "/=public"]);
    let res = get(server.addr, "/robots.txt", &[]);
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "User-agent: *\n");
    assert_eq!(get(server.addr, "/hello", &[]).text(), "hello\n");
    let env = json(&get(server.addr, "/not/a/file", &[]).body);
    assert_eq!(env["PATH_INFO"], "/not/a/file");
}

#[test]
fn django_style_static_prefix_beside_the_app() {
    let t = TestDir::new();
    t.write("static/css/site.css", "body{}\n");
    let server = serve_app(&t, "probe:application", &["--static", "/static=static"]);
    let res = get(server.addr, "/static/css/site.css", &[]);
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "body{}\n");
    assert_eq!(get(server.addr, "/static/missing.css", &[]).status, 404);
    assert_eq!(get(server.addr, "/hello", &[]).text(), "hello\n");
}
