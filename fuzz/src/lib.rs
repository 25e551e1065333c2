//! Shared checks for the B3IQ fuzz targets (see `checks`).
pub mod checks;
#[cfg(feature = "host")]
pub mod host_checks;
