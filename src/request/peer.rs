//! Who is asking: the two ends of the connection a request came on, as
//! logs, forwarded-header decisions and gateway variables see them.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// What the connection knows about its two ends, for logs and handlers.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client (None on a unix socket).
    pub addr: Option<SocketAddr>,
    /// Our address the client connected to (None on a unix socket).
    pub local: Option<SocketAddr>,
    /// The connection is TLS (`HTTPS=on`, `wsgi.url_scheme = https`).
    pub tls: bool,
    /// The plain socket, when writing to it directly is safe (not TLS).
    pub raw_fd: Option<RawFd>,
    /// The client's IP as `REMOTE_ADDR` shows it.
    pub ip_text: IpText,
}

impl Peer {
    pub fn new(
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
        tls: bool,
        raw_fd: Option<RawFd>,
    ) -> Self {
        Peer {
            addr,
            local,
            tls,
            raw_fd,
            ip_text: IpText::new(addr.map(|a| a.ip())),
        }
    }
}

/// An IP address as text, formatted once per connection rather than once
/// per request (formatting costs more than the rest of the client view).
/// IPv4-mapped IPv6 addresses show as IPv4; no address is "".
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; IpText::MAX],
    len: u8,
}

impl IpText {
    /// The longest IPv6 text form, `ffff:…:ffff:255.255.255.255`.
    const MAX: usize = 45;

    pub fn new(ip: Option<IpAddr>) -> Self {
        use std::io::Write;
        let mut buf = [0; Self::MAX];
        let mut rest = &mut buf[..];
        if let Some(ip) = ip {
            // Cannot fail: every address fits in MAX bytes.
            let _ = write!(rest, "{}", ip.to_canonical());
        }
        let len = (Self::MAX - rest.len()) as u8;
        IpText { buf, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
