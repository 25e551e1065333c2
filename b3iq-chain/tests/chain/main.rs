//! b3iq-chain integration tests, in one binary (one link of alloy instead of four).
//!
//! Each `chain_*` module starts a real hardhat@2 node per test (from `contracts/node_modules`;
//! run `contracts/ci.sh` or `npm ci` in `contracts/` first). The crate's `deploy` and `devnet`
//! features are on here (dev-dependency on itself).

mod common;

mod chain_epoch_post;
mod chain_gas;
mod chain_registry_disputes;
mod chain_settlement;
mod chain_unreachable;
