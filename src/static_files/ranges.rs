//! Range requests (RFC 9110 §14): which bytes of the file to send.
//!
//! Steps, in order:
//! 1. no Range, a non-ASCII value, or a value `http-range-header` cannot
//!    parse → whole file (the RFC lets a server ignore a Range it does not
//!    understand; a reversed `5-3` is invalid, so ignored too). An empty
//!    file also gets a plain 200: no `Content-Range` can describe a part of
//!    it, and players that always send `bytes=0-` should not see a 416;
//! 2. more than [`MAX_RANGES`] specs → whole file (cheap defence against a
//!    request that asks for thousands of tiny parts);
//! 3. resolve each spec against the length, dropping unsatisfiable ones
//!    (start past the end); none left → 416;
//! 4. sort and coalesce overlapping or adjacent ranges, as nginx does, so no
//!    byte is sent twice and the part count only shrinks.
//!
//! We parse with the crate but resolve ourselves: its `validate` rejects the
//! whole set when one spec is unsatisfiable or two overlap, where RFC 9110
//! says a set is satisfiable if any member is, and overlaps may be coalesced.

use std::ops::Range;

use http::HeaderValue;
use http_range_header::{EndPosition, StartPosition};

/// Most byte-range specs honoured in one Range header; past it the header
/// is ignored and the whole file sent (nginx's `max_ranges` does the same).
pub const MAX_RANGES: usize = 100;

/// What to send.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole file, status 200.
    Full,
    /// These half-open byte ranges (sorted, disjoint, non-empty), status 206.
    Partial(Vec<Range<u64>>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Steps 1–4 for a file of `len` bytes.
pub fn decide(header: Option<&HeaderValue>, len: u64) -> RangeDecision {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return RangeDecision::Full;
    };
    if len == 0 {
        return RangeDecision::Full;
    }
    let Ok(parsed) = http_range_header::parse_range_header(value.trim()) else {
        return RangeDecision::Full;
    };
    if parsed.ranges.len() > MAX_RANGES {
        return RangeDecision::Full;
    }
    let mut ranges = Vec::with_capacity(parsed.ranges.len());
    for spec in &parsed.ranges {
        let (start, end) = match (spec.start, spec.end) {
            (StartPosition::Index(s), EndPosition::Index(e)) => {
                if e < s {
                    return RangeDecision::Full;
                }
                (s, e.saturating_add(1).min(len))
            }
            (StartPosition::Index(s), EndPosition::LastByte) => (s, len),
            // The crate refuses a zero suffix, so `n` is at least 1.
            (StartPosition::FromLast(n), _) => (len.saturating_sub(n), len),
        };
        if start < end {
            ranges.push(start..end);
        }
    }
    if ranges.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    RangeDecision::Partial(merged)
}

#[cfg(test)]
// A one-element Vec of ranges is exactly what `Partial` holds here.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use RangeDecision::*;

    fn d(v: &str, len: u64) -> RangeDecision {
        decide(Some(&HeaderValue::from_str(v).unwrap()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(d("bytes=0-4", 10), Partial(vec![0..5]));
        assert_eq!(d("bytes=5-", 10), Partial(vec![5..10]));
        assert_eq!(d("bytes=-5", 10), Partial(vec![5..10]));
        assert_eq!(d("bytes=-50", 10), Partial(vec![0..10]));
        assert_eq!(d("bytes=8-100", 10), Partial(vec![8..10]));
        assert_eq!(d("bytes=9-9", 10), Partial(vec![9..10]));
    }

    #[test]
    fn no_or_malformed_header_is_full() {
        assert_eq!(decide(None, 10), Full);
        assert_eq!(d("bytes=abc", 10), Full);
        assert_eq!(d("items=0-1", 10), Full);
        assert_eq!(d("bytes=5-3", 10), Full);
        assert_eq!(d("bytes=", 10), Full);
        assert_eq!(d("bytes=0-1,x", 10), Full);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(d("bytes=10-", 10), Unsatisfiable);
        assert_eq!(d("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(d("bytes=0-0", 0), Full);
        assert_eq!(d("bytes=-1", 0), Full);
        // Satisfiable if any member is.
        assert_eq!(d("bytes=20-30, 0-1", 10), Partial(vec![0..2]));
    }

    #[test]
    fn multiple_sorted_and_coalesced() {
        assert_eq!(d("bytes=0-1, 4-5", 10), Partial(vec![0..2, 4..6]));
        assert_eq!(d("bytes=4-5,0-1", 10), Partial(vec![0..2, 4..6]));
        assert_eq!(d("bytes=0-4, 2-6", 10), Partial(vec![0..7]));
        assert_eq!(d("bytes=0-1, 2-3", 10), Partial(vec![0..4]));
        assert_eq!(d("bytes=0-1, -3", 10), Partial(vec![0..2, 7..10]));
    }

    #[test]
    fn too_many_ranges_ignored() {
        let many: Vec<String> = (0..=MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        assert_eq!(d(&format!("bytes={}", many.join(",")), 10_000), Full);
        let ok: Vec<String> = (0..MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        match d(&format!("bytes={}", ok.join(",")), 10_000) {
            Partial(r) => assert_eq!(r.len(), MAX_RANGES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        let max = u64::MAX;
        assert_eq!(d(&format!("bytes=0-{max}"), 10), Partial(vec![0..10]));
        assert_eq!(d(&format!("bytes=-{max}"), 10), Partial(vec![0..10]));
        let big = 3 << 30; // 3 GiB
        assert_eq!(d("bytes=2147483648-", big), Partial(vec![2147483648..big]));
    }
}
