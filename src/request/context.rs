//! What a handler is told besides the request itself: where its route is
//! mounted, the route's body rules, who is asking, and whether file bodies
//! may go out with `sendfile`.

use std::sync::Arc;

use super::peer::Peer;
use super::refusal::Scope;
use super::sendfile::SendQueue;
use super::spool::Buffering;

/// Where a dynamic handler is mounted and who is asking: what CGI and WSGI
/// need besides the request itself.
pub struct HandlerContext<'a> {
    /// The route prefix (`SCRIPT_NAME` base); "" for the root route.
    pub script_name: &'a str,
    pub max_body_size: u64,
    /// Whether the body is read whole before the handler runs, and where.
    pub buffering: Buffering<'a>,
    pub peer: Peer,
    /// Set when file bodies may go out with `sendfile` (plain HTTP/1).
    pub sendfile: Option<&'a Arc<SendQueue>>,
}

impl HandlerContext<'_> {
    /// The route's prefix as refusal lines name it (`/` for the root).
    pub fn route(&self) -> &str {
        if self.script_name.is_empty() {
            "/"
        } else {
            self.script_name
        }
    }

    /// Where a handler's refusal happened, for its log line.
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            route: Some(self.route()),
            peer: self.peer.ip_text.as_str(),
        }
    }
}
