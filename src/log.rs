//! Logging: the error log (tracing, to stderr or a file put in stderr's
//! place) and the access log (one line per request, combined or JSON, to
//! stdout or a file). Both files are reopened in place on SIGUSR1 (a new
//! file is opened and put on the old descriptor with `dup2`), so logrotate
//! can move them away without a restart and no writer needs a lock.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLogFormat, AccessLogTarget, LogConfig};

/// Sets up the error log with the configured level/filter: on stderr, or
/// in the `--error-log` file, which then takes stderr's place (so Python's
/// own messages, such as faulthandler's stacks, land there too).
pub fn init_error_log(config: &LogConfig) -> std::io::Result<()> {
    reopen_error_log(config)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    Ok(())
}

/// Opens the `--error-log` file (again) and puts it in stderr's place; does
/// nothing when the error log is stderr itself.
pub fn reopen_error_log(config: &LogConfig) -> std::io::Result<()> {
    let Some(path) = &config.error_log else {
        return Ok(());
    };
    let file = open_append(path)?;
    nix::unistd::dup2(file.as_raw_fd(), nix::libc::STDERR_FILENO)?;
    Ok(())
}

/// Checks the `--error-log` file can be opened (for `--check-config`).
pub fn check_error_log(config: &LogConfig) -> std::io::Result<()> {
    config
        .error_log
        .as_deref()
        .map_or(Ok(()), |p| open_append(p).map(drop))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Where access-log lines go. Each line is written with one `write` call, so
/// lines from several workers appending to one file never interleave.
pub struct AccessLog {
    sink: Option<Sink>,
    format: AccessLogFormat,
    errors: WriteErrors,
}

enum Sink {
    Stdout,
    File(File, PathBuf),
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
            AccessLogTarget::File(path) => Some(Sink::File(open_append(path)?, path.clone())),
        };
        Ok(AccessLog {
            sink,
            format: config.access_log_format,
            errors: WriteErrors::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Opens the file again at its path (logrotate moved the old one) and
    /// writes to it from now on; nothing to do for stdout.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(Sink::File(file, path)) = &self.sink {
            let fresh = open_append(path)?;
            nix::unistd::dup2(fresh.as_raw_fd(), file.as_raw_fd())?;
        }
        Ok(())
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else { return };
        let line = match self.format {
            AccessLogFormat::Combined => combined_line(entry, SystemTime::now()),
            AccessLogFormat::Json => json_line(entry, SystemTime::now()),
        };
        let result = match sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(file, _) => (&*file).write_all(line.as_bytes()),
        };
        let warning = match result {
            Ok(()) => self.errors.written(),
            Err(err) => self.errors.failed(&err, Instant::now()),
        };
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
    }
}

/// Access-log write failures (a full disk, `/dev/full`), reported without
/// flooding the error log: the first at once, then at most one warning per
/// [`WriteErrors::EVERY`] with the number of lines lost, and a last one
/// when writing works again.
#[derive(Default)]
struct WriteErrors {
    /// Lines lost since the last warning (read on every successful write,
    /// so an atomic rather than the lock).
    unreported: AtomicU64,
    /// When the last warning was logged.
    last_warning: Mutex<Option<Instant>>,
}

impl WriteErrors {
    const EVERY: Duration = Duration::from_secs(10);

    fn failed(&self, err: &std::io::Error, now: Instant) -> Option<String> {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let lost = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let message = match *last {
            None => format!(
                "access log write failed: {err}; check the log file's disk and permissions \
                 (further failures are counted and reported every {}s)",
                Self::EVERY.as_secs()
            ),
            Some(at) if now.duration_since(at) >= Self::EVERY => format!(
                "access log: {lost} line(s) lost in the last {}s: {err}",
                now.duration_since(at).as_secs()
            ),
            Some(_) => return None,
        };
        *last = Some(now);
        self.unreported.store(0, Ordering::Relaxed);
        Some(message)
    }

    fn written(&self) -> Option<String> {
        if self.unreported.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let lost = self.unreported.swap(0, Ordering::Relaxed);
        *last = None;
        (lost > 0).then(|| format!("access log writable again; {lost} line(s) were lost"))
    }
}

/// `HTTP/1.1`: a version as a request line, the access log and the
/// gateways' `SERVER_PROTOCOL` write it. It lives here, the lowest layer
/// that needs it, so the request vocabulary above can share it.
pub fn version_text(v: http::Version) -> &'static str {
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
        version_text(e.version),
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
        "protocol": version_text(e.version),
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

    #[test]
    fn version_text_for_every_version() {
        use http::Version;
        let table = [
            (Version::HTTP_09, "HTTP/0.9"),
            (Version::HTTP_10, "HTTP/1.0"),
            (Version::HTTP_11, "HTTP/1.1"),
            (Version::HTTP_2, "HTTP/2.0"),
            (Version::HTTP_3, "HTTP/3.0"),
        ];
        for (version, text) in table {
            assert_eq!(version_text(version), text);
        }
    }

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
    fn write_errors_warn_once_then_at_most_every_ten_seconds_with_the_count() {
        let errors = WriteErrors::default();
        let err = std::io::Error::from_raw_os_error(28);
        let t0 = Instant::now();
        let first = errors.failed(&err, t0).expect("the first failure warns");
        assert!(first.contains("No space left"), "{first}");
        for i in 1..1000 {
            let at = t0 + Duration::from_millis(i * 9);
            assert_eq!(errors.failed(&err, at), None, "failure {i} warned");
        }
        let later = errors
            .failed(&err, t0 + WriteErrors::EVERY)
            .expect("a warning after the interval");
        assert!(later.contains("1000 line(s) lost"), "{later}");
        assert_eq!(errors.failed(&err, t0 + WriteErrors::EVERY), None);
        let recovered = errors.written().expect("recovery is said");
        assert!(recovered.contains("1 line(s) were lost"), "{recovered}");
        assert_eq!(errors.written(), None);
        assert!(
            errors.failed(&err, t0 + WriteErrors::EVERY).is_some(),
            "after a recovery the next failure warns at once"
        );
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let config = LogConfig {
            access_log: AccessLogTarget::File(path.clone()),
            access_log_format: AccessLogFormat::Combined,
            level: "info".into(),
            error_log: None,
        };
        let log = AccessLog::open(&config).unwrap();
        log.write(&entry());
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.write(&entry());
        log.reopen().unwrap();
        log.write(&entry());
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
    }

    #[test]
    fn leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
