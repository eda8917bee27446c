//! Routes: the file's `[[route]]` tables and the flags that make routes
//! (`APP`, `--static`, `--cgi`, `--proxy`), merged into one list where a
//! static root and a handler on the same prefix become one try-files route.

use std::path::Path;

use super::super::file::FileRoute;
use super::super::*;
use super::{
    canonical_dir, cli_err, flags_dir, Builder, DEFAULT_CGI_MAX_PROCESSES, DEFAULT_CGI_PATH,
    DEFAULT_CGI_TIMEOUT,
};

impl Builder<'_> {
    /// `default_body` and `buffering` apply to routes that set no
    /// `max_body_size` / `request_buffering`.
    pub(super) fn routes(
        &self,
        default_body: u64,
        buffering: bool,
    ) -> Result<Vec<Route>, ConfigError> {
        let mut routes = Vec::new();
        for (i, r) in self.file.route.iter().enumerate() {
            routes.push(
                self.file_route(r, default_body, buffering)
                    .map_err(|(field, m)| self.file_err(&format!("route[{i}].{field}"), m))?,
            );
        }
        let cli_routes = self
            .cli
            .static_routes
            .iter()
            .map(|t| cli_static_route(t, default_body).map_err(|m| cli_err("--static", m)))
            .chain(self.cli.cgi_routes.iter().map(|t| {
                cli_cgi_route(t, default_body, buffering).map_err(|m| cli_err("--cgi", m))
            }))
            .chain(self.cli.proxy_routes.iter().map(|t| {
                self.cli_proxy_route(t, default_body)
                    .map_err(|m| cli_err("--proxy", m))
            }));
        let app = match (&self.cli.app, &self.file.app) {
            (Some(text), _) => Some(parse_app_target(text).map_err(|m| cli_err("APP", m))?),
            (None, Some(text)) => {
                Some(parse_app_target(text).map_err(|m| self.file_err("app", m))?)
            }
            (None, None) => None,
        };
        let app_route = app.map(|target| {
            Ok(Route {
                host: None,
                prefix: "/".into(),
                max_body_size: default_body,
                request_buffering: buffering,
                static_files: None,
                handler: Some(Handler::Wsgi(WsgiOptions {
                    target,
                    app_id: 0,
                    sendfile_root: None,
                })),
            })
        });
        let cli_routes = app_route.into_iter().chain(cli_routes);
        let mut from_cli: Vec<Route> = Vec::new();
        for route in cli_routes {
            let route = route?;
            match from_cli.iter_mut().find(|r| r.prefix == route.prefix) {
                Some(same) => merge_try_files(same, route)
                    .map_err(|m| cli_err("APP/--static/--cgi/--proxy", m))?,
                None => from_cli.push(route),
            }
        }
        for route in from_cli {
            // A flag replaces the file's route for the same prefix, unless
            // the two complement each other (a static root and an app).
            let same = routes
                .iter()
                .position(|r| r.host.is_none() && r.prefix == route.prefix);
            match same {
                Some(i) => {
                    if merge_try_files(&mut routes[i], route.clone()).is_err() {
                        routes[i] = route;
                    }
                }
                None => routes.push(route),
            }
        }
        for (i, a) in routes.iter().enumerate() {
            if routes[..i]
                .iter()
                .any(|b| a.host == b.host && a.prefix == b.prefix)
            {
                return Err(self.file_err(
                    "route",
                    format!("two routes for path `{}` on the same host", a.prefix),
                ));
            }
        }
        Ok(routes)
    }

    fn file_route(
        &self,
        r: &FileRoute,
        default_body: u64,
        buffering: bool,
    ) -> Result<Route, (&'static str, String)> {
        let prefix = normalize_prefix(&r.path).map_err(|m| ("path", m))?;
        let host = match &r.host {
            Some(h) if h.is_empty() || h.contains(['/', ' ']) => {
                return Err(("host", format!("`{h}` is not a host name")))
            }
            h => h.as_ref().map(|h| h.to_ascii_lowercase()),
        };
        let static_files = match &r.static_root {
            None => None,
            Some(dir) => Some(StaticOptions {
                root: canonical_dir(&self.base_dir.join(dir)).map_err(|m| ("static", m))?,
                index: r.index.clone().unwrap_or_else(|| vec!["index.html".into()]),
                autoindex: r.autoindex.unwrap_or(false),
                dotfiles: r.dotfiles.unwrap_or(false),
                symlinks_outside_root: r.symlinks_outside_root.unwrap_or(false),
                precompressed: r.precompressed.unwrap_or(true),
                expires: r.expires.map(|s| s.0),
            }),
        };
        let handlers = [r.cgi.is_some(), r.wsgi.is_some(), r.proxy.is_some()];
        if handlers.iter().filter(|&&set| set).count() > 1 {
            return Err((
                "wsgi",
                "a route has one handler: cgi, wsgi or proxy, not several".into(),
            ));
        }
        let sendfile_root = r
            .sendfile_root
            .as_ref()
            .map(|d| canonical_dir(&self.base_dir.join(d)))
            .transpose()
            .map_err(|m| ("sendfile_root", m))?;
        if sendfile_root.is_some() && r.wsgi.is_none() && r.proxy.is_none() {
            return Err((
                "sendfile_root",
                "only applies to a route with `wsgi` or `proxy`".into(),
            ));
        }
        if r.request_buffering.is_some() && r.wsgi.is_none() && r.cgi.is_none() {
            return Err((
                "request_buffering",
                "only applies to a route with `wsgi` or `cgi` (the proxy streams request bodies)"
                    .into(),
            ));
        }
        if r.proxy_host.is_some() && r.proxy.is_none() {
            return Err(("proxy_host", "only applies to a route with `proxy`".into()));
        }
        if r.proxy_underscore_headers.is_some() && r.proxy.is_none() {
            return Err((
                "proxy_underscore_headers",
                "only applies to a route with `proxy`".into(),
            ));
        }
        let handler = if let Some(target) = &r.wsgi {
            Some(Handler::Wsgi(WsgiOptions {
                target: parse_app_target(target).map_err(|m| ("wsgi", m))?,
                app_id: 0,
                sendfile_root,
            }))
        } else if let Some(target) = &r.proxy {
            let host = match &r.proxy_host {
                Some(h) if h.is_empty() || http::HeaderValue::from_str(h).is_err() => {
                    return Err(("proxy_host", format!("`{h}` is not a host")))
                }
                h => h.clone(),
            };
            Some(Handler::Proxy(ProxyOptions {
                upstream: upstream::resolve(
                    &mut self.upstreams.borrow_mut(),
                    target,
                    &self.base_dir,
                )
                .map_err(|m| ("proxy", m))?,
                host,
                sendfile_root,
                underscore_headers: r.proxy_underscore_headers.unwrap_or(false),
            }))
        } else if let Some(dir) = &r.cgi {
            Some(Handler::Cgi(CgiOptions {
                dir: canonical_dir(&self.base_dir.join(dir)).map_err(|m| ("cgi", m))?,
                index: r.cgi_index.clone(),
                timeout: r.cgi_timeout.map_or(DEFAULT_CGI_TIMEOUT, |s| s.0),
                max_processes: r.cgi_max_processes.unwrap_or(DEFAULT_CGI_MAX_PROCESSES),
                path_env: r
                    .cgi_path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CGI_PATH.into()),
                pass_authorization: r.cgi_pass_authorization.unwrap_or(false),
            }))
        } else {
            None
        };
        if static_files.is_none() && handler.is_none() {
            return Err((
                "static",
                "a route needs a handler (static = \"DIR\", and/or cgi = \"DIR\", wsgi = \"module:callable\" or proxy = \"UPSTREAM\")".to_string(),
            ));
        }
        if let Some(Handler::Cgi(cgi)) = &handler {
            if cgi.max_processes == 0 {
                return Err(("cgi_max_processes", "must be at least 1".into()));
            }
            if cgi.timeout.is_zero() {
                return Err(("cgi_timeout", "must be at least 1s".into()));
            }
            if let Some(bad) = cgi
                .index
                .as_ref()
                .filter(|n| n.is_empty() || n.contains('/'))
            {
                return Err(("cgi_index", format!("`{bad}` is not a file name")));
            }
        }
        if let Some(index) = &r.index {
            if let Some(bad) = index.iter().find(|n| n.is_empty() || n.contains('/')) {
                return Err(("index", format!("`{bad}` is not a file name")));
            }
        }
        Ok(Route {
            host,
            prefix,
            max_body_size: r.max_body_size.map_or(default_body, |s| s.0),
            request_buffering: r.request_buffering.unwrap_or(buffering),
            static_files,
            handler,
        })
    }
}

