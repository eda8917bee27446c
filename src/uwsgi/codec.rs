//! The uwsgi packet on the wire, both directions:
//!
//! ```text
//! modifier1 (u8) | datasize (u16 LE) | modifier2 (u8)      the 4-byte header
//! { keysize (u16 LE) | key | valsize (u16 LE) | val } ...   datasize bytes of vars
//! ```
//!
//! For a WSGI request modifier1 and modifier2 are 0 and the request body
//! (`CONTENT_LENGTH` bytes) follows the packet. Reading a packet:
//!
//! 1. the header: EOF before any byte is a quiet close, a modifier1 other
//!    than 0 is refused;
//! 2. a datasize over the limit is refused before its block is read;
//! 3. the block is read in full (EOF first: truncated);
//! 4. the vars are split: a length past the end of the block, or a key that
//!    is not text, refuses the packet.
//!
//! Every refusal closes the connection with a log line (see
//! [`ProtocolError`]); nothing reaches a handler.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::request::gateway_env::Var;

/// modifier1 of a WSGI (and generic CGI-style) request.
pub const MODIFIER_WSGI: u8 = 0;

/// Why a uwsgi request was refused. The effect is the same for every
/// variant: the connection is closed without an answer and a log line says
/// why (at debug level for [`ProtocolError::Closed`], warn otherwise).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The peer closed before sending a byte (a health check's connect).
    #[error("connection closed before a packet")]
    Closed,
    /// EOF inside the header or the var block: the sizes point past the end.
    #[error("packet truncated: {0} said more bytes than were sent")]
    Truncated(&'static str),
    /// Only modifier1 0 (WSGI/CGI vars) is served.
    #[error("unsupported modifier1 {0} (only 0, WSGI requests, is served)")]
    Modifier(u8),
    /// The var block is larger than `max_header_size + max_uri_length`.
    #[error("var block of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// A key or value length runs past the end of the var block.
    #[error("var at offset {0} runs past the end of the block")]
    VarOverrun(usize),
    /// Keys are ASCII names (`REQUEST_METHOD`, `HTTP_HOST`...).
    #[error("var key at offset {0} is not ASCII")]
    BadKey(usize),
    /// The whole packet did not arrive within the header timeout.
    #[error("packet not complete within the header timeout")]
    Timeout,
    /// The vars do not make an HTTP request (no method, bad URI, bad header
    /// value, bad CONTENT_LENGTH...).
    #[error("vars do not make a request: {0}")]
    BadRequest(String),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Encoding a packet failed: a var or the whole block does not fit the
/// u16 sizes. For the client side; status 502 there (the request cannot be
/// expressed to that upstream).
#[derive(Debug, thiserror::Error)]
#[error("uwsgi packet too large: {0}")]
pub struct EncodeError(pub String);

/// The packet for `vars`, header included.
pub fn encode(modifier1: u8, vars: &[Var]) -> Result<Vec<u8>, EncodeError> {
    let mut block = Vec::with_capacity(
        4 + vars
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>(),
    );
    block.extend_from_slice(&[modifier1, 0, 0, 0]);
    for (key, value) in vars {
        for part in [key.as_bytes(), value.as_slice()] {
            let len = u16::try_from(part.len())
                .map_err(|_| EncodeError(format!("{key} is {} bytes (max 65535)", part.len())))?;
            block.extend_from_slice(&len.to_le_bytes());
            block.extend_from_slice(part);
        }
    }
    let size = u16::try_from(block.len() - 4)
        .map_err(|_| EncodeError(format!("vars total {} bytes (max 65535)", block.len() - 4)))?;
    block[1..3].copy_from_slice(&size.to_le_bytes());
    Ok(block)
}

/// Steps 1–4: reads one packet and returns its vars.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<Var>, ProtocolError> {
    let mut head = [0u8; 4];
    let first = reader.read(&mut head).await?;
    if first == 0 {
        return Err(ProtocolError::Closed);
    }
    read_exact(reader, &mut head[first..], "the header").await?;
    let (modifier1, size) = (head[0], usize::from(u16::from_le_bytes([head[1], head[2]])));
    if modifier1 != MODIFIER_WSGI {
        return Err(ProtocolError::Modifier(modifier1));
    }
    if size > limit {
        return Err(ProtocolError::TooLarge { size, limit });
    }
    let mut block = vec![0u8; size];
    read_exact(reader, &mut block, "datasize").await?;
    decode_vars(&block)
}

