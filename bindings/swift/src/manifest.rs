//! Mirrors `b3iq-core/src/manifest.rs`: signed model manifests from publishers.

use std::sync::Arc;

use b3iq_core::manifest as core;

use crate::convert::{from_json, to_json};
use crate::error::B3iqError;
use crate::identity::{NodeKey, NodePublicKey};

/// An unsigned model manifest, built from the core's JSON form.
#[derive(uniffi::Object)]
pub struct ModelManifest {
    inner: core::ModelManifest,
}

#[uniffi::export]
impl ModelManifest {
    /// Builds a manifest from JSON text (unknown fields are refused).
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("model manifest", &json)? }))
    }

    /// The manifest as JSON text.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// Signs the manifest as its publisher.
    pub fn sign(&self, key: Arc<NodeKey>) -> Result<Arc<SignedManifest>, B3iqError> {
        Ok(Arc::new(SignedManifest { inner: key.inner.sign_object(self.inner.clone())? }))
    }

    /// Total size of all artifacts in bytes.
    pub fn total_size_bytes(&self) -> Result<u64, B3iqError> {
        Ok(self.inner.total_size_bytes()?)
    }
}

/// A signed model manifest.
#[derive(uniffi::Object)]
pub struct SignedManifest {
    inner: core::SignedManifest,
}

#[uniffi::export]
impl SignedManifest {
    /// Strictly decodes the wire form. Does not verify.
    #[uniffi::constructor]
    pub fn decode(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::SignedManifest::decode(&data)? }))
    }

    /// Builds from the signed JSON form. Does not verify.
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("signed manifest", &json)? }))
    }

    /// The signed JSON form.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
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

    /// Checks that `publisher` signed this manifest.
    pub fn verify(&self, publisher: Arc<NodePublicKey>) -> Result<(), B3iqError> {
        Ok(self.inner.verify(&publisher.inner)?)
    }

    /// The signed manifest body.
    pub fn manifest(&self) -> Arc<ModelManifest> {
        Arc::new(ModelManifest { inner: self.inner.body().clone() })
    }

    /// The key written in the envelope (not yet trusted).
    pub fn signer(&self) -> Arc<NodePublicKey> {
        Arc::new(NodePublicKey { inner: *self.inner.signer() })
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> Vec<u8> {
        self.inner.signature().to_bytes().to_vec()
    }
}