/// `--static /=public` and an app at `/` make one route: the file if it
/// exists, else the app (try-files).
fn merge_try_files(into: &mut Route, other: Route) -> Result<(), String> {
    match (
        &into.static_files,
        &into.handler,
        other.static_files,
        other.handler,
    ) {
        (None, Some(_), Some(files), None) => into.static_files = Some(files),
        (Some(_), None, None, Some(handler)) => {
            into.handler = Some(handler);
            into.request_buffering = other.request_buffering;
        }
        _ => return Err(format!("prefix `{}` given twice", into.prefix)),
    }
    Ok(())
}

fn split_prefix_dir(text: &str) -> Result<(String, &str), String> {
    let (prefix, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not PREFIX=DIR"))?;
    Ok((normalize_prefix(prefix)?, dir))
}

impl Builder<'_> {
    /// `--proxy PREFIX=URL[,URL...]`: a route to an inline pool.
    fn cli_proxy_route(&self, text: &str, max_body_size: u64) -> Result<Route, String> {
        let (prefix, urls) = split_prefix_dir(text)?;
        let mut pools = self.upstreams.borrow_mut();
        pools.push(upstream::inline(urls, flags_dir())?);
        Ok(Route {
            host: None,
            prefix,
            max_body_size,
            request_buffering: false,
            static_files: None,
            handler: Some(Handler::Proxy(ProxyOptions {
                upstream: pools.len() - 1,
                host: None,
                sendfile_root: None,
                underscore_headers: false,
            })),
        })
    }
}