async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), ProtocolError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProtocolError::Truncated(what))
        }
        Err(e) => Err(e.into()),
    }
}

/// Step 4: the var block as (key, value) pairs, in order.
pub fn decode_vars(block: &[u8]) -> Result<Vec<Var>, ProtocolError> {
    let mut vars = Vec::new();
    let mut pos = 0;
    let take = |pos: &mut usize| -> Result<&[u8], ProtocolError> {
        let start = *pos;
        let len_bytes = block
            .get(start..start + 2)
            .ok_or(ProtocolError::VarOverrun(start))?;
        let len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
        let data = block
            .get(start + 2..start + 2 + len)
            .ok_or(ProtocolError::VarOverrun(start))?;
        *pos = start + 2 + len;
        Ok(data)
    };
    while pos < block.len() {
        let key_at = pos;
        let key = take(&mut pos)?;
        let value = take(&mut pos)?;
        let key = std::str::from_utf8(key)
            .ok()
            .filter(|k| k.is_ascii())
            .ok_or(ProtocolError::BadKey(key_at))?;
        vars.push((key.to_string(), value.to_vec()));
    }
    Ok(vars)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn vars(list: &[(&str, &str)]) -> Vec<Var> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn round_trip() {
        let v = vars(&[
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("HTTP_X", "é"),
        ]);
        let packet = encode(0, &v).unwrap();
        assert_eq!(packet[0], 0);
        assert_eq!(
            usize::from(u16::from_le_bytes([packet[1], packet[2]])),
            packet.len() - 4
        );
        assert_eq!(decode_vars(&packet[4..]).unwrap(), v);
        let read = futures_executor::block_on(read_packet(&mut &packet[..], 1000)).unwrap();
        assert_eq!(read, v);
    }

    #[test]
    fn known_bytes() {
        let packet = encode(0, &vars(&[("A", "bc")])).unwrap();
        assert_eq!(packet, b"\x00\x07\x00\x00\x01\x00A\x02\x00bc");
    }

    #[test]
    fn refusals() {
        let read =
            |bytes: &[u8], limit| futures_executor::block_on(read_packet(&mut &bytes[..], limit));
        assert!(matches!(read(b"", 100), Err(ProtocolError::Closed)));
        assert!(matches!(
            read(b"\x00\x07", 100),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            read(b"\x00\x07\x00\x00\x01\x00", 100),
            Err(ProtocolError::Truncated(_))
        ));
        assert!(matches!(
            read(b"\x05\x00\x00\x00", 100),
            Err(ProtocolError::Modifier(5))
        ));
        assert!(matches!(
            read(b"\x00\xff\xff\x00", 100),
            Err(ProtocolError::TooLarge {
                size: 65535,
                limit: 100
            })
        ));
        // Key length 0x20 inside a 4-byte block.
        assert!(matches!(
            read(b"\x00\x04\x00\x00\x20\x00AB", 100),
            Err(ProtocolError::VarOverrun(0))
        ));
        // A key without its value length.
        assert!(matches!(
            read(b"\x00\x03\x00\x00\x01\x00A", 100),
            Err(ProtocolError::VarOverrun(3))
        ));
        assert!(matches!(
            read(b"\x00\x06\x00\x00\x01\x00\xff\x01\x00x", 100),
            Err(ProtocolError::BadKey(0))
        ));
    }

    #[test]
    fn encode_refuses_what_does_not_fit() {
        let big = vec![("K".to_string(), vec![b'x'; 70000])];
        assert!(encode(0, &big).is_err());
        let many: Vec<Var> = (0..3)
            .map(|i| (format!("K{i}"), vec![b'x'; 30000]))
            .collect();
        assert!(encode(0, &many).is_err());
    }
}
