//! The reverse proxy: a route's requests go to a pool of upstream servers
//! (HTTP/1.1 over TCP or a unix socket; uwsgi through `crate::uwsgi`). A
//! request flows:
//!
//! 1. who is asking: the client view from trusted forwarding headers;
//! 2. the upstream request: origin-form target, hop-by-hop fields removed
//!    (`Upgrade` kept for an upgrade), `Proxy` and names with `_` removed,
//!    `Host` passed through or `proxy_host` (without either, the server's
//!    own authority, set per attempt), forwarding headers set (`headers`);
//!    the client's body is streamed, never buffered (`body`);
//! 3. the exchange: balancing, connection reuse, timeouts, retries
//!    (`exchange`);
//! 4. decide what the response is ([`Outcome`]): a tunnel (`101`), a file
//!    named by `X-Accel-Redirect`, the upstream's response streamed, or a
//!    failure with its status (`error`);
//! 5. render it, in one place.
//!
//! Everything is per worker (`Rc`, `Cell`): pools, health, idle
//! connections; active health checks are one local task per pool.

mod balance;
pub(crate) mod body;
mod client;
mod error;
mod exchange;
mod headers;
mod health;
mod pool;

use std::rc::Rc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::config::{Config, ForwardedAllow, ProxyOptions, UpstreamConfig};
use crate::request::answer::status_page;
use crate::request::body::{Body, RequestBody};
use crate::request::forwarded;
use crate::request::refusal;
use crate::request::HandlerContext;
use crate::static_files::{named_file, NamedFile};

use body::{OutgoingBody, UpstreamBody, UwsgiResponseBody};
use error::ProxyError;
use exchange::{Exchanged, Replay, UpstreamResponse, UwsgiRequest};
use pool::{Lease, Pool};

pub use error::ProxyError as Error;

/// The upstream pools of a worker.
pub struct Proxy {
    pools: Vec<Rc<Pool>>,
    trust: ForwardedAllow,
}

/// What the client gets.
enum Outcome {
    /// The upstream's head, its body streamed.
    Stream(Response<Body>),
    /// `101 Switching Protocols`: the two connections are joined.
    Tunnel {
        head: Response<()>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        lease: Lease,
    },
    /// The upstream named a file under the route's `sendfile_root`.
    NamedFile {
        accel: bool,
        target: HeaderValue,
        headers: HeaderMap,
    },
    Failed(ProxyError),
}

impl Proxy {
    /// The pools of the config; starts their health checks on the current
    /// `LocalSet`.
    pub fn new(config: &Config) -> Self {
        let pools: Vec<Rc<Pool>> = config
            .upstreams
            .iter()
            .map(|u| Rc::new(Pool::new(u)))
            .collect();
        for pool in &pools {
            health::spawn(pool.clone());
        }
        Proxy {
            pools,
            trust: config.forwarded_allow_ips.clone(),
        }
    }

    /// Proxies one request; never fails outward.
    pub async fn serve(
        &self,
        opts: &ProxyOptions,
        ctx: &HandlerContext<'_>,
        files: &crate::static_files::Cache,
        mut req: Request<RequestBody>,
    ) -> Response<Body> {
        let pool = &self.pools[opts.upstream];
        let upgrade = headers::upgrade_request(req.version(), req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let method = req.method().clone();
        // The client's own headers, for ranges and conditionals on a file
        // the upstream names.
        let client_headers = opts.sendfile_root.is_some().then(|| req.headers().clone());
        let has_uwsgi = pool.config.servers.iter().any(|s| {
            matches!(
                s.url,
                crate::config::UpstreamUrl::Uwsgi { .. } | crate::config::UpstreamUrl::UwsgiUnix(_)
            )
        });
        let (upstream_req, replay, progress, client_key, uwsgi_request) =
            self.upstream_request(opts, ctx, req, upgrade.is_some(), has_uwsgi);
        let exchanged = exchange::exchange(
            pool,
            upstream_req,
            replay,
            &progress,
            &client_key,
            uwsgi_request.as_ref(),
        )
        .await;
        let outcome = decide(opts, exchanged, client_upgrade, pool.config.read_timeout);
        render(
            outcome,
            (opts, &pool.config),
            (ctx, files),
            (&method, &client_headers.unwrap_or_default()),
        )
    }

    /// Step 2: the request as the upstream gets it, what a retry needs, the
    /// balancing key (the client's address), and for a pool with uwsgi
    /// servers the request as uwsgi vars.
    #[allow(clippy::type_complexity)]
    fn upstream_request(
        &self,
        opts: &ProxyOptions,
        ctx: &HandlerContext<'_>,
        req: Request<RequestBody>,
        upgrade: bool,
        uwsgi: bool,
    ) -> (
        Request<OutgoingBody>,
        Option<Replay>,
        Rc<body::Progress>,
        Vec<u8>,
        Option<UwsgiRequest>,
    ) {
        let (mut parts, incoming) = req.into_parts();
        let peer = ctx.peer.addr;
        let view = forwarded::client_view(&parts.headers, &ctx.peer, &self.trust);
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let h2 = parts.version == http::Version::HTTP_2;
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h, upgrade);
        headers::strip_unsafe(h, opts.underscore_headers);
        // hyper answers `100-continue` itself when the body is first read.
        h.remove(header::EXPECT);
        if h2 {
            join_cookies(h);
        }
        headers::set_forwarding(
            h,
            &headers::Forwarding {
                peer: peer.map(|p| p.ip()),
                trusted: self.trust.allows(peer.map(|p| p.ip())),
                view: &view,
                host: client_host.as_ref(),
            },
        );
        let host = match &opts.host {
            Some(h) => HeaderValue::from_str(h).ok(),
            None => client_host,
        };
        if let Some(host) = host {
            h.insert(header::HOST, host);
        }
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        parts.version = http::Version::HTTP_11;
        let has_body = !incoming.is_end_stream();
        let replay = (!has_body && is_idempotent(&parts.method)).then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        let uwsgi_request = uwsgi.then(|| {
            let declared = crate::request::headers::declared_length(&parts.headers);
            UwsgiRequest {
                vars: crate::uwsgi::client::request_vars(&parts, ctx, declared),
                length_unknown: has_body && declared.is_none(),
            }
        });
        let (body, progress) = OutgoingBody::new(Some(incoming), ctx.max_body_size);
        let client_key = view.remote_addr.into_bytes();
        (
            Request::from_parts(parts, body),
            replay,
            progress,
            client_key,
            uwsgi_request,
        )
    }
}

