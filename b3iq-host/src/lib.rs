//! # b3iq-host
//!
//! The B3IQ node agent as a library: the home directory (`B3IQ_HOME`), `state.db` (SQLite, WAL,
//! numbered migrations), local auth (owner account with argon2id, sessions, setup token, scoped
//! `b3iq_local_` keys, `b3iq_support_` grants), the local HTTP API (`/setup/`, `/api`, the
//! OpenAI-compatible `/v1`), signed usage receipts, the signed-job executor and `/metrics`.
//!
//! The daemon `b3iqd` is a thin shell over this crate; the Python, Node and Swift bindings embed
//! it through [`LocalNode`]. The HTTP contract is `docs/api.md`.
//!
//! No cargo features.

#![warn(missing_docs)]

pub mod auth;
pub mod bench;
pub mod creds;
pub mod db;
pub mod error;
pub mod hardware;
pub mod home;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod node;
pub mod ops;
pub mod receipts;
pub mod signed_jobs;
pub mod state;
pub mod support;

pub use error::{HostError, Result};
pub use home::{Config, Home};
pub use node::{LocalNode, LocalNodeBuilder};
