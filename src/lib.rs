//! portico: a web server and Python application server in one program.
//!
//! The binary (`src/main.rs`) parses the command line and runs either the
//! master (`master`) or a worker (`server`). The layers, each importing
//! only the ones below it (tests/layers.rs keeps it so):
//!
//! - front-ends, `server`: listeners, TLS, HTTP connections, parking,
//!   drains, and the uwsgi listener;
//! - `service`: the per-request pipeline (limits, `router`, try-files,
//!   dispatch, access log) and the per-worker `Services`;
//! - handlers: `static_files`, `cgi`, `wsgi`, `proxy` (with the uwsgi
//!   codec and client, `uwsgi`);
//! - `request`: the vocabulary every layer shares (peer, handler context,
//!   bodies, refusals, forwarded headers, gateway meta-variables);
//! - `config`, `log`.
//!
//! Between master and workers: `recycle` (a worker asking to be replaced),
//! `scoreboard` (the requests each worker runs, read by the master when one
//! dies) over `shm`, and `signals` (those no process may die of).

pub mod cgi;
pub mod config;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod log;
pub mod master;
pub mod proxy;
pub mod recycle;
pub mod request;
pub mod router;
pub mod scoreboard;
pub mod server;
pub mod service;
pub mod shm;
pub mod signals;
pub mod static_files;
pub mod uwsgi;
pub mod wsgi;
