//! Logging: the error log (tracing, to stderr) and the access log (one line
//! per request, combined or JSON, to stdout or a file).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLogFormat, AccessLogTarget, LogConfig};

/// Sets up the error log on stderr with the configured level/filter.
pub fn init_error_log(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Where access-log lines go. Each line is written with one `write` call, so
/// lines from several workers appending to one file never interleave.
pub struct AccessLog {
    sink: Option<Sink>,
    format: AccessLogFormat,
}

enum Sink {
    Stdout,
    File(File),
}

/// One finished request, as the access log sees it.
pub struct Entry<'a> {
    pub remote: Option<SocketAddr>,
    pub method: &'a str,
    pub target: &'a str,
    pub version: http::Version,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub host: Option<&'a str>,
}

impl AccessLog {
    pub fn open(config: &LogConfig) -> std::io::Result<Self> {
        let sink = match &config.access_log {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Sink::Stdout),
            AccessLogTarget::File(path) => Some(Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(AccessLog {
            sink,
            format: config.access_log_format,
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else { return };
        let line = match self.format {
            AccessLogFormat::Combined => combined_line(entry, SystemTime::now()),
            AccessLogFormat::Json => json_line(entry, SystemTime::now()),
        };
        let result = match sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(file) => (&*file).write_all(line.as_bytes()),
        };
        if let Err(err) = result {
            tracing::warn!(
                "access log write failed: {err}; check the log file's disk and permissions"
            );
        }
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// nginx's `combined` format plus the request time in seconds at the end.
fn combined_line(e: &Entry<'_>, now: SystemTime) -> String {
    let remote = e
        .remote
        .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
    let mut line = String::with_capacity(160);
    let _ = writeln!(
        line,
        "{remote} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {:.3}",
        clf_time(now),
        escape(e.method),
        escape(e.target),
        version_str(e.version),
        e.status,
        e.bytes,
        escape(e.referer.unwrap_or("-")),
        escape(e.user_agent.unwrap_or("-")),
        e.duration.as_secs_f64(),
    );
    line
}

fn json_line(e: &Entry<'_>, now: SystemTime) -> String {
    let value = serde_json::json!({
        "time": httpdate::fmt_http_date(now),
        "remote_addr": e.remote.map(|a| a.ip().to_string()),
        "remote_port": e.remote.map(|a| a.port()),
        "method": e.method,
        "uri": e.target,
        "protocol": version_str(e.version),
        "status": e.status,
        "bytes_sent": e.bytes,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "host": e.host,
        "referer": e.referer,
        "user_agent": e.user_agent,
    });
    format!("{value}\n")
}

/// Quotes and control bytes would break the line's fields; escape them as
/// nginx does (`\xHH`).
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out.into()
}

/// `10/Oct/2000:13:55:36 +0000` (UTC).
fn clf_time(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's well-known algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            remote: Some("127.0.0.1:5555".parse().unwrap()),
            method: "GET",
            target: "/a \"b\"",
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 13,
            duration: Duration::from_millis(2),
            referer: None,
            user_agent: Some("curl/8"),
            host: Some("localhost"),
        }
    }

    #[test]
    fn combined_format_matches_nginx() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        let line = combined_line(&entry(), t);
        assert_eq!(
            line,
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a \\x22b\\x22 HTTP/1.1\" 200 13 \"-\" \"curl/8\" 0.002\n"
        );
    }

    #[test]
    fn json_lines_parse() {
        let line = json_line(&entry(), UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["uri"], "/a \"b\"");
        assert_eq!(v["remote_port"], 5555);
    }

    #[test]
    fn leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
