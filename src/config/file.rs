//! The TOML config file as the user writes it. Unknown keys are refused; every
//! field is optional here and gets its default in `validate`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::units::{ByteSize, Seconds};
use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub app: Option<String>,
    pub chdir: Option<PathBuf>,
    #[serde(default)]
    pub pythonpath: Vec<PathBuf>,
    pub venv: Option<PathBuf>,
    pub threads: Option<usize>,
    pub timeout: Option<Seconds>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: Option<u64>,
    pub forwarded_allow_ips: Option<Vec<String>>,
    pub workers: Option<usize>,
    pub graceful_timeout: Option<Seconds>,
    pub drain_grace: Option<Seconds>,
    pub start_timeout: Option<Seconds>,
    /// Default of the routes' `request_buffering`.
    pub request_buffering: Option<bool>,
    pub body_temp_dir: Option<PathBuf>,
    #[serde(default)]
    pub listen: Vec<FileListener>,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub route: Vec<FileRoute>,
    #[serde(default)]
    pub upstream: Vec<FileUpstream>,
}

/// `[[upstream]]`: a named pool of servers a route can `proxy` to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub name: String,
    pub servers: Vec<FileServer>,
    pub balance: Option<String>,
    pub health_uri: Option<String>,
    pub health_interval: Option<Seconds>,
    pub health_status: Option<u16>,
    pub connect_timeout: Option<Seconds>,
    pub read_timeout: Option<Seconds>,
    pub send_timeout: Option<Seconds>,
    pub keepalive: Option<usize>,
}

/// One server of a pool: `{ url = "http://10.0.0.2:8000", weight = 2 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub url: String,
    pub weight: Option<u32>,
    pub backup: Option<bool>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Seconds>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub address: String,
    /// `http` (the default) or `uwsgi`.
    pub protocol: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_uri_length: Option<ByteSize>,
    pub max_header_size: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub header_timeout: Option<Seconds>,
    pub keepalive_timeout: Option<Seconds>,
    pub body_timeout: Option<Seconds>,
    pub send_timeout: Option<Seconds>,
    pub max_connections: Option<usize>,
    pub max_body_size: Option<ByteSize>,
    pub body_buffer_size: Option<ByteSize>,
    /// No effect since request bodies are spooled (a warning at start).
    pub max_buffered_body_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub access_log: Option<String>,
    pub access_log_format: Option<String>,
    pub level: Option<String>,
    pub error_log: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub host: Option<String>,
    pub path: String,
    #[serde(rename = "static")]
    pub static_root: Option<PathBuf>,
    pub index: Option<Vec<String>>,
    pub autoindex: Option<bool>,
    pub dotfiles: Option<bool>,
    pub symlinks_outside_root: Option<bool>,
    pub precompressed: Option<bool>,
    pub expires: Option<Seconds>,
    pub max_body_size: Option<ByteSize>,
    /// Read the whole body before the app or script runs (wsgi, cgi).
    pub request_buffering: Option<bool>,
    pub wsgi: Option<String>,
    pub sendfile_root: Option<PathBuf>,
    pub cgi: Option<PathBuf>,
    pub cgi_index: Option<String>,
    pub cgi_timeout: Option<Seconds>,
    pub cgi_max_processes: Option<usize>,
    pub cgi_path: Option<String>,
    pub cgi_pass_authorization: Option<bool>,
    /// An `[[upstream]]` name, or upstream URLs (comma-separated).
    pub proxy: Option<String>,
    /// Host header sent upstream instead of the client's.
    pub proxy_host: Option<String>,
    /// Forward header fields whose name holds `_` (dropped by default).
    pub proxy_underscore_headers: Option<bool>,
}

/// Reads and parses `path`; the error names the file and the key path
/// (`route[1].autoindex`) of the first problem.
pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

pub fn parse(text: &str) -> Result<FileConfig, String> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.message().to_string();
        let location = inner
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        if key.is_empty() || key == "." {
            format!("{message}{location}")
        } else {
            format!("`{key}`: {message}{location}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let err = parse("[[route]]\npath = \"/\"\nautoindx = true\n").unwrap_err();
        assert!(err.contains("autoindx"), "{err}");
        assert!(err.contains("route"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse("[limits]\nheader_timeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("limits.header_timeout"), "{err}");
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse(
            r#"
            workers = 2
            graceful_timeout = "10s"
            [[listen]]
            address = "127.0.0.1:0"
            [limits]
            max_body_size = "10m"
            [log]
            access_log = "off"
            [[route]]
            path = "/assets"
            static = "/srv"
            expires = "7d"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.workers, Some(2));
        assert_eq!(cfg.route[0].expires.unwrap().0.as_secs(), 7 * 86400);
        assert_eq!(cfg.limits.max_body_size.unwrap().0, 10 << 20);
    }
}
