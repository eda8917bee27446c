//! Request buffering's settings: `request_buffering` (the routes' default,
//! `--no-request-buffering`), `limits.body_buffer_size` and
//! `body_temp_dir`, which must take a temporary file at start when a route
//! may buffer; and the deprecated `max_buffered_body_size`.

use std::path::PathBuf;

use super::super::*;
use super::{canonical_dir, cli_err, Builder};
use crate::config::units::parse_size;

/// What the worker read before calling the app before buffering existed
/// (a JSON or form body up to it never touches the disk). Many slow
/// uploads at once are bounded by the worker's budget instead
/// (`crate::request::spool`: 1,024 bodies' worth, 64 MiB), past which bodies go to
/// files.
pub const DEFAULT_BODY_BUFFER: u64 = 64 * 1024;

impl Builder<'_> {
    /// The default of the routes' `request_buffering`: on, unless
    /// `--no-request-buffering` or the file's top-level key says otherwise.
    pub(super) fn request_buffering(&self) -> bool {
        !self.cli.no_request_buffering && self.file.request_buffering.unwrap_or(true)
    }

    pub(super) fn body_buffer_size(&self) -> Result<usize, ConfigError> {
        let size = match &self.cli.body_buffer_size {
            Some(text) => parse_size(text).map_err(|m| cli_err("--body-buffer-size", m))?,
            None => self
                .file
                .limits
                .body_buffer_size
                .map_or(DEFAULT_BODY_BUFFER, |s| s.0),
        };
        usize::try_from(size).map_err(|_| match &self.cli.body_buffer_size {
            Some(_) => cli_err("--body-buffer-size", "too large for this machine"),
            None => self.file_err("limits.body_buffer_size", "too large for this machine"),
        })
    }

    /// `body_temp_dir` (default `$TMPDIR`, else `/tmp`), checked by making
    /// a temporary file in it when a WSGI or CGI route may need one: a
    /// directory that cannot take one fails at start, not on the first
    /// large upload.
    pub(super) fn body_temp_dir(&self, routes: &[Route]) -> Result<PathBuf, ConfigError> {
        let (dir, err): (PathBuf, Box<dyn Fn(String) -> ConfigError + '_>) =
            match (&self.cli.body_temp_dir, &self.file.body_temp_dir) {
                (Some(dir), _) => (dir.clone(), Box::new(|m| cli_err("--body-temp-dir", m))),
                (None, Some(dir)) => (
                    self.base_dir.join(dir),
                    Box::new(|m| self.file_err("body_temp_dir", m)),
                ),
                (None, None) => (
                    std::env::temp_dir(),
                    Box::new(|m| {
                        cli_err(
                            "body_temp_dir",
                            format!("{m} (the default: $TMPDIR, else /tmp; set body_temp_dir)"),
                        )
                    }),
                ),
            };
        let spools = routes
            .iter()
            .any(|r| matches!(r.handler, Some(Handler::Wsgi(_) | Handler::Cgi(_))));
        if !spools {
            return Ok(dir);
        }
        let dir = canonical_dir(&dir).map_err(&err)?;
        tempfile::tempfile_in(&dir).map_err(|e| {
            err(format!(
                "cannot make a temporary file in `{}`: {e}",
                dir.display()
            ))
        })?;
        Ok(dir)
    }

    /// Warnings for keys that are accepted but no longer do anything.
    pub(super) fn notices(&self) -> Vec<String> {
        let old = self.cli.max_buffered_body_size.is_some()
            || self.file.limits.max_buffered_body_size.is_some();
        match old {
            true => vec![
                "`limits.max_buffered_body_size` (--max-buffered-body-size) no longer has an \
                 effect: a body without a length is buffered like any other, in memory up to \
                 `limits.body_buffer_size`, then in a temporary file in `body_temp_dir`, up to \
                 the route's `max_body_size`; remove the setting"
                    .into(),
            ],
            false => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{load, Cli};
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["portico"];
        all.extend_from_slice(args);
        Cli::parse_from(all)
    }

    fn with_file(file: &str, args: &[&str]) -> Result<crate::config::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        std::fs::write(&path, file).unwrap();
        std::fs::create_dir(dir.path().join("cgi-bin")).unwrap();
        let path = path.display().to_string();
        let mut all = vec!["-c", path.as_str()];
        all.extend_from_slice(args);
        load(&cli(&all)).map_err(|e| e.to_string())
    }

    const CGI_ROUTE: &str = "[[route]]\npath = \"/cgi-bin\"\ncgi = \"cgi-bin\"\n";

    #[test]
    fn buffering_is_on_by_default_and_off_per_route_or_for_all() {
        let config = with_file(
            &format!(
                "{CGI_ROUTE}[[route]]\npath = \"/stream\"\ncgi = \"cgi-bin\"\n\
                 request_buffering = false\n"
            ),
            &[],
        )
        .unwrap();
        let on: Vec<_> = config.routes.iter().map(|r| r.request_buffering).collect();
        assert_eq!(on, [true, false]);
        assert_eq!(config.limits.body_buffer_size, 64 * 1024);
        assert!(config.notices.is_empty());

        let off = with_file(CGI_ROUTE, &["--no-request-buffering"]).unwrap();
        assert!(!off.routes[0].request_buffering);
        let off = with_file(&format!("request_buffering = false\n{CGI_ROUTE}"), &[]).unwrap();
        assert!(!off.routes[0].request_buffering);
        // A route's own key beats the default.
        let on = with_file(
            &format!("request_buffering = false\n{CGI_ROUTE}request_buffering = true\n"),
            &[],
        )
        .unwrap();
        assert!(on.routes[0].request_buffering);
    }

    #[test]
    fn request_buffering_on_a_route_without_an_app_or_scripts_is_refused() {
        let err = with_file(
            "[[route]]\npath = \"/api\"\nproxy = \"http://127.0.0.1:9\"\n\
             request_buffering = true\n",
            &[],
        )
        .unwrap_err();
        assert!(err.contains("route[0].request_buffering"), "{err}");
        assert!(err.contains("proxy streams"), "{err}");
    }

    #[test]
    fn the_temp_dir_must_take_a_file_and_sizes_parse() {
        let err = with_file(&format!("body_temp_dir = \"missing\"\n{CGI_ROUTE}"), &[]).unwrap_err();
        assert!(err.contains("`body_temp_dir`"), "{err}");
        let err = with_file(CGI_ROUTE, &["--body-temp-dir", "/nonexistent/x"]).unwrap_err();
        assert!(err.contains("--body-temp-dir"), "{err}");
        // A site that never buffers does not care.
        with_file("", &["--body-temp-dir", "/nonexistent/x"]).unwrap();

        let config = with_file(
            &format!(
                "body_temp_dir = \"cgi-bin\"\n[limits]\nbody_buffer_size = \"32k\"\n{CGI_ROUTE}"
            ),
            &[],
        )
        .unwrap();
        assert!(config.body_temp_dir.ends_with("cgi-bin"));
        assert!(config.body_temp_dir.is_absolute());
        assert_eq!(config.limits.body_buffer_size, 32 * 1024);
        let config = with_file(CGI_ROUTE, &["--body-buffer-size", "0"]).unwrap();
        assert_eq!(config.limits.body_buffer_size, 0);
    }

    #[test]
    fn the_old_buffered_body_key_still_loads_with_a_notice() {
        let config = with_file(
            &format!("[limits]\nmax_buffered_body_size = \"1m\"\n{CGI_ROUTE}"),
            &[],
        )
        .unwrap();
        assert_eq!(config.notices.len(), 1);
        assert!(config.notices[0].contains("body_buffer_size"));
        let config = with_file(CGI_ROUTE, &["--max-buffered-body-size", "2m"]).unwrap();
        assert_eq!(config.notices.len(), 1);
    }
}
