//! Conversions shared by every module: bytes out, fixed-size bytes in, JSON-shaped values both
//! ways (through Python's `json` module, so dicts hold plain `str`/`int`/`list`/`dict`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::{raise, BindingError};

/// Python `bytes` from a slice.
pub(crate) fn bytes<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, data)
}

/// A fixed-size array from `bytes`, or `B3iqValueError` naming the field.
pub(crate) fn array<const N: usize>(field: &str, data: &[u8]) -> PyResult<[u8; N]> {
    data.try_into().map_err(|_| {
        raise(BindingError::invalid(format!("{field} must be exactly {N} bytes, got {}", data.len())))
    })
}

/// A Rust value serialised to a Python dict/list/str/int (via JSON).
pub(crate) fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| raise(BindingError::invalid(format!("cannot serialise value: {e}"))))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A Rust value from a Python dict/list (via JSON); a shape error is a `B3iqValueError`.
pub(crate) fn from_py<T: serde::de::DeserializeOwned>(what: &str, value: &Bound<'_, PyAny>) -> PyResult<T> {
    let py = value.py();
    let text: String = py.import("json")?.call_method1("dumps", (value,))?.extract()?;
    serde_json::from_str(&text).map_err(|e| raise(BindingError::invalid(format!("invalid {what}: {e}"))))
}
