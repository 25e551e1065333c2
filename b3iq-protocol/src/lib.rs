//! # b3iq-protocol
//!
//! What crosses the network in B3IQ, sans I/O: plain types and builders that never open a socket,
//! read a clock or touch a chain, so the host, the bindings and the control plane can use them
//! without compiling a network or chain client (that is `b3iq-chain`, which depends on this crate).
//!
//! * [`settlement`]: the settlement builder. Signed receipts -> an epoch (every signature
//!   verified, duplicates dropped, receipts outside the epoch or not in network mode refused)
//!   -> totals per node and publisher -> payout leaves through the b3iq-core split -> the
//!   keccak payout tree (b3iq-core `PayoutTree`, OpenZeppelin `MerkleProof`-compatible) and the
//!   blake3 receipt root.
//! * [`messages`]: node <-> control-plane message types (enrollment challenge and proof,
//!   heartbeat, job poll). They carry only ids, hashes, counts, times and signed envelopes, so
//!   they cannot hold prompts, outputs, keys or paths.
//! * [`gateway`]: gateway <-> node messages of network mode: the tunnel's challenge and signed
//!   hello, and the signed request ticket that prices a forwarded request.
//! * [`error`]: [`ProtocolError`], classified by `b3iq_core::ClassifiedError`.
//!
//! The contract bindings, the chain client and the EIP-712 node attestations moved to the
//! `b3iq-chain` crate (alloy); this crate depends on neither alloy nor tokio.
//!
//! The settlement and message formats are described in `docs/protocol.md`, the contracts in
//! `docs/contracts.md`.
//!
//! This crate has no cargo features.

pub mod error;
pub mod gateway;
pub mod messages;
pub mod payout_api;
pub mod registration_api;
pub mod settlement;
pub mod verification;

pub use error::{ProtocolError, Result};
pub use settlement::{EpochBuilder, EpochConfig, EpochSettlement, Payees, VerifiedReceipt};
