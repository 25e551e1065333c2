//! Conversions shared by every module: fixed-size byte arrays and JSON text (objects with many
//! fields cross the FFI as the core's JSON form, decoded with `JSONDecoder` in Swift).

use crate::error::B3iqError;

/// A fixed-size array from bytes, or `InvalidInput` naming the field.
pub(crate) fn array<const N: usize>(field: &str, data: &[u8]) -> Result<[u8; N], B3iqError> {
    data.try_into()
        .map_err(|_| B3iqError::invalid(format!("{field} must be exactly {N} bytes, got {}", data.len())))
}

/// The core's JSON form of a value.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, B3iqError> {
    serde_json::to_string(value).map_err(|e| B3iqError::invalid(format!("cannot serialise value: {e}")))
}

/// A value from the core's JSON form; a shape error is `InvalidInput`.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, B3iqError> {
    serde_json::from_str(json).map_err(|e| B3iqError::invalid(format!("invalid {what}: {e}")))
}
