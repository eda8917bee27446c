//! The uwsgi protocol, both ways.
//!
//! - `codec`: the packet (4-byte header, then `key`/`value` vars with u16
//!   little-endian sizes), encoding and size-limited decoding;
//! - `server` (with `request`): portico as the application server behind a
//!   front that speaks uwsgi (nginx `uwsgi_pass`, another portico): each
//!   `--uwsgi-socket` connection carries one request, which goes through the
//!   same router and handlers as HTTP;
//! - `client`: portico as the front, sending a request to a uwsgi server
//!   (`uwsgi://HOST:PORT`, `uwsgi+unix:PATH`) and streaming its HTTP
//!   response back; used by the reverse proxy.
//!
//! See docs/uwsgi.md for the user's view.

pub mod client;
pub mod codec;
pub(crate) mod request;
mod server;

pub use client::{send, Target, Timeouts, UwsgiError};
pub use codec::ProtocolError;
pub use request::ServerVars;
pub use server::{serve, PacketBody};
