//! `b3iq_ffi`: the uniffi layer the B3IQ Swift package is generated from.
//!
//! Thin by design: each module mirrors the b3iq-core / b3iq-host / b3iq-runtime file of the same
//! name and only converts types and maps errors (`error.rs`). Async exports run on one tokio
//! runtime per process (`runtime.rs`), via uniffi's tokio support. Generated Swift sources live
//! in `Sources/`; `scripts/generate.sh` regenerates them.
//!
//! Feature `host` (default): `LocalNode` and `Runtime` (b3iq-host, b3iq-runtime, llama.cpp).

uniffi::setup_scaffolding!("b3iq_uniffi");

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
#[cfg(feature = "host")]
mod tokio_rt;

pub use error::B3iqError;

/// The version of the b3iq crates this library was built from.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
