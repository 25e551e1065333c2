//! Shared checks for the B3IQ fuzz targets (see `checks`, `openai_checks`, `host_checks`).
pub mod checks;
pub mod openai_checks;
#[cfg(feature = "host")]
pub mod host_checks;
