//! The `portico` command: parse flags, load and validate the configuration,
//! then run as master (supervising workers), as a worker, or as one process.

use std::process::ExitCode;
use std::rc::Rc;

use anyhow::Context;
use clap::Parser;

use portico::config::{self, Cli, Config};
use portico::recycle::NoParent;
use portico::scoreboard::Scoreboard;
use portico::server::listener::{inherited_fds, BoundListener, LISTEN_FDS_ENV};
use portico::wsgi::WsgiRuntime;
use portico::{log, master, server, signals};

fn main() -> ExitCode {
    signals::survive_strays();
    let cli = Cli::parse();
    let worker = cli.worker;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("portico: error: {err:#}");
            // A worker's errors all come before it reports ready (its config,
            // app, TLS files, access log): the master must not retry it.
            if worker {
                ExitCode::from(master::EXIT_START_FAILED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::load(&cli)?;
    if cli.check_config {
        for notice in &config.notices {
            eprintln!("portico: warning: {notice}");
        }
        server::check(&config)?;
        log::check_error_log(&config.log).with_context(|| error_log_name(&config))?;
        println!(
            "configuration OK: {} listener(s), {} route(s), {} worker(s)",
            config.listeners.len(),
            config.routes.len(),
            config.workers
        );
        return Ok(());
    }
    log::init_error_log(&config.log).with_context(|| error_log_name(&config))?;
    if cli.worker {
        return run_worker(&config);
    }
    // Once, from the master (or the single process), not from each worker.
    for notice in &config.notices {
        tracing::warn!("{notice}");
    }
    server::check(&config)?;
    let listeners = master::bind_all(&config)?;
    if config.workers == 0 {
        let served = WsgiRuntime::start(&config, None)
            .map_err(anyhow::Error::from)
            .and_then(|wsgi| {
                Ok(server::run_worker(
                    &config,
                    listeners,
                    wsgi,
                    Rc::new(NoParent),
                )?)
            });
        master::remove_unix_sockets(&config);
        served?;
    } else {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        master::run(&config, listeners, args)?;
    }
    Ok(())
}

fn error_log_name(config: &Config) -> String {
    format!(
        "cannot open the error log {} (--error-log / log.error_log)",
        config
            .log
            .error_log
            .as_deref()
            .map_or_else(|| "-".into(), |p| p.display().to_string())
    )
}

/// A worker started by the master: sockets come from it. Any error here
/// (the app does not import, a TLS file does not load, the access log does
/// not open) happens before the worker is ready; `main` turns it into
/// `EXIT_START_FAILED`.
fn run_worker(config: &Config) -> anyhow::Result<()> {
    if let Err(gone) = master::watch_master() {
        // Nobody is left to read a start failure: a plain exit.
        tracing::error!("{gone}; worker exiting");
        std::process::exit(1);
    }
    let link = master::Link::inherited();
    let fds = std::env::var(LISTEN_FDS_ENV).with_context(|| {
        format!("--worker is internal: it needs {LISTEN_FDS_ENV} from a master")
    })?;
    let fds = inherited_fds(&fds).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        fds.len() == config.listeners.len(),
        "the master passed {} sockets for {} listeners",
        fds.len(),
        config.listeners.len()
    );
    let listeners = fds
        .into_iter()
        .zip(&config.listeners)
        .map(|(fd, l)| BoundListener::from_inherited(fd, &l.addr))
        .collect::<Vec<_>>();
    for l in &listeners {
        l.set_inheritable(false)?;
    }
    if let Some(python) = &config.python {
        let apps: Vec<String> = python.apps.iter().map(|a| format!("`{a}`")).collect();
        link.doing(format!("importing {}", apps.join(", ")));
    }
    let wsgi = WsgiRuntime::start(config, Scoreboard::inherited())?;
    link.doing("opening its listeners and logs");
    // Fails only while setting up, before it reports ready.
    Ok(server::run_worker(config, listeners, wsgi, Rc::new(link))?)
}
