//! The application server: WSGI (PEP 3333) apps in the worker's embedded
//! CPython. A request flows:
//!
//! 1. on the connection's I/O thread: read the whole body (request
//!    buffering, the default: memory, then a temporary file; 413 past
//!    `max_body_size`, the client's 408/400 before the app runs) or, with
//!    `request_buffering = false`, only a small one (larger ones stream
//!    later); compute the client view (trusted forwarding headers); queue
//!    a [`Job`] for the Python threads;
//! 2. on a Python thread (`pool`): build the environ, call the app, send the
//!    head and body through a [`pipe::Pipe`] (`call`);
//! 3. back on the I/O thread: turn the head into a response whose body is
//!    the pipe, an open file (`wsgi.file_wrapper`), or a static file
//!    (`X-Accel-Redirect` / `X-Sendfile`).
//!
//! Python never runs on the I/O thread, so a slow view stalls neither static
//! files nor other connections; see docs/wsgi.md for the measurements
//! behind this choice.

mod call;
mod env_cache;
mod environ;
mod input;
pub mod interpreter;
mod pipe;
mod pool;
mod start_response;
mod str_cache;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::request::body::{BodyError, RequestBody};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use pyo3::prelude::*;

use crate::config::{Config, ForwardedAllow, WsgiOptions};
use crate::recycle::RecycleSignal;
use crate::request::answer::status_page;
use crate::request::body::Body;
use crate::request::forwarded::{self, ClientView};
use crate::request::refusal::{self, Refusal};
use crate::request::spool::{self, Spooled};
use crate::request::HandlerContext;
use crate::scoreboard::Scoreboard;
use crate::static_files;

pub use interpreter::LoadError;

use input::Source;
use pipe::{BodyPlan, HeadFuture, Pipe, PipeBody};

/// Without request buffering, bodies up to this size are still read by
/// the I/O thread before the app is called, so no Python thread waits on a
/// slow client for them.
const PREREAD_LIMIT: u64 = 64 * 1024;

/// One request for a Python thread.
pub struct Job {
    pub app: usize,
    pub parts: Arc<Parts>,
    /// The connection's peer, for the scoreboard.
    pub peer: Option<SocketAddr>,
    pub script_name: String,
    pub client: ClientView,
    pub local: Option<SocketAddr>,
    pub input: Option<Source>,
    pub max_body_size: u64,
    pub pipe: Arc<Pipe>,
    pub tag: Tag,
    /// The route lets the app answer with X-Accel-Redirect / X-Sendfile.
    pub may_name_files: bool,
}

/// "METHOD target" of a request, for log lines; formatted only when a line
/// is written, not for every request.
#[derive(Clone)]
pub struct Tag(Arc<Parts>);

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = self.0.uri.path_and_query().map_or("/", |pq| pq.as_str());
        write!(f, "{} {}", self.0.method, target)
    }
}

/// The apps of a worker and the threads that run them.
pub struct WsgiRuntime {
    pool: pool::Pool,
    forwarded: ForwardedAllow,
}

