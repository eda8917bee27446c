//! Second stage: merge the file and the flags, apply defaults, and turn every
//! raw string into a checked type. Nothing after this reads raw config.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod buffering;
pub use buffering::DEFAULT_BODY_BUFFER;
mod routes;

use super::file::{self, FileConfig};
use super::units::{parse_duration, parse_size};
use super::*;

const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// No request body is held whole in memory (a buffered one spills to a
/// temporary file, the proxy streams), so the default body limit only
/// stops runaway uploads: Apache's current
/// default (gunicorn, granian and uWSGI have none). 1 MiB, the old default,
/// broke uploads that work under gunicorn.
const DEFAULT_MAX_BODY: u64 = 1 << 30;
const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(1);
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_CGI_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_CGI_MAX_PROCESSES: usize = 32;
const DEFAULT_CGI_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Builds the validated [`Config`] from the flags and the file they name.
pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let (file, origin) = match &cli.config {
        Some(path) => (file::read(path)?, path.display().to_string()),
        None => (FileConfig::default(), "defaults".to_string()),
    };
    let base_dir = cli
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Builder {
        cli,
        file,
        origin,
        base_dir,
        upstreams: RefCell::new(Vec::new()),
    }
    .build()
}

struct Builder<'a> {
    cli: &'a Cli,
    file: FileConfig,
    origin: String,
    /// Relative paths in the file are relative to the file's directory, those
    /// in flags to the current one ([`flags_dir`]); [`absolute`] says why
    /// both are resolved here.
    base_dir: PathBuf,
    /// Upstream pools: the `[[upstream]]` tables, then the inline ones that
    /// routes add while they are validated.
    upstreams: RefCell<Vec<UpstreamConfig>>,
}

fn cli_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: "command line".into(),
        key: key.into(),
        message: message.into(),
    }
}

