//! What ends a worker's serving, and what it does meanwhile: the signals
//! it acts on (SIGTERM/SIGINT/SIGQUIT stop it, SIGUSR1 reopens its logs,
//! SIGHUP/SIGUSR2 are a master's business), and a recycle, which asks the
//! master for a replacement and keeps serving until the master's SIGTERM
//! (or, in a single process, drains at once).

use std::rc::Rc;
use std::sync::Arc;

use super::Shared;
use crate::config::LogConfig;
use crate::recycle::{Parent, RecycleReason, RecycleSignal};

/// The signals a worker (or the single process) acts on, each with what
/// it means.
pub(super) struct WorkerSignals(Vec<(tokio::signal::unix::Signal, WorkerSignal)>);

#[derive(Clone, Copy)]
enum WorkerSignal {
    /// SIGTERM, SIGINT, SIGQUIT: stop accepting and drain.
    Stop,
    /// SIGUSR1: reopen the logs.
    ReopenLogs,
    /// SIGHUP, SIGUSR2: a master's business.
    NotHere(&'static str),
}

impl WorkerSignals {
    pub(super) fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let wanted = [
            (SignalKind::terminate(), WorkerSignal::Stop),
            (SignalKind::interrupt(), WorkerSignal::Stop),
            (SignalKind::quit(), WorkerSignal::Stop),
            (SignalKind::user_defined1(), WorkerSignal::ReopenLogs),
            (SignalKind::hangup(), WorkerSignal::NotHere("SIGHUP")),
            (
                SignalKind::user_defined2(),
                WorkerSignal::NotHere("SIGUSR2"),
            ),
        ];
        let count = wanted.len();
        let installed: Vec<_> = wanted
            .into_iter()
            .filter_map(|(kind, meaning)| Some((signal(kind).ok()?, meaning)))
            .collect();
        if installed.len() < count {
            tracing::error!("cannot install signal handlers; stop this process with SIGKILL");
        }
        WorkerSignals(installed)
    }

    async fn next(&mut self) -> WorkerSignal {
        std::future::poll_fn(|cx| {
            for (signal, meaning) in &mut self.0 {
                if signal.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*meaning);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Serves until a stop signal, or (without a master) a recycle; with a
/// master, a recycle asks it for a replacement and serving goes on until
/// its SIGTERM.
pub(super) async fn serve_until_stopped(
    mut signals: WorkerSignals,
    recycle: Option<Arc<RecycleSignal>>,
    parent: Rc<dyn Parent>,
    shared: Rc<Shared>,
    log: LogConfig,
) {
    let recycled = next_recycle(&recycle);
    tokio::pin!(recycled);
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                WorkerSignal::Stop => return,
                WorkerSignal::ReopenLogs => reopen_logs(&shared, &log, true),
                WorkerSignal::NotHere(name) => if parent.supervised() {
                    tracing::debug!("{name} ignored: it is for the master process");
                } else if name == "SIGHUP" {
                    tracing::warn!("SIGHUP ignored: reloading needs a master process (-w 1 or more)");
                } else {
                    tracing::warn!("{name}: binary upgrade is not supported yet; ignored");
                },
            },
            reason = &mut recycled => {
                if !parent.replace_me(reason) {
                    tracing::info!("recycling ({reason}): draining and exiting");
                    return;
                }
                tracing::info!("asked the master for a replacement ({reason}); serving until it is ready");
                recycled.set(next_recycle(&recycle));
            }
        }
    }
}

async fn next_recycle(recycle: &Option<Arc<RecycleSignal>>) -> RecycleReason {
    match recycle {
        Some(signal) => signal.requested().await,
        None => std::future::pending().await,
    }
}

/// SIGUSR1 (`said`), or a worker becoming ready: reopen the error log and
/// the access log at their paths.
pub(super) fn reopen_logs(shared: &Shared, log: &LogConfig, said: bool) {
    let error_log = crate::log::reopen_error_log(log);
    let access_log = shared.services.access_log.reopen();
    for (which, result) in [("error", error_log), ("access", access_log)] {
        if let Err(err) = result {
            tracing::error!("cannot reopen the {which} log: {err}");
        }
    }
    if said {
        tracing::info!("logs reopened (pid {})", std::process::id());
    }
}
