//! The request scoreboard: which request each Python thread of a worker is
//! running, in memory the worker shares with its master (`crate::shm`). When
//! a worker dies (a segfault in a C extension, SIGKILL, the graceful timeout
//! cutting a request), the master reads its board and names the requests
//! it took down, in the error log and with an access-log line each.
//!
//! The master creates one board per worker and passes its descriptor in
//! `PORTICO_SCOREBOARD_FD`. A Python thread writes its slot when it takes a
//! request and clears it when the app is done with it: a sequence word
//! (odd while being written) tells a torn record from a whole one, so a
//! board read at any moment, even of a process that died mid-write, never
//! yields a mixed record.
//!
//! Layout: a 64-byte header (`threads` in use), then one [`SLOT`]-byte slot
//! per Python thread. Text fields are cut at their room below.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::shm::SharedMem;

/// The environment variable with the board's descriptor.
pub const SCOREBOARD_FD_ENV: &str = "PORTICO_SCOREBOARD_FD";

/// Most Python threads a worker may have (the `--threads` limit).
pub const MAX_THREADS: usize = 1024;
const HEADER: usize = 64;
const SLOT: usize = 1024;

// Offsets inside a slot.
const SEQ: usize = 0;
const BUSY: usize = 8;
const PEER_PORT: usize = 12; // u16, then family (0, 4, 6), then version
const STARTED_US: usize = 16;
const PEER_IP: usize = 24;
const LENS: usize = 40; // method, host, user agent, referer (u8), target (u16)
const FIELDS: [(usize, usize); 5] = [
    (48, 16),   // method
    (64, 512),  // target
    (576, 96),  // host
    (672, 176), // user agent
    (848, 176), // referer
];
const METHOD: usize = 0;
const TARGET: usize = 1;
const HOST: usize = 2;
const USER_AGENT: usize = 3;
const REFERER: usize = 4;

/// A request as the scoreboard keeps it (borrowed from the worker's request).
pub struct RequestInfo<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: http::Version,
    pub host: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    pub peer: Option<SocketAddr>,
}

/// A request found running on a board, as the master reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRequest {
    pub method: String,
    pub target: String,
    pub version: http::Version,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub peer: Option<SocketAddr>,
    /// When the app was handed the request.
    pub started: SystemTime,
}

impl RunningRequest {
    /// How long it had run at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.started).unwrap_or_default()
    }
}

impl std::fmt::Display for RunningRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(peer) = self.peer {
            write!(f, " from {peer}")?;
        }
        Ok(())
    }
}

pub struct Scoreboard {
    mem: SharedMem,
}

impl Scoreboard {
    /// A board for one worker (master side), room for [`MAX_THREADS`];
    /// pages are allocated only as slots are used.
    pub fn create() -> std::io::Result<Self> {
        SharedMem::create(c"portico-scoreboard", HEADER + MAX_THREADS * SLOT)
            .map(|mem| Scoreboard { mem })
    }

    /// The board the master passed to this worker, if any.
    pub fn inherited() -> Option<Self> {
        let fd = crate::shm::inherited_fd(SCOREBOARD_FD_ENV)?;
        let mem = SharedMem::map(fd).ok()?;
        (mem.len() >= HEADER + SLOT).then_some(Scoreboard { mem })
    }

    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }

    fn slots(&self) -> usize {
        (self.mem.len() - HEADER) / SLOT
    }

    /// Worker: how many slots its Python threads use.
    pub fn set_threads(&self, threads: usize) {
        let threads = threads.min(self.slots()) as u32;
        self.mem.u32_at(0).store(threads, Ordering::Release);
    }

    /// Worker: Python thread `thread` has taken `request`.
    pub fn begin(&self, thread: usize, request: &RequestInfo<'_>) {
        if thread >= self.slots() {
            return;
        }
        let base = HEADER + thread * SLOT;
        let seq = self.mem.u64_at(base + SEQ);
        let odd = seq.load(Ordering::Relaxed) | 1;
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut lens = [0u8; 8];
        let fields = [
            Some(request.method),
            Some(request.target),
            request.host,
            request.user_agent,
            request.referer,
        ];
        for (i, value) in fields.into_iter().enumerate() {
            let (offset, room) = FIELDS[i];
            let value = value.unwrap_or_default();
            let value = &value[..value.len().min(room)];
            self.mem.write_bytes(base + offset, value);
            if i == TARGET {
                lens[4..6].copy_from_slice(&(value.len() as u16).to_le_bytes());
            } else {
                lens[i - usize::from(i > TARGET)] = value.len() as u8;
            }
        }
        self.mem.write_bytes(base + LENS, &lens);
        let (family, ip, port) = match request.peer {
            None => (0u8, [0u8; 16], 0u16),
            Some(SocketAddr::V4(a)) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                (4, ip, a.port())
            }
            Some(SocketAddr::V6(a)) => (6, a.ip().octets(), a.port()),
        };
        let mut head = [0u8; 4];
        head[..2].copy_from_slice(&port.to_le_bytes());
        head[2] = family;
        head[3] = version_code(request.version);
        self.mem.write_bytes(base + PEER_PORT, &head);
        self.mem.write_bytes(base + PEER_IP, &ip);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.mem
            .write_bytes(base + STARTED_US, &started.to_le_bytes());
        self.mem.u32_at(base + BUSY).store(1, Ordering::Relaxed);
        seq.store(odd + 1, Ordering::Release);
    }

    /// Worker: Python thread `thread` is done with its request.
    pub fn end(&self, thread: usize) {
        if thread < self.slots() {
            self.mem
                .u32_at(HEADER + thread * SLOT + BUSY)
                .store(0, Ordering::Release);
        }
    }

    /// Master: the requests running on the board now. A slot caught in the
    /// middle of a write (its process died there) is reported as `- -`.
    pub fn running(&self) -> Vec<RunningRequest> {
        let threads = (self.mem.u32_at(0).load(Ordering::Acquire) as usize).min(self.slots());
        (0..threads).filter_map(|t| self.read_slot(t)).collect()
    }

    fn read_slot(&self, thread: usize) -> Option<RunningRequest> {
        let base = HEADER + thread * SLOT;
        let seq = self.mem.u64_at(base + SEQ);
        let before = seq.load(Ordering::Acquire);
        if self.mem.u32_at(base + BUSY).load(Ordering::Acquire) == 0 && before.is_multiple_of(2) {
            return None;
        }
        let request = self.decode(base);
        fence(Ordering::Acquire);
        if !before.is_multiple_of(2) || seq.load(Ordering::Relaxed) != before {
            return Some(torn());
        }
        Some(request)
    }

    fn decode(&self, base: usize) -> RunningRequest {
        let mut lens = [0u8; 8];
        self.mem.read_bytes(base + LENS, &mut lens);
        let len_of = |i: usize| match i {
            TARGET => usize::from(u16::from_le_bytes([lens[4], lens[5]])),
            _ => usize::from(lens[i - usize::from(i > TARGET)]),
        };
        let text = |i: usize| {
            let (offset, room) = FIELDS[i];
            let mut buf = vec![0u8; len_of(i).min(room)];
            self.mem.read_bytes(base + offset, &mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        };
        let optional = |i: usize| Some(text(i)).filter(|t| !t.is_empty());
        let mut head = [0u8; 4];
        self.mem.read_bytes(base + PEER_PORT, &mut head);
        let mut ip = [0u8; 16];
        self.mem.read_bytes(base + PEER_IP, &mut ip);
        let port = u16::from_le_bytes([head[0], head[1]]);
        let peer = match head[2] {
            4 => Some(SocketAddr::new(
                IpAddr::from([ip[0], ip[1], ip[2], ip[3]]),
                port,
            )),
            6 => Some(SocketAddr::new(IpAddr::from(ip), port)),
            _ => None,
        };
        let mut started = [0u8; 8];
        self.mem.read_bytes(base + STARTED_US, &mut started);
        RunningRequest {
            method: text(METHOD),
            target: text(TARGET),
            version: version_from_code(head[3]),
            host: optional(HOST),
            user_agent: optional(USER_AGENT),
            referer: optional(REFERER),
            peer,
            started: UNIX_EPOCH + Duration::from_micros(u64::from_le_bytes(started)),
        }
    }
}

