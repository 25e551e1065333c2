//! # b3iq-core
//!
//! The pure logic of B3IQ: no I/O, no async runtime, no clock and no OS randomness of its own.
//! Time is passed in as `now_ms` (unix milliseconds) and randomness as
//! `&mut impl rand_core::CryptoRngCore`, so every rule here is testable with plain values.
//!
//! Modules:
//!
//! * [`identity`]: Ed25519 node keys, node ids (`b3n_...`), key-file helpers.
//! * [`codec`]: the canonical binary encoding; [`signed`]: the signed envelope shared by
//!   every signed kind (domain tag per kind, version byte, strict decoding, batch verify).
//! * [`receipt`]: usage receipts with salted blake3 commitments, and their public summary.
//! * [`merkle`]: blake3 receipt trees (RFC 6962 shape); [`payout`]: keccak256 payout trees
//!   compatible with OpenZeppelin `MerkleProof`.
//! * [`split`]: the 70/10/15/5 payment split in integer micro-units.
//! * [`credential`]: `b3iq_local_` / `b3iq_support_` / `b3iq_gateway_` keys and setup tokens.
//! * [`digest`]: strict sha256 digests (safe as file names); [`mode`]: operating modes.
//! * [`job`]: signed jobs (closed set of kinds), `SignedJob::open` and the job policy.
//! * [`manifest`]: signed model manifests.
//! * [`sampling`]: the replayable final sampling stage; [`fingerprint`]: hidden-state commitments.
//! * [`heartbeat`], [`enrollment`], [`benchmark`]: the other signed kinds; [`attestation`]:
//!   inference attestations and verification verdicts (verifiable inference).
//! * [`precomputed`]: strict Ed25519 checks of many signatures by one key, sped up by
//!   precomputed multiples (same verdicts as one by one).
//! * [`metering`]: usage per key / model and price schedules; [`reputation`]: decaying,
//!   non-transferable node scores; [`tier`]: trust tiers 0-3.
//! * [`evidence`]: typed dispute evidence (conflicting receipts, failed verification) and
//!   `check_evidence`, whose hash is the on-chain `evidenceHash`.
//! * [`version`]: SemVer 2.0.0 software versions (releases, heartbeats, `update` jobs).
//!
//! The byte formats are specified in `docs/formats.md` and pinned by the golden vectors in
//! `testdata/vectors/`. This crate has no cargo features.

pub mod attestation;
pub mod benchmark;
pub mod bytes;
pub mod codec;
pub mod credential;
pub mod digest;
pub mod enrollment;
pub mod error;
pub mod evidence;
pub mod fingerprint;
pub mod heartbeat;
pub mod identity;
pub mod job;
pub mod manifest;
pub mod merkle;
pub mod metering;
pub mod mode;
pub mod payout;
pub mod precomputed;
pub mod receipt;
pub mod reputation;
pub mod sampling;
pub mod signed;
pub mod split;
pub mod tier;
pub mod version;

pub use bytes::Hash32;
pub use error::{ClassifiedError, CoreError, ErrorCategory, Result};
pub use identity::{NodeId, NodeKey, NodePublicKey, Signature};
pub use mode::OperatingMode;
pub use signed::{verify_batch, Kind, Signed, SignedKind};
pub use tier::TrustTier;

/// Re-exported so callers can name the rng trait without adding the dependency.
pub use rand_core;
