//! Mirrors `b3iq-host/src/node.rs`: `LocalNode`, an embedded B3IQ host (home dir, state.db,
//! model, HTTP server with the OpenAI-compatible `/v1`) running on this process's tokio runtime.
//!
//! Every blocking call releases the GIL. The async Python API (`b3iq.LocalNode.astart`, ...)
//! runs these same calls in a worker thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use b3iq_core::ErrorCategory;
use b3iq_host::node as host;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::convert::to_py;
use crate::error::{raise, BindingError};
use crate::tokio_rt;

/// A running embedded host. Use it as a context manager, or call `shutdown()`.
#[pyclass(module = "b3iq._b3iq", name = "LocalNode")]
pub struct LocalNode {
    node: Mutex<Option<host::LocalNode>>,
    rt: Arc<Runtime>,
    base_url: String,
    port: u16,
    node_id: String,
    setup_url: Option<String>,
}

impl LocalNode {
    fn with_node<T>(&self, f: impl FnOnce(&host::LocalNode) -> PyResult<T>) -> PyResult<T> {
        let guard = self.node.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(node) => f(node),
            None => Err(raise(BindingError::new(
                ErrorCategory::State,
                "stopped",
                "this LocalNode was shut down; start a new one",
            ))),
        }
    }
}

#[pymethods]
impl LocalNode {
    /// Starts a host: creates `home` on first use (identity key, config, state.db), loads
    /// `model` (a GGUF path or a model profile id; `None` starts without a model) and listens
    /// on `listen` (`"127.0.0.1:0"` picks a free port).
    #[staticmethod]
    #[pyo3(signature = (home, model = None, listen = "127.0.0.1:0".to_owned()))]
    fn start(py: Python<'_>, home: PathBuf, model: Option<String>, listen: String) -> PyResult<Self> {
        let rt = tokio_rt::runtime().map_err(raise)?;
        let mut builder = host::LocalNode::builder().home(home).listen(listen);
        builder = match model {
            Some(model) => builder.model(model),
            None => builder.no_model(),
        };
        let node = py.detach(|| rt.block_on(builder.start())).map_err(raise)?;
        Ok(Self {
            base_url: node.base_url(),
            port: node.local_addr().port(),
            node_id: node.node_id(),
            setup_url: node.setup_url().map(str::to_owned),
            node: Mutex::new(Some(node)),
            rt,
        })
    }

    /// `http://127.0.0.1:PORT`.
    #[getter]
    fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The node id (`b3n_...`).
    #[getter]
    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The one-time setup URL while the node is unclaimed (it contains the setup token).
    #[getter]
    fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    /// Claims the node with the pending setup token, creating the owner account.
    fn claim(&self, py: Python<'_>, username: String, password: String) -> PyResult<()> {
        let rt = Arc::clone(&self.rt);
        py.detach(|| {
            self.with_node(|node| rt.block_on(node.claim(&username, &password)).map_err(raise))
        })
    }

    /// Creates a `b3iq_local_` API key; returns `(key_id, secret)`. The secret is shown once.
    #[pyo3(signature = (name, scopes = vec!["inference".to_owned()]))]
    fn create_key(&self, py: Python<'_>, name: String, scopes: Vec<String>) -> PyResult<(String, String)> {
        py.detach(|| {
            self.with_node(|node| {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                node.create_key(&name, &scopes).map_err(raise)
            })
        })
    }

    /// All signed usage receipts, oldest first, as dicts (with their verification status).
    fn receipts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let receipts = py.detach(|| self.with_node(|node| node.receipts().map_err(raise)))?;
        to_py(py, &receipts)
    }

    /// Stops accepting connections, finishes in-flight requests and waits for the server.
    /// Calling it again does nothing.
    fn shutdown(&self, py: Python<'_>) {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = node {
            let rt = Arc::clone(&self.rt);
            py.detach(|| rt.block_on(node.shutdown()));
        }
    }

    /// True until `shutdown()`.
    #[getter]
    fn running(&self) -> bool {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn __repr__(&self) -> String {
        format!("LocalNode(node_id='{}', base_url='{}')", self.node_id, self.base_url)
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        // Not shut down explicitly: stop the server on the runtime it runs on.
        if let Some(node) = self.node.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _guard = self.rt.enter();
            drop(node);
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LocalNode>()?;
    Ok(())
}
