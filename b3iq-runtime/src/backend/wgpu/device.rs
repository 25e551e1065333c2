//! The wgpu device: adapter choice, limits, and every GPU failure as a typed [`WgpuError`].
//!
//! wgpu reports most failures asynchronously: validation and out-of-memory errors go to an
//! error scope or, outside one, to the device's uncaptured-error handler (whose default
//! *panics*), and a lost device calls the device-lost callback. [`GpuDevice`] installs both
//! handlers so that nothing panics: errors are recorded and returned by the next
//! [`GpuDevice::check`], shader and buffer creation run inside error scopes, and a lost device
//! turns every later call into [`WgpuError::DeviceLost`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

/// Why the wgpu backend failed. Each variant says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WgpuError {
    /// No GPU adapter (Vulkan, Metal or DX12) is visible.
    #[error("no GPU adapter found through wgpu ({0}); install a Vulkan driver (on Debian: `apt-get install mesa-vulkan-drivers libvulkan1`) or use the llama.cpp backend")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("the GPU adapter `{adapter}` could not create a device: {reason}")]
    DeviceRequest {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        reason: String,
    },
    /// A WGSL kernel failed to compile or its pipeline was refused (a bug in the kernel or a
    /// driver that lacks a feature it uses).
    #[error("the WGSL kernel `{kernel}` does not compile on this device: {message}")]
    ShaderCompile {
        /// Kernel name.
        kernel: String,
        /// The compiler's message.
        message: String,
    },
    /// GPU memory ran out, or a buffer is larger than the device allows.
    #[error("out of GPU memory allocating {what} ({bytes} bytes): {detail}; lower the context size or max_sequences, or use a smaller model")]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// Its size in bytes.
        bytes: u64,
        /// The device's message or the limit it exceeds.
        detail: String,
    },
    /// The device was lost (driver reset, GPU removed, or destroyed); reload the model.
    #[error("the GPU device was lost ({0}); the wgpu backend is unhealthy, reload the model")]
    DeviceLost(String),
    /// Any other error the device reported (a validation error: a bug in this backend).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The model has a shape or tensor type this backend does not run.
    #[error("the wgpu backend does not support this model: {0}; use the llama.cpp backend")]
    Unsupported(String),
}

/// An error the handlers recorded, waiting for the next [`GpuDevice::check`].
#[derive(Default)]
struct Pending {
    lost: AtomicBool,
    lost_reason: Mutex<Option<String>>,
    error: Mutex<Option<WgpuError>>,
}

/// A wgpu device and queue with typed errors (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GpuDevice {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pending: Arc<Pending>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

fn classify(e: wgpu::Error, what: &str, bytes: u64) -> WgpuError {
    match e {
        wgpu::Error::OutOfMemory { .. } => WgpuError::OutOfMemory {
            what: what.to_string(),
            bytes,
            detail: "the device is out of memory".into(),
        },
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => {
            WgpuError::Gpu(format!("{what}: {description}"))
        }
    }
}

impl GpuDevice {
    /// Opens the first high-performance adapter on a primary API (Vulkan, Metal, DX12) with its
    /// full limits. `B3IQ_WGPU_ADAPTER`, when set, picks the first adapter whose name contains
    /// it (case-insensitive), e.g. `llvmpipe` for Mesa's lavapipe.
    ///
    /// # Errors
    /// [`WgpuError::NoAdapter`] when no adapter is visible (or none matches),
    /// [`WgpuError::DeviceRequest`] when the adapter refuses a device.
    pub fn open() -> Result<Self, WgpuError> {
        let want = std::env::var("B3IQ_WGPU_ADAPTER")
            .ok()
            .filter(|w| !w.is_empty());
        Self::open_matching(want.as_deref())
    }

