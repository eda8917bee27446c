//! Starting the embedded CPython and importing the apps, in this order:
//!
//! 1. initialise the interpreter with `executable` set to the venv's python
//!    (or the interpreter portico was built against), so CPython computes
//!    `sys.prefix` and site-packages exactly as that python would; Python
//!    installs no signal handlers (the worker owns signals);
//! 2. `--chdir` (also first on sys.path, as gunicorn does), then
//!    `--pythonpath` entries;
//! 3. enable faulthandler (a crash prints the Python stacks), and have it
//!    print them too if the imports outlast `--start-timeout`;
//! 4. import each `module:callable` (calling it when it is a factory) and
//!    check the result is callable.
//!
//! Any failure carries the Python traceback, so start-up can print it.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::{AppTarget, PythonSettings};

/// The interpreter the binary was built against (see build.rs).
const BUILD_PYTHON: &str = env!("PORTICO_PYTHON_EXECUTABLE");

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot start Python: {0}")]
    Init(String),
    #[error("cannot load the WSGI app `{target}`:\n{traceback}")]
    Import { target: String, traceback: String },
    #[error("the WSGI app `{target}` is {kind}, not a callable")]
    NotCallable { target: String, kind: String },
    /// The Python threads (or their watchdog) could not start.
    #[error(transparent)]
    Threads(#[from] super::pool::StartError),
}

/// Initialises CPython for this process; call once, before any other Python
/// use. The GIL is released on return.
pub fn initialize(settings: &PythonSettings) -> Result<(), LoadError> {
    let executable = match &settings.venv {
        Some(venv) => venv.join("bin").join("python"),
        None => PathBuf::from(BUILD_PYTHON),
    };
    let executable = CString::new(executable.as_os_str().as_bytes())
        .map_err(|_| LoadError::Init("interpreter path contains NUL".into()))?;
    // SAFETY: this is the first Python API use in the process (workers call
    // it once at start, before any thread touches Python); PyConfig is
    // initialised by PyConfig_InitPythonConfig before use and cleared after.
    unsafe {
        if pyo3::ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = MaybeUninit::<pyo3::ffi::PyConfig>::uninit();
        pyo3::ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        let status = pyo3::ffi::PyConfig_SetBytesString(
            &mut config,
            &mut config.executable,
            executable.as_ptr(),
        );
        if pyo3::ffi::PyStatus_Exception(status) != 0 {
            pyo3::ffi::PyConfig_Clear(&mut config);
            return Err(LoadError::Init(status_message(&status)));
        }
        let status = pyo3::ffi::Py_InitializeFromConfig(&config);
        pyo3::ffi::PyConfig_Clear(&mut config);
        if pyo3::ffi::PyStatus_Exception(status) != 0 {
            return Err(LoadError::Init(status_message(&status)));
        }
        // Hand the GIL back: Python runs only on the pool threads.
        pyo3::ffi::PyEval_SaveThread();
    }
    Python::attach(|py| configure_paths(py, settings))
        .map_err(|e| LoadError::Init(Python::attach(|py| traceback_text(py, &e))))
}

/// # Safety
/// `status` must come from a CPython init function.
unsafe fn status_message(status: &pyo3::ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: CPython's err_msg is a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
        .to_string_lossy()
        .into_owned()
}

fn configure_paths(py: Python<'_>, settings: &PythonSettings) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    let mut front: Vec<&Path> = Vec::new();
    if let Some(dir) = &settings.chdir {
        std::env::set_current_dir(dir)?;
        front.push(dir);
    }
    let cwd = std::env::current_dir().ok();
    if settings.chdir.is_none() {
        // As `python -m` and gunicorn do: the current directory imports.
        front.extend(cwd.as_deref());
    }
    front.extend(settings.pythonpath.iter().map(PathBuf::as_path));
    for (i, dir) in front.into_iter().enumerate() {
        path.insert(i, dir.to_string_lossy())?;
    }
    Ok(())
}

/// Python's faulthandler: a fatal signal (a segfault in a C extension)
/// prints every Python thread's stack to stderr (the error log) before the
/// process dies, and the master names the requests it was running.
///
/// faulthandler hands the signal on to the handler it found. For SIGSEGV
/// and SIGBUS that is the Rust runtime's stack-overflow check, which
/// returns for any other cause, so a `kill -SEGV` from outside would be
/// survived; with the default action behind faulthandler, the worker dies
/// of it as of a real fault (a Rust stack overflow loses only its one-line
/// message: faulthandler still prints the stacks).
pub fn enable_faulthandler(py: Python<'_>) -> PyResult<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for fault in [Signal::SIGSEGV, Signal::SIGBUS] {
        // SAFETY: restores the default action, which runs no code of ours.
        let _ = unsafe { signal(fault, SigHandler::SigDfl) };
    }
    py.import("faulthandler")?.call_method0("enable")?;
    Ok(())
}

/// While the apps import: if still importing after `after`, print every
/// Python thread's stack (from faulthandler's own thread, which needs no
/// GIL, so also when the import holds it). [`imports_done`] cancels it.
pub fn watch_imports(py: Python<'_>, after: std::time::Duration) -> PyResult<()> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("exit", false)?;
    py.import("faulthandler")?.call_method(
        "dump_traceback_later",
        (after.as_secs_f64().max(0.001),),
        Some(&kwargs),
    )?;
    Ok(())
}

pub fn imports_done(py: Python<'_>) -> PyResult<()> {
    py.import("faulthandler")?
        .call_method0("cancel_dump_traceback_later")?;
    Ok(())
}

/// Imports `target` and returns the app callable.
pub fn load_app(py: Python<'_>, target: &AppTarget) -> Result<Py<PyAny>, LoadError> {
    let import_err = |e: PyErr| LoadError::Import {
        target: target.to_string(),
        traceback: traceback_text(py, &e),
    };
    let module = py.import(target.module.as_str()).map_err(import_err)?;
    let mut app = module
        .getattr(target.callable.as_str())
        .map_err(import_err)?;
    if target.factory {
        app = app.call0().map_err(import_err)?;
    }
    if !app.is_callable() {
        return Err(LoadError::NotCallable {
            target: target.to_string(),
            kind: app
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string()),
        });
    }
    Ok(app.unbind())
}

/// The exception formatted as Python prints it, traceback included.
pub fn traceback_text(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )
    });
    match formatted.and_then(|lines| {
        lines
            .try_iter()?
            .map(|l| l.and_then(|l| l.extract::<String>()))
            .collect::<PyResult<String>>()
    }) {
        Ok(text) => text.trim_end().to_string(),
        Err(_) => err.to_string(),
    }
}
