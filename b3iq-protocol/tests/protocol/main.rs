//! b3iq-protocol integration tests, in one binary. The chain tests (real hardhat node) live in
//! b3iq-chain.

mod gateway;
mod messages;
mod settlement_builder;