    /// Opens the adapter whose name contains `name` (case-insensitive), or with `None` the
    /// first high-performance one, as [`GpuDevice::open`].
    ///
    /// # Errors
    /// As [`GpuDevice::open`].
    pub fn open_matching(name: Option<&str>) -> Result<Self, WgpuError> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..Default::default()
        });
        let adapter = match name {
            Some(want) => {
                let want = want.to_lowercase();
                let adapters = instance.enumerate_adapters(wgpu::Backends::PRIMARY);
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        WgpuError::NoAdapter(format!(
                            "none is named like `{want}`; found {names:?}"
                        ))
                    })?
            }
            None => futures::executor::block_on(instance.request_adapter(
                &wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                },
            ))
            .map_err(|e| WgpuError::NoAdapter(e.to_string()))?,
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) =
            futures::executor::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("b3iq-wgpu"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            }))
            .map_err(|e| WgpuError::DeviceRequest {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        let pending = Arc::new(Pending::default());
        let p = pending.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let err = classify(e, "a GPU command", 0);
            let mut slot = p.error.lock().unwrap_or_else(|x| x.into_inner());
            slot.get_or_insert(err);
        }));
        let p = pending.clone();
        device.set_device_lost_callback(move |reason, message| {
            *p.lost_reason.lock().unwrap_or_else(|x| x.into_inner()) =
                Some(format!("{reason:?}: {message}"));
            p.lost.store(true, Ordering::SeqCst);
        });
        Ok(Self {
            device,
            queue,
            info,
            limits,
            pending,
        })
    }

    /// The adapter's name, driver and API (`llvmpipe (LLVM 15.0.6, 256 bits), llvmpipe, Vulkan`).
    pub fn describe(&self) -> String {
        format!(
            "{}, {} {}, {:?}",
            self.info.name, self.info.driver, self.info.driver_info, self.info.backend
        )
    }

    /// The adapter's info.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits (the adapter's full limits).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether the device was lost (see [`WgpuError::DeviceLost`]).
    pub fn is_lost(&self) -> bool {
        self.pending.lost.load(Ordering::SeqCst)
    }

    /// Returns the first error recorded since the last check: a lost device, or an error the
    /// uncaptured-error handler caught.
    ///
    /// # Errors
    /// [`WgpuError::DeviceLost`], or the recorded error.
    pub fn check(&self) -> Result<(), WgpuError> {
        if self.is_lost() {
            let reason = self
                .pending
                .lost_reason
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .clone()
                .unwrap_or_else(|| "unknown reason".into());
            return Err(WgpuError::DeviceLost(reason));
        }
        match self
            .pending
            .error
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Destroys the device (what a driver reset does): every later call fails with
    /// [`WgpuError::DeviceLost`]. For tests of the lost-device path.
    pub fn destroy(&self) {
        self.device.destroy();
        // The lost callback runs on the next poll.
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Runs `f` inside validation and out-of-memory error scopes; an error caught there is
    /// returned, classified for `what` (`bytes` for allocations).
    fn scoped<T>(&self, what: &str, bytes: u64, f: impl FnOnce() -> T) -> Result<T, WgpuError> {
        self.check()?;
        self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let validation = futures::executor::block_on(self.device.pop_error_scope());
        let oom = futures::executor::block_on(self.device.pop_error_scope());
        self.check()?;
        match oom.or(validation) {
            Some(e) => Err(classify(e, what, bytes)),
            None => Ok(out),
        }
    }

    /// A bind group, created inside error scopes.
    ///
    /// # Errors
    /// [`WgpuError::Gpu`] when the buffers do not match the layout (a bug in a kernel's caller).
    pub fn scoped_bind_group(
        &self,
        what: &str,
        layout: &wgpu::BindGroupLayout,
        entries: &[wgpu::BindGroupEntry<'_>],
    ) -> Result<wgpu::BindGroup, WgpuError> {
        self.scoped(what, 0, || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(what),
                layout,
                entries,
            })
        })
    }

    /// Compiles a WGSL kernel and its compute pipeline (entry point `main`, layout from the
    /// shader).
    ///
    /// # Errors
    /// [`WgpuError::ShaderCompile`] with the compiler's message.
    pub fn compute_pipeline(
        &self,
        kernel: &str,
        wgsl: &str,
    ) -> Result<wgpu::ComputePipeline, WgpuError> {
        self.check()?;
        // Parse first: naga's message names the line, and a parse failure would otherwise
        // surface as a generic validation error.
        if let Err(e) = naga_check(wgsl) {
            return Err(WgpuError::ShaderCompile {
                kernel: kernel.to_string(),
                message: e,
            });
        }
        self.scoped(kernel, 0, || {
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel),
                    source: wgpu::ShaderSource::Wgsl(wgsl.into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
        .map_err(|e| match e {
            WgpuError::Gpu(message) => WgpuError::ShaderCompile {
                kernel: kernel.to_string(),
                message,
            },
            other => other,
        })
    }

    fn check_size(&self, what: &str, bytes: u64, storage: bool) -> Result<(), WgpuError> {
        let too_big = |limit: u64, name: &str| WgpuError::OutOfMemory {
            what: what.to_string(),
            bytes,
            detail: format!("over the device's {name} of {limit} bytes"),
        };
        if bytes > self.limits.max_buffer_size {
            return Err(too_big(self.limits.max_buffer_size, "max_buffer_size"));
        }
        if storage && bytes > u64::from(self.limits.max_storage_buffer_binding_size) {
            return Err(too_big(
                u64::from(self.limits.max_storage_buffer_binding_size),
                "max_storage_buffer_binding_size",
            ));
        }
        Ok(())
    }

    /// A zeroed storage buffer of `bytes` (rounded up to 4), readable, writable and copyable.
    ///
    /// # Errors
    /// [`WgpuError::OutOfMemory`] when it is over the device's limits or the device has no room.
    pub fn storage(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer, WgpuError> {
        let bytes = bytes.max(4).div_ceil(4) * 4;
        self.check_size(what, bytes, true)?;
        self.scoped(what, bytes, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })
    }

    /// A storage buffer holding `data` (padded with zeros to a multiple of 4 bytes).
    ///
    /// # Errors
    /// As [`GpuDevice::storage`].
    pub fn storage_init(&self, what: &str, data: &[u8]) -> Result<wgpu::Buffer, WgpuError> {
        self.init(
            what,
            data,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )
    }

    /// A uniform buffer holding `data` (kernel parameters).
    ///
    /// # Errors
    /// As [`GpuDevice::storage`].
    pub fn uniform_init(&self, what: &str, data: &[u8]) -> Result<wgpu::Buffer, WgpuError> {
        self.init(
            what,
            data,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )
    }

    fn init(
        &self,
        what: &str,
        data: &[u8],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, WgpuError> {
        let mut padded;
        let data = if data.is_empty() || data.len() % 4 != 0 {
            padded = data.to_vec();
            padded.resize(data.len().max(4).div_ceil(4) * 4, 0);
            &padded[..]
        } else {
            data
        };
        self.check_size(
            what,
            data.len() as u64,
            usage.contains(wgpu::BufferUsages::STORAGE),
        )?;
        self.scoped(what, data.len() as u64, || {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(what),
                    contents: data,
                    usage,
                })
        })
    }

    /// A read-back buffer of `bytes` (MAP_READ | COPY_DST).
    ///
    /// # Errors
    /// As [`GpuDevice::storage`].
    pub fn readback(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer, WgpuError> {
        let bytes = bytes.max(4).div_ceil(4) * 4;
        self.check_size(what, bytes, false)?;
        self.scoped(what, bytes, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Submits `encoder`, waits for the GPU, and checks for errors.
    ///
    /// # Errors
    /// [`WgpuError::DeviceLost`] when the device was lost, or an error the commands raised.
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<(), WgpuError> {
        self.check()?;
        let index = self.queue.submit(Some(encoder.finish()));
        self.wait(index)
    }

    fn wait(&self, index: wgpu::SubmissionIndex) -> Result<(), WgpuError> {
        let r = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        });
        self.check()?;
        r.map(|_| ())
            .map_err(|e| WgpuError::DeviceLost(format!("waiting for the GPU failed: {e}")))
    }

    /// Copies the first `len` f32 values of `src` into `out` through `staging` (a
    /// [`GpuDevice::readback`] buffer at least as large), after the work already submitted.
    ///
    /// # Errors
    /// [`WgpuError::DeviceLost`] or the error the copy raised.
    pub fn read_f32(
        &self,
        src: &wgpu::Buffer,
        staging: &wgpu::Buffer,
        len: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), WgpuError> {
        let bytes = (len * 4) as u64;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, staging, 0, bytes);
        let index = self.queue.submit(Some(enc.finish()));
        let slice = staging.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait(index)?;
        // The map callback runs inside whichever thread's poll processes it: with several
        // threads on one device (engines of several models, parallel tests) it can fire on
        // another thread just after this wait returned. Poll until it arrives, for a bounded
        // time, rather than calling a late callback a lost device.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mapped = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                Ok(r) => break r,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(WgpuError::DeviceLost(
                        "a read-back buffer's mapping was dropped".into(),
                    ))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(WgpuError::DeviceLost(
                            "a read-back buffer was not mapped within 30 s".into(),
                        ));
                    }
                    let _ = self.device.poll(wgpu::PollType::Poll);
                    self.check()?;
                }
            }
        };
        if let Err(e) = mapped {
            return Err(WgpuError::DeviceLost(format!(
                "mapping a read-back buffer failed: {e}"
            )));
        }
        {
            let view = slice.get_mapped_range();
            out.clear();
            out.extend(
                view.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        staging.unmap();
        Ok(())
    }
}

/// Parses WGSL with naga (what wgpu does first inside `create_shader_module`), so a syntax
/// error gives the compiler's message with its line; validation against the device's
/// capabilities happens in wgpu, inside an error scope.
fn naga_check(wgsl: &str) -> Result<(), String> {
    wgpu::naga::front::wgsl::parse_str(wgsl)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(wgsl))
}
