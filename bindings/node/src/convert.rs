//! Conversions shared by every module: Buffers, fixed-size byte arrays, JSON-shaped objects,
//! and integers (JS numbers are exact only up to 2^53 - 1).

use napi::bindgen_prelude::Buffer;

use crate::error::{raise, BindingError, Result};

/// A fixed-size array from a Buffer, or a `B3iqValueError` (`invalid_input`) naming the field.
pub(crate) fn array<const N: usize>(field: &str, data: &[u8]) -> Result<[u8; N]> {
    data.try_into().map_err(|_| {
        raise(BindingError::invalid(format!("{field} must be exactly {N} bytes, got {}", data.len())))
    })
}

/// A Buffer holding a copy of `data`.
pub(crate) fn buffer(data: &[u8]) -> Buffer {
    Buffer::from(data.to_vec())
}

/// A plain JS object/array/string from a Rust value (via serde_json).
pub(crate) fn to_js<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| raise(BindingError::invalid(format!("cannot serialise value: {e}"))))
}

/// A Rust value from a plain JS object (via serde_json); a shape error is a `B3iqValueError`
/// (`invalid_input`).
///
/// JS numbers arrive as floats; whole numbers within the safe-integer range become JSON
/// integers first, so integer fields (`u64` times, counts) accept them.
pub(crate) fn from_js<T: serde::de::DeserializeOwned>(what: &str, mut value: serde_json::Value) -> Result<T> {
    integers(&mut value);
    serde_json::from_value(value).map_err(|e| raise(BindingError::invalid(format!("invalid {what}: {e}"))))
}

fn integers(value: &mut serde_json::Value) {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                if n.is_f64() && f.fract() == 0.0 && f.abs() <= MAX_SAFE {
                    *n = if f >= 0.0 { (f as u64).into() } else { (f as i64).into() };
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integers),
        _ => {}
    }
}

/// A non-negative safe integer as u64.
pub(crate) fn uint(field: &str, value: f64) -> Result<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if value.fract() != 0.0 || !(0.0..=MAX_SAFE).contains(&value) {
        return Err(raise(BindingError::invalid(format!(
            "{field} must be an integer from 0 to Number.MAX_SAFE_INTEGER, got {value}"
        ))));
    }
    Ok(value as u64)
}

/// A u64 as a JS number, refusing values a JS number cannot hold exactly.
pub(crate) fn number(field: &str, value: u64) -> Result<f64> {
    if value > 9_007_199_254_740_991 {
        return Err(raise(BindingError::invalid(format!("{field} = {value} exceeds Number.MAX_SAFE_INTEGER"))));
    }
    Ok(value as f64)
}
