//! Mirrors `b3iq-core/src/receipt.rs`: receipts (versions 1 and 2), signed receipts, public
//! summaries, commitments and per-receipt salts.

use std::sync::Arc;

use b3iq_core::receipt as core;

use crate::convert::{array, from_json, to_json};
use crate::error::B3iqError;
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned usage receipt, built from the core's JSON form. JSON with `commitment_basis`
/// (and optionally `attestation_digest`) is a version-2 receipt.
#[derive(uniffi::Object)]
pub struct Receipt {
    inner: core::Receipt,
}

#[uniffi::export]
impl Receipt {
    /// Builds a receipt from JSON text (unknown fields are refused).
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("receipt", &json)? }))
    }

    /// The receipt as JSON text.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// Signs the receipt; `key`'s node id must be the receipt's `node_id`.
    pub fn sign(&self, key: Arc<NodeKey>) -> Result<Arc<SignedReceipt>, B3iqError> {
        Ok(Arc::new(SignedReceipt { inner: self.inner.clone().sign(&key.inner)? }))
    }

    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.inner.total_tokens()
    }

    /// The receipt version: 2 with a commitment basis, else 1.
    pub fn version(&self) -> u8 {
        self.inner.version()
    }

    /// Whether this receipt's revealed 32-byte `salt` and the token ids open it (version 2,
    /// `token_ids` basis, counts equal to the list lengths).
    pub fn opens_token_ids(&self, salt: Vec<u8>, prompt: Vec<u32>, completion: Vec<u32>) -> Result<bool, B3iqError> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
        Ok(self.inner.opens_token_ids(&salt, &prompt, &completion))
    }

    /// Whether this receipt's revealed 32-byte `salt` and the texts open it (version 2,
    /// `utf8_text` basis).
    pub fn opens_text(&self, salt: Vec<u8>, prompt: String, completion: String) -> Result<bool, B3iqError> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
        Ok(self.inner.opens_text(&salt, &prompt, &completion))
    }
}

/// A signed usage receipt.
#[derive(uniffi::Object)]
pub struct SignedReceipt {
    inner: core::SignedReceipt,
}

#[uniffi::export]
impl SignedReceipt {
    /// Strictly decodes the wire form. Does not verify.
    #[uniffi::constructor]
    pub fn decode(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::SignedReceipt::decode(&data)? }))
    }

    /// Builds from the signed JSON form. Does not verify.
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("signed receipt", &json)? }))
    }

    /// The signed JSON form.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// The version the receipt was signed as (1 or 2).
    pub fn version(&self) -> u8 {
        self.inner.version()
    }

    /// The canonical body bytes that were signed.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.inner.body_bytes().to_vec()
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        self.inner.signing_message()
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    pub fn object_hash(&self) -> Vec<u8> {
        self.inner.object_hash().to_vec()
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.inner.encode()
    }

    /// Checks that `expected` signed this receipt and that its node id is `expected`'s.
    pub fn verify(&self, expected: Arc<NodePublicKey>) -> Result<(), B3iqError> {
        Ok(self.inner.verify(&expected.inner)?)
    }

    /// Checks the signature against the envelope's key and the node id derived from it.
    pub fn verify_self_certified(&self) -> Result<Arc<NodeId>, B3iqError> {
        Ok(Arc::new(NodeId { inner: self.inner.verify_self_certified()? }))
    }

    /// The stable receipt id (32 bytes).
    pub fn receipt_id(&self) -> Vec<u8> {
        self.inner.receipt_id().to_bytes().to_vec()
    }

    /// The signed body.
    pub fn receipt(&self) -> Arc<Receipt> {
        Arc::new(Receipt { inner: self.inner.body().clone() })
    }

    /// The key written in the envelope (not yet trusted).
    pub fn signer(&self) -> Arc<NodePublicKey> {
        Arc::new(NodePublicKey { inner: *self.inner.signer() })
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> Vec<u8> {
        self.inner.signature().to_bytes().to_vec()
    }

    /// The public summary as JSON text.
    pub fn summary_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner.summary())
    }
}

/// Version 1: salted blake3 commitment to prompt bytes (32 bytes).
#[uniffi::export]
pub fn commit_prompt(salt: Vec<u8>, prompt: Vec<u8>) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::prompt(&salt, &prompt).to_bytes().to_vec())
}

/// Version 1: salted blake3 commitment to output bytes (32 bytes).
#[uniffi::export]
pub fn commit_output(salt: Vec<u8>, output: Vec<u8>) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::output(&salt, &output).to_bytes().to_vec())
}

/// The 32-byte commitment salt of the receipt for `request_id` (16 bytes), derived from the
/// node's 32-byte secret `node_salt`. Reveal it to open that one receipt.
#[uniffi::export]
pub fn receipt_salt(node_salt: Vec<u8>, request_id: Vec<u8>) -> Result<Vec<u8>, B3iqError> {
    let node_salt = core::NodeSalt::from_bytes(array::<32>("node_salt", &node_salt)?);
    let request_id = core::RequestId(array::<16>("request_id", &request_id)?);
    Ok(node_salt.receipt_salt(&request_id).expose_secret().to_vec())
}

/// Version 2: commitment to the prompt's token ids (32 bytes).
#[uniffi::export]
pub fn commit_prompt_token_ids(salt: Vec<u8>, token_ids: Vec<u32>) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::prompt_token_ids(&salt, &token_ids)?.to_bytes().to_vec())
}

/// Version 2: commitment to the completion's token ids (32 bytes).
#[uniffi::export]
pub fn commit_completion_token_ids(salt: Vec<u8>, token_ids: Vec<u32>) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::completion_token_ids(&salt, &token_ids)?.to_bytes().to_vec())
}

/// Version 2: commitment to the prompt's UTF-8 text (32 bytes).
#[uniffi::export]
pub fn commit_prompt_text(salt: Vec<u8>, text: String) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::prompt_text(&salt, &text)?.to_bytes().to_vec())
}

/// Version 2: commitment to the completion's UTF-8 text (32 bytes).
#[uniffi::export]
pub fn commit_completion_text(salt: Vec<u8>, text: String) -> Result<Vec<u8>, B3iqError> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", &salt)?);
    Ok(core::Commitment::completion_text(&salt, &text)?.to_bytes().to_vec())
}
