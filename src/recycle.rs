//! Recycling a worker: why it wants to be replaced ([`RecycleReason`]), the
//! in-process signal that carries the wish from the Python threads to the
//! worker's I/O thread ([`RecycleSignal`]), and whom the worker tells
//! ([`Parent`]: its master, or nobody in single-process mode).
//!
//! A worker that asks to be recycled keeps serving: its master starts a
//! replacement in its slot and sends it SIGTERM only once the replacement is
//! ready. Only a single process, which has no master, drains and exits at
//! once.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Why a worker asks for a replacement; said in the master's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecycleReason {
    /// It served `--max-requests` (plus its jitter).
    MaxRequests,
    /// A request ran the app past `--timeout`.
    Timeout,
}

impl RecycleReason {
    /// The word used on the wire to the master and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RecycleReason::MaxRequests => "max-requests",
            RecycleReason::Timeout => "timeout",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "max-requests" => Some(RecycleReason::MaxRequests),
            "timeout" => Some(RecycleReason::Timeout),
            _ => None,
        }
    }
}

impl std::fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Raised from any thread (a Python thread at max-requests, the timeout
/// watchdog), awaited by the worker's I/O thread.
#[derive(Default)]
pub struct RecycleSignal {
    notify: Notify,
    /// Reasons raised and not yet taken, oldest first (at most one of each).
    pending: Mutex<Vec<RecycleReason>>,
}

impl RecycleSignal {
    /// Asks for the worker to be recycled; a reason already pending is not
    /// queued twice.
    pub fn request(&self, reason: RecycleReason) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.contains(&reason) {
            pending.push(reason);
        }
        drop(pending);
        self.notify.notify_one();
    }

    /// The next reason raised (waits for one).
    pub async fn requested(&self) -> RecycleReason {
        loop {
            if let Some(reason) = self.take() {
                return reason;
            }
            self.notify.notified().await;
        }
    }

    fn take(&self) -> Option<RecycleReason> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (!pending.is_empty()).then(|| pending.remove(0))
    }
}

/// The process a worker reports to.
pub trait Parent {
    /// The worker has loaded its apps and accepts connections.
    fn ready(&self);
    /// Asks for a replacement. `true`: the parent will start one and send
    /// SIGTERM once it is ready, so keep serving; `false`: nobody to ask
    /// (single process), drain and exit now.
    fn replace_me(&self, reason: RecycleReason) -> bool;
    /// Whether a master supervises this process (and so handles SIGHUP).
    fn supervised(&self) -> bool;
}

/// Single-process mode: no master to report to.
pub struct NoParent;

impl Parent for NoParent {
    fn ready(&self) {}

    fn replace_me(&self, _reason: RecycleReason) -> bool {
        false
    }

    fn supervised(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reasons_come_out_once_each_in_order() {
        let signal = RecycleSignal::default();
        signal.request(RecycleReason::MaxRequests);
        signal.request(RecycleReason::MaxRequests);
        signal.request(RecycleReason::Timeout);
        assert_eq!(signal.requested().await, RecycleReason::MaxRequests);
        assert_eq!(signal.requested().await, RecycleReason::Timeout);
        assert!(signal.take().is_none());
    }

    #[test]
    fn reasons_round_trip_as_words() {
        for reason in [RecycleReason::MaxRequests, RecycleReason::Timeout] {
            assert_eq!(RecycleReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RecycleReason::parse("bored"), None);
    }
}
