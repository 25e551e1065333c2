//! Mirrors `b3iq-core/src/credential.rs`: `b3iq_local_` / `b3iq_support_` / `b3iq_gateway_`
//! keys and setup tokens (prefix + random body + checksum, stored as sha256).

use b3iq_core::credential as core;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{buffer, from_js};
use crate::error::{raise, Result};

/// A parsed credential. `toString()` shows only the hint, never the secret.
#[napi]
pub struct Credential {
    inner: core::Credential,
}

fn kind_from_str(kind: String) -> Result<core::CredentialKind> {
    from_js("credential kind", serde_json::Value::String(kind))
}

#[napi]
impl Credential {
    /// Parses a key; malformed keys throw `B3iqValueError` without any lookup. With `kind`
    /// (`"local"`, `"support"`, `"gateway"`, `"setup"`), a key of another kind is refused too.
    #[napi(factory)]
    pub fn parse(text: String, kind: Option<String>) -> Result<Self> {
        let parsed = match kind {
            None => core::Credential::parse(&text),
            Some(kind) => core::Credential::parse_kind(&text, kind_from_str(kind)?),
        };
        parsed.map(|inner| Self { inner }).map_err(raise)
    }

    /// A fresh random credential of `kind`.
    #[napi(factory)]
    pub fn generate(kind: String) -> Result<Self> {
        Ok(Self { inner: core::Credential::generate(kind_from_str(kind)?, &mut rand_core::OsRng) })
    }

    /// `"local"`, `"support"`, `"gateway"` or `"setup"`.
    #[napi(getter)]
    pub fn kind(&self) -> String {
        self.inner.kind().as_str().to_owned()
    }

    /// A safe-to-show hint such as `b3iq_local_...Ab3x`.
    #[napi(getter)]
    pub fn hint(&self) -> String {
        self.inner.hint()
    }

    /// The full secret. Show it once; never log it.
    #[napi]
    pub fn expose_secret(&self) -> String {
        self.inner.expose_secret().to_owned()
    }

    /// sha256 of the key string: what a server stores (32 bytes).
    #[napi]
    pub fn hash_for_storage(&self) -> Buffer {
        buffer(self.inner.hash_for_storage().as_bytes())
    }

    /// `Credential(<hint>)`.
    #[napi(js_name = "toString")]
    pub fn to_display(&self) -> String {
        format!("Credential({})", self.inner.hint())
    }
}