fn cli_cgi_route(text: &str, max_body_size: u64, buffering: bool) -> Result<Route, String> {
    let (prefix, dir) = split_prefix_dir(text)?;
    Ok(Route {
        host: None,
        prefix,
        max_body_size,
        request_buffering: buffering,
        static_files: None,
        handler: Some(Handler::Cgi(CgiOptions {
            dir: canonical_dir(Path::new(dir))?,
            index: None,
            timeout: DEFAULT_CGI_TIMEOUT,
            max_processes: DEFAULT_CGI_MAX_PROCESSES,
            path_env: DEFAULT_CGI_PATH.into(),
            pass_authorization: false,
        })),
    })
}

fn cli_static_route(text: &str, max_body_size: u64) -> Result<Route, String> {
    let (prefix, dir) = split_prefix_dir(text)?;
    Ok(Route {
        host: None,
        prefix,
        max_body_size,
        request_buffering: false,
        handler: None,
        static_files: Some(StaticOptions {
            root: canonical_dir(Path::new(dir))?,
            index: vec!["index.html".into()],
            autoindex: false,
            dotfiles: false,
            symlinks_outside_root: false,
            precompressed: true,
            expires: None,
        }),
    })
}

/// `/assets/` and `/assets` are the same prefix; `/` stays `/`.
pub(super) fn normalize_prefix(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") || path.contains(['?', '#', '%']) {
        return Err(format!(
            "`{path}` must be a plain path (no `.`, `..`, `?`, `#` or `%`)"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// `module:callable`, `module` (→ `module:application`), `module:factory()`.
pub fn parse_app_target(text: &str) -> Result<AppTarget, String> {
    let (module, callable) = text.split_once(':').unwrap_or((text, "application"));
    let (callable, factory) = match callable.strip_suffix("()") {
        Some(name) => (name, true),
        None => (callable, false),
    };
    let dotted = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                part.chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    if !dotted(module) || !dotted(callable) {
        return Err(format!(
            "`{text}` is not a WSGI target (module:callable, module, or module:factory())"
        ));
    }
    Ok(AppTarget {
        module: module.into(),
        callable: callable.into(),
        factory,
    })
}
