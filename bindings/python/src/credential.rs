//! Mirrors `b3iq-core/src/credential.rs`: `b3iq_local_` / `b3iq_support_` / `b3iq_gateway_`
//! keys and setup tokens (prefix + random body + checksum, stored as sha256).

use b3iq_core::credential as core;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{bytes, from_py};
use crate::error::raise;

/// A parsed credential. `repr()` shows only the hint, never the secret.
#[pyclass(module = "b3iq", name = "Credential", frozen)]
pub struct Credential(core::Credential);

#[pymethods]
impl Credential {
    /// Parses a key; malformed keys (prefix, length, alphabet, checksum) raise `B3iqValueError`
    /// without any lookup. With `kind` (`"local"`, `"support"`, `"gateway"`, `"setup"`), a key
    /// of another kind is refused too.
    #[staticmethod]
    #[pyo3(signature = (text, kind = None))]
    fn parse(text: &str, kind: Option<&str>) -> PyResult<Self> {
        let parsed = match kind {
            None => core::Credential::parse(text),
            Some(kind) => core::Credential::parse_kind(text, kind_from_str(kind)?),
        };
        parsed.map(Self).map_err(raise)
    }

    /// A fresh random credential of `kind`.
    #[staticmethod]
    fn generate(kind: &str) -> PyResult<Self> {
        Ok(Self(core::Credential::generate(kind_from_str(kind)?, &mut rand_core::OsRng)))
    }

    /// `"local"`, `"support"`, `"gateway"` or `"setup"`.
    #[getter]
    fn kind(&self) -> String {
        self.0.kind().as_str().to_owned()
    }

    /// A safe-to-show hint such as `b3iq_local_...Ab3x`.
    #[getter]
    fn hint(&self) -> String {
        self.0.hint()
    }

    /// The full secret. Show it once; never log it.
    fn expose_secret(&self) -> String {
        self.0.expose_secret().to_owned()
    }

    /// sha256 of the key string: what a server stores (32 bytes).
    fn hash_for_storage<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.hash_for_storage().as_bytes())
    }

    fn __repr__(&self) -> String {
        format!("Credential('{}')", self.0.hint())
    }
}

fn kind_from_str(kind: &str) -> PyResult<core::CredentialKind> {
    Python::attach(|py| from_py("credential kind", pyo3::types::PyString::new(py, kind).as_any()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Credential>()?;
    Ok(())
}
