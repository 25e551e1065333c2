//! # b3iq-control
//!
//! The B3IQ control plane as a library: the Managed flow of the architecture, seen from the
//! control plane's side.
//!
//! | module | what |
//! |---|---|
//! | [`store`] | [`store::ControlStore`] and its SQLite and Postgres backends (all SQL) |
//! | [`plane`] | [`plane::ControlPlane`]: enrollment by proof of possession, heartbeats, operators, tokens, node status |
//! | [`http`] | the HTTPS API (axum) |
//! | [`keys`] | [`keys::JobKeyRing`]: the job-signing secrets, and how a rotation keeps them |
//! | [`home`] | the home directory: `control.json`, the job-signing key, TLS, opening the store |
//! | [`registration`] | the NodeRegistry attester: signs a node's on-chain registration from what the control plane knows of it |
//! | [`public`] | the public read-only API (`/v1/public/...`) and the explorer at `/explorer/` |
//! | [`disputes`] | the dispute tool: checked evidence to a dispute on chain, committee vote, slash after the appeal window |
//! | [`gateway`] | the hosted gateway: [`gateway::credits`] (gateway keys, credit holds, the ledger), [`gateway::tunnel`] (node-dialed tunnels), [`gateway::proxy`] (the OpenAI-compatible API: routing, forwarding, settlement) |
//!
//! The daemon `b3iq-control` (apps/b3iq-control) is a thin shell over this crate. The node side
//! is `b3iq_host::managed`.

#![warn(missing_docs)]

pub mod disputes;
pub mod error;
pub mod gateway;
pub mod home;
pub mod http;
pub mod keys;
pub mod plane;
pub mod public;
pub mod registration;
pub mod releases;
pub mod settlement;
pub mod store;

pub use error::{ControlError, Result};
pub use home::{ControlHome, ControlSettings};
pub use plane::{ControlConfig, ControlPlane};
