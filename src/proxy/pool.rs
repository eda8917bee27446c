//! A worker's view of one upstream pool: its servers with their health
//! (passive: `max_fails` within `fail_timeout`; active: the last health
//! check), requests in flight, idle connections, and which server a request
//! goes to next (`balance`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use super::balance;
use super::client::{Conn, IdleConns};
use crate::config::{Balance, UpstreamConfig, UpstreamServer};

pub struct Pool {
    pub config: UpstreamConfig,
    pub servers: Vec<Server>,
    rng: Cell<u64>,
}

pub struct Server {
    pub config: UpstreamServer,
    /// The URL as logs show it.
    pub label: String,
    /// Requests in flight (until their response body is done).
    pub active: Cell<usize>,
    /// Smooth weighted round robin's running weight.
    pub current_weight: Cell<i64>,
    health: RefCell<Health>,
    pub idle: IdleConns,
}

#[derive(Default)]
struct Health {
    fails: u32,
    first_fail: Option<Instant>,
    down_until: Option<Instant>,
    /// The last active health check failed.
    check_failed: bool,
}

impl Server {
    pub fn is_up(&self, now: Instant) -> bool {
        let h = self.health.borrow();
        !h.check_failed && h.down_until.is_none_or(|until| now >= until)
    }
}

impl Pool {
    pub fn new(config: &UpstreamConfig) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|s| Server {
                config: s.clone(),
                label: s.url.to_string(),
                active: Cell::new(0),
                current_weight: Cell::new(0),
                health: RefCell::new(Health::default()),
                idle: IdleConns::default(),
            })
            .collect();
        let seed = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
        Pool {
            config: config.clone(),
            servers,
            rng: Cell::new(seed | 1),
        }
    }

    /// The server for the next attempt, never one in `tried`. Servers that
    /// are up come first (backups only when no primary is up); when every
    /// untried server is down they are tried anyway, so a pool whose servers
    /// all came back answers at once rather than after `fail_timeout`.
    pub fn pick(&self, tried: &[bool], client: &[u8]) -> Option<usize> {
        let now = Instant::now();
        let untried = |i: &usize| !tried[*i];
        let tiers: [&dyn Fn(&Server) -> bool; 4] = [
            &|s| !s.config.backup && s.is_up(now),
            &|s| s.config.backup && s.is_up(now),
            &|s| !s.config.backup,
            &|_| true,
        ];
        for tier in tiers {
            let candidates: Vec<usize> = (0..self.servers.len())
                .filter(untried)
                .filter(|&i| tier(&self.servers[i]))
                .collect();
            if !candidates.is_empty() {
                return Some(self.choose(&candidates, client));
            }
        }
        None
    }

    fn choose(&self, candidates: &[usize], client: &[u8]) -> usize {
        if candidates.len() == 1 {
            return candidates[0];
        }
        let s = &self.servers;
        match self.config.balance {
            Balance::RoundRobin => balance::smooth_round_robin(s, candidates),
            Balance::LeastConn => balance::least_conn(s, candidates, self.next_random()),
            Balance::IpHash => balance::rendezvous(s, candidates, client),
            Balance::RandomTwo => balance::random_two(s, candidates, || self.next_random()),
        }
    }

    /// xorshift64*: enough for spreading load.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A connection attempt or exchange with server `i` failed.
    pub fn failed(&self, i: usize, why: &str) {
        let server = &self.servers[i];
        let (max_fails, window) = (server.config.max_fails, server.config.fail_timeout);
        if max_fails == 0 {
            return;
        }
        let now = Instant::now();
        let mut h = server.health.borrow_mut();
        if h.first_fail.is_none_or(|t| now.duration_since(t) > window) {
            h.first_fail = Some(now);
            h.fails = 0;
        }
        h.fails += 1;
        if h.fails >= max_fails && h.down_until.is_none_or(|u| now >= u) {
            h.down_until = Some(now + window);
            h.fails = 0;
            h.first_fail = None;
            tracing::warn!(
                "upstream `{}` server {}: {why}; marked down for {window:?}",
                self.config.name,
                server.label
            );
        }
    }

    /// Server `i` answered: its failure count starts over.
    pub fn succeeded(&self, i: usize) {
        let mut h = self.servers[i].health.borrow_mut();
        if h.fails > 0 || h.down_until.is_some() {
            *h = Health {
                check_failed: h.check_failed,
                ..Health::default()
            };
        }
    }

    /// Records an active health check's result; logs changes.
    pub fn checked(&self, i: usize, ok: bool, detail: &str) {
        let server = &self.servers[i];
        let mut h = server.health.borrow_mut();
        if h.check_failed != ok {
            return;
        }
        h.check_failed = !ok;
        if ok {
            h.down_until = None;
            h.fails = 0;
            tracing::info!(
                "upstream `{}` server {}: health check passed; back in use",
                self.config.name,
                server.label
            );
        } else {
            tracing::warn!(
                "upstream `{}` server {}: health check failed ({detail}); marked down",
                self.config.name,
                server.label
            );
        }
    }
}

/// A request's hold on a server: counts it in flight, and carries the
/// connection until the response is read (then back to the idle pool).
pub struct Lease {
    pool: Rc<Pool>,
    index: usize,
    pub conn: Option<Conn>,
}

impl Lease {
    pub fn new(pool: Rc<Pool>, index: usize) -> Self {
        let active = &pool.servers[index].active;
        active.set(active.get() + 1);
        Lease {
            pool,
            index,
            conn: None,
        }
    }

    pub fn server_label(&self) -> &str {
        &self.pool.servers[self.index].label
    }

    /// The response was read to its end: the connection may serve another.
    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.servers[self.index]
                .idle
                .put(conn, self.pool.config.keepalive);
        }
    }

    /// The connection is in an unknown state: close it.
    pub fn discard(&mut self) {
        self.conn = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let active = &self.pool.servers[self.index].active;
        active.set(active.get().saturating_sub(1));
    }
}
