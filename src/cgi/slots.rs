//! `cgi_max_processes`: how many scripts of one route may run at once in
//! this worker process. A slot is taken before spawning (none free → 503)
//! and given back when the script has exited and been reaped, so the limit
//! counts processes, not responses.
//!
//! The semaphores live in the worker's `Slots` (one per worker process,
//! hence "per worker"), keyed by route prefix and directory; the config
//! stays plain data.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::CgiOptions;

/// The process slots of every CGI route of a worker, made on first use.
#[derive(Default)]
pub struct Slots(RefCell<HashMap<(String, PathBuf), Arc<Semaphore>>>);

impl Slots {
    /// The semaphore of the route mounted at `prefix` running `opts`.
    pub fn for_route(&self, opts: &CgiOptions, prefix: &str) -> Arc<Semaphore> {
        self.0
            .borrow_mut()
            .entry((prefix.to_string(), opts.dir.clone()))
            .or_insert_with(|| Arc::new(Semaphore::new(opts.max_processes)))
            .clone()
    }
}
