//! Upstream pools for the reverse proxy: the validated types, the upstream
//! URL schemes, and the checks that turn `[[upstream]]` tables, a route's
//! `proxy = "..."` and `--proxy PREFIX=URL[,URL...]` into them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{FileServer, FileUpstream};
use super::validate::absolute;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_KEEPALIVE: usize = 32;
const DEFAULT_MAX_FAILS: u32 = 1;
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// A pool of servers that answer for one or more routes.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The `[[upstream]]` name, or the URL list of an inline pool (for logs).
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub health: Option<HealthCheck>,
    /// Time to open a connection; past it the next server is tried.
    pub connect_timeout: Duration,
    /// Silence from the server this long (before or within the response) → 504.
    pub read_timeout: Duration,
    /// A write to the server blocked this long → the exchange fails.
    pub send_timeout: Duration,
    /// Idle keep-alive connections kept per server and worker (0: none).
    pub keepalive: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamServer {
    pub url: UpstreamUrl,
    /// Share of the requests relative to the other servers.
    pub weight: u32,
    /// Used only while every non-backup server is down.
    pub backup: bool,
    /// This many failures within `fail_timeout` mark the server down for
    /// `fail_timeout` (0: never marked down).
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// Where a server is and which protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamUrl {
    /// `http://HOST:PORT` (port 80 when omitted).
    Http { host: String, port: u16 },
    /// `http+unix:PATH`: HTTP/1.1 over a unix socket.
    HttpUnix(PathBuf),
    /// `uwsgi://HOST:PORT`.
    Uwsgi { host: String, port: u16 },
    /// `uwsgi+unix:PATH`.
    UwsgiUnix(PathBuf),
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_string()
            }
        };
        match self {
            UpstreamUrl::Http { host: h, port } => write!(f, "http://{}:{port}", host(h)),
            UpstreamUrl::HttpUnix(path) => write!(f, "http+unix:{}", path.display()),
            UpstreamUrl::Uwsgi { host: h, port } => write!(f, "uwsgi://{}:{port}", host(h)),
            UpstreamUrl::UwsgiUnix(path) => write!(f, "uwsgi+unix:{}", path.display()),
        }
    }
}

impl UpstreamUrl {
    /// The server's `host[:port]` as a Host header names it (the port only
    /// when it is not 80); `localhost` for a unix socket.
    pub fn authority(&self) -> String {
        match self {
            UpstreamUrl::Http { host, port } | UpstreamUrl::Uwsgi { host, port } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    80 => host,
                    port => format!("{host}:{port}"),
                }
            }
            UpstreamUrl::HttpUnix(_) | UpstreamUrl::UwsgiUnix(_) => "localhost".into(),
        }
    }

    /// A relative socket path made absolute under `base` (the config file's
    /// directory, or the current one for flags): the worker that connects
    /// may have changed directory since.
    fn under(self, base: &Path) -> Self {
        match self {
            UpstreamUrl::HttpUnix(path) => UpstreamUrl::HttpUnix(absolute(&base.join(path))),
            UpstreamUrl::UwsgiUnix(path) => UpstreamUrl::UwsgiUnix(absolute(&base.join(path))),
            tcp => tcp,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// Fewest requests in flight relative to weight.
    LeastConn,
    /// The client address picks the server (rendezvous hashing), so a client
    /// keeps its server while the pool does not change.
    IpHash,
    /// Two random servers (by weight); the one with fewer requests in flight.
    RandomTwo,
}

/// Active health checks: `GET uri` every `interval`; any other status than
/// `status` (or no answer) marks the server down until a check passes.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub uri: String,
    pub interval: Duration,
    pub status: u16,
}

/// A route's `proxy` handler.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Index of the pool in [`super::Config::upstreams`].
    pub upstream: usize,
    /// Host header sent upstream instead of the client's (`proxy_host`).
    pub host: Option<String>,
    /// Directory that `X-Accel-Redirect` / `X-Sendfile` from the upstream
    /// may name; `None` passes those headers to the client untouched.
    pub sendfile_root: Option<PathBuf>,
    /// Forward header fields whose name holds `_` (`proxy_underscore_headers`);
    /// by default they are dropped, as nginx does.
    pub underscore_headers: bool,
}

