//! The Python strings a Python thread reuses from one environ to the next:
//! the keys of request headers (`HTTP_ACCEPT`, ...) and, for each key, the
//! last value it had. Most values repeat from request to request (the Host,
//! the client address, a browser's Accept and User-Agent, the path of a busy
//! page), and reusing a `str` costs a byte comparison where making one costs
//! an allocation, a copy and, at the end of the request, a free. A `str` is
//! immutable, so environs sharing one cannot see each other.
//!
//! Bounded: keys for the first [`EnvCache::HEADER_NAMES`] header names seen,
//! values of at most [`LastValue::MAX_LEN`] bytes; past either, strings are
//! made per request as before.

use std::collections::HashMap;

use http::header::HeaderName;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::gateway_env::env_name;

/// The environ keys whose values `build` takes from [`EnvCache::fixed`].
#[derive(Clone, Copy)]
pub enum Fixed {
    PathInfo,
    QueryString,
    RequestUri,
    RemoteAddr,
    ServerName,
    ServerPort,
    HttpHost,
}

impl Fixed {
    const COUNT: usize = 7;
}

#[derive(Default)]
pub struct EnvCache {
    headers: HashMap<HeaderName, HeaderSlot>,
    fixed: [LastValue; Fixed::COUNT],
}

struct HeaderSlot {
    key: Py<PyString>,
    value: LastValue,
}

impl EnvCache {
    const HEADER_NAMES: usize = 128;

    /// The value of a fixed key, reused when it is the same as last time.
    pub fn fixed<'py>(
        &mut self,
        py: Python<'py>,
        which: Fixed,
        bytes: &[u8],
    ) -> Bound<'py, PyString> {
        self.fixed[which as usize].get(py, bytes)
    }

    /// The environ key of a header and its value (`bytes` as sent, or the
    /// values joined), each reused when possible.
    pub fn header<'py>(
        &mut self,
        py: Python<'py>,
        name: &HeaderName,
        bytes: &[u8],
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        if let Some(slot) = self.headers.get_mut(name) {
            return (slot.key.bind(py).clone(), slot.value.get(py, bytes));
        }
        let key = PyString::new(py, &env_name(name.as_str()));
        if self.headers.len() >= Self::HEADER_NAMES {
            return (key, latin1(py, bytes));
        }
        let mut value = LastValue::default();
        let text = value.get(py, bytes);
        let slot = HeaderSlot {
            key: key.clone().unbind(),
            value,
        };
        self.headers.insert(name.clone(), slot);
        (key, text)
    }
}

/// One key's last value: its bytes and the `str` made of them.
#[derive(Default)]
pub struct LastValue {
    bytes: Vec<u8>,
    text: Option<Py<PyString>>,
}

impl LastValue {
    /// Longer values (cookies, long query strings) are rarely the same
    /// twice in a row, and would make the cache hold too much.
    const MAX_LEN: usize = 512;

    fn get<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
        if let Some(text) = &self.text {
            if self.bytes == bytes {
                return text.bind(py).clone();
            }
        }
        let text = latin1(py, bytes);
        if bytes.len() <= Self::MAX_LEN {
            self.bytes.clear();
            self.bytes.extend_from_slice(bytes);
            self.text = Some(text.clone().unbind());
        }
        text
    }
}

/// Bytes as a latin-1 native string (PEP 3333's rule for environ values).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => PyString::new(py, text),
        _ => PyString::new(py, &bytes.iter().map(|&b| b as char).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_value_is_the_same_object_and_a_new_one_replaces_it() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = EnvCache::default();
            let a = cache.fixed(py, Fixed::HttpHost, b"example.com");
            let b = cache.fixed(py, Fixed::HttpHost, b"example.com");
            assert!(a.is(&b));
            let c = cache.fixed(py, Fixed::HttpHost, b"other.example");
            assert_eq!(c.to_str().unwrap(), "other.example");
            assert!(!c.is(&a));
            let d = cache.fixed(py, Fixed::HttpHost, b"other.example");
            assert!(c.is(&d));
        });
    }

    #[test]
    fn values_are_latin1_and_long_ones_are_not_kept() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = EnvCache::default();
            let name = HeaderName::from_static("x-name");
            let (key, value) = cache.header(py, &name, b"caf\xe9");
            assert_eq!(key.to_str().unwrap(), "HTTP_X_NAME");
            assert_eq!(value.to_str().unwrap(), "café");
            let long = vec![b'a'; LastValue::MAX_LEN + 1];
            let (_, first) = cache.header(py, &name, &long);
            let (_, second) = cache.header(py, &name, &long);
            assert!(!first.is(&second));
            assert_eq!(second.to_str().unwrap().len(), LastValue::MAX_LEN + 1);
        });
    }
}
