//! The channel from a worker to its master: the write end of a pipe the
//! master creates for each worker (`PORTICO_CONTROL_FD`), kept open for the
//! worker's whole life. Each message is one line of text, written with one
//! `write` (shorter than `PIPE_BUF`, so lines from several threads never
//! interleave):
//!
//! - `doing TEXT`: what the worker is busy with while it starts (named by
//!   the master if the worker is not ready within `--start-timeout`);
//! - `ready`: the apps are imported and the worker accepts connections;
//! - `recycle REASON`: replace me (`max-requests`, `timeout`); the worker
//!   keeps serving until the master sends SIGTERM.
//!
//! New kinds of message (metrics) add a word; the master ignores words it
//! does not know, so either side can be newer.

use std::io::Write;
use std::os::fd::OwnedFd;

use crate::recycle::{Parent, RecycleReason};

pub(super) const CONTROL_FD_ENV: &str = "PORTICO_CONTROL_FD";

/// Longest line a worker sends; longer `doing` texts are cut.
const MAX_LINE: usize = 512;

/// A message from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Doing(String),
    Ready,
    Recycle(RecycleReason),
}

impl Message {
    /// One line of the wire format (with its newline).
    fn encode(&self) -> String {
        let mut line = match self {
            Message::Doing(text) => {
                let text: String = text
                    .chars()
                    .map(|c| if c == '\n' { ' ' } else { c })
                    .collect();
                format!("doing {text}")
            }
            Message::Ready => "ready".to_string(),
            Message::Recycle(reason) => format!("recycle {reason}"),
        };
        if line.len() > MAX_LINE - 1 {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        line
    }

    /// Parses one line (without its newline); `None` for what this master
    /// does not know.
    pub fn parse(line: &str) -> Option<Message> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "doing" => Some(Message::Doing(rest.to_string())),
            "ready" => Some(Message::Ready),
            "recycle" => RecycleReason::parse(rest).map(Message::Recycle),
            _ => None,
        }
    }
}

/// The worker's end of the channel.
pub struct Link {
    pipe: Option<std::fs::File>,
}

impl Link {
    /// The channel the master passed to this worker. Without one (a worker
    /// started by hand), messages go nowhere.
    pub fn inherited() -> Self {
        let pipe = crate::shm::inherited_fd(CONTROL_FD_ENV).map(std::fs::File::from);
        Link { pipe }
    }

    /// A link writing to `fd` (tests).
    pub fn to_fd(fd: OwnedFd) -> Self {
        Link {
            pipe: Some(std::fs::File::from(fd)),
        }
    }

    pub fn send(&self, message: &Message) {
        if let Some(pipe) = &self.pipe {
            // One write: atomic on a pipe for lines this short. A master
            // gone (EPIPE) is noticed through the parent-death signal.
            let _ = (&*pipe).write_all(message.encode().as_bytes());
        }
    }

    /// Tells the master what the worker is busy with while it starts.
    pub fn doing(&self, what: impl Into<String>) {
        self.send(&Message::Doing(what.into()));
    }
}

impl Parent for Link {
    fn ready(&self) {
        self.send(&Message::Ready);
    }

    fn replace_me(&self, reason: RecycleReason) -> bool {
        if self.pipe.is_none() {
            return false;
        }
        self.send(&Message::Recycle(reason));
        true
    }

    fn supervised(&self) -> bool {
        self.pipe.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Doing("importing `live:application`".into()),
            Message::Ready,
            Message::Recycle(RecycleReason::MaxRequests),
            Message::Recycle(RecycleReason::Timeout),
        ] {
            let line = m.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Message::parse(line.trim_end_matches('\n')), Some(m));
        }
    }

    #[test]
    fn unknown_words_are_ignored_and_long_lines_cut() {
        assert_eq!(Message::parse("metrics rps=5"), None);
        assert_eq!(Message::parse("recycle bored"), None);
        let long = Message::Doing("é".repeat(1000)).encode();
        assert!(long.len() <= MAX_LINE && long.ends_with('\n'));
        let two_lines = Message::Doing("a\nb".into()).encode();
        assert_eq!(two_lines, "doing a b\n");
    }
}
