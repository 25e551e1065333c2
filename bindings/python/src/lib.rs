//! `b3iq._b3iq`: the native half of the `b3iq` Python package (pyo3, abi3, Python >= 3.9).
//!
//! Thin by design: each module here mirrors the b3iq-core / b3iq-host / b3iq-runtime file of
//! the same name and only converts types and maps errors (see `error.rs`). The pure-Python
//! package in `python/b3iq` re-exports these classes, adds the exception hierarchy and the
//! async wrappers.
//!
//! Feature `host` (default): `LocalNode` and `Runtime` (b3iq-host, b3iq-runtime, llama.cpp).

use pyo3::prelude::*;

mod convert;
mod credential;
mod error;
mod identity;
mod job;
mod manifest;
mod merkle;
mod metering;
#[cfg(feature = "host")]
mod node;
mod payout;
mod receipt;
#[cfg(feature = "host")]
mod runtime;
mod tokio_rt;
mod split;

/// The version of the b3iq crates this module was built from.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Pid of the process the tokio runtime was built in, built on demand (fork-safety checks).
#[pyfunction]
fn _runtime_pid() -> PyResult<u32> {
    tokio_rt::runtime().map_err(error::raise)?;
    Ok(tokio_rt::runtime_pid().unwrap_or(0))
}

/// Test-only (not part of the API): raises the exception an error of `category` becomes
/// (`"expired"`, ... as in `_error_categories()`), with code `"error_probe"` and a cause, so the
/// tests check the category -> class table for every category. An unknown name raises
/// `B3iqValueError` (code `invalid_input`).
#[pyfunction]
fn _error_for_category(category: &str) -> PyResult<()> {
    Err(error::raise(error::probe(category)))
}

/// Test-only (not part of the API): the name of every error category, in the core's order.
#[pyfunction]
fn _error_categories() -> Vec<&'static str> {
    b3iq_core::ErrorCategory::ALL.map(b3iq_core::ErrorCategory::as_str).to_vec()
}

#[pymodule]
fn _b3iq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(_runtime_pid, m)?)?;
    m.add_function(wrap_pyfunction!(_error_for_category, m)?)?;
    m.add_function(wrap_pyfunction!(_error_categories, m)?)?;
    identity::register(m)?;
    receipt::register(m)?;
    merkle::register(m)?;
    payout::register(m)?;
    split::register(m)?;
    credential::register(m)?;
    job::register(m)?;
    manifest::register(m)?;
    metering::register(m)?;
    #[cfg(feature = "host")]
    node::register(m)?;
    #[cfg(feature = "host")]
    runtime::register(m)?;
    Ok(())
}