fn torn() -> RunningRequest {
    RunningRequest {
        method: "-".into(),
        target: "-".into(),
        version: http::Version::HTTP_11,
        host: None,
        user_agent: None,
        referer: None,
        peer: None,
        started: SystemTime::now(),
    }
}

fn version_code(v: http::Version) -> u8 {
    match v {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 2,
    }
}

fn version_from_code(code: u8) -> http::Version {
    match code {
        0 => http::Version::HTTP_09,
        1 => http::Version::HTTP_10,
        3 => http::Version::HTTP_2,
        4 => http::Version::HTTP_3,
        _ => http::Version::HTTP_11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(target: &'a [u8], ua: Option<&'a [u8]>) -> RequestInfo<'a> {
        RequestInfo {
            method: b"POST",
            target,
            version: http::Version::HTTP_2,
            host: Some(b"example.com"),
            user_agent: ua,
            referer: None,
            peer: Some("[::1]:4242".parse().unwrap()),
        }
    }

    #[test]
    fn a_running_request_is_read_back_by_another_mapping() {
        let worker = Scoreboard::create().unwrap();
        let master = Scoreboard {
            mem: SharedMem::map(worker.mem().fd().try_clone_to_owned().unwrap()).unwrap(),
        };
        worker.set_threads(3);
        assert!(master.running().is_empty());
        worker.begin(0, &info(b"/first", None));
        worker.begin(2, &info(b"/crash?x=1", Some(b"curl/8")));
        worker.end(0);
        let running = master.running();
        assert_eq!(running.len(), 1, "{running:?}");
        let r = &running[0];
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/crash?x=1")
        );
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(r.referer, None);
        assert_eq!(r.peer, Some("[::1]:4242".parse().unwrap()));
        assert!(r.age(SystemTime::now()) < Duration::from_secs(5));
        assert_eq!(r.to_string(), "POST /crash?x=1 from [::1]:4242");
    }

    #[test]
    fn long_fields_are_cut_to_their_room_and_a_shorter_one_leaves_no_tail() {
        let board = Scoreboard::create().unwrap();
        board.set_threads(1);
        let long = vec![b'a'; 2000];
        board.begin(0, &info(&long, Some(&long)));
        let r = &board.running()[0];
        assert_eq!(r.target.len(), 512);
        assert_eq!(r.user_agent.as_ref().map(String::len), Some(176));
        board.begin(0, &info(b"/b", None));
        assert_eq!(board.running()[0].target, "/b");
        assert_eq!(board.running()[0].user_agent, None);
    }

    #[test]
    fn a_slot_left_mid_write_reads_as_unknown_not_as_a_mix() {
        let board = Scoreboard::create().unwrap();
        board.set_threads(1);
        board.begin(0, &info(b"/x", None));
        // A process that died between the two sequence stores.
        let seq = board.mem.u64_at(HEADER + SEQ);
        seq.store(seq.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let r = &board.running()[0];
        assert_eq!((r.method.as_str(), r.target.as_str()), ("-", "-"));
    }
}
