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
