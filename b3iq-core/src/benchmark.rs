//! Signed benchmark records: measured throughput of a node for one model and backend.
//! Rates are integers in milli-tokens per second (tokens/s x 1000); no floats.

use crate::codec::{read_identifier, Canonical, Reader, Writer};
use crate::digest::Sha256Digest;
use crate::error::{CoreError, Result};
use crate::identity::NodeId;
use crate::signed::{Kind, Signed, SignedKind};

/// Maximum backend name length.
pub const MAX_BACKEND_LEN: u32 = 64;
/// Maximum number of concurrency points.
pub const MAX_CONCURRENCY_POINTS: u32 = 64;

/// Aggregate generation throughput at one concurrency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyPoint {
    /// Parallel requests (>= 1).
    pub concurrency: u32,
    /// Aggregate generated milli-tokens per second across all requests.
    pub aggregate_milli_tokens_per_s: u64,
}

/// A benchmark record (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkRecord {
    /// Measured node.
    pub node_id: NodeId,
    /// Hash of the hardware description (chosen by the runtime's hardware scan).
    pub hardware_fingerprint: crate::bytes::Hash32,
    /// Backend name (identifier).
    pub backend: String,
    /// Model artifact digest.
    pub model_digest: Sha256Digest,
    /// Prompt processing, milli-tokens/s.
    pub prompt_milli_tokens_per_s: u64,
    /// Generation (single stream), milli-tokens/s.
    pub generation_milli_tokens_per_s: u64,
    /// Aggregate throughput by concurrency, strictly increasing concurrency.
    pub concurrency: Vec<ConcurrencyPoint>,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
}

/// A signed benchmark record.
pub type SignedBenchmarkRecord = Signed<BenchmarkRecord>;

impl Canonical for BenchmarkRecord {
    const NAME: &'static str = "benchmark record";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.node_id);
        w.put(&self.hardware_fingerprint);
        w.str(&self.backend);
        w.put(&self.model_digest);
        w.u64(self.prompt_milli_tokens_per_s);
        w.u64(self.generation_milli_tokens_per_s);
        w.list(&self.concurrency, |w, p| {
            w.u32(p.concurrency);
            w.u64(p.aggregate_milli_tokens_per_s);
        });
        w.u64(self.created_at_ms);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let rec = Self {
            node_id: r.get()?,
            hardware_fingerprint: r.get()?,
            backend: read_identifier(r, MAX_BACKEND_LEN, "backend")?,
            model_digest: r.get()?,
            prompt_milli_tokens_per_s: r.u64("prompt_milli_tokens_per_s")?,
            generation_milli_tokens_per_s: r.u64("generation_milli_tokens_per_s")?,
            concurrency: r.list(MAX_CONCURRENCY_POINTS, "concurrency", |r| {
                Ok(ConcurrencyPoint {
                    concurrency: r.u32("concurrency")?,
                    aggregate_milli_tokens_per_s: r.u64("aggregate_milli_tokens_per_s")?,
                })
            })?,
            created_at_ms: r.u64("created_at_ms")?,
        };
        let mut prev = 0u32;
        for p in &rec.concurrency {
            if p.concurrency <= prev {
                return Err(CoreError::field("concurrency", "levels must be >= 1 and strictly increasing"));
            }
            prev = p.concurrency;
        }
        Ok(rec)
    }
}

impl SignedKind for BenchmarkRecord {
    const KIND: Kind = Kind::BenchmarkRecord;
    crate::canonical_body!();
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
}
