//! The balancing policies: which of the candidate servers (indexes into the
//! pool, all usable) takes the next request.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::pool::Server;

/// nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a,
/// not a a a a a b c.
pub fn smooth_round_robin(servers: &[Server], candidates: &[usize]) -> usize {
    let mut total = 0i64;
    let mut best = candidates[0];
    for &i in candidates {
        let s = &servers[i];
        let w = i64::from(s.config.weight);
        s.current_weight.set(s.current_weight.get() + w);
        total += w;
        if s.current_weight.get() > servers[best].current_weight.get() {
            best = i;
        }
    }
    let b = &servers[best].current_weight;
    b.set(b.get() - total);
    best
}

/// `a` carries less load per weight than `b`.
fn lighter(a: &Server, b: &Server) -> bool {
    (a.active.get() as u64) * u64::from(b.config.weight)
        < (b.active.get() as u64) * u64::from(a.config.weight)
}

/// Fewest requests in flight per weight; ties go to a random one of them
/// (the scan starts at a random candidate).
pub fn least_conn(servers: &[Server], candidates: &[usize], random: u64) -> usize {
    let start = (random % candidates.len() as u64) as usize;
    let mut best = candidates[start];
    for k in 1..candidates.len() {
        let i = candidates[(start + k) % candidates.len()];
        if lighter(&servers[i], &servers[best]) {
            best = i;
        }
    }
    best
}

/// Weighted rendezvous hashing on the client address: each server scores
/// `weight / -ln(hash)`; the best score wins. A server going down moves only
/// its own clients, and every worker agrees.
pub fn rendezvous(servers: &[Server], candidates: &[usize], client: &[u8]) -> usize {
    let score = |i: usize| {
        let mut h = DefaultHasher::new();
        client.hash(&mut h);
        servers[i].label.hash(&mut h);
        // 53 bits into (0, 1).
        let unit = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        f64::from(servers[i].config.weight) / -unit.ln()
    };
    candidates
        .iter()
        .copied()
        .map(|i| (i, score(i)))
        .fold(None, |best: Option<(usize, f64)>, (i, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        })
        .map_or(candidates[0], |(i, _)| i)
}

/// The power of two choices: two servers drawn by weight, the less loaded
/// one wins.
pub fn random_two(
    servers: &[Server],
    candidates: &[usize],
    mut random: impl FnMut() -> u64,
) -> usize {
    let total: u64 = candidates
        .iter()
        .map(|&i| u64::from(servers[i].config.weight))
        .sum();
    let mut draw = |skip: Option<usize>| {
        let total = total - skip.map_or(0, |i| u64::from(servers[i].config.weight));
        let mut r = random() % total.max(1);
        for &i in candidates {
            if Some(i) == skip {
                continue;
            }
            let w = u64::from(servers[i].config.weight);
            if r < w {
                return i;
            }
            r -= w;
        }
        candidates[0]
    };
    let a = draw(None);
    let b = draw(Some(a));
    if lighter(&servers[b], &servers[a]) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Balance, UpstreamConfig, UpstreamServer, UpstreamUrl};
    use crate::proxy::pool::Pool;

    fn pool(weights: &[u32], balance: Balance) -> Pool {
        Pool::new(&UpstreamConfig {
            name: "t".into(),
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| UpstreamServer {
                    url: UpstreamUrl::Http {
                        host: "127.0.0.1".into(),
                        port: 1000 + i as u16,
                    },
                    weight,
                    backup: false,
                    max_fails: 1,
                    fail_timeout: std::time::Duration::from_secs(10),
                })
                .collect(),
            balance,
            health: None,
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            send_timeout: std::time::Duration::from_secs(1),
            keepalive: 0,
        })
    }

    fn counts(p: &Pool, n: usize, client: impl Fn(usize) -> Vec<u8>) -> Vec<usize> {
        let mut counts = vec![0; p.servers.len()];
        let tried = vec![false; p.servers.len()];
        for k in 0..n {
            counts[p.pick(&tried, &client(k)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let p = pool(&[5, 1, 1], Balance::RoundRobin);
        let tried = [false; 3];
        let seq: Vec<usize> = (0..7).map(|_| p.pick(&tried, b"").unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&p, 700, |_| vec![]), [500, 100, 100]);
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let p = pool(&[1, 1, 1], Balance::LeastConn);
        p.servers[0].active.set(3);
        p.servers[2].active.set(1);
        assert_eq!(counts(&p, 20, |_| vec![]), [0, 20, 0]);
    }

    #[test]
    fn ip_hash_is_sticky_and_spreads() {
        let p = pool(&[1, 1, 1], Balance::IpHash);
        let c = counts(&p, 30, |_| b"10.0.0.7".to_vec());
        assert!(c.contains(&30), "{c:?}");
        let c = counts(&p, 3000, |k| {
            format!("10.0.{}.{}", k / 256, k % 256).into_bytes()
        });
        assert!(c.iter().all(|&n| n > 800), "{c:?}");
    }

    #[test]
    fn random_two_spreads_by_weight() {
        let p = pool(&[3, 1], Balance::RandomTwo);
        let c = counts(&p, 4000, |_| vec![]);
        assert!(c[0] > c[1], "{c:?}");
        assert!(c[1] > 0, "{c:?}");
    }

    #[test]
    fn down_servers_are_skipped_until_all_are_down() {
        let p = pool(&[1, 1], Balance::RoundRobin);
        p.failed(0, "test");
        assert_eq!(counts(&p, 10, |_| vec![]), [0, 10]);
        assert_eq!(p.pick(&[false, true], b""), Some(0));
        assert_eq!(p.pick(&[true, true], b""), None);
    }
}
