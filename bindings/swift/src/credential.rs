//! Mirrors `b3iq-core/src/credential.rs`: local, support and gateway keys and setup tokens.

use std::sync::Arc;

use b3iq_core::credential as core;

use crate::convert::from_json;
use crate::error::B3iqError;

/// A parsed credential.
#[derive(uniffi::Object)]
pub struct Credential {
    inner: core::Credential,
}

fn kind_from_str(kind: String) -> Result<core::CredentialKind, B3iqError> {
    from_json("credential kind", &serde_json::Value::String(kind).to_string())
}

#[uniffi::export]
impl Credential {
    /// Parses a key; with `kind` (`"local"`, `"support"`, `"gateway"`, `"setup"`) a key of another
    /// kind is refused too. Malformed keys fail without any lookup.
    #[uniffi::constructor]
    pub fn parse(text: String, kind: Option<String>) -> Result<Arc<Self>, B3iqError> {
        let inner = match kind {
            None => core::Credential::parse(&text)?,
            Some(kind) => core::Credential::parse_kind(&text, kind_from_str(kind)?)?,
        };
        Ok(Arc::new(Self { inner }))
    }

    /// A fresh random credential of `kind`.
    #[uniffi::constructor]
    pub fn generate(kind: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::Credential::generate(kind_from_str(kind)?, &mut rand_core::OsRng) }))
    }

    /// `"local"`, `"support"`, `"gateway"` or `"setup"`.
    pub fn kind(&self) -> String {
        self.inner.kind().as_str().to_owned()
    }

    /// A safe-to-show hint.
    pub fn hint(&self) -> String {
        self.inner.hint()
    }

    /// The full secret. Show it once; never log it.
    pub fn expose_secret(&self) -> String {
        self.inner.expose_secret().to_owned()
    }

    /// sha256 of the key string (32 bytes).
    pub fn hash_for_storage(&self) -> Vec<u8> {
        self.inner.hash_for_storage().to_bytes().to_vec()
    }
}
