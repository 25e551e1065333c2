//! `b3iq` for Node.js: the native half of the npm package (napi-rs).
//!
//! Thin by design: each module mirrors the b3iq-core / b3iq-host / b3iq-runtime file of the same
//! name and only converts types and maps errors (`error.rs`). Async functions return Promises
//! driven by napi's tokio runtime (one per process, built lazily).
//!
//! Feature `host` (default): `LocalNode` and `Runtime` (b3iq-host, b3iq-runtime, llama.cpp).

#![deny(clippy::all)]
// Under `cargo test` the `#[napi]` exports are not registered, so they look unused.
#![cfg_attr(test, allow(dead_code))]

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
mod split;

use napi_derive::napi;

/// The version of the b3iq crates this addon was built from.
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Test-only (not part of the API): throws the error an error of `category` becomes
/// (`"expired"`, ... as in `__testingErrorCategories()`), with code `"error_probe"` and a cause,
/// so the tests check the category -> class table for every category. An unknown name throws a
/// `B3iqValueError` (code `invalid_input`).
#[napi(js_name = "__testingErrorForCategory")]
pub fn testing_error_for_category(category: String) -> error::Result<()> {
    Err(error::raise(error::probe(&category)))
}

/// Test-only (not part of the API): the name of every error category, in the core's order.
#[napi(js_name = "__testingErrorCategories")]
pub fn testing_error_categories() -> Vec<&'static str> {
    b3iq_core::ErrorCategory::ALL.map(b3iq_core::ErrorCategory::as_str).to_vec()
}
