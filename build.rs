//! Pins the libpython that portico embeds to the interpreter it was built
//! against: without an rpath the loader would pick whatever libpython3.x is on
//! the system library path (on Debian, the distribution's build, with a
//! different sys.prefix and site-packages). The interpreter is `PYO3_PYTHON`
//! when set, else `python3` on PATH (the same choice PyO3 makes).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = "import sys, sysconfig; print(sys.executable); print(sysconfig.get_config_var('LIBDIR') or '')";
    let output = Command::new(&python)
        .args(["-c", probe])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find libpython: {e}; set PYO3_PYTHON"));
    assert!(
        output.status.success(),
        "{python} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("interpreter paths are UTF-8");
    let mut lines = text.lines();
    let executable = lines.next().unwrap_or_default();
    let libdir = lines.next().unwrap_or_default();
    println!("cargo:rustc-env=PORTICO_PYTHON_EXECUTABLE={executable}");
    if !libdir.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
}
