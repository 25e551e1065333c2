//! # b3iq-host
//!
//! The B3IQ node agent as a library, organised by use case:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | ground | [`context`] (home, config, keys, mode, runtime), [`store`] (all SQL), [`error`], [`creds`], [`metrics`], [`logging`] | imports nothing above it |
//! | use cases | [`inference`] (admit -> generate -> meter -> sign and store the receipt), [`owner`] (claim, sign-in, keys, grants, setup token, audit), [`jobs`] (runs a core `VerifiedJob` by `JobKind`), [`managed`] (enrollment in a control plane, signed heartbeats), [`network`] (network mode: the owner's policy, admission of tunnelled requests), [`models`], [`support`] | imports the ground only |
//! | front doors | [`http`] (`/setup/`, `/api`, the OpenAI-compatible `/v1`), [`node`] (the embedding API [`LocalNode`]), [`ops`] (the CLI's offline operations) | thin: parse, call a use case, format |
//!
//! `b3iq-host/tests/layers.rs` fails if a module imports a layer above its own.
//!
//! The daemon `b3iqd` is a thin shell over this crate; the Python, Node and Swift bindings embed
//! it through [`LocalNode`]. The HTTP contract is `docs/api.md`.
//!
//! No cargo features.

#![warn(missing_docs)]

pub mod context;
pub mod creds;
pub mod error;
pub mod http;
pub mod inference;
pub mod jobs;
pub mod logging;
pub mod managed;
pub mod metrics;
pub mod models;
pub mod network;
pub mod node;
pub mod ops;
pub mod owner;
pub mod store;
pub mod support;
pub mod update;

pub use context::{Config, Context, Home, NodeState};
pub use error::{HostError, Result};
pub use node::{LocalNode, LocalNodeBuilder};
