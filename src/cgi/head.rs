//! The script's header block (RFC 3875 §6): find where it ends, then parse
//! it into a [`Head`]. Pure functions over bytes; the reading is in `output`.
//!
//! Steps, in order:
//! 1. `find_end`: the block ends at the first empty line; lines end in LF
//!    or CRLF (scripts mix them);
//! 2. for an nph script, the first line is an HTTP status line
//!    (`HTTP/1.1 200 OK`);
//! 3. each other line is `Name: value`: a folded line, a line without `:`,
//!    a name that is not an HTTP token, a value holding CR, NUL or another
//!    control byte → [`CgiError::BadHead`] (502);
//! 4. `Status: NNN reason` sets the status (200–599); `Location` is kept
//!    apart for the redirect decision; a bad `Content-Length` is refused;
//! 5. hop-by-hop fields (`Connection`, the names it lists, `Keep-Alive`,
//!    `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`)
//!    are dropped: the connection is ours, not the script's.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::error::CgiError;
use crate::request::headers::{content_length, is_hop_by_hop};

/// A parsed header block.
#[derive(Debug, Default)]
pub struct Head {
    /// From `Status:` (or the nph status line), with its reason phrase.
    pub status: Option<(StatusCode, Vec<u8>)>,
    /// The `Location` field, if any (also kept in `headers`).
    pub location: Option<HeaderValue>,
    /// Every field except `Status` and the hop-by-hop ones.
    pub headers: HeaderMap,
    /// How many fields the script sent, `Status` and hop-by-hop included:
    /// a local redirect is a `Location` and nothing else.
    pub fields: usize,
}

/// Step 1: the length of the header block including its empty line, when
/// `buf` holds all of it.
pub fn find_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\n") {
        return Some(1);
    }
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut from = 0;
    while let Some(pos) = buf[from..].iter().position(|&b| b == b'\n') {
        let i = from + pos;
        let rest = &buf[i + 1..];
        if rest.starts_with(b"\n") {
            return Some(i + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(i + 3);
        }
        from = i + 1;
    }
    None
}

/// Steps 2–5 over a complete block (as `find_end` measured it).
pub fn parse(block: &[u8], nph: bool) -> Result<Head, CgiError> {
    let mut head = Head::default();
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    if nph {
        let line = lines
            .next()
            .ok_or_else(|| bad("nph script sent no status line"))?;
        head.status = Some(status_line(line)?);
    }
    let mut connection_tokens: Vec<HeaderName> = Vec::new();
    for line in lines {
        head.fields += 1;
        let (name, value) = field(line)?;
        if name.as_str() == "status" {
            if head.status.is_some() {
                return Err(bad("Status given twice"));
            }
            head.status = Some(status_value(value.as_bytes())?);
            continue;
        }
        if name == header::CONNECTION {
            connection_tokens.extend(
                value
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
            );
            continue;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        if name == header::LOCATION {
            if head.location.is_some() {
                return Err(bad("Location given twice"));
            }
            head.location = Some(value.clone());
        }
        if name == header::CONTENT_LENGTH && content_length(value.as_bytes()).is_none() {
            return Err(bad("bad Content-Length"));
        }
        head.headers.append(name, value);
    }
    for name in connection_tokens {
        head.headers.remove(&name);
    }
    if head.fields == 0 && !nph {
        return Err(bad("no header field"));
    }
    Ok(head)
}

fn bad(what: impl Into<String>) -> CgiError {
    CgiError::BadHead(what.into())
}

/// Step 3: one `Name: value` line (line ending already removed).
fn field(line: &[u8]) -> Result<(HeaderName, HeaderValue), CgiError> {
    if line.contains(&b'\r') || line.contains(&0) {
        return Err(bad(format!("CR or NUL in `{}`", show(line))));
    }
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(bad(format!("folded line `{}`", show(line))));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad(format!("no `:` in `{}`", show(line))))?;
    let name = HeaderName::from_bytes(&line[..colon])
        .map_err(|_| bad(format!("bad field name in `{}`", show(line))))?;
    let value = line[colon + 1..].trim_ascii();
    let value =
        HeaderValue::from_bytes(value).map_err(|_| bad(format!("bad value for `{name}`")))?;
    Ok((name, value))
}

/// `404 Not Found` → (404, "Not Found").
fn status_value(value: &[u8]) -> Result<(StatusCode, Vec<u8>), CgiError> {
    let (code, reason) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], value[sp + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    let status = (code.len() == 3)
        .then(|| StatusCode::from_bytes(code).ok())
        .flatten()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| bad(format!("bad status `{}`", show(value))))?;
    Ok((status, reason.to_vec()))
}

