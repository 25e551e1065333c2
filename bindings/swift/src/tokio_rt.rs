//! The one tokio runtime the Swift package uses for the host and the model runtime: built
//! lazily on first use. Async exports spawn their work here and await the handle, so they work
//! whatever executor the foreign side polls them from.

use std::future::Future;
use std::sync::OnceLock;

use b3iq_core::ErrorCategory;
use tokio::runtime::Runtime;

use crate::error::{B3iqError, BindingError};

fn runtime() -> Result<&'static Runtime, B3iqError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("b3iq-swift")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            BindingError::new(ErrorCategory::Io, "io", format!("cannot start the tokio runtime: {e}")).into()
        })
}

/// Runs `fut` on the binding's runtime and waits for it.
pub(crate) async fn run<F>(fut: F) -> Result<F::Output, B3iqError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime()?
        .spawn(fut)
        .await
        .map_err(|e| {
            BindingError::new(ErrorCategory::Internal, "internal", format!("background task failed: {e}")).into()
        })
}

/// Runs a future built by `make` on a blocking-pool thread of the binding's runtime. The host's
/// futures are not all `Send`, so they are built and driven on that one thread; only their
/// inputs and outputs cross threads.
pub(crate) async fn run_on_host_thread<F, Fut, T>(make: F) -> Result<T, B3iqError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, B3iqError>>,
    T: Send + 'static,
{
    let rt = runtime()?;
    let handle = rt.handle().clone();
    rt.spawn_blocking(move || handle.block_on(make()))
        .await
        .map_err(|e| {
            B3iqError::from(BindingError::new(ErrorCategory::Internal, "internal", format!("host task failed: {e}")))
        })?
}
