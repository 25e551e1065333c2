//! The one tokio runtime this Python process uses for async work in b3iq-host and b3iq-runtime.
//!
//! Built lazily on first use. After `fork()` the child inherits the parent's memory but none of
//! its threads, so a runtime built in the parent is dead in the child: we remember the pid the
//! runtime was built in and build a fresh one when the pid changes. The parent's runtime is
//! leaked in the child on purpose (dropping it would try to join threads that do not exist).

use std::sync::{Arc, Mutex};

use tokio::runtime::Runtime;

use crate::error::BindingError;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The runtime for this process, built on first use and rebuilt after `fork()`. A runtime that
/// cannot be built (threads refused) is an `io` error.
pub(crate) fn runtime() -> Result<Arc<Runtime>, BindingError> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((built_in, rt)) = slot.as_ref() {
        if *built_in == pid {
            return Ok(Arc::clone(rt));
        }
    }
    if let Some(stale) = slot.take() {
        // Built in the parent before fork(): its worker threads are gone here.
        std::mem::forget(stale);
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("b3iq-python")
            .build()
            .map_err(|e| BindingError::io("cannot start the tokio runtime", e))?,
    );
    *slot = Some((pid, Arc::clone(&rt)));
    Ok(rt)
}

/// The pid the current runtime was built in, if one was built (for the fork-safety test).
pub(crate) fn runtime_pid() -> Option<u32> {
    RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .map(|(pid, _)| *pid)
}
