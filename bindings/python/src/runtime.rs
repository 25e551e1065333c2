//! Mirrors `b3iq-runtime/src/runtime.rs`: load a GGUF with the llama.cpp backend and generate,
//! streaming. The stream is a handle: closing it (or dropping it) cancels the generation.
//!
//! Every blocking call releases the GIL; the async Python API runs the same calls in a thread.

use std::sync::{Arc, Mutex};

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{self as rt_api, GenerationEvent, GenerationStream, LoadModelSpec, Runtime as _};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use tokio::runtime::Runtime as Tokio;

use crate::convert::{from_py, to_py};
use crate::error::raise;
use crate::tokio_rt;

/// An in-process llama.cpp runtime with one or more loaded GGUF models.
#[pyclass(module = "b3iq._b3iq", name = "Runtime", frozen)]
pub struct Runtime {
    inner: Arc<LlamaRuntime>,
    rt: Arc<Tokio>,
}

#[pymethods]
impl Runtime {
    /// A runtime; `threads` defaults to the machine's cores (at most 16).
    #[new]
    #[pyo3(signature = (threads = None))]
    fn new(py: Python<'_>, threads: Option<u32>) -> PyResult<Self> {
        let rt = tokio_rt::runtime().map_err(raise)?;
        let mut config = LlamaConfig::default();
        if let Some(threads) = threads {
            config.threads = threads;
        }
        let inner = py.detach(|| {
            let _guard = rt.enter();
            LlamaRuntime::new(config)
        });
        Ok(Self { inner: Arc::new(inner.map_err(raise)?), rt })
    }

    /// Loads a GGUF file; returns its description as a dict (`id`, `sha256`, ...). `model_id`
    /// defaults to the file stem; `expected_sha256` makes loading fail on a mismatch.
    #[pyo3(signature = (path, model_id = None, expected_sha256 = None, context_length = None))]
    fn load_model<'py>(
        &self,
        py: Python<'py>,
        path: std::path::PathBuf,
        model_id: Option<String>,
        expected_sha256: Option<String>,
        context_length: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut spec = LoadModelSpec::from_path(path);
        if let Some(id) = model_id {
            spec = spec.with_id(id);
        }
        spec.expected_sha256 = expected_sha256;
        spec.context_length = context_length;
        let info = py
            .detach(|| self.rt.block_on(self.inner.load_model(spec)))
            .map_err(raise)?;
        to_py(py, &info)
    }

    /// The loaded models, as dicts.
    fn models<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let models = py.detach(|| self.rt.block_on(self.inner.list_models())).map_err(raise)?;
        to_py(py, &models)
    }

    /// Starts a generation and returns its stream. `request` is the runtime's JSON request:
    /// `{"model": id, "prompt": {"kind": "chat", "value": [{"role", "content"}]} or
    /// {"kind": "text", "value": "..."}, "sampling": {...}, "max_tokens": n, "stop": [...]}`.
    /// The `b3iq.Runtime` Python class builds it from keyword arguments.
    fn generate(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<TokenStream> {
        let request: rt_api::GenerateRequest = from_py("generate request", request)?;
        let stream = py
            .detach(|| self.rt.block_on(self.inner.generate(request)))
            .map_err(raise)?;
        Ok(TokenStream {
            stream: Mutex::new(Some(stream)),
            done: Mutex::new(None),
            rt: Arc::clone(&self.rt),
        })
    }
}

/// The text of a running generation, piece by piece. Iterate it; `close()` (or dropping it)
/// cancels the generation. After the last piece, `result()` holds the finish reason, token
/// usage and timings.
#[pyclass(module = "b3iq._b3iq", name = "TokenStream", frozen)]
pub struct TokenStream {
    stream: Mutex<Option<GenerationStream>>,
    done: Mutex<Option<GenerationEvent>>,
    rt: Arc<Tokio>,
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next piece of text (blocks without the GIL); `StopIteration` at the end.
    fn __next__(&self, py: Python<'_>) -> PyResult<String> {
        let event = py.detach(|| {
            let mut guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(stream) => {
                    let event = self.rt.block_on(stream.next_event());
                    if !matches!(event, Some(Ok(GenerationEvent::Delta { .. }))) {
                        *guard = None; // finished, failed or closed: drop the handle
                    }
                    event
                }
                None => None,
            }
        });
        match event {
            Some(Ok(GenerationEvent::Delta { text, .. })) => Ok(text),
            Some(Ok(done)) => {
                *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
                Err(PyStopIteration::new_err(()))
            }
            Some(Err(err)) => Err(raise(err)),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// Cancels the generation (if still running) and releases it. Idempotent.
    fn close(&self) {
        if let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stream.cancel();
        }
    }

    /// True once the stream ended or was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.stream.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// `{"event": "done", "finish_reason", "usage", "timings"}` once the stream ended normally,
    /// else `None`.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).clone();
        done.map(|d| to_py(py, &d)).transpose()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Runtime>()?;
    m.add_class::<TokenStream>()?;
    Ok(())
}