/// Step 4.
fn decide(
    opts: &ProxyOptions,
    exchanged: Result<Exchanged, ProxyError>,
    client_upgrade: Option<OnUpgrade>,
    read_timeout: std::time::Duration,
) -> Outcome {
    let Exchanged {
        response,
        mut lease,
    } = match exchanged {
        Ok(e) => e,
        Err(err) => return Outcome::Failed(err),
    };
    let mut response = match response {
        UpstreamResponse::Http(mut response) => {
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let Some(client) = client_upgrade else {
                    return Outcome::Failed(ProxyError::Exchange {
                        server: lease.server_label().to_string(),
                        message: "101 Switching Protocols to a request that asked for no upgrade"
                            .into(),
                    });
                };
                let upstream = hyper::upgrade::on(&mut response);
                lease.discard();
                let (mut parts, _) = response.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers, true);
                return Outcome::Tunnel {
                    head: Response::from_parts(parts, ()),
                    client,
                    upstream,
                    lease,
                };
            }
            response.map(UndecidedBody::Http)
        }
        UpstreamResponse::Uwsgi(response) => response.map(UndecidedBody::Uwsgi),
    };
    if opts.sendfile_root.is_some() {
        if let Some(NamedFile { accel, target }) = named_file(response.headers()) {
            // The upstream's body (if any) is not read; its connection closes.
            lease.discard();
            let mut headers = std::mem::take(response.headers_mut());
            headers::strip_hop_by_hop(&mut headers, false);
            return Outcome::NamedFile {
                accel,
                target,
                headers,
            };
        }
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = match body {
        UndecidedBody::Http(incoming) => {
            Body::stream(UpstreamBody::new(incoming, read_timeout, lease))
        }
        UndecidedBody::Uwsgi(inner) => Body::stream(UwsgiResponseBody {
            inner,
            _lease: lease,
        }),
    };
    Outcome::Stream(Response::from_parts(parts, body))
}

/// The two kinds of upstream body, until the response is decided.
enum UndecidedBody {
    Http(hyper::body::Incoming),
    Uwsgi(Body),
}

/// Step 5; `request` is the client's method and headers (a file named by
/// the upstream is served with ranges and conditionals).
fn render(
    outcome: Outcome,
    (opts, pool): (&ProxyOptions, &UpstreamConfig),
    (ctx, files): (&HandlerContext<'_>, &crate::static_files::Cache),
    request: (&Method, &HeaderMap),
) -> Response<Body> {
    match outcome {
        Outcome::Stream(response) => response,
        Outcome::Tunnel {
            head,
            client,
            upstream,
            lease,
        } => {
            tokio::task::spawn_local(tunnel(client, upstream, lease));
            head.map(|()| Body::empty())
        }
        Outcome::Failed(err) => match err.refusal(pool, ctx.max_body_size) {
            Some(refusal) => refusal::refuse(&refusal, ctx.scope()),
            None => status_page(err.status()),
        },
        Outcome::NamedFile {
            accel,
            target,
            headers,
        } => match &opts.sendfile_root {
            Some(root) => {
                let sendfile = ctx.sendfile;
                crate::static_files::named_file_response(
                    root, files, sendfile, accel, &target, request, headers,
                )
            }
            None => status_page(StatusCode::INTERNAL_SERVER_ERROR),
        },
    }
}

/// Copies bytes both ways between the upgraded client and upstream
/// connections until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, lease: Lease) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!("upstream {}: upgrade failed: {err}", lease.server_label());
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(
            "upstream {}: tunnel closed after {up} bytes up, {down} down",
            lease.server_label()
        ),
        Err(err) => tracing::debug!("upstream {}: tunnel cut: {err}", lease.server_label()),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one.
fn join_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if cookies.len() > 1 {
        let joined = cookies.join(&b"; "[..]);
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
}