impl Builder<'_> {
    fn file_err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn build(self) -> Result<Config, ConfigError> {
        let pools = upstream::from_file(&self.file.upstream, &self.base_dir)
            .map_err(|(k, m)| self.file_err(&k, m))?;
        self.upstreams.replace(pools);
        let limits = self.limits()?;
        let default_body = match &self.cli.max_body_size {
            Some(text) => parse_size(text).map_err(|m| cli_err("--max-body-size", m))?,
            None => self
                .file
                .limits
                .max_body_size
                .map_or(DEFAULT_MAX_BODY, |s| s.0),
        };
        let workers = if self.cli.no_master {
            0
        } else {
            self.cli
                .workers
                .or(self.file.workers)
                .unwrap_or_else(default_workers)
        };
        let graceful_timeout = match &self.cli.graceful_timeout {
            Some(text) => parse_duration(text).map_err(|m| cli_err("--graceful-timeout", m))?,
            None => self
                .file
                .graceful_timeout
                .map_or(Duration::from_secs(30), |s| s.0),
        };
        let drain_grace = self.drain_grace(graceful_timeout)?;
        let start_timeout = match &self.cli.start_timeout {
            Some(text) => parse_duration(text).map_err(|m| cli_err("--start-timeout", m))?,
            None => self
                .file
                .start_timeout
                .map_or(DEFAULT_START_TIMEOUT, |s| s.0),
        };
        if start_timeout.is_zero() {
            let err = match &self.cli.start_timeout {
                Some(_) => cli_err("--start-timeout", "must be at least 1s"),
                None => self.file_err("start_timeout", "must be at least 1s"),
            };
            return Err(err);
        }
        let mut config = Config {
            python: None,
            forwarded_allow_ips: self.forwarded_allow_ips()?,
            listeners: self.listeners()?,
            workers,
            graceful_timeout,
            drain_grace,
            start_timeout,
            limits,
            log: self.log()?,
            routes: self.routes(default_body, self.request_buffering())?,
            upstreams: Vec::new(),
            body_temp_dir: PathBuf::new(),
            notices: self.notices(),
        };
        config.body_temp_dir = self.body_temp_dir(&config.routes)?;
        config.upstreams = self.upstreams.take();
        let mut apps: Vec<AppTarget> = Vec::new();
        for route in &mut config.routes {
            if let Some(Handler::Wsgi(wsgi)) = &mut route.handler {
                wsgi.app_id = match apps.iter().position(|a| *a == wsgi.target) {
                    Some(id) => id,
                    None => {
                        apps.push(wsgi.target.clone());
                        apps.len() - 1
                    }
                };
            }
        }
        if !apps.is_empty() {
            let mut python = self.python()?;
            python.apps = apps;
            config.python = Some(python);
        }
        Ok(config)
    }

    /// The drain grace: default 1 s, cut to the graceful timeout (which
    /// bounds the whole drain); a value set longer than it is refused.
    fn drain_grace(&self, graceful_timeout: Duration) -> Result<Duration, ConfigError> {
        let too_long = |grace: Duration| {
            format!(
                "{grace:?} is longer than the graceful timeout ({graceful_timeout:?}), which \
                 bounds the whole drain: lower it or raise graceful_timeout"
            )
        };
        match (&self.cli.drain_grace, self.file.drain_grace) {
            (Some(text), _) => {
                let grace = parse_duration(text).map_err(|m| cli_err("--drain-grace", m))?;
                if grace > graceful_timeout {
                    return Err(cli_err("--drain-grace", too_long(grace)));
                }
                Ok(grace)
            }
            (None, Some(grace)) if grace.0 > graceful_timeout => {
                Err(self.file_err("drain_grace", too_long(grace.0)))
            }
            (None, Some(grace)) => Ok(grace.0),
            (None, None) => Ok(DEFAULT_DRAIN_GRACE.min(graceful_timeout)),
        }
    }

    fn forwarded_allow_ips(&self) -> Result<ForwardedAllow, ConfigError> {
        let (list, key): (Vec<String>, _) = match (
            &self.cli.forwarded_allow_ips,
            &self.file.forwarded_allow_ips,
        ) {
            (Some(text), _) => (
                text.split(',').map(|s| s.trim().to_string()).collect(),
                "--forwarded-allow-ips",
            ),
            (None, Some(list)) => (list.clone(), "forwarded_allow_ips"),
            (None, None) => (
                vec!["127.0.0.1".into(), "::1".into()],
                "forwarded_allow_ips",
            ),
        };
        if list.iter().any(|s| s == "*") {
            return Ok(ForwardedAllow::Any);
        }
        list.iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<std::net::IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| self.file_err(key, format!("`{s}` is not an IP address (or `*`)")))
            })
            .collect::<Result<_, _>>()
            .map(ForwardedAllow::Only)
    }

    fn python(&self) -> Result<PythonSettings, ConfigError> {
        let f = &self.file;
        let dir = |cli: &Option<PathBuf>,
                   file: &Option<PathBuf>,
                   key: &str|
         -> Result<Option<PathBuf>, ConfigError> {
            match (cli, file) {
                (Some(d), _) => canonical_dir(d)
                    .map(Some)
                    .map_err(|m| cli_err(&format!("--{key}"), m)),
                (None, Some(d)) => canonical_dir(&self.base_dir.join(d))
                    .map(Some)
                    .map_err(|m| self.file_err(key, m)),
                (None, None) => Ok(None),
            }
        };
        let chdir = dir(&self.cli.chdir, &f.chdir, "chdir")?;
        let env_venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
        let venv = match dir(&self.cli.venv, &f.venv, "venv")? {
            Some(v) => Some(v),
            None => env_venv
                .map(|v| canonical_dir(&v).map_err(|m| cli_err("VIRTUAL_ENV", m)))
                .transpose()?,
        };
        if let Some(v) = &venv {
            if !v.join("pyvenv.cfg").is_file() {
                return Err(cli_err(
                    "--venv",
                    format!(
                        "`{}` has no pyvenv.cfg: not a virtual environment",
                        v.display()
                    ),
                ));
            }
        }
        let mut pythonpath = Vec::new();
        for p in &self.cli.pythonpath {
            pythonpath.push(canonical_dir(p).map_err(|m| cli_err("--pythonpath", m))?);
        }
        for p in &f.pythonpath {
            pythonpath.push(
                canonical_dir(&self.base_dir.join(p))
                    .map_err(|m| self.file_err("pythonpath", m))?,
            );
        }
        let threads = self.cli.threads.or(f.threads).unwrap_or(4);
        if threads == 0 || threads > 1024 {
            return Err(cli_err("--threads", "must be between 1 and 1024"));
        }
        let timeout = match &self.cli.timeout {
            Some(t) => parse_duration(t).map_err(|m| cli_err("--timeout", m))?,
            None => f.timeout.map_or(Duration::from_secs(30), |s| s.0),
        };
        if timeout.is_zero() {
            return Err(cli_err("--timeout", "must be at least 1s"));
        }
        Ok(PythonSettings {
            apps: Vec::new(),
            chdir,
            pythonpath,
            venv,
            threads,
            timeout,
            max_requests: self.cli.max_requests.or(f.max_requests).unwrap_or(0),
            max_requests_jitter: self
                .cli
                .max_requests_jitter
                .or(f.max_requests_jitter)
                .unwrap_or(0),
        })
    }

    /// `--bind` replaces the file's HTTP listeners and `--uwsgi-socket` its
    /// uwsgi ones; with no listener at all, HTTP on [`DEFAULT_BIND`].
    fn listeners(&self) -> Result<Vec<ListenerConfig>, ConfigError> {
        let cli_tls = match (&self.cli.tls_cert, &self.cli.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: check_file(cert).map_err(|m| cli_err("--tls-cert", m))?,
                key: check_file(key).map_err(|m| cli_err("--tls-key", m))?,
            }),
            _ => None,
        };
        let mut listeners = Vec::new();
        for (i, l) in self.file.listen.iter().enumerate() {
            let key = format!("listen[{i}]");
            let protocol = match l.protocol.as_deref() {
                None | Some("http") => Protocol::Http,
                Some("uwsgi") => Protocol::Uwsgi,
                Some(other) => {
                    return Err(self.file_err(
                        &format!("{key}.protocol"),
                        format!("`{other}` is not `http` or `uwsgi`"),
                    ))
                }
            };
            let replaced = match protocol {
                Protocol::Http => !self.cli.bind.is_empty(),
                Protocol::Uwsgi => !self.cli.uwsgi_socket.is_empty(),
            };
            if replaced {
                continue;
            }
            let addr = parse_listen_addr(&l.address, &self.base_dir)
                .map_err(|m| self.file_err(&format!("{key}.address"), m))?;
            let tls = match (&l.tls_cert, &l.tls_key) {
                (Some(cert), Some(key_file)) => Some(TlsFiles {
                    cert: check_file(&self.base_dir.join(cert))
                        .map_err(|m| self.file_err(&format!("{key}.tls_cert"), m))?,
                    key: check_file(&self.base_dir.join(key_file))
                        .map_err(|m| self.file_err(&format!("{key}.tls_key"), m))?,
                }),
                (None, None) if protocol == Protocol::Http => cli_tls.clone(),
                (None, None) => None,
                _ => return Err(self.file_err(&key, "tls_cert and tls_key must be set together")),
            };
            if protocol == Protocol::Uwsgi && tls.is_some() {
                return Err(self.file_err(&key, "a uwsgi listener cannot use TLS"));
            }
            listeners.push(ListenerConfig {
                addr,
                tls,
                protocol,
            });
        }
        for text in &self.cli.bind {
            let addr = parse_listen_addr(text, flags_dir()).map_err(|m| cli_err("--bind", m))?;
            listeners.push(ListenerConfig {
                addr,
                tls: cli_tls.clone(),
                protocol: Protocol::Http,
            });
        }
        for text in &self.cli.uwsgi_socket {
            let addr =
                parse_listen_addr(text, flags_dir()).map_err(|m| cli_err("--uwsgi-socket", m))?;
            listeners.push(ListenerConfig {
                addr,
                tls: None,
                protocol: Protocol::Uwsgi,
            });
        }
        if listeners.is_empty() {
            listeners.push(ListenerConfig {
                addr: parse_listen_addr(DEFAULT_BIND, flags_dir()).expect("default address parses"),
                tls: cli_tls,
                protocol: Protocol::Http,
            });
        }
        Ok(listeners)
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let f = &self.file.limits;
        let secs =
            |cli: &Option<String>, flag: &str, file: Option<units::Seconds>, default| match cli {
                Some(text) => parse_duration(text).map_err(|m| cli_err(flag, m)),
                None => Ok(file.map_or(Duration::from_secs(default), |s| s.0)),
            };
        let limits = Limits {
            max_uri_length: f.max_uri_length.map_or(8192, |s| s.0 as usize),
            max_header_bytes: f.max_header_size.map_or(16384, |s| s.0 as usize),
            max_headers: f.max_headers.unwrap_or(100),
            header_timeout: secs(
                &self.cli.header_timeout,
                "--header-timeout",
                f.header_timeout,
                10,
            )?,
            keepalive_timeout: secs(
                &self.cli.keepalive_timeout,
                "--keepalive-timeout",
                f.keepalive_timeout,
                75,
            )?,
            body_timeout: secs(&self.cli.body_timeout, "--body-timeout", f.body_timeout, 60)?,
            send_timeout: secs(&self.cli.send_timeout, "--send-timeout", f.send_timeout, 60)?,
            max_connections: self
                .cli
                .max_connections
                .or(f.max_connections)
                .unwrap_or(10_000),
            body_buffer_size: self.body_buffer_size()?,
        };
        if limits.max_header_bytes < 8192 {
            return Err(self.file_err("limits.max_header_size", "must be at least 8k"));
        }
        if limits.max_uri_length == 0 || limits.max_uri_length > limits.max_header_bytes {
            return Err(self.file_err(
                "limits.max_uri_length",
                "must be between 1 and limits.max_header_size",
            ));
        }
        if limits.max_headers == 0 {
            return Err(self.file_err("limits.max_headers", "must be at least 1"));
        }
        if limits.max_connections == 0 {
            return Err(self.file_err("limits.max_connections", "must be at least 1"));
        }
        if limits.header_timeout.is_zero() {
            return Err(self.file_err("limits.header_timeout", "must be at least 1s"));
        }
        let zero = [
            (
                limits.body_timeout,
                &self.cli.body_timeout,
                "--body-timeout",
                "limits.body_timeout",
            ),
            (
                limits.send_timeout,
                &self.cli.send_timeout,
                "--send-timeout",
                "limits.send_timeout",
            ),
        ];
        for (value, flag, flag_name, key) in zero {
            if value.is_zero() {
                return Err(match flag {
                    Some(_) => cli_err(flag_name, "must be at least 1s"),
                    None => self.file_err(key, "must be at least 1s"),
                });
            }
        }
        Ok(limits)
    }

    fn log(&self) -> Result<LogConfig, ConfigError> {
        let f = &self.file.log;
        // A flag's path is relative to the current directory, the file's to
        // the file's directory.
        let (text, base) = match (&self.cli.access_log, &f.access_log) {
            (Some(text), _) => (Some(text.as_str()), flags_dir()),
            (None, text) => (text.as_deref(), self.base_dir.as_path()),
        };
        let access_log = match text {
            None | Some("-") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some(path) => AccessLogTarget::File(absolute(&base.join(path))),
        };
        let access_log_format = match (self.cli.access_log_format, f.access_log_format.as_deref()) {
            (Some(cli::LogFormat::Json), _) | (None, Some("json")) => AccessLogFormat::Json,
            (Some(cli::LogFormat::Combined), _) | (None, Some("combined") | None) => {
                AccessLogFormat::Combined
            }
            (None, Some(other)) => {
                return Err(self.file_err(
                    "log.access_log_format",
                    format!("`{other}` is not a format (use combined or json)"),
                ))
            }
        };
        let level = self
            .cli
            .log_level
            .clone()
            .or_else(|| f.level.clone())
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(cli_err(
                "--log-level",
                format!("`{level}` is not a log level or filter"),
            ));
        }
        let (text, base) = match (&self.cli.error_log, &f.error_log) {
            (Some(text), _) => (Some(text.as_str()), flags_dir()),
            (None, text) => (text.as_deref(), self.base_dir.as_path()),
        };
        let error_log = match text {
            None | Some("-") => None,
            Some("") => return Err(self.file_err("log.error_log", "must be a path or `-`")),
            Some(path) => Some(absolute(&base.join(path))),
        };
        Ok(LogConfig {
            access_log,
            access_log_format,
            level,
            error_log,
        })
    }
}

