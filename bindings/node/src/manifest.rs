//! Mirrors `b3iq-core/src/manifest.rs`: signed model manifests from publishers.

use b3iq_core::manifest as core;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{buffer, from_js, number, to_js};
use crate::error::{raise, Result};
use crate::identity::{NodeKey, NodePublicKey};

/// An unsigned model manifest, built from a plain object with the core's JSON field names.
#[napi]
pub struct ModelManifest {
    inner: core::ModelManifest,
}

#[napi]
impl ModelManifest {
    /// Builds a manifest from a plain object (unknown fields are refused).
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("model manifest", value).map(|inner| Self { inner })
    }

    /// The manifest as a plain object.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
    }

    /// Signs the manifest as its publisher.
    #[napi]
    pub fn sign(&self, key: &NodeKey) -> Result<SignedManifest> {
        key.inner.sign_object(self.inner.clone()).map(|inner| SignedManifest { inner }).map_err(raise)
    }

    /// Total size of all artifacts in bytes.
    #[napi(getter)]
    pub fn total_size_bytes(&self) -> Result<f64> {
        number("totalSizeBytes", self.inner.total_size_bytes().map_err(raise)?)
    }
}

/// A signed model manifest.
#[napi]
pub struct SignedManifest {
    inner: core::SignedManifest,
}

#[napi]
impl SignedManifest {
    /// Strictly decodes the wire form. Does not verify.
    #[napi(factory)]
    pub fn decode(data: Buffer) -> Result<Self> {
        core::SignedManifest::decode(&data).map(|inner| Self { inner }).map_err(raise)
    }

    /// Builds from the signed JSON form (`{ version, kind, signer, body, signature }`).
    /// Does not verify.
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("signed manifest", value).map(|inner| Self { inner })
    }

    /// The signed JSON form.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
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

    /// Checks that `publisher` signed this manifest; throws `B3iqAuthError` otherwise.
    #[napi]
    pub fn verify(&self, publisher: &NodePublicKey) -> Result<()> {
        self.inner.verify(&publisher.inner).map_err(raise)
    }

    /// The signed manifest body.
    #[napi(getter)]
    pub fn manifest(&self) -> ModelManifest {
        ModelManifest { inner: self.inner.body().clone() }
    }

    /// The key written in the envelope (not yet trusted).
    #[napi(getter)]
    pub fn signer(&self) -> NodePublicKey {
        NodePublicKey { inner: *self.inner.signer() }
    }

    /// The 64-byte signature.
    #[napi(getter)]
    pub fn signature(&self) -> Buffer {
        buffer(self.inner.signature().as_bytes())
    }
}
