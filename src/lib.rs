//! portico: a web server and Python application server in one program.
//!
//! The binary (`src/main.rs`) parses the command line and runs either the
//! master (`master`) or a worker (`server`). A request flows listener →
//! `router` → handler (`static_files`, `cgi`, `wsgi`, `proxy`) → response → access log
//! (`log`).
//! A listener may speak the uwsgi protocol instead of HTTP (`uwsgi`, which
//! also holds the client side for proxying to uwsgi servers).
//! Request bodies: `body` (what every handler reads, with its timeout) and
//! `spool` (request buffering: a WSGI or CGI body read whole first).
//! `gateway_env` builds the CGI/1.1 meta-variables that gateways share;
//! `refusal` is the one catalogue of the answers portico gives itself.
//! Between master and workers: `recycle` (a worker asking to be replaced),
//! `scoreboard` (the requests each worker runs, read by the master when one
//! dies) over `shm`, and `signals` (those no process may die of).

pub mod body;
pub mod cgi;
pub mod config;
pub mod forwarded;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod gateway_env;
pub mod log;
pub mod master;
pub mod proxy;
pub mod recycle;
pub mod refusal;
pub mod router;
pub mod scoreboard;
pub mod sendfile;
pub mod server;
pub mod shm;
pub mod signals;
pub mod spool;
pub mod static_files;
pub mod uwsgi;
pub mod wsgi;