fn canonical_dir(dir: &Path) -> Result<PathBuf, String> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| format!("directory `{}`: {e}", dir.display()))?;
    if !canonical.is_dir() {
        return Err(format!("`{}` is not a directory", dir.display()));
    }
    Ok(canonical)
}

/// `path` made absolute against the current directory, i.e. the one portico
/// was started in: config is loaded before anything changes directory, but a
/// worker's `chdir` (for the app) comes before it opens TLS files, the access
/// log or upstream sockets, where a relative path would name another file.
/// Directories need no call: [`canonical_dir`] makes them absolute too.
pub(super) fn absolute(path: &Path) -> PathBuf {
    // Fails only when the current directory is gone; the path is then kept
    // as given, and relative paths fail as they would have anyway.
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn check_file(path: &Path) -> Result<PathBuf, String> {
    std::fs::metadata(path)
        .map_err(|e| format!("`{}`: {e}", path.display()))
        .map(|_| absolute(path))
}

/// The base of relative paths given as flags: empty, so that joined to it they
/// stay relative and [`absolute`] puts them under the current directory.
pub(super) fn flags_dir() -> &'static Path {
    Path::new("")
}

/// `HOST:PORT`, `[V6]:PORT` or `unix:PATH`; a relative PATH is under `base`
/// (the config file's directory, or [`flags_dir`]).
pub fn parse_listen_addr(text: &str, base: &Path) -> Result<ListenAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(ListenAddr::Unix(absolute(&base.join(path))));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(ListenAddr::Tcp(addr));
    }
    let bad = || format!("`{text}` is not HOST:PORT, [V6]:PORT or unix:PATH");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    text.to_socket_addrs()
        .map_err(|e| format!("`{text}`: {e}"))?
        .next()
        .map(ListenAddr::Tcp)
        .ok_or_else(bad)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::routes::{normalize_prefix, parse_app_target};
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:0", flags_dir()).unwrap(),
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::1]:8080", flags_dir()).unwrap(),
            ListenAddr::Tcp("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("unix:/tmp/p.sock", flags_dir()).unwrap(),
            ListenAddr::Unix("/tmp/p.sock".into())
        );
        assert!(parse_listen_addr("localhost:8000", flags_dir()).is_ok());
        assert!(parse_listen_addr("8000", flags_dir()).is_err());
        assert!(parse_listen_addr("host:99999", flags_dir()).is_err());
    }

    #[test]
    fn app_targets() {
        let t = parse_app_target("mysite.wsgi:application").unwrap();
        assert_eq!(
            (t.module.as_str(), t.callable.as_str(), t.factory),
            ("mysite.wsgi", "application", false)
        );
        assert_eq!(parse_app_target("app").unwrap().callable, "application");
        assert!(parse_app_target("app:create_app()").unwrap().factory);
        assert!(parse_app_target("app:").is_err());
        assert!(parse_app_target("1app:x").is_err());
        assert!(parse_app_target("app:x(1)").is_err());
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert_eq!(normalize_prefix("/assets/").unwrap(), "/assets");
        assert!(normalize_prefix("assets").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
    }

    fn listeners_of(file: &str, cli: Cli) -> Result<Vec<ListenerConfig>, ConfigError> {
        listeners_under(file, cli, "")
    }

    fn listeners_under(
        file: &str,
        cli: Cli,
        base_dir: &str,
    ) -> Result<Vec<ListenerConfig>, ConfigError> {
        Builder {
            cli: &cli,
            file: file::parse(file).unwrap(),
            origin: "test.toml".into(),
            base_dir: base_dir.into(),
            upstreams: RefCell::new(Vec::new()),
        }
        .listeners()
    }

    fn drain_grace_of(file: &str, cli: Cli, graceful: Duration) -> Result<Duration, ConfigError> {
        Builder {
            cli: &cli,
            file: file::parse(file).unwrap(),
            origin: "test.toml".into(),
            base_dir: "/".into(),
            upstreams: RefCell::new(Vec::new()),
        }
        .drain_grace(graceful)
    }

    #[test]
    fn the_drain_grace_defaults_to_1s_and_never_exceeds_the_graceful_timeout() {
        let secs = Duration::from_secs;
        let grace = |file: &str, flag: Option<&str>, graceful| {
            let cli = Cli {
                drain_grace: flag.map(String::from),
                ..Cli::default()
            };
            drain_grace_of(file, cli, graceful)
        };
        assert_eq!(grace("", None, secs(30)).unwrap(), secs(1));
        // The default is cut to a shorter graceful timeout.
        assert_eq!(
            grace("", None, Duration::from_millis(300)).unwrap(),
            Duration::from_millis(300)
        );
        assert_eq!(
            grace("drain_grace = \"2s\"", None, secs(30)).unwrap(),
            secs(2)
        );
        assert_eq!(
            grace("drain_grace = \"2s\"", Some("500ms"), secs(30)).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(grace("", Some("0"), secs(30)).unwrap(), Duration::ZERO);
        // Set longer than the graceful timeout: refused, naming the key.
        let err = grace("", Some("5"), secs(2)).unwrap_err().to_string();
        assert!(
            err.contains("--drain-grace") && err.contains("graceful"),
            "{err}"
        );
        let err = grace("drain_grace = \"40s\"", None, secs(30))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`drain_grace`") && err.contains("test.toml"),
            "{err}"
        );
        assert!(grace("", Some("soon"), secs(30)).is_err());
    }

    #[test]
    fn relative_unix_socket_paths_are_made_absolute() {
        let file = "[[listen]]\naddress = \"unix:run/p.sock\"\nprotocol = \"uwsgi\"\n";
        let l = listeners_under(file, Cli::default(), "/srv/site").unwrap();
        assert_eq!(l[0].addr, ListenAddr::Unix("/srv/site/run/p.sock".into()));
        let cli = Cli {
            bind: vec!["unix:p.sock".into()],
            ..Cli::default()
        };
        let l = listeners_under("", cli, "/srv/site").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(l[0].addr, ListenAddr::Unix(cwd.join("p.sock")));
    }

    #[test]
    fn uwsgi_listeners_from_file_and_flags() {
        let file = "[[listen]]\naddress = \"127.0.0.1:8000\"\n\
                    [[listen]]\naddress = \"unix:/run/a.sock\"\nprotocol = \"uwsgi\"\n";
        let l = listeners_of(file, Cli::default()).unwrap();
        let protocols: Vec<_> = l.iter().map(|l| l.protocol).collect();
        assert_eq!(protocols, [Protocol::Http, Protocol::Uwsgi]);
        // --uwsgi-socket replaces the file's uwsgi listeners only.
        let cli = Cli {
            uwsgi_socket: vec!["127.0.0.1:3031".into()],
            ..Cli::default()
        };
        let l = listeners_of(file, cli).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[1].addr,
            ListenAddr::Tcp("127.0.0.1:3031".parse().unwrap())
        );
        assert_eq!(l[1].protocol, Protocol::Uwsgi);
        // Alone, --uwsgi-socket opens no HTTP listener.
        let cli = Cli {
            uwsgi_socket: vec!["unix:/run/b.sock".into()],
            ..Cli::default()
        };
        let l = listeners_of("", cli).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].protocol, Protocol::Uwsgi);
        // No listener at all: the default HTTP one.
        assert_eq!(
            listeners_of("", Cli::default()).unwrap()[0].protocol,
            Protocol::Http
        );
        let bad = "[[listen]]\naddress = \"127.0.0.1:1\"\nprotocol = \"fastcgi\"\n";
        let err = listeners_of(bad, Cli::default()).unwrap_err().to_string();
        assert!(err.contains("listen[0].protocol"), "{err}");
    }

    fn limits_of(file: &str, cli: Cli) -> Result<Limits, ConfigError> {
        Builder {
            cli: &cli,
            file: file::parse(file).unwrap(),
            origin: "test.toml".into(),
            base_dir: "".into(),
            upstreams: RefCell::new(Vec::new()),
        }
        .limits()
    }

    #[test]
    fn body_and_send_timeouts_default_to_60s_and_refuse_zero() {
        let l = limits_of("", Cli::default()).unwrap();
        assert_eq!(l.body_timeout, Duration::from_secs(60));
        assert_eq!(l.send_timeout, Duration::from_secs(60));
        let file = "[limits]\nbody_timeout = \"5s\"\nsend_timeout = \"2m\"\n";
        let l = limits_of(file, Cli::default()).unwrap();
        assert_eq!(l.body_timeout, Duration::from_secs(5));
        assert_eq!(l.send_timeout, Duration::from_secs(120));
        let cli = Cli {
            body_timeout: Some("7".into()),
            ..Cli::default()
        };
        assert_eq!(
            limits_of(file, cli).unwrap().body_timeout,
            Duration::from_secs(7)
        );
        let err = limits_of("[limits]\nsend_timeout = 0\n", Cli::default()).unwrap_err();
        assert!(err.to_string().contains("limits.send_timeout"), "{err}");
        let cli = Cli {
            body_timeout: Some("0s".into()),
            ..Cli::default()
        };
        let err = limits_of("", cli).unwrap_err().to_string();
        assert!(err.contains("--body-timeout"), "{err}");
    }
}
