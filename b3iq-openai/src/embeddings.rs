//! `POST /v1/embeddings`: request and answer types, as b3iqd serves them (`docs/api.md`,
//! "Embeddings") and the gateway forwards them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::OpenAiError;

/// `POST /v1/embeddings`. As lenient as the completion requests: `model` and `input` are
/// optional at the type level, every other field stays in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What to embed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<EmbeddingInput>,
    /// `float` or `base64` (the official Python client sends `base64` unless told otherwise:
    /// the little-endian `f32` bytes of each vector, base64-encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Requested vector length, for models that can shorten theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<i64>,
    /// Every other field (`user`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingRequest {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when the body is not a JSON object of this shape.
    pub fn from_slice(body: &[u8]) -> Result<Self, OpenAiError> {
        serde_json::from_slice(body).map_err(|e| OpenAiError::json("an embedding request", e))
    }
}

/// The `input` of an [`EmbeddingRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts, one vector each.
    Texts(Vec<String>),
    /// One pre-tokenised input.
    Tokens(Vec<i64>),
    /// Several pre-tokenised inputs.
    TokenBatches(Vec<Vec<i64>>),
}

/// The answer: `{"object": "list", "data": [...], "model", "usage"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// One entry per input, in input order.
    pub data: Vec<Embedding>,
    /// The model id.
    #[serde(default)]
    pub model: String,
    /// Token counts.
    #[serde(default)]
    pub usage: EmbeddingUsage,
    /// B3IQ extension: the id of the signed receipt of this request (as on completions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b3iq_receipt_id: Option<String>,
}

/// One vector of an [`EmbeddingResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    #[serde(default)]
    pub object: String,
    /// Which input this is.
    #[serde(default)]
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// A vector as numbers or, for `encoding_format: base64`, as base64 of little-endian `f32`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `[0.1, -0.2, ...]`.
    Float(Vec<f32>),
    /// Base64 text.
    Base64(String),
}

/// Token counts of an embedding request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// The same (no tokens are generated).
    #[serde(default)]
    pub total_tokens: u32,
}
