//! The accept balance: workers share each listening socket, and the kernel
//! wakes every one of them for a new connection; the first to run takes it.
//! Left alone, one worker can take a whole burst (16 connections opened at
//! once against 2 workers landed all on one in 10 of 30 runs here). So
//! each worker publishes its open-connection count in a table shared with
//! the master and the other workers (`crate::shm`), and a worker that holds
//! more than [`MARGIN`] connections above the least-loaded accepting worker
//! waits [`DEFER`] before its next accept, at most [`MAX_DEFERS`] times in a
//! row, giving that worker the queued connections. The bound keeps a worker
//! that is slow to accept from holding connections up for long.
//!
//! Why not one `SO_REUSEPORT` socket per worker: the kernel then spreads by
//! a hash, blind to load; a socket closed with connections in its queue
//! resets them (on SIGTTOU, or when a crash-looping slot has no worker for
//! seconds, its share of new connections would wait or be lost); and unix
//! sockets have no such balancing. See docs/internals.md for the numbers.
//!
//! Layout: a 64-byte header (the number of seats in use), then one 64-byte
//! seat per live worker (its own cache line): the pid while it accepts
//! (0 otherwise), and its open connections. The master assigns seats and
//! clears a dead worker's seat; a worker writes only its own.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::shm::SharedMem;

/// The environment variables with the table's descriptor and the seat.
pub const BOARD_FD_ENV: &str = "PORTICO_BALANCE_FD";
pub const SEAT_ENV: &str = "PORTICO_BALANCE_SEAT";

/// Seats in the table; workers past this many (SIGTTIN, during a reload)
/// get none and accept without deferring.
pub const SEATS: usize = 256;
const HEADER: usize = 64;
const SEAT: usize = 64;

/// How many more open connections than the least-loaded accepting worker
/// a worker may hold before it lets the others accept first.
pub const MARGIN: u32 = 1;
/// One wait before an accept while over the margin.
pub const DEFER: Duration = Duration::from_millis(2);
/// Waits in a row before accepting anyway.
pub const MAX_DEFERS: u32 = 5;

/// The shared table of seats.
pub struct Table {
    mem: SharedMem,
}

impl Table {
    /// Master: a new, empty table.
    pub fn create() -> std::io::Result<Self> {
        SharedMem::create(c"portico-balance", HEADER + SEATS * SEAT).map(|mem| Table { mem })
    }

    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }

    /// Master: seat `seat` is about to be given to a new worker; `in_use`
    /// is one more than the highest seat held by a live worker.
    pub fn assign(&self, seat: usize, in_use: usize) {
        self.clear(seat);
        self.mem
            .u32_at(0)
            .store(in_use.min(SEATS) as u32, Ordering::Release);
    }

    /// Master: the worker in `seat` is gone.
    pub fn clear(&self, seat: usize) {
        if seat < SEATS {
            self.pid(seat).store(0, Ordering::Release);
            self.open(seat).store(0, Ordering::Release);
        }
    }

    fn pid(&self, seat: usize) -> &std::sync::atomic::AtomicU32 {
        self.mem.u32_at(HEADER + seat * SEAT)
    }

    fn open(&self, seat: usize) -> &std::sync::atomic::AtomicU32 {
        self.mem.u32_at(HEADER + seat * SEAT + 4)
    }

    /// The fewest open connections among accepting workers other than
    /// `seat`; `None` when no other worker accepts.
    fn least_other(&self, seat: usize) -> Option<u32> {
        let in_use = (self.mem.u32_at(0).load(Ordering::Acquire) as usize).min(SEATS);
        (0..in_use)
            .filter(|&s| s != seat && self.pid(s).load(Ordering::Acquire) != 0)
            .map(|s| self.open(s).load(Ordering::Relaxed))
            .min()
    }
}

/// A worker's seat at the table.
pub struct Balance {
    table: Table,
    seat: usize,
}

impl Balance {
    /// The table and seat the master passed to this worker, if any.
    pub fn inherited() -> Option<Self> {
        let seat: usize = std::env::var(SEAT_ENV).ok()?.parse().ok()?;
        let fd = crate::shm::inherited_fd(BOARD_FD_ENV)?;
        let mem = SharedMem::map(fd).ok()?;
        (seat < SEATS && mem.len() >= HEADER + SEATS * SEAT).then_some(Balance {
            table: Table { mem },
            seat,
        })
    }

    #[cfg(test)]
    fn new(table: Table, seat: usize) -> Self {
        Balance { table, seat }
    }

    /// The worker accepts (true) or has stopped accepting (false).
    pub fn set_accepting(&self, accepting: bool) {
        let pid = if accepting { std::process::id() } else { 0 };
        self.table.pid(self.seat).store(pid, Ordering::Release);
    }

    /// The worker now holds `open` connections.
    pub fn set_open(&self, open: usize) {
        self.table
            .open(self.seat)
            .store(open.min(u32::MAX as usize) as u32, Ordering::Relaxed);
    }

    /// Whether a worker holding `open` connections should let the others
    /// accept first.
    pub fn over_margin(&self, open: usize) -> bool {
        self.table
            .least_other(self.seat)
            .is_some_and(|least| open as u64 > u64::from(least) + u64::from(MARGIN))
    }

    /// Waits while this worker is over the margin, [`MAX_DEFERS`] times at
    /// most; `open` reads the worker's current count.
    pub async fn wait_turn(&self, open: impl Fn() -> usize) {
        for _ in 0..MAX_DEFERS {
            if !self.over_margin(open()) {
                return;
            }
            tokio::time::sleep(DEFER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_seats() -> (Balance, Balance) {
        let table = Table::create().unwrap();
        let other = Table {
            mem: SharedMem::map(table.mem().fd().try_clone_to_owned().unwrap()).unwrap(),
        };
        table.assign(0, 1);
        table.assign(1, 2);
        (Balance::new(table, 0), Balance::new(other, 1))
    }

    #[test]
    fn a_worker_over_the_margin_defers_to_the_least_loaded() {
        let (a, b) = two_seats();
        a.set_accepting(true);
        assert!(!a.over_margin(100), "alone: never defer");
        b.set_accepting(true);
        b.set_open(3);
        assert!(!a.over_margin(3 + MARGIN as usize));
        assert!(a.over_margin(4 + MARGIN as usize));
        a.set_open(2);
        assert!(b.over_margin(4), "b compares with a's published count");
        assert!(!b.over_margin(3));
        b.set_accepting(false);
        assert!(
            !a.over_margin(100),
            "a worker that stopped accepting does not count"
        );
    }

    #[test]
    fn a_cleared_seat_no_longer_counts() {
        let (a, b) = two_seats();
        b.set_accepting(true);
        b.set_open(0);
        assert!(a.over_margin(10));
        a.table.clear(1);
        assert!(!a.over_margin(10));
    }

    #[tokio::test(start_paused = true)]
    async fn deferring_is_bounded() {
        let (a, b) = two_seats();
        b.set_accepting(true);
        let started = tokio::time::Instant::now();
        a.wait_turn(|| 50).await;
        assert_eq!(started.elapsed(), DEFER * MAX_DEFERS);
        let started = tokio::time::Instant::now();
        a.wait_turn(|| 0).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