impl WsgiRuntime {
    /// Starts Python, imports every app of the config and starts the
    /// threads; `None` when no route names an app. The Python threads keep
    /// `scoreboard` (from the master) up to date with their requests.
    pub fn start(
        config: &Config,
        scoreboard: Option<Scoreboard>,
    ) -> Result<Option<Self>, LoadError> {
        let Some(python) = &config.python else {
            return Ok(None);
        };
        interpreter::initialize(python)?;
        let (apps, base) = Python::attach(|py| -> Result<_, LoadError> {
            let init_err = |e: PyErr| LoadError::Init(interpreter::traceback_text(py, &e));
            interpreter::enable_faulthandler(py).map_err(init_err)?;
            interpreter::watch_imports(py, stack_dump_after(config.start_timeout))
                .map_err(init_err)?;
            let apps = python
                .apps
                .iter()
                .map(|target| interpreter::load_app(py, target))
                .collect::<Result<Vec<_>, _>>()?;
            interpreter::imports_done(py).map_err(init_err)?;
            let wrapper = py.get_type::<streams::FileWrapper>().into_any();
            let base = environ::base(py, python.threads > 1, config.workers > 1, wrapper)
                .map_err(|e| LoadError::Init(interpreter::traceback_text(py, &e)))?;
            Ok((apps, base))
        })?;
        let jitter = match python.max_requests_jitter {
            0 => 0,
            j => u64::from(std::process::id()) % (j + 1),
        };
        let pool = pool::Pool::start(
            pool::PoolSettings {
                threads: python.threads,
                spin_yields: pool::spin_yields(
                    config.workers,
                    python.threads,
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
                timeout: python.timeout,
                recycle_after: if python.max_requests == 0 {
                    0
                } else {
                    python.max_requests + jitter
                },
                scoreboard,
            },
            Arc::new(apps),
            &base,
        )?;
        Ok(Some(WsgiRuntime {
            pool,
            forwarded: config.forwarded_allow_ips.clone(),
        }))
    }

    /// Raised when the worker should be recycled: it has served
    /// `--max-requests`, or a request ran past `--timeout` (the stuck
    /// thread is lost to this worker).
    pub fn recycle_signal(&self) -> Arc<RecycleSignal> {
        self.pool.recycle_signal()
    }

    /// Runs the app for one request; never fails outward.
    pub async fn serve(
        &self,
        opts: &WsgiOptions,
        ctx: &HandlerContext<'_>,
        files: &static_files::Cache,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let input = match take_body(&mut parts, body, ctx).await {
            Ok(input) => input,
            Err(refusal) => return refusal::refuse(&refusal, ctx.scope()),
        };
        let client = forwarded::client_view(&parts.headers, &ctx.peer, &self.forwarded);
        let parts = Arc::new(parts);
        let tag = Tag(parts.clone());
        let pipe = Pipe::new();
        self.pool.submit(Job {
            app: opts.app_id,
            parts: parts.clone(),
            peer: ctx.peer.addr,
            script_name: ctx.script_name.to_string(),
            client,
            local: ctx.peer.local,
            input: Some(input),
            max_body_size: ctx.max_body_size,
            pipe: pipe.clone(),
            tag,
            may_name_files: opts.sendfile_root.is_some(),
        });
        let (head, pipe) = HeadFuture(Some(pipe)).await;
        let Some(head) = head else {
            return status_page(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let mut response = match head.body {
            BodyPlan::Stream => Response::new(Body::stream(PipeBody(pipe))),
            BodyPlan::Full(bytes) => Response::new(Body::full(bytes)),
            BodyPlan::File { file, offset, len } => {
                let range = offset..offset + len;
                Response::new(static_files::file_range_body(file, range, ctx.sendfile))
            }
            BodyPlan::NamedFile { accel, target } => {
                // Jobs may name files only on routes with a sendfile_root.
                let Some(root) = opts.sendfile_root.as_ref() else {
                    return status_page(StatusCode::INTERNAL_SERVER_ERROR);
                };
                return static_files::named_file_response(
                    root,
                    files,
                    ctx.sendfile,
                    accel,
                    &target,
                    (&parts.method, &parts.headers),
                    head.headers,
                );
            }
        };
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        if parts.version >= http::Version::HTTP_2 {
            // Our own answers to a failed body carry it; HTTP/2 has none.
            response.headers_mut().remove(header::CONNECTION);
        }
        if let Some(reason) = head.reason {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

/// When a worker still importing its apps prints every Python thread's
/// stack: shortly before the master kills it for `--start-timeout`, so the
/// log says where the import hangs.
fn stack_dump_after(start_timeout: std::time::Duration) -> std::time::Duration {
    let margin = (start_timeout / 4).min(std::time::Duration::from_secs(1));
    start_timeout - margin
}

/// The app's `wsgi.input`. With request buffering the whole body is read
/// now (hyper sends `100 Continue` as this starts); a body that came
/// without a length gets the `Content-Length` it turned out to have, as
/// nginx sends it upstream, so apps that need one (Django) see it.
/// Without buffering, [`read_small_body`].
async fn take_body(
    parts: &mut Parts,
    body: RequestBody,
    ctx: &HandlerContext<'_>,
) -> Result<Source, Refusal> {
    if !ctx.buffering.on {
        let limit = ctx.max_body_size;
        return read_small_body(parts, body, limit)
            .await
            .map_err(Refusal::Body);
    }
    if body.is_end_stream() {
        return Ok(Source::Empty);
    }
    let spooled = spool::spool(body, ctx.buffering, ctx.max_body_size)
        .await
        .map_err(|err| err.refusal())?;
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(spooled.len()));
    }
    Ok(match spooled {
        Spooled::Memory(data) if data.is_empty() => Source::Empty,
        Spooled::Memory(data) => Source::Buffered(data),
        Spooled::File(file) => Source::File(file),
    })
}

/// A body that fits `PREREAD_LIMIT` is read now, unless the client waits
/// for `100 Continue` (which only the app's first read should send).
async fn read_small_body(
    parts: &Parts,
    body: RequestBody,
    limit: u64,
) -> Result<Source, BodyError> {
    if body.is_end_stream() {
        return Ok(Source::Empty);
    }
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= PREREAD_LIMIT.min(limit));
    if expects_continue || !small {
        return Ok(Source::Streaming(body));
    }
    Ok(Source::Buffered(body.collect().await?.to_bytes()))
}
