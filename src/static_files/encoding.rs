//! Accept-Encoding (RFC 9110 §12.5.3) and the precompressed sibling it selects.
//!
//! Steps, in order:
//! 1. parse the header(s) into `(coding, q)` pairs, q in thousandths; an
//!    entry with a malformed q is skipped (we cannot know what was meant);
//! 2. give each coding we can serve its q: its own entry, else `*`'s, else
//!    refused; `x-gzip` counts as `gzip`;
//! 3. rank acceptable codings by q, ties broken by server preference
//!    br > zstd > gzip (smallest output first); a coding whose q is below an
//!    explicitly listed `identity` loses to the uncompressed file;
//! 4. the caller tries the siblings `F.br`, `F.zst`, `F.gz` in that rank and
//!    serves the first one that exists and passes the same path checks as F.
//!
//! We never answer 406: if the client refuses identity and no sibling exists,
//! the uncompressed file is still the most useful answer.

use http::header::{HeaderMap, ACCEPT_ENCODING};

/// A content coding we may find a precompressed sibling for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    /// Server preference, best first.
    pub const PREFERENCE: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The sibling file's extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zst",
            Coding::Gzip => "gz",
        }
    }
}

/// Parsed Accept-Encoding: lowercase coding names with q in thousandths.
#[derive(Debug, Default)]
pub struct AcceptEncoding {
    entries: Vec<(String, u16)>,
}

impl AcceptEncoding {
    /// Step 1: every Accept-Encoding field line, comma lists merged.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut entries = Vec::new();
        for value in headers.get_all(ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                if let Some(entry) = parse_item(item) {
                    entries.push(entry);
                }
            }
        }
        AcceptEncoding { entries }
    }

    /// Step 2: the q this client gives `name`, if it says anything about it.
    fn q_of(&self, name: &str) -> Option<u16> {
        let own = self
            .entries
            .iter()
            .filter(|(n, _)| n == name || (name == "gzip" && n == "x-gzip"))
            .map(|&(_, q)| q)
            .max();
        own.or_else(|| {
            self.entries
                .iter()
                .filter(|(n, _)| n == "*")
                .map(|&(_, q)| q)
                .max()
        })
    }

    /// Step 3: acceptable codings, best first.
    pub fn ranked(&self) -> Vec<Coding> {
        let identity = self
            .entries
            .iter()
            .filter(|(n, _)| n == "identity")
            .map(|&(_, q)| q)
            .max()
            .unwrap_or(0);
        let mut ranked: Vec<(Coding, u16)> = Coding::PREFERENCE
            .iter()
            .filter_map(|&c| self.q_of(c.token()).map(|q| (c, q)))
            .filter(|&(_, q)| q > 0 && q >= identity)
            .collect();
        // Stable sort keeps server preference among equal q.
        ranked.sort_by_key(|&(_, q)| std::cmp::Reverse(q));
        ranked.into_iter().map(|(c, _)| c).collect()
    }
}

/// One list item: `coding` or `coding;q=0.5` (other parameters ignored).
fn parse_item(item: &str) -> Option<(String, u16)> {
    let mut parts = item.split(';');
    let name = parts.next()?.trim().to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let (key, value) = param.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("q") {
            q = parse_q(value.trim())?;
        }
    }
    Some((name, q))
}

/// RFC 9110 §12.4.2 qvalue: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ranked(v: &str) -> Vec<Coding> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        AcceptEncoding::from_headers(&h).ranked()
    }

    use Coding::*;

    #[test]
    fn q_values() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("2"), None);
        assert_eq!(parse_q(""), None);
        assert_eq!(parse_q("0.x"), None);
    }

    #[test]
    fn no_header_means_identity() {
        assert!(AcceptEncoding::from_headers(&HeaderMap::new())
            .ranked()
            .is_empty());
        assert!(ranked("").is_empty());
    }

    #[test]
    fn server_preference_on_ties() {
        assert_eq!(ranked("gzip, deflate, br, zstd"), vec![Br, Zstd, Gzip]);
        assert_eq!(ranked("gzip, br"), vec![Br, Gzip]);
    }

    #[test]
    fn client_q_wins_over_preference() {
        assert_eq!(ranked("br;q=0.5, gzip;q=0.8"), vec![Gzip, Br]);
        assert_eq!(
            ranked("br;q=0.5, gzip ; Q=0.8, zstd;q=0.9"),
            vec![Zstd, Gzip, Br]
        );
    }

    #[test]
    fn q_zero_refuses() {
        assert_eq!(ranked("br;q=0, gzip"), vec![Gzip]);
        assert_eq!(ranked("*;q=0"), vec![]);
        assert_eq!(ranked("*, br;q=0"), vec![Zstd, Gzip]);
    }

    #[test]
    fn star_covers_unlisted() {
        assert_eq!(ranked("*"), vec![Br, Zstd, Gzip]);
        assert_eq!(ranked("gzip;q=1, *;q=0.1"), vec![Gzip, Br, Zstd]);
    }

    #[test]
    fn identity_preferred_when_listed_higher() {
        assert_eq!(ranked("gzip;q=0.5, identity"), vec![]);
        assert_eq!(ranked("gzip, identity;q=0.5"), vec![Gzip]);
    }

    #[test]
    fn aliases_and_malformed_items() {
        assert_eq!(ranked("x-gzip"), vec![Gzip]);
        assert_eq!(ranked("br;q=abc, gzip"), vec![Gzip]);
        assert_eq!(ranked(" , ,br"), vec![Br]);
        assert_eq!(ranked("BR"), vec![Br]);
    }
}
