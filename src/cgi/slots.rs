//! `cgi_max_processes`: how many scripts of one route may run at once in
//! this worker process. A slot is taken before spawning (none free → 503)
//! and given back when the script has exited and been reaped, so the limit
//! counts processes, not responses.
//!
//! The semaphores live in a process-wide table keyed by route prefix and
//! directory (each worker process has its own table, hence "per worker");
//! the config stays plain data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Semaphore;

use crate::config::CgiOptions;

type Table = HashMap<(String, PathBuf), Arc<Semaphore>>;

static SLOTS: OnceLock<Mutex<Table>> = OnceLock::new();

/// The semaphore of the route mounted at `prefix` running `opts`.
pub fn for_route(opts: &CgiOptions, prefix: &str) -> Arc<Semaphore> {
    let table = SLOTS.get_or_init(Default::default);
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    table
        .entry((prefix.to_string(), opts.dir.clone()))
        .or_insert_with(|| Arc::new(Semaphore::new(opts.max_processes)))
        .clone()
}
