//! b3iq-protocol integration tests, in one binary (one link of alloy instead of six).
//!
//! The `chain_*` modules start a real hardhat@2 node each (from `contracts/node_modules`; run
//! `contracts/ci.sh` or `npm ci` in `contracts/` first).

mod common;

mod chain_gas;
mod chain_registry_disputes;
mod chain_settlement;
mod chain_unreachable;
mod messages;
mod settlement_builder;
