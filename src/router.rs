//! Picks the route for a request: the routes of the request's host (or the
//! routes without a host when none names it), then the longest path prefix
//! that ends on a segment boundary (`/assets` matches `/assets` and
//! `/assets/x`, never `/assetsx`).

use crate::config::Route;

pub struct Router {
    /// Routes that name a host, grouped by host, each group sorted longest
    /// prefix first.
    by_host: Vec<(String, Vec<Route>)>,
    /// Routes without a host: the default for every other Host.
    default: Vec<Route>,
}

/// A matched route and the request path below its prefix ("" or `/...`).
pub struct Match<'r, 'p> {
    pub route: &'r Route,
    pub rel: &'p str,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let mut by_host: Vec<(String, Vec<Route>)> = Vec::new();
        let mut default = Vec::new();
        for route in routes {
            match &route.host {
                None => default.push(route.clone()),
                Some(host) => match by_host.iter_mut().find(|(h, _)| h == host) {
                    Some((_, list)) => list.push(route.clone()),
                    None => by_host.push((host.clone(), vec![route.clone()])),
                },
            }
        }
        let longest_first = |list: &mut Vec<Route>| {
            list.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        };
        longest_first(&mut default);
        for (_, list) in &mut by_host {
            longest_first(list);
        }
        Router { by_host, default }
    }

    /// `host` is the Host header or :authority, with or without a port; a
    /// fully qualified name's trailing dot is ignored (`example.com.`).
    pub fn find<'r, 'p>(&'r self, host: Option<&str>, path: &'p str) -> Option<Match<'r, 'p>> {
        let routes = host
            .map(|h| {
                let name = strip_port(h);
                name.strip_suffix('.').unwrap_or(name)
            })
            .and_then(|h| {
                self.by_host
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(h))
            })
            .map_or(&self.default, |(_, list)| list);
        routes
            .iter()
            .find_map(|route| prefix_rest(&route.prefix, path).map(|rel| Match { route, rel }))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(v6, _)| &v6[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The rest of `path` below `prefix`, when `prefix` matches on a segment boundary.
fn prefix_rest<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    if prefix == "/" {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str) -> Route {
        Route {
            host: host.map(String::from),
            prefix: prefix.into(),
            max_body_size: 0,
            request_buffering: false,
            static_files: None,
            handler: None,
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundary_wins() {
        let router = Router::new(&[
            route(None, "/"),
            route(None, "/assets"),
            route(None, "/assets/img"),
        ]);
        let m = router.find(None, "/assets/img/a.png").unwrap();
        assert_eq!((m.route.prefix.as_str(), m.rel), ("/assets/img", "/a.png"));
        let m = router.find(None, "/assets").unwrap();
        assert_eq!((m.route.prefix.as_str(), m.rel), ("/assets", ""));
        let m = router.find(None, "/assetsx").unwrap();
        assert_eq!((m.route.prefix.as_str(), m.rel), ("/", "/assetsx"));
    }

    #[test]
    fn host_routes_shadow_the_default() {
        let router = Router::new(&[route(None, "/"), route(Some("example.com"), "/blog")]);
        assert!(router.find(Some("Example.com:8080"), "/").is_none());
        assert_eq!(
            router.find(Some("example.com"), "/blog/x").unwrap().rel,
            "/x"
        );
        assert_eq!(
            router
                .find(Some("other.org"), "/blog")
                .unwrap()
                .route
                .prefix,
            "/"
        );
        assert_eq!(router.find(None, "/x").unwrap().route.prefix, "/");
        // A fully qualified name, uppercase, with a port.
        assert_eq!(
            router
                .find(Some("EXAMPLE.com.:8080"), "/blog")
                .unwrap()
                .route
                .host
                .as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn no_route_without_a_root() {
        let router = Router::new(&[route(None, "/assets")]);
        assert!(router.find(None, "/index.html").is_none());
    }

    #[test]
    fn ipv6_hosts_lose_their_port() {
        assert_eq!(strip_port("[::1]:8000"), "::1");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
