//! Configuration in two stages: what the user wrote (`file` for TOML, `cli` for
//! flags) is parsed and checked once at start; the rest of the program sees only
//! the validated types below (socket addresses, canonical paths, parsed routes).

mod cli;
pub(crate) mod file;
mod units;
mod upstream;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::Cli;
pub use upstream::{
    parse_upstream_url, Balance, HealthCheck, ProxyOptions, UpstreamConfig, UpstreamServer,
    UpstreamUrl,
};
pub use validate::{load, DEFAULT_BODY_BUFFER};

/// Everything that can be wrong with what the user wrote; each message names
/// the key (and the file) so it can be fixed without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// The validated configuration of one portico instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// How the embedded Python runs; `None` when no route names an app, so
    /// static-only and CGI-only sites never load Python.
    pub python: Option<PythonSettings>,
    pub listeners: Vec<ListenerConfig>,
    /// Worker processes; 0 means everything runs in the master's process.
    pub workers: usize,
    pub graceful_timeout: Duration,
    /// While draining, how long an idle keep-alive connection is kept for
    /// its next request (at most `graceful_timeout`).
    pub drain_grace: Duration,
    /// A worker not ready this long after it started is killed (at start-up
    /// this stops the master; on reload the old workers keep serving).
    pub start_timeout: Duration,
    /// Peers whose X-Forwarded-* / Forwarded headers are believed.
    pub forwarded_allow_ips: ForwardedAllow,
    pub limits: Limits,
    pub log: LogConfig,
    pub routes: Vec<Route>,
    /// Pools the `proxy` routes send to (named ones, then inline ones).
    pub upstreams: Vec<UpstreamConfig>,
    /// Where buffered request bodies past `limits.body_buffer_size` go
    /// (unnamed temporary files); checked writable at start when a route
    /// may buffer.
    pub body_temp_dir: PathBuf,
    /// Warnings about the configuration (deprecated keys), logged once by
    /// the process that serves or supervises.
    pub notices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub addr: ListenAddr,
    pub tls: Option<TlsFiles>,
    pub protocol: Protocol,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (h2c, or ALPN with TLS).
    #[default]
    Http,
    /// The uwsgi protocol (a front server's `uwsgi_pass`); never TLS.
    Uwsgi,
}

impl Protocol {
    /// The URL scheme printed in `listening on` lines.
    pub fn scheme(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Protocol::Uwsgi, _) => "uwsgi",
            (Protocol::Http, true) => "https",
            (Protocol::Http, false) => "http",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Per-connection and per-request limits; each has the status it answers with
/// in its doc comment.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request target accepted; longer → 414.
    pub max_uri_length: usize,
    /// Largest request head (request line + header fields) in bytes; larger → 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more → 431.
    pub max_headers: usize,
    /// Time to receive a whole request head once its first byte arrived;
    /// past it → 408 and the connection is closed.
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// A request body from which no byte arrived this long, while a handler
    /// waits for one: 408 (if no response started) and the connection is
    /// closed. The client's time, never the app's or an upstream's.
    pub body_timeout: Duration,
    /// A client that takes no response byte this long (the socket stays
    /// full, or an HTTP/2 stream's window stays closed) is closed.
    pub send_timeout: Duration,
    /// Open connections per worker; past it, accepting pauses.
    pub max_connections: usize,
    /// Bytes of a buffered request body held in memory; a longer body goes
    /// to a temporary file in `Config::body_temp_dir`.
    pub body_buffer_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub access_log: AccessLogTarget,
    pub access_log_format: AccessLogFormat,
    /// A tracing filter directive such as `info` or `portico=debug`.
    pub level: String,
    /// The error log's file; `None` is stderr as inherited.
    pub error_log: Option<PathBuf>,
}

/// One route: requests whose Host matches `host` (any host when `None`) and
/// whose path starts with `prefix` on a segment boundary.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Option<String>,
    /// Starts with `/`, no trailing slash except for the root route `/`.
    pub prefix: String,
    /// Largest request body accepted; larger → 413. No body is held whole
    /// in memory (buffered ones spill to a file), so the default is large
    /// (see `DEFAULT_MAX_BODY`).
    pub max_body_size: u64,
    /// WSGI and CGI: read the whole body (memory, then a temporary file)
    /// before the app is called or the script started. The proxy streams.
    pub request_buffering: bool,
    pub static_files: Option<StaticOptions>,
    /// What answers the request when there is no static root, or when the
    /// static root has no such file (try-files).
    pub handler: Option<Handler>,
}

