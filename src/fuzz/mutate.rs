//! Mutations of fuzz inputs, driven by a seeded PRNG so that a run can be
//! repeated exactly from its seed.

/// splitmix64: small, fast, and good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Bytes that sit on the edges of the formats we parse.
const INTERESTING: &[u8] = b"\0\r\n\t :;,=-/\\%.?#\"'\x7f\x80\xff09afAF";

/// Numbers at the edges of integer parsing.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"fffffffffffffffff",
    b"00000000000000000001",
];

/// Applies one to four stacked mutations to `input`, keeping it at most
/// `max_len` bytes. `dictionary` holds tokens of the target's format;
/// `others` are inputs to splice from.
pub fn mutate(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    dictionary: &[&[u8]],
    others: &[Vec<u8>],
    max_len: usize,
) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, input, dictionary, others);
    }
    input.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, dictionary: &[&[u8]], others: &[Vec<u8>]) {
    let len = input.len();
    let at = |rng: &mut Rng| rng.below(len + 1);
    match rng.below(11) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        3 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            let i = at(rng);
            input.splice(i..i, token.iter().copied());
        }
        4 => {
            let token = NUMBERS[rng.below(NUMBERS.len())];
            let i = at(rng);
            input.splice(i..i, token.iter().copied());
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(16));
            input.drain(start..end);
        }
        6 if len > 0 => {
            let start = rng.below(len);
            let end = start + 1 + rng.below((len - start).min(32));
            let copy = input[start..end].to_vec();
            let i = at(rng);
            input.splice(i..i, copy);
        }
        7 => {
            let n = 1 + rng.below(8);
            let i = at(rng);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(i..i, bytes);
        }
        8 if !others.is_empty() => {
            let other = &others[rng.below(others.len())];
            let cut = rng.below(other.len() + 1);
            input.truncate(at(rng));
            input.extend_from_slice(&other[cut..]);
        }
        9 if len > 0 => input.truncate(rng.below(len)),
        _ => {
            let i = at(rng);
            input.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut input = b"GET / HTTP/1.1".to_vec();
            for _ in 0..100 {
                mutate(&mut rng, &mut input, &[b"bytes="], &[b"other".to_vec()], 64);
            }
            input
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn inputs_stay_within_the_length_bound() {
        let mut rng = Rng::new(1);
        let mut input = Vec::new();
        for _ in 0..10_000 {
            mutate(&mut rng, &mut input, &[b"0123456789"], &[], 40);
            assert!(input.len() <= 40);
        }
    }
}
