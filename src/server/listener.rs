//! Listening sockets: bound once by the master (or the single process),
//! inherited by workers across `exec` as plain file descriptors, and turned
//! into tokio listeners by each worker.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};

use crate::config::ListenAddr;

/// The environment variable through which a master hands its sockets to a
/// worker: comma-separated descriptor numbers, in the config's listener order.
pub const LISTEN_FDS_ENV: &str = "PORTICO_LISTEN_FDS";

const BACKLOG: i32 = 1024;

/// A bound, listening socket, not yet attached to a runtime.
pub enum BoundListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl BoundListener {
    pub fn bind(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => bind_tcp(*addr).map(BoundListener::Tcp),
            ListenAddr::Unix(path) => bind_unix(path).map(|l| BoundListener::Unix(l, path.clone())),
        }
    }

    /// The address clients reach, with the real port when port 0 was asked for.
    pub fn display_addr(&self) -> String {
        match self {
            BoundListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            BoundListener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            BoundListener::Tcp(l) => l.as_raw_fd(),
            BoundListener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Lets the socket survive `exec` into a worker.
    pub fn set_inheritable(&self, inheritable: bool) -> std::io::Result<()> {
        let flags = if inheritable {
            nix::fcntl::FdFlag::empty()
        } else {
            nix::fcntl::FdFlag::FD_CLOEXEC
        };
        nix::fcntl::fcntl(self.raw_fd(), nix::fcntl::FcntlArg::F_SETFD(flags))
            .map(drop)
            .map_err(std::io::Error::from)
    }

    /// Rebuilds a listener from a descriptor inherited from the master.
    pub fn from_inherited(fd: OwnedFd, addr: &ListenAddr) -> Self {
        match addr {
            ListenAddr::Tcp(_) => BoundListener::Tcp(std::net::TcpListener::from(fd)),
            ListenAddr::Unix(path) => {
                BoundListener::Unix(std::os::unix::net::UnixListener::from(fd), path.clone())
            }
        }
    }
}

/// Parses `PORTICO_LISTEN_FDS` into owned descriptors.
pub fn inherited_fds(value: &str) -> Result<Vec<OwnedFd>, String> {
    value
        .split(',')
        .map(|n| {
            let fd: RawFd = n
                .parse()
                .map_err(|_| format!("{LISTEN_FDS_ENV}: `{n}` is not a descriptor"))?;
            nix::sys::stat::fstat(fd)
                .map_err(|e| format!("{LISTEN_FDS_ENV}: descriptor {fd}: {e}"))?;
            // SAFETY: the master passed this descriptor to us across exec and
            // nothing else in this process has claimed it; fstat proved it is open.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn bind_unix(path: &PathBuf) -> std::io::Result<std::os::unix::net::UnixListener> {
    // A socket file left by a previous run would make bind fail; only remove
    // it when it really is a socket, never a regular file.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(std::os::unix::net::UnixListener::from(OwnedFd::from(
        socket,
    )))
}
