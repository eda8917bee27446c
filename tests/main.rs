//! Integration tests: each test gets its own temp dir and runs the real
//! `portico` binary (see tests/util).

mod util;

mod access_log;
mod buffering;
mod cgi;
mod cli;
mod conformance;
mod drains;
mod example_site;
mod h2spec;
mod layers;
mod limits;
mod parking;
mod processes;
mod protocols;
mod proxy;
mod refusals;
mod request_heads;
mod routing;
mod signals;
mod static_files;
mod streaming;
mod timeouts;
mod tls;
mod uwsgi;
mod wsgi_conformance;
mod wsgi_environ;
mod wsgi_frameworks;
mod wsgi_input;
mod wsgi_loading;
mod wsgi_responses;
mod wsgi_supervision;
mod wsgi_validate;
