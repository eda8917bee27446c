//! What a worker's handlers share, built once when the worker starts: the
//! router and limits, the access log, the WSGI runtime, the proxy's
//! upstream pools, the open-file cache, the CGI process slots, and where
//! buffered request bodies go.

use std::path::PathBuf;

use crate::config::{Config, Limits};
use crate::log::AccessLog;
use crate::router::Router;
use crate::wsgi::WsgiRuntime;

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
}

/// The per-worker state behind every request (one per worker process, used
/// on its I/O thread).
pub struct Services {
    pub(super) router: Router,
    pub limits: Limits,
    pub access_log: AccessLog,
    pub(super) wsgi: Option<WsgiRuntime>,
    /// The reverse proxy's upstream pools (health, idle connections).
    pub(super) proxy: crate::proxy::Proxy,
    /// The open-file cache of the static handler, and of the files apps
    /// and upstreams name (X-Accel-Redirect, X-Sendfile).
    pub(super) static_cache: crate::static_files::Cache,
    /// `cgi_max_processes`, per CGI route.
    pub(super) cgi: crate::cgi::Slots,
    /// Where buffered request bodies go past `limits.body_buffer_size`.
    pub(super) body_temp_dir: PathBuf,
}

impl Services {
    pub fn new(config: &Config, wsgi: Option<WsgiRuntime>) -> Result<Self, ServicesError> {
        Ok(Services {
            router: Router::new(&config.routes),
            limits: config.limits.clone(),
            access_log: AccessLog::open(&config.log).map_err(ServicesError::AccessLog)?,
            wsgi,
            proxy: crate::proxy::Proxy::new(config),
            static_cache: crate::static_files::Cache::new(),
            cgi: crate::cgi::Slots::default(),
            body_temp_dir: config.body_temp_dir.clone(),
        })
    }
}
