//! CGI gateway (RFC 3875): one process per request.
//!
//! `serve` runs these steps, in order (each in its own file):
//! 1. find the script under the route's directory (`lookup`): 404, 403,
//!    400, or a 301 to add a directory's slash;
//! 2. prepare the body (`input`): read whole first (`crate::request::spool`:
//!    memory, then a temporary file that becomes the script's stdin; 413
//!    past `max_body_size`), or, with `request_buffering = false`, streamed
//!    when it has a Content-Length;
//! 3. take a process slot (`slots`): none free → 503 with `Retry-After`.
//!    After the body is buffered, so that a slow uploader holds no slot;
//! 4. build the environment from an empty one (`env`, on top of the shared
//!    `gateway_env`);
//! 5. spawn the script in its own process group, log its stderr, reap it
//!    (`process`), and write the body to its stdin (`input`); a body the
//!    client stops sending (`--body-timeout`) or abandons kills the group
//!    before its stdin closes: 408 (or a cut response), 499 in the access
//!    log for a client gone;
//! 6. read its header block (`output`): too large, malformed, or the
//!    output ends first → 502; silent for `cgi_timeout` → group killed, 504;
//! 7. parse the block (`head`) and decide what it means (`response`):
//!    document, client redirect, nph, or a local redirect, which goes back
//!    to step 1 for the new path (GET, no body) at most [`MAX_REDIRECTS`]
//!    times;
//! 8. render (`response`): the body streams from the script's stdout as it
//!    writes it; HEAD drains it. Errors render as their status in the same
//!    place.
//!
//! Scope decisions (docs/cgi.md): a local redirect is followed internally
//! only when its path names a script of the same CGI route; any other local
//! path is answered with a 302 to it (the client's next request then goes
//! through the router: static files, other routes). An nph script's status
//! line and fields are forwarded as written (reason phrase included), its
//! body byte for byte, and the connection is closed after; hyper still
//! frames the response, so "unchanged" means the same status, fields and
//! body bytes, not the same framing.

mod env;
mod error;
pub(crate) mod head;
mod input;
mod lookup;
mod output;
mod process;
pub(crate) mod response;
mod slots;

use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::request::body::RequestBody;
use http::request::Parts;
use http::{Method, Request, Response};

use crate::config::CgiOptions;
use crate::request::body::Body;
use crate::request::gateway_env::GatewayRequest;
use crate::request::HandlerContext;

pub use error::CgiError;
use input::{BodyFault, Input};
use lookup::{Lookup, Script};
use output::Output;
use process::Tag;
use response::Outcome;
pub use slots::Slots;

/// Local redirects followed for one request before giving up (500).
pub const MAX_REDIRECTS: usize = 10;

pub async fn serve(
    opts: &CgiOptions,
    slots: &Slots,
    ctx: &HandlerContext<'_>,
    req: Request<RequestBody>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let request = format!(
        "{} {}",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
    );
    let mut script = String::from("-");
    let slots = slots.for_route(opts, ctx.script_name);
    match run(opts, slots, ctx, &parts, body, &request, &mut script).await {
        Ok(res) => res,
        Err(err) => match err.refusal(&script) {
            Some(refusal) => crate::request::refusal::refuse(&refusal, ctx.scope()),
            None => {
                err.log(&script, &request);
                response::render_error(&err)
            }
        },
    }
}

/// Steps 1–8; `label` names the script being run, for the error log.
async fn run(
    opts: &CgiOptions,
    slots: Arc<Semaphore>,
    ctx: &HandlerContext<'_>,
    parts: &Parts,
    body: RequestBody,
    request: &str,
    label: &mut String,
) -> Result<Response<Body>, CgiError> {
    let original = GatewayRequest::from_parts(parts);
    let head_only = parts.method == Method::HEAD;
    // 1. Lookup.
    let rel = below(ctx, parts.uri.path()).ok_or(CgiError::NotFound)?;
    let mut script = match lookup::lookup(opts, rel)? {
        Lookup::Script(s) => s,
        Lookup::AddSlash => {
            return Ok(response::render_add_slash(
                parts.uri.path(),
                parts.uri.query(),
            ))
        }
    };
    *label = script.path.display().to_string();
    // 2. The body (before the slot: a slow uploader must not hold one).
    let mut input = input::prepare(&parts.headers, body, ctx).await?;
    // 3. A slot.
    let mut slot = slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| CgiError::Busy(opts.max_processes))?;
    let mut redirected: Option<http::uri::PathAndQuery> = None;
    for hop in 0.. {
        let req = match &redirected {
            None => GatewayRequest { ..original },
            Some(target) => GatewayRequest {
                method: &Method::GET,
                path: target.path(),
                query: target.query(),
                ..original
            },
        };
        // 4. Environment.
        let content_length = input.len();
        let vars = env::build(&req, &script, opts, ctx, content_length);
        // 5. Spawn, feed stdin.
        let tag = Rc::new(Tag {
            script: label.clone(),
            request: request.to_string(),
        });
        let (stdin, to_feed) = std::mem::replace(&mut input, Input::None).into_stdin();
        let running = process::spawn(&script, vars, stdin, slot, tag.clone()).await?;
        let fault = BodyFault::default();
        if let Some(stdin) = running.stdin {
            input::feed(
                to_feed,
                stdin,
                running.activity.clone(),
                running.guard.killer(),
                fault.clone(),
            );
        }
        let mut output = Output::new(
            running.stdout,
            running.guard,
            running.activity,
            opts.timeout,
            tag,
            fault,
        );
        // 6. Header block.
        let block = output.read_head().await?;
        // 7. Parse, decide.
        let nph = is_nph(&script);
        let head = head::parse(&block, nph)?;
        let target = match response::decide(head, nph) {
            // 8. Render.
            Outcome::Respond(answer) => {
                return Ok(response::render(answer, output, head_only, parts.version))
            }
            Outcome::LocalRedirect(target) => target,
        };
        output.finish();
        if hop == MAX_REDIRECTS {
            return Err(CgiError::TooManyRedirects(MAX_REDIRECTS));
        }
        // Back to step 1 for the new path, under this route only.
        let next = below(ctx, target.path()).and_then(|rel| lookup::lookup(opts, rel).ok());
        let Some(Lookup::Script(next)) = next else {
            tracing::debug!(request, location = %target, "CGI local redirect outside the route: 302");
            return Ok(response::render_redirect(&target));
        };
        script = next;
        *label = script.path.display().to_string();
        // The previous script may still be exiting: wait for its slot.
        slot = tokio::time::timeout(opts.timeout, slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(CgiError::Busy(opts.max_processes))?;
        redirected = Some(target);
    }
    unreachable!("the loop returns")
}

/// The path below the route prefix ("" or starting with `/`), if it is one.
fn below<'p>(ctx: &HandlerContext<'_>, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(ctx.script_name)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Non-parsed-header scripts are named `nph-*` (RFC 3875 §5).
fn is_nph(script: &Script) -> bool {
    script
        .path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"nph-"))
}
