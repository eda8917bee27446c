//! The uwsgi wire protocol, and portico as a uwsgi client.
//!
//! - `codec`: the packet (4-byte header, then `key`/`value` vars with u16
//!   little-endian sizes), encoding and size-limited decoding;
//! - `client`: portico as the front, sending a request to a uwsgi server
//!   (`uwsgi://HOST:PORT`, `uwsgi+unix:PATH`) and streaming its HTTP
//!   response back; used by the reverse proxy.
//!
//! The other way, portico as the application server behind a front that
//! speaks uwsgi, is a front-end: `crate::server::uwsgi`. See docs/uwsgi.md
//! for the user's view.

pub mod client;
pub mod codec;

pub use client::{send, Target, Timeouts, UwsgiError};
pub use codec::ProtocolError;
