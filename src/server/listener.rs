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

    /// Stops the kernel from completing new connections on this listener,
    /// keeping those it has queued (see [`stop_new_connections`]); call it
    /// when the service stops, never on a reload.
    pub fn stop_new_connections(&self) {
        if let BoundListener::Tcp(l) = self {
            if let Err(err) = stop_new_connections(l.as_raw_fd()) {
                tracing::warn!(
                    "listener {}: cannot stop new connections before closing ({err}); \
                     connections queued at the close will be reset",
                    self.display_addr()
                );
            }
        }
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

/// Closing a listening socket resets every connection the kernel completed
/// and queued on it, though their clients may already have sent a request.
/// So before the last process holding a TCP listener closes it, this makes
/// the kernel drop new connection attempts (a pure SYN: the client retries,
/// then finds the port closed, and has sent nothing) while a handshake under
/// way still completes (its final ACK passes); the queue can then be taken
/// to its end and the socket closed without resetting anyone.
///
/// A classic BPF socket filter; for TCP it sees each segment from its TCP
/// header, whose byte 13 holds the flags.
pub fn stop_new_connections(fd: RawFd) -> std::io::Result<()> {
    use nix::libc::{sock_filter, sock_fprog, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ};
    use nix::libc::{BPF_JMP, BPF_K, BPF_LD, BPF_RET, SOL_SOCKET, SO_ATTACH_FILTER};
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let program = [
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 13),
        op(BPF_ALU | BPF_AND | BPF_K, 0, 0, SYN | ACK),
        // A SYN without ACK opens a connection: drop it; keep the rest.
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, SYN),
        op(BPF_RET | BPF_K, 0, 0, 0),
        op(BPF_RET | BPF_K, 0, 0, u32::MAX),
    ];
    let fprog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the
    // kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd,
            SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<sock_fprog>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_listener_stopped_for_new_connections_keeps_its_queue() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = TcpStream::connect(addr).unwrap();
        queued.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        stop_new_connections(listener.as_raw_fd()).unwrap();
        // A new attempt's SYN is dropped: it does not complete.
        let late = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(late.is_err(), "a connection completed after the stop");
        // What was queued is still there, with its request.
        let (mut taken, _) = listener.accept().unwrap();
        let mut request = [0u8; 18];
        taken.read_exact(&mut request).unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
    }
}
