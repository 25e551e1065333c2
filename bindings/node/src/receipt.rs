//! Mirrors `b3iq-core/src/receipt.rs`: receipts (versions 1 and 2), signed receipts, public
//! summaries, commitments and per-receipt salts.

use b3iq_core::receipt as core;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{array, buffer, from_js, to_js};
use crate::error::{raise, Result};
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned usage receipt (the signed body), built from a plain object with the core's JSON
/// field names (`node_id`, `request_id`, `model_id`, ...). An object with `commitment_basis`
/// (and optionally `attestation_digest`) is a version-2 receipt.
#[napi]
pub struct Receipt {
    inner: core::Receipt,
}

#[napi]
impl Receipt {
    /// Builds a receipt from a plain object (unknown fields are refused).
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("receipt", value).map(|inner| Self { inner })
    }

    /// The receipt as a plain object.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
    }

    /// Signs the receipt; `key`'s node id must be the receipt's `node_id`.
    #[napi]
    pub fn sign(&self, key: &NodeKey) -> Result<SignedReceipt> {
        self.inner.clone().sign(&key.inner).map(|inner| SignedReceipt { inner }).map_err(raise)
    }

    /// Prompt plus completion tokens.
    #[napi(getter)]
    pub fn total_tokens(&self) -> f64 {
        self.inner.total_tokens() as f64
    }

    /// The receipt version: 2 with a commitment basis, else 1.
    #[napi(getter)]
    pub fn version(&self) -> u32 {
        u32::from(self.inner.version())
    }

    /// Whether this receipt's revealed 32-byte `salt` and the token ids open it (version 2,
    /// `token_ids` basis, counts equal to the list lengths).
    #[napi]
    pub fn opens_token_ids(&self, salt: Buffer, prompt: Vec<u32>, completion: Vec<u32>) -> Result<bool> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
        Ok(self.inner.opens_token_ids(&salt, &prompt, &completion))
    }

    /// Whether this receipt's revealed 32-byte `salt` and the texts open it (version 2,
    /// `utf8_text` basis).
    #[napi]
    pub fn opens_text(&self, salt: Buffer, prompt: String, completion: String) -> Result<bool> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
        Ok(self.inner.opens_text(&salt, &prompt, &completion))
    }
}

/// A signed usage receipt: decode the wire bytes, verify, and summarise.
#[napi]
pub struct SignedReceipt {
    inner: core::SignedReceipt,
}

#[napi]
impl SignedReceipt {
    /// Strictly decodes the wire form. Does not verify: call `verify` or `verifySelfCertified`.
    #[napi(factory)]
    pub fn decode(data: Buffer) -> Result<Self> {
        core::SignedReceipt::decode(&data).map(|inner| Self { inner }).map_err(raise)
    }

    /// Builds from the signed JSON form (`{ version, kind, signer, body, signature }`).
    /// Does not verify.
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("signed receipt", value).map(|inner| Self { inner })
    }

    /// The signed JSON form.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
    }

    /// The version the receipt was signed as (1 or 2).
    #[napi(getter)]
    pub fn version(&self) -> u32 {
        u32::from(self.inner.version())
    }

    /// The canonical body bytes that were signed.
    #[napi(getter)]
    pub fn body_bytes(&self) -> Buffer {
        buffer(self.inner.body_bytes())
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    #[napi]
    pub fn signing_message(&self) -> Buffer {
        buffer(&self.inner.signing_message())
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    #[napi(getter)]
    pub fn object_hash(&self) -> Buffer {
        buffer(&self.inner.object_hash())
    }

    /// The wire encoding.
    #[napi]
    pub fn encode(&self) -> Buffer {
        buffer(&self.inner.encode())
    }

    /// Checks that `expected` signed this receipt and that its node id is `expected`'s;
    /// throws a `B3iqAuthError` otherwise.
    #[napi]
    pub fn verify(&self, expected: &NodePublicKey) -> Result<()> {
        self.inner.verify(&expected.inner).map_err(raise)
    }

    /// Checks the signature against the envelope's key and that the receipt's node id derives
    /// from it; returns that node id.
    #[napi]
    pub fn verify_self_certified(&self) -> Result<NodeId> {
        self.inner.verify_self_certified().map(|inner| NodeId { inner }).map_err(raise)
    }

    /// The stable receipt id (32 bytes, also the Merkle leaf data).
    #[napi(getter)]
    pub fn receipt_id(&self) -> Buffer {
        buffer(self.inner.receipt_id().as_bytes())
    }

    /// The signed body.
    #[napi(getter)]
    pub fn receipt(&self) -> Receipt {
        Receipt { inner: self.inner.body().clone() }
    }

    /// The key written in the envelope (not yet trusted: see `verify`).
    #[napi(getter)]
    pub fn signer(&self) -> NodePublicKey {
        NodePublicKey { inner: *self.inner.signer() }
    }

    /// The 64-byte signature.
    #[napi(getter)]
    pub fn signature(&self) -> Buffer {
        buffer(self.inner.signature().as_bytes())
    }

    /// The public summary: ids, hashes, counts and totals, nothing private.
    #[napi]
    pub fn summary(&self) -> Result<serde_json::Value> {
        to_js(&self.inner.summary())
    }
}

/// Version 1: salted blake3 commitment to prompt bytes (32 bytes).
#[napi]
pub fn commit_prompt(salt: Buffer, prompt: Buffer) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::prompt(&salt, &prompt).as_bytes()))
}

/// Version 1: salted blake3 commitment to output bytes (32 bytes).
#[napi]
pub fn commit_output(salt: Buffer, output: Buffer) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::output(&salt, &output).as_bytes()))
}

/// The 32-byte commitment salt of the receipt for `requestId` (16 bytes), derived from the
/// node's 32-byte secret `nodeSalt`. Reveal it to open that one receipt.
#[napi]
pub fn receipt_salt(node_salt: Buffer, request_id: Buffer) -> Result<Buffer> {
    let node_salt = core::NodeSalt::from_bytes(array::<32>("nodeSalt", &node_salt)?);
    let request_id = core::RequestId(array::<16>("requestId", &request_id)?);
    Ok(buffer(node_salt.receipt_salt(&request_id).expose_secret()))
}

/// Version 2: commitment to the prompt's token ids (32 bytes).
#[napi]
pub fn commit_prompt_token_ids(salt: Buffer, token_ids: Vec<u32>) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::prompt_token_ids(&salt, &token_ids).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the completion's token ids (32 bytes).
#[napi]
pub fn commit_completion_token_ids(salt: Buffer, token_ids: Vec<u32>) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::completion_token_ids(&salt, &token_ids).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the prompt's UTF-8 text (32 bytes).
#[napi]
pub fn commit_prompt_text(salt: Buffer, text: String) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::prompt_text(&salt, &text).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the completion's UTF-8 text (32 bytes).
#[napi]
pub fn commit_completion_text(salt: Buffer, text: String) -> Result<Buffer> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(buffer(core::Commitment::completion_text(&salt, &text).map_err(raise)?.as_bytes()))
}
