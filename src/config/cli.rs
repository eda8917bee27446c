//! Command-line flags. Every flag overrides the config file's value; list
//! flags (`--bind`, `--static`) replace or extend the file's lists as documented.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Combined,
    Json,
}

/// portico: a web server and Python application server in one program.
///
/// Serves static files (ranges, conditional requests, precompressed
/// siblings), over HTTP/1.1, HTTP/2 (h2c and TLS with ALPN) from a master
/// process that supervises worker processes.
#[derive(Debug, Clone, Default, Parser)]
#[command(version, about, max_term_width = 100)]
pub struct Cli {
    /// WSGI application mounted at `/`: `module:callable`, `module` (callable
    /// `application`) or `module:factory()`. With `--static /=DIR`, files that
    /// exist are served and everything else goes to the app.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Change to DIR before importing the app; DIR goes first on sys.path.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Extra directory for the app's imports (repeatable).
    #[arg(long, value_name = "DIR")]
    pub pythonpath: Vec<PathBuf>,

    /// Virtual environment the app's packages come from.
    /// [default: $VIRTUAL_ENV when set]
    #[arg(long, value_name = "DIR")]
    pub venv: Option<PathBuf>,

    /// Python threads per worker running the app concurrently. [default: 4]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Seconds a request may run the app before its worker is recycled (the
    /// Python stacks are logged first). [default: 30]
    #[arg(long, value_name = "S")]
    pub timeout: Option<String>,

    /// Recycle a worker after N requests; 0 never. [default: 0]
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,

    /// Add up to J random requests to --max-requests per worker. [default: 0]
    #[arg(long, value_name = "J")]
    pub max_requests_jitter: Option<u64>,

    /// Comma-separated peer addresses whose X-Forwarded-For/-Proto/-Host and
    /// Forwarded headers are trusted, or `*`. [default: 127.0.0.1,::1]
    #[arg(long, value_name = "IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Address to listen on: HOST:PORT, [V6]:PORT or unix:PATH. Repeatable;
    /// replaces the config file's listeners. Port 0 picks a free port; the real
    /// address is printed as `listening on http://ADDR`.
    /// [default: 127.0.0.1:8000]
    #[arg(short = 'b', long = "bind", value_name = "ADDR")]
    pub bind: Vec<String>,

    /// Address of a listener speaking the uwsgi protocol (for a front
    /// server's `uwsgi_pass`): HOST:PORT or unix:PATH. Repeatable; replaces
    /// the config file's uwsgi listeners. Alone (without --bind), portico
    /// opens no HTTP listener.
    #[arg(long = "uwsgi-socket", value_name = "ADDR")]
    pub uwsgi_socket: Vec<String>,

    /// Serve directory DIR at URL prefix PREFIX (`/=./public`,
    /// `/assets=./build/assets`). Repeatable; a prefix also in the config file
    /// replaces that route.
    #[arg(long = "static", value_name = "PREFIX=DIR")]
    pub static_routes: Vec<String>,

    /// Run CGI programs from DIR at URL prefix PREFIX (`/cgi-bin=./cgi-bin`).
    /// Repeatable; a prefix also in the config file replaces that route.
    #[arg(long = "cgi", value_name = "PREFIX=DIR")]
    pub cgi_routes: Vec<String>,

    /// Proxy URL prefix PREFIX to upstream servers (`/api=http://127.0.0.1:9000`,
    /// `/=http://10.0.0.2:8000,http://10.0.0.3:8000`, `uwsgi://HOST:PORT`,
    /// `uwsgi+unix:PATH`, `http+unix:PATH`); round robin between them.
    /// Repeatable; a prefix also in the config file replaces that route.
    #[arg(long = "proxy", value_name = "PREFIX=URL[,URL...]")]
    pub proxy_routes: Vec<String>,

    /// TOML config file (see docs/config.md).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print a summary and exit 0 (valid) or 1.
    #[arg(long)]
    pub check_config: bool,

    /// Worker processes; 0 serves from the master's own process.
    /// [default: number of CPUs]
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,

    /// Serve from a single process without a supervising master (same as -w 0).
    #[arg(long)]
    pub no_master: bool,

    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT. [default: 30]
    #[arg(long, value_name = "S")]
    pub graceful_timeout: Option<String>,

    /// While a worker drains, an idle keep-alive connection is kept this
    /// long: a request arriving in it is still served (with `Connection:
    /// close`), then the connection is closed. [default: 1]
    #[arg(long, value_name = "S")]
    pub drain_grace: Option<String>,
    /// Seconds a worker may take to start (import the app) before it is
    /// killed; at start-up that stops portico, on reload the old workers keep
    /// serving. [default: 60]
    #[arg(long, value_name = "S")]
    pub start_timeout: Option<String>,

    /// Access log: a file path, `-` for stdout, or `off`. [default: -]
    #[arg(long, value_name = "PATH|-|off")]
    pub access_log: Option<String>,

    /// Access log line format. [default: combined]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub access_log_format: Option<LogFormat>,

    /// Error log level or tracing filter (error, warn, info, debug, trace).
    /// [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Error log: a file path (reopened on SIGUSR1) or `-` for stderr.
    /// [default: -]
    #[arg(long, value_name = "PATH|-")]
    pub error_log: Option<String>,

    /// TLS certificate chain (PEM) for the --bind listeners.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for the --bind listeners.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest request body accepted on routes that set none (413 past it).
    /// No body is held whole in memory (a buffered one goes to a temporary
    /// file past --body-buffer-size), so the default only stops runaway
    /// uploads (Apache's; gunicorn has no limit).
    /// [default: 1g]
    #[arg(long, value_name = "SIZE")]
    pub max_body_size: Option<String>,

    /// Stream request bodies to WSGI apps and CGI scripts as they arrive
    /// (routes that set no `request_buffering`) instead of reading each
    /// whole body first; a slow upload then holds a Python thread or a CGI
    /// process slot while it lasts. [default: bodies are buffered]
    #[arg(long)]
    pub no_request_buffering: bool,

    /// Bytes of a buffered request body held in memory; the rest of a
    /// longer body goes to an unnamed temporary file. [default: 64k]
    #[arg(long, value_name = "SIZE")]
    pub body_buffer_size: Option<String>,

    /// Directory of the temporary files of buffered request bodies (put it
    /// on a disk, not a tmpfs, for large uploads). [default: $TMPDIR or /tmp]
    #[arg(long, value_name = "DIR")]
    pub body_temp_dir: Option<PathBuf>,

    /// Deprecated, no effect: chunked bodies are buffered like the others
    /// (see --body-buffer-size).
    #[arg(long, value_name = "SIZE", hide = true)]
    pub max_buffered_body_size: Option<String>,

    /// Idle seconds allowed between requests on a keep-alive connection.
    /// [default: 75]
    #[arg(long, value_name = "S")]
    pub keepalive_timeout: Option<String>,

    /// Seconds to receive a whole request head; past it 408. [default: 10]
    #[arg(long, value_name = "S")]
    pub header_timeout: Option<String>,

    /// Seconds a request body may send no byte while it is being read; past
    /// it 408 and the connection is closed. [default: 60]
    #[arg(long, value_name = "S")]
    pub body_timeout: Option<String>,

    /// Seconds a client may take no response byte; past it the connection
    /// is closed (an HTTP/2 stream: reset). [default: 60]
    #[arg(long, value_name = "S")]
    pub send_timeout: Option<String>,

    /// Open connections per worker; past it accepting pauses. [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Internal: run as a worker of a master (set by the master).
    #[arg(long, hide = true)]
    pub worker: bool,
}