/// `http://HOST[:PORT][/]`, `http+unix:PATH`, `uwsgi://HOST:PORT`,
/// `uwsgi+unix:PATH`. A path is refused: the request's own path is sent.
pub fn parse_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let text = text.trim();
    let unix = |path: &str| {
        if path.is_empty() {
            Err(format!("`{text}` needs a socket path"))
        } else {
            Ok(PathBuf::from(path))
        }
    };
    if let Some(path) = text.strip_prefix("http+unix:") {
        return unix(path).map(UpstreamUrl::HttpUnix);
    }
    if let Some(path) = text.strip_prefix("uwsgi+unix:") {
        return unix(path).map(UpstreamUrl::UwsgiUnix);
    }
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        format!(
            "`{text}` is not an upstream URL (http://HOST:PORT, uwsgi://HOST:PORT, \
             http+unix:PATH or uwsgi+unix:PATH)"
        )
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{text}`: an upstream URL has no path; the request's own path is sent"
        ));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| format!("`{text}`: bad host"))?;
    match scheme {
        "http" => Ok(UpstreamUrl::Http {
            host,
            port: port.unwrap_or(80),
        }),
        "uwsgi" => Ok(UpstreamUrl::Uwsgi {
            host,
            port: port.ok_or_else(|| format!("`{text}`: uwsgi:// needs a port"))?,
        }),
        "https" => Err(format!("`{text}`: https upstreams are not supported")),
        other => Err(format!("`{text}`: unknown scheme `{other}`")),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the host without brackets.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(valid) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    Some((host.to_string(), port))
}

/// Validates the `[[upstream]]` tables; errors carry the key below
/// `upstream[i]`. Relative socket paths are under `base`.
pub(super) fn from_file(
    tables: &[FileUpstream],
    base: &Path,
) -> Result<Vec<UpstreamConfig>, (String, String)> {
    let mut pools: Vec<UpstreamConfig> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let at = |key: &str, m: String| (format!("upstream[{i}].{key}"), m);
        if t.name.is_empty() || t.name.contains("://") || t.name.contains(':') {
            return Err(at("name", format!("`{}` is not a pool name", t.name)));
        }
        if pools.iter().any(|p| p.name == t.name) {
            return Err(at("name", format!("two upstreams named `{}`", t.name)));
        }
        if t.servers.is_empty() {
            return Err(at("servers", "a pool needs at least one server".into()));
        }
        let servers = t
            .servers
            .iter()
            .enumerate()
            .map(|(j, s)| server(s, base).map_err(|(k, m)| at(&format!("servers[{j}].{k}"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.iter().all(|s| s.backup) {
            return Err(at("servers", "every server is a backup".into()));
        }
        let balance = match t.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_conn") => Balance::LeastConn,
            Some("ip_hash") => Balance::IpHash,
            Some("random_two") => Balance::RandomTwo,
            Some(other) => {
                return Err(at(
                    "balance",
                    format!(
                        "`{other}` is not a policy (round_robin, least_conn, ip_hash, random_two)"
                    ),
                ))
            }
        };
        let health = match &t.health_uri {
            Some(uri) if !uri.starts_with('/') => {
                return Err(at("health_uri", format!("`{uri}` must start with `/`")))
            }
            Some(uri) => Some(HealthCheck {
                uri: uri.clone(),
                interval: t.health_interval.map_or(DEFAULT_HEALTH_INTERVAL, |s| s.0),
                status: t.health_status.unwrap_or(200),
            }),
            None if t.health_interval.is_some() || t.health_status.is_some() => {
                return Err(at(
                    "health_uri",
                    "health_interval/health_status need a health_uri".into(),
                ))
            }
            None => None,
        };
        if health.as_ref().is_some_and(|h| h.interval.is_zero()) {
            return Err(at("health_interval", "must be more than 0".into()));
        }
        let pool = UpstreamConfig {
            name: t.name.clone(),
            servers,
            balance,
            health,
            connect_timeout: t.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |s| s.0),
            read_timeout: t.read_timeout.map_or(DEFAULT_READ_TIMEOUT, |s| s.0),
            send_timeout: t.send_timeout.map_or(DEFAULT_SEND_TIMEOUT, |s| s.0),
            keepalive: t.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
        };
        for (key, d) in [
            ("connect_timeout", pool.connect_timeout),
            ("read_timeout", pool.read_timeout),
            ("send_timeout", pool.send_timeout),
        ] {
            if d.is_zero() {
                return Err(at(key, "must be more than 0".into()));
            }
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn server(s: &FileServer, base: &Path) -> Result<UpstreamServer, (&'static str, String)> {
    let server = UpstreamServer {
        url: parse_upstream_url(&s.url)
            .map_err(|m| ("url", m))?
            .under(base),
        weight: s.weight.unwrap_or(1),
        backup: s.backup.unwrap_or(false),
        max_fails: s.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
        fail_timeout: s.fail_timeout.map_or(DEFAULT_FAIL_TIMEOUT, |s| s.0),
    };
    if server.weight == 0 || server.weight > 1000 {
        return Err(("weight", "must be between 1 and 1000".into()));
    }
    Ok(server)
}

/// A pool written inline (`proxy = "http://a,http://b"`, `--proxy`): every
/// setting at its default. Relative socket paths are under `base`.
pub(super) fn inline(urls: &str, base: &Path) -> Result<UpstreamConfig, String> {
    let servers = urls
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            Ok(UpstreamServer {
                url: parse_upstream_url(u)?.under(base),
                weight: 1,
                backup: false,
                max_fails: DEFAULT_MAX_FAILS,
                fail_timeout: DEFAULT_FAIL_TIMEOUT,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if servers.is_empty() {
        return Err("no upstream URL given".into());
    }
    Ok(UpstreamConfig {
        name: urls.to_string(),
        servers,
        balance: Balance::RoundRobin,
        health: None,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        read_timeout: DEFAULT_READ_TIMEOUT,
        send_timeout: DEFAULT_SEND_TIMEOUT,
        keepalive: DEFAULT_KEEPALIVE,
    })
}

/// A route's `proxy` value: a pool name, or URLs (which add an inline pool).
pub(super) fn resolve(
    pools: &mut Vec<UpstreamConfig>,
    target: &str,
    base: &Path,
) -> Result<usize, String> {
    if let Some(i) = pools.iter().position(|p| p.name == target) {
        return Ok(i);
    }
    if !target.contains(':') {
        return Err(format!("no [[upstream]] named `{target}`"));
    }
    pools.push(inline(target, base)?);
    Ok(pools.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            parse_upstream_url("http://127.0.0.1:8001").unwrap(),
            UpstreamUrl::Http {
                host: "127.0.0.1".into(),
                port: 8001
            }
        );
        assert_eq!(
            parse_upstream_url("http://app.internal/").unwrap(),
            UpstreamUrl::Http {
                host: "app.internal".into(),
                port: 80
            }
        );
        assert_eq!(
            parse_upstream_url("http://[::1]:9000").unwrap().to_string(),
            "http://[::1]:9000"
        );
        assert_eq!(
            parse_upstream_url("uwsgi+unix:/run/app.sock").unwrap(),
            UpstreamUrl::UwsgiUnix("/run/app.sock".into())
        );
        assert_eq!(
            parse_upstream_url("http+unix:/run/a.sock").unwrap(),
            UpstreamUrl::HttpUnix("/run/a.sock".into())
        );
        assert!(matches!(
            parse_upstream_url("uwsgi://10.0.0.1:3031").unwrap(),
            UpstreamUrl::Uwsgi { port: 3031, .. }
        ));
        for bad in [
            "uwsgi://host",
            "http://host/app",
            "https://host",
            "ftp://x",
            "http://:80",
            "http://h:0",
            "uwsgi+unix:",
            "host:80",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_targets_name_a_pool_or_give_urls() {
        let base = Path::new("/etc/portico");
        let mut pools = vec![inline("http://a:1", base).unwrap()];
        pools[0].name = "app".into();
        assert_eq!(resolve(&mut pools, "app", base).unwrap(), 0);
        assert_eq!(
            resolve(&mut pools, "http://b:2,http://c:3", base).unwrap(),
            1
        );
        assert_eq!(pools[1].servers.len(), 2);
        assert!(resolve(&mut pools, "missing", base).is_err());
    }

    #[test]
    fn relative_socket_paths_are_made_absolute_under_base() {
        let pool = inline(
            "uwsgi+unix:run/app.sock,http+unix:/run/b.sock",
            Path::new("/srv/site"),
        )
        .unwrap();
        let urls: Vec<_> = pool.servers.iter().map(|s| s.url.to_string()).collect();
        assert_eq!(
            urls,
            ["uwsgi+unix:/srv/site/run/app.sock", "http+unix:/run/b.sock"]
        );
        // A flag's (empty base): under the current directory, as the master
        // sees it before any worker changes directory.
        let pool = inline("uwsgi+unix:app.sock", Path::new("")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            pool.servers[0].url,
            UpstreamUrl::UwsgiUnix(cwd.join("app.sock"))
        );
    }
}
