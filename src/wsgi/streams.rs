//! `wsgi.errors` (lines go to portico's error log, tagged with the request)
//! and `wsgi.file_wrapper` (a file the server may send itself).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::Tag;

#[pyclass(module = "portico")]
pub struct ErrorStream {
    tag: Tag,
    pending: Mutex<String>,
}

impl ErrorStream {
    pub fn new(tag: Tag) -> Self {
        ErrorStream {
            tag,
            pending: Mutex::new(String::new()),
        }
    }

    fn emit(&self, line: &str) {
        tracing::warn!(target: "wsgi.errors", request = %self.tag, "{line}");
    }
}

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_str(text);
        while let Some(pos) = pending.find('\n') {
            let line: String = pending.drain(..=pos).collect();
            self.emit(line.trim_end_matches('\n'));
        }
        text.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let rest = std::mem::take(&mut *pending);
            self.emit(&rest);
        }
    }
}

impl Drop for ErrorStream {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let rest = std::mem::take(pending);
            self.emit(&rest);
        }
    }
}

/// `environ['wsgi.file_wrapper'](filelike, block_size)`. Iterating it reads
/// blocks in Python (any file-like works); when the app returns it and the
/// file has a real descriptor, portico sends the file itself instead.
#[pyclass(module = "portico")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size=8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> Self {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        let data = data.cast_into::<PyBytes>()?;
        Ok((!data.as_bytes().is_empty()).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let file = self.filelike.bind(py);
        if file.hasattr("close")? {
            file.call_method0("close")?;
        }
        Ok(())
    }
}