/// `HTTP/1.1 200 OK` (an nph script's first line).
fn status_line(line: &[u8]) -> Result<(StatusCode, Vec<u8>), CgiError> {
    if line.contains(&b'\r') || line.contains(&0) {
        return Err(bad("CR or NUL in the status line"));
    }
    let rest = line
        .strip_prefix(b"HTTP/")
        .and_then(|r| r.iter().position(|&b| b == b' ').map(|sp| &r[sp + 1..]))
        .ok_or_else(|| bad(format!("bad nph status line `{}`", show(line))))?;
    status_value(rest)
}

/// A header line for a log message: lossy, control bytes escaped, short.
fn show(line: &[u8]) -> String {
    let cut = &line[..line.len().min(80)];
    cut.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(block: &[u8]) -> Head {
        parse(block, false).unwrap()
    }

    fn err(block: &[u8]) -> String {
        match parse(block, false) {
            Err(CgiError::BadHead(m)) => m,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(block)),
        }
    }

    #[test]
    fn end_of_block_with_lf_crlf_and_mixed() {
        assert_eq!(find_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(find_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(find_end(b"A: b\r\n\nbody"), Some(7));
        assert_eq!(find_end(b"A: b\n\r\nbody"), Some(7));
        assert_eq!(find_end(b"A: b\r\nC: d\r\n"), None);
        assert_eq!(find_end(b"\nbody"), Some(1));
        assert_eq!(find_end(b"A: b\n"), None);
    }

    #[test]
    fn document_response() {
        let h = ok(b"Content-Type: text/plain\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        assert_eq!(h.status, None);
        assert_eq!(h.headers["content-type"], "text/plain");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(h.fields, 3);
    }

    #[test]
    fn status_field() {
        let h = ok(b"Status: 404 Not Here\nContent-Type: text/plain\n\n");
        let (code, reason) = h.status.unwrap();
        assert_eq!(code, 404);
        assert_eq!(reason, b"Not Here");
        assert!(!h.headers.contains_key("status"));
        let h = ok(b"status:201\n\n");
        assert_eq!(h.status.unwrap().0, 201);
        assert!(err(b"Status: 99 x\n\n").contains("bad status"));
        assert!(err(b"Status: 600\n\n").contains("bad status"));
        assert!(err(b"Status: 1000\n\n").contains("bad status"));
        assert!(err(b"Status: abc\n\n").contains("bad status"));
        assert!(err(b"Status: 103 Early\n\n").contains("bad status"));
        assert!(err(b"Status: 200\nStatus: 201\n\n").contains("twice"));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(err(b"Content-Type text/plain\n\n").contains("no `:`"));
        assert!(err(b"Bad Name: x\n\n").contains("bad field name"));
        assert!(err(b"X-A: a\rb\n\n").contains("CR or NUL"));
        assert!(err(b"X-A: a\0b\n\n").contains("CR or NUL"));
        assert!(err(b"X-A: a\x01b\n\n").contains("bad value"));
        assert!(err(b"X-A: a\n continued\n\n").contains("folded"));
        assert!(err(b"Content-Length: -1\n\n").contains("Content-Length"));
        assert!(err(b"\n").contains("no header field"));
    }

    #[test]
    fn hop_by_hop_dropped() {
        let h = ok(b"Content-Type: text/plain\nConnection: close, X-Secret\nX-Secret: 1\n\
                     Transfer-Encoding: chunked\nKeep-Alive: timeout=5\nUpgrade: h2c\nX-Kept: y\n\n");
        let names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kept"]);
    }

    #[test]
    fn location_kept_apart() {
        let h = ok(b"Location: /other?x=1\n\n");
        assert_eq!(h.location.unwrap(), "/other?x=1");
        assert_eq!(h.fields, 1);
        assert!(err(b"Location: /a\nLocation: /b\n\n").contains("twice"));
    }

    #[test]
    fn nph_status_line() {
        let h = parse(
            b"HTTP/1.1 202 Taken\r\nContent-Type: text/plain\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!(h.status.unwrap(), (StatusCode::ACCEPTED, b"Taken".to_vec()));
        assert!(matches!(
            parse(b"Content-Type: text/plain\r\n\r\n", true),
            Err(CgiError::BadHead(_))
        ));
    }
}
