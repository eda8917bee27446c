//! Per Python thread, what one environ can reuse from the previous one:
//!
//! - a *template* environ holding the last request's values of the keys
//!   every request has (REQUEST_METHOD, PATH_INFO, HTTP_HOST, ...). A key
//!   whose value is the same as last time costs a byte comparison: no new
//!   `str`, no dict update; the request's environ is a copy of the template;
//! - the keys of request headers (`HTTP_ACCEPT`, ...) and each one's last
//!   value, since most repeat too (a browser's Accept and User-Agent);
//! - the `wsgi.input` of requests without a body: one empty stream, which
//!   has nothing to read and no state to share.
//!
//! A `str` is immutable, so environs sharing one cannot see each other, and
//! an app changing its environ changes its copy only. Bounded: keys for the
//! first [`EnvCache::HEADER_NAMES`] header names seen, values of at most
//! [`LastValue::MAX_LEN`] bytes; past either, strings are made per request.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::input::{Input, Source};
use crate::request::gateway_env::env_name;

/// The keys every request sets, held in the template.
#[derive(Clone, Copy)]
pub enum Fixed {
    RequestMethod,
    ScriptName,
    PathInfo,
    QueryString,
    RequestUri,
    RawUri,
    ServerProtocol,
    RemoteAddr,
    UrlScheme,
    ServerName,
    ServerPort,
    /// Deleted from the environ (not the template) when there is no Host.
    HttpHost,
}

impl Fixed {
    pub const KEYS: [&'static str; 12] = [
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "RAW_URI",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "wsgi.url_scheme",
        "SERVER_NAME",
        "SERVER_PORT",
        "HTTP_HOST",
    ];
}

pub struct EnvCache {
    template: Py<PyDict>,
    /// In the order of [`Fixed`].
    fixed: Vec<Slot>,
    headers: HashMap<HeaderName, Slot>,
    empty_input: Py<Input>,
}

/// An environ key and its last value.
struct Slot {
    key: Py<PyString>,
    value: LastValue,
}

impl EnvCache {
    const HEADER_NAMES: usize = 128;

    /// `base`: the worker's constant keys (and placeholders for the others).
    pub fn new(base: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = base.py();
        Ok(EnvCache {
            template: base.copy()?.unbind(),
            fixed: Fixed::KEYS
                .iter()
                .map(|k| Slot {
                    key: PyString::intern(py, k).unbind(),
                    value: LastValue::default(),
                })
                .collect(),
            headers: HashMap::new(),
            empty_input: Py::new(py, Input::new(Source::Empty, 0, Arc::default()))?,
        })
    }

    /// Makes `bytes` (as latin-1) the template's value of `which`, unless
    /// it already is.
    pub fn set(&mut self, py: Python<'_>, which: Fixed, bytes: &[u8]) -> PyResult<()> {
        let slot = &mut self.fixed[which as usize];
        if slot.value.holds(bytes) {
            return Ok(());
        }
        let text = slot.value.replace(py, bytes);
        self.template.bind(py).set_item(slot.key.bind(py), text)
    }

    /// `wsgi.input` for a request without a body.
    pub fn empty_input<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.empty_input.bind(py).clone().into_any()
    }

    /// This request's environ, to be completed with its own keys.
    pub fn environ<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.template.bind(py).copy()
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
        let slot = Slot {
            key: key.clone().unbind(),
            value,
        };
        self.headers.insert(name.clone(), slot);
        (key, text)
    }
}

/// One key's last value: its bytes and the `str` made of them.
#[derive(Default)]
struct LastValue {
    bytes: Vec<u8>,
    text: Option<Py<PyString>>,
}

impl LastValue {
    /// Longer values (cookies, long query strings) are rarely the same
    /// twice in a row, and would make the cache hold too much.
    const MAX_LEN: usize = 512;

    fn holds(&self, bytes: &[u8]) -> bool {
        self.text.is_some() && self.bytes == bytes
    }

    fn get<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
        match &self.text {
            Some(text) if self.bytes == bytes => text.bind(py).clone(),
            _ => self.replace(py, bytes),
        }
    }

    /// A new `str` for `bytes`, kept unless too long (then nothing is kept:
    /// the old one no longer stands for the key's value).
    fn replace<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
        let text = latin1(py, bytes);
        self.bytes.clear();
        self.text = None;
        if bytes.len() <= Self::MAX_LEN {
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

    fn host_of<'py>(env: &Bound<'py, PyDict>) -> Bound<'py, PyAny> {
        env.get_item("HTTP_HOST").unwrap().unwrap()
    }

    #[test]
    fn the_template_keeps_a_repeated_value_and_takes_a_changed_or_long_one() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = EnvCache::new(&PyDict::new(py)).unwrap();
            cache.set(py, Fixed::HttpHost, b"example.com").unwrap();
            let first = cache.environ(py).unwrap();
            cache.set(py, Fixed::HttpHost, b"example.com").unwrap();
            let second = cache.environ(py).unwrap();
            assert!(host_of(&first).is(host_of(&second)), "one str, reused");
            first.set_item("HTTP_HOST", "changed by the app").unwrap();
            assert_eq!(
                host_of(&cache.environ(py).unwrap()).to_string(),
                "example.com"
            );

            let long = "a".repeat(LastValue::MAX_LEN + 1);
            for host in ["other.example", &long, &long, "example.com"] {
                cache.set(py, Fixed::HttpHost, host.as_bytes()).unwrap();
                assert_eq!(host_of(&cache.environ(py).unwrap()).to_string(), host);
            }
        });
    }

    #[test]
    fn values_are_latin1_and_long_ones_are_not_kept() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = EnvCache::new(&PyDict::new(py)).unwrap();
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
