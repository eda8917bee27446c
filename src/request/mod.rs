//! The vocabulary every layer shares about a request: who is asking
//! (`peer`), what a handler is told besides the request (`context`), the
//! request and response bodies (`body`, and `spool` for a body read whole
//! before its handler), the error answers portico gives itself (`answer`,
//! the one catalogue of their look, and `refusal`, why and how it logs),
//! forwarded headers (`forwarded`), header rules every layer applies alike
//! (`headers`: hop-by-hop fields, `Proxy`, `Content-Length`), the CGI/1.1
//! meta-variables gateways
//! share (`gateway_env`), what a front server said about itself
//! (`server_vars`), the read timeout of every body read from a peer
//! (`read_timer`), and file bodies written straight to the socket
//! (`sendfile`).
//!
//! Nothing here imports a handler, the service or a front-end.

pub mod answer;
pub mod body;
pub mod context;
pub mod forwarded;
pub mod gateway_env;
pub mod headers;
pub mod peer;
pub mod read_timer;
pub mod refusal;
pub mod sendfile;
pub mod server_vars;
pub mod spool;

pub use context::HandlerContext;
pub use peer::{IpText, Peer};
pub use server_vars::ServerVars;
