//! Integration tests: each test gets its own temp dir and runs the real
//! `portico` binary (see tests/util).

mod util;

mod access_log;
mod cgi;
mod cli;
mod conformance;
mod limits;
mod processes;
mod protocols;
mod routing;
mod static_files;
mod streaming;
mod tls;