/// The dynamic handler of a route.
#[derive(Debug, Clone)]
pub enum Handler {
    Cgi(CgiOptions),
    Wsgi(WsgiOptions),
    Proxy(ProxyOptions),
}

/// A WSGI application mounted on a route (its prefix is SCRIPT_NAME).
#[derive(Debug, Clone)]
pub struct WsgiOptions {
    pub target: AppTarget,
    /// Index of `target` in [`PythonSettings::apps`].
    pub app_id: usize,
    /// Directory that `X-Accel-Redirect` / `X-Sendfile` responses may name;
    /// `None` leaves those headers to the client untouched.
    pub sendfile_root: Option<PathBuf>,
}

/// `module:callable`, `module` (callable `application`), or
/// `module:factory()` (called once at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTarget {
    pub module: String,
    pub callable: String,
    pub factory: bool,
}

impl std::fmt::Display for AppTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let call = if self.factory { "()" } else { "" };
        write!(f, "{}:{}{call}", self.module, self.callable)
    }
}

/// Which peers may tell us the original client through forwarding headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedAllow {
    Any,
    Only(Vec<std::net::IpAddr>),
}

impl ForwardedAllow {
    pub fn allows(&self, peer: Option<std::net::IpAddr>) -> bool {
        match (self, peer) {
            (ForwardedAllow::Any, _) => true,
            (ForwardedAllow::Only(list), Some(ip)) => list.contains(&ip.to_canonical()),
            // A unix socket peer is a local process.
            (ForwardedAllow::Only(_), None) => true,
        }
    }
}

/// The embedded interpreter and its threads, per worker.
#[derive(Debug, Clone)]
pub struct PythonSettings {
    /// Every distinct app named by a route, imported once per worker.
    pub apps: Vec<AppTarget>,
    /// Directory to change to before importing (also put first on sys.path).
    pub chdir: Option<PathBuf>,
    /// Extra import directories, before site-packages.
    pub pythonpath: Vec<PathBuf>,
    /// Virtual environment whose packages the app imports.
    pub venv: Option<PathBuf>,
    /// Python threads per worker: how many requests run the app at once.
    pub threads: usize,
    /// A request running longer gets its worker recycled (stacks logged first).
    pub timeout: Duration,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Up to this many extra requests, random per worker, so they do not all
    /// recycle at once.
    pub max_requests_jitter: u64,
}

/// How a route runs CGI programs (RFC 3875).
#[derive(Debug, Clone)]
pub struct CgiOptions {
    /// Canonical directory holding the scripts.
    pub dir: PathBuf,
    /// Script run for a directory URL, if any.
    pub index: Option<String>,
    /// A script silent this long is killed (with its process group): 504.
    pub timeout: Duration,
    /// Scripts running at once per worker; past it → 503 with Retry-After.
    pub max_processes: usize,
    /// The PATH scripts get (nothing else leaks from portico's environment).
    pub path_env: String,
    /// Export the Authorization header as HTTP_AUTHORIZATION.
    pub pass_authorization: bool,
}

/// How a route serves files from a directory.
#[derive(Debug, Clone)]
pub struct StaticOptions {
    /// Canonical (absolute, symlinks resolved) directory served.
    pub root: PathBuf,
    /// File names tried, in order, for a directory URL.
    pub index: Vec<String>,
    /// Generate an HTML listing for a directory without an index file.
    pub autoindex: bool,
    /// Serve names starting with `.`; otherwise they answer 404.
    pub dotfiles: bool,
    /// Follow symlinks that resolve outside `root`; otherwise they answer 403.
    pub symlinks_outside_root: bool,
    /// Serve `.br`, `.zst`, `.gz` siblings when the client accepts them.
    pub precompressed: bool,
    /// `Cache-Control: max-age=N` (and `Expires`) sent with files, when set.
    pub expires: Option<Duration>,
}
