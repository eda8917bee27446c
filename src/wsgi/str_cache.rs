//! What `start_response` made of a Python `str` (a header name or value),
//! remembered by the identity of the object. Apps pass the same objects on
//! every request (literals like `("Content-Type", "text/plain")` are
//! constants of their code), so a hit skips the latin-1 check, the
//! validation and the copy into a new buffer: the header shares the buffer
//! made the first time.
//!
//! Each slot holds a reference to its `str`, so the object cannot be freed
//! and its address reused by another while it is cached; and a `str` is
//! immutable, so the same object always means the same text. The cache is
//! direct-mapped (an object's address picks its slot): a lookup is one
//! comparison, a miss overwrites the slot, and strings made per request
//! only evict each other. Strings over [`MAX_LEN`] bytes are not kept.

use pyo3::prelude::*;
use pyo3::types::PyString;

const SLOTS: usize = 64;
const MAX_LEN: usize = 1024;

pub struct StrCache<T> {
    slots: Vec<Option<(Py<PyString>, T)>>,
}

impl<T: Clone> StrCache<T> {
    pub fn new() -> Self {
        StrCache {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    /// `make()` for an object not seen (or evicted) since. Only exact `str`
    /// objects are kept: a subclass could be mutable, or run code when the
    /// slot lets it go.
    pub fn get_or_make<E>(
        &mut self,
        text: &Bound<'_, PyAny>,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let Ok(text) = text.cast_exact::<PyString>() else {
            return make();
        };
        // pymalloc hands out 16-byte aligned blocks: the low bits say nothing.
        let slot = (text.as_ptr() as usize >> 4) % SLOTS;
        if let Some((cached, value)) = &self.slots[slot] {
            if cached.as_ptr() == text.as_ptr() {
                return Ok(value.clone());
            }
        }
        let value = make()?;
        if text.len().is_ok_and(|n| n <= MAX_LEN) {
            self.slots[slot] = Some((text.clone().unbind(), value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_object_is_made_once_and_an_equal_one_again() {
        Python::initialize();
        Python::attach(|py| {
            let mut cache = StrCache::<usize>::new();
            let mut made = 0;
            let mut get = |s: &Bound<'_, PyAny>| {
                cache.get_or_make(s, || -> Result<usize, ()> {
                    made += 1;
                    Ok(s.len().unwrap())
                })
            };
            let a = PyString::new(py, "text/plain").into_any();
            let b = PyString::new(py, "text/plain").into_any();
            assert_eq!(get(&a), Ok(10));
            assert_eq!(get(&a), Ok(10));
            assert_eq!(get(&b), Ok(10));
            assert_eq!(made, 2, "a distinct object is not taken for a cached one");
        });
    }
}
