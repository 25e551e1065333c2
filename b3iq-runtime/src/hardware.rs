//! Hardware scan and model fit check.
//!
//! [`scan`] reports the CPU (model, cores, SIMD features), RAM, free disk at the home dir, the
//! OS, and GPUs: NVIDIA through NVML (loaded at run time, so machines without the driver work),
//! AMD through sysfs on Linux, Apple silicon through `sysctl` on macOS, and every adapter wgpu
//! can see (Vulkan/Metal/DX12/GL, behind the `wgpu` feature; mesa's lavapipe shows up as a CPU
//! adapter). [`fit`] says whether a model profile can run here and with what headroom;
//! [`HardwareReport::memory_band`] puts the machine in a [`MemoryBand`]. NVML's answers go
//! through [`apply_nvml`] / [`gpu_from_nvml`], pure functions tested with recorded values.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::ModelProfile;

/// The CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Brand string.
    pub model: String,
    /// Vendor id.
    pub vendor: String,
    /// Architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Physical cores (0 if unknown).
    pub physical_cores: u32,
    /// Logical CPUs.
    pub logical_cores: u32,
    /// SIMD features llama.cpp cares about that this CPU has.
    pub simd: Vec<String>,
}

/// Where a GPU was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuSource {
    /// NVIDIA Management Library.
    Nvml,
    /// Linux sysfs (`/sys/class/drm`).
    Sysfs,
    /// macOS `sysctl`.
    Sysctl,
    /// wgpu adapter enumeration.
    Wgpu,
}

/// A GPU (or GPU-like adapter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Vendor (`nvidia`, `amd`, `apple`, `intel`, or the PCI id).
    pub vendor: String,
    /// Device name.
    pub name: String,
    /// Dedicated memory in bytes (0 if unknown or unified).
    pub vram_bytes: u64,
    /// Free memory in bytes when known.
    pub vram_free_bytes: Option<u64>,
    /// Driver version.
    pub driver: String,
    /// Graphics API / backend (wgpu: `Vulkan`, `Metal`, ...).
    pub api: String,
    /// Device type (`discrete`, `integrated`, `cpu`, `virtual`, `other`).
    pub device_type: String,
    /// Where it was found.
    pub source: GpuSource,
}

/// What the scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareReport {
    /// OS name and version.
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU.
    pub cpu: CpuInfo,
    /// Total RAM.
    pub ram_total_bytes: u64,
    /// Available RAM.
    pub ram_available_bytes: u64,
    /// Free disk space where the home dir lives.
    pub disk_free_bytes: u64,
    /// GPUs from NVML, sysfs, sysctl and wgpu.
    pub gpus: Vec<GpuInfo>,
    /// NVIDIA driver version when NVML loaded.
    pub nvidia_driver: Option<String>,
    /// CUDA driver version (e.g. `12.4`) when NVML loaded.
    pub cuda_driver: Option<String>,
    /// Notes about probes that could not run (no NVML, no wgpu adapters...).
    pub notes: Vec<String>,
}

impl HardwareReport {
    /// A stable fingerprint of the hardware class (CPU model, core counts, RAM rounded to GiB,
    /// sorted GPU names and memory), lower-case hex sha256. Free memory and disk are left out.
    pub fn fingerprint(&self) -> String {
        let mut gpus: Vec<String> = self
            .gpus
            .iter()
            .filter(|g| g.source != GpuSource::Wgpu)
            .map(|g| format!("{}|{}|{}", g.vendor, g.name, g.vram_bytes >> 30))
            .collect();
        gpus.sort();
        let canon = format!(
            "b3iq-hw-v1\ncpu={}\narch={}\ncores={}/{}\nram_gib={}\ngpus={}\n",
            self.cpu.model,
            self.cpu.arch,
            self.cpu.physical_cores,
            self.cpu.logical_cores,
            (self.ram_total_bytes + (1 << 29)) >> 30,
            gpus.join(";")
        );
        hex::encode(Sha256::digest(canon.as_bytes()))
    }

    /// Largest dedicated VRAM among GPUs found by vendor probes (NVML/sysfs).
    pub fn max_vram_bytes(&self) -> u64 {
        self.gpus.iter().filter(|g| g.source != GpuSource::Wgpu).map(|g| g.vram_bytes).max().unwrap_or(0)
    }

    /// The memory band of this machine ([`MemoryBand::for_gpu_memory`]) by its largest GPU
    /// found by a vendor probe (NVML, AMD sysfs, Apple). wgpu adapters do not count: they carry
    /// no memory size and include software rasterizers (lavapipe). An Apple GPU shares the
    /// system memory, so its memory is the total RAM. No such GPU: `cpu`.
    pub fn memory_band(&self) -> MemoryBand {
        let memory = self
            .gpus
            .iter()
            .filter(|g| g.source != GpuSource::Wgpu)
            .map(|g| if g.source == GpuSource::Sysctl && g.vram_bytes == 0 { self.ram_total_bytes } else { g.vram_bytes })
            .max();
        MemoryBand::for_gpu_memory(memory)
    }
}

/// A memory band: how much GPU memory the machine has, in the coarse steps the host API
/// (`sku_band`) and the setup wizard show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct MemoryBand {
    /// Stable id: `cpu`, `gpu-lt8`, `gpu-8`, `gpu-12`, `gpu-16`, `gpu-24` or `gpu-48`.
    pub id: &'static str,
    /// Display label (`CPU only`, `GPU with 24 GiB`, ...).
    pub label: &'static str,
}

impl MemoryBand {
    /// No GPU.
    pub const CPU: MemoryBand = MemoryBand { id: "cpu", label: "CPU only" };
    /// Every band, smallest first.
    pub const ALL: [MemoryBand; 7] = [
        MemoryBand::CPU,
        MemoryBand { id: "gpu-lt8", label: "GPU with less than 8 GiB" },
        MemoryBand { id: "gpu-8", label: "GPU with 8 GiB" },
        MemoryBand { id: "gpu-12", label: "GPU with 12 GiB" },
        MemoryBand { id: "gpu-16", label: "GPU with 16 GiB" },
        MemoryBand { id: "gpu-24", label: "GPU with 24 GiB" },
        MemoryBand { id: "gpu-48", label: "GPU with 48 GiB or more" },
    ];

    /// The band of a machine whose largest GPU has `bytes` of memory (`None`: no GPU).
    ///
    /// The memory is counted in whole GiB **rounded to the nearest** GiB, then banded down:
    /// `gpu-48` from 48 GiB, `gpu-24` from 24, `gpu-16` from 16, `gpu-12` from 12, `gpu-8`
    /// from 8, `gpu-lt8` below. Rounding rather than truncating, because drivers report a little less than
    /// the size on the box (NVML: an RTX 4090 has 25,757,220,864 bytes = 23.99 GiB, an RTX 4080
    /// 15.99 GiB, an RTX A6000 47.99 GiB), and a "24 GiB" card belongs in `gpu-24`; the half-GiB
    /// tolerance this gives is far smaller than the gap between two bands.
    pub fn for_gpu_memory(bytes: Option<u64>) -> MemoryBand {
        let Some(bytes) = bytes else { return MemoryBand::CPU };
        let gib = bytes.saturating_add(1 << 29) >> 30;
        let at = match gib {
            48.. => 6,
            24..=47 => 5,
            16..=23 => 4,
            12..=15 => 3,
            8..=11 => 2,
            _ => 1,
        };
        MemoryBand::ALL[at]
    }
}

fn simd_features() -> Vec<String> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! f {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) { v.push($name.to_string()); }
            )*};
        }
        f!("sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16", "avxvnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! f {
            ($($name:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($name) { v.push($name.to_string()); }
            )*};
        }
        f!("neon", "dotprod", "fp16", "i8mm", "sve", "sve2", "bf16");
    }
    v
}

/// Free bytes on the filesystem holding `path` (walks up to an existing ancestor).
pub fn disk_free_bytes(path: &Path) -> u64 {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return 0;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return 0 };
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc == 0 {
            return (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        }
        0
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// What NVML answered for one device. [`gpu_from_nvml`] turns it into a [`GpuInfo`]; keeping
/// the answers as plain values makes that mapping testable with recorded values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NvmlDeviceRecord {
    /// `nvmlDeviceGetName`; `None` when the call failed.
    pub name: Option<String>,
    /// `nvmlDeviceGetMemoryInfo().total`, bytes; `None` when the call failed.
    pub memory_total_bytes: Option<u64>,
    /// `nvmlDeviceGetMemoryInfo().free`, bytes; `None` when the call failed.
    pub memory_free_bytes: Option<u64>,
}

/// What NVML answered for the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NvmlRecord {
    /// `nvmlSystemGetDriverVersion` (e.g. `550.54.14`).
    pub driver_version: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion`: major * 1000 + minor * 10 (e.g. `12040` for 12.4).
    pub cuda_driver_version: Option<i32>,
    /// One record per device index.
    pub devices: Vec<NvmlDeviceRecord>,
}

/// The CUDA driver version NVML reports as an integer (`12040`), as `major.minor` (`12.4`).
pub fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// An NVIDIA GPU as NVML described it. A failed name call gives `NVIDIA GPU`; a failed memory
/// call gives 0 bytes (memory unknown).
pub fn gpu_from_nvml(device: &NvmlDeviceRecord, driver_version: Option<&str>) -> GpuInfo {
    GpuInfo {
        vendor: "nvidia".into(),
        name: device.name.clone().unwrap_or_else(|| "NVIDIA GPU".into()),
        vram_bytes: device.memory_total_bytes.unwrap_or(0),
        vram_free_bytes: device.memory_free_bytes,
        driver: driver_version.unwrap_or_default().to_string(),
        api: "CUDA".into(),
        device_type: "discrete".into(),
        source: GpuSource::Nvml,
    }
}

/// Adds what NVML answered to a report: driver and CUDA versions, one GPU per device.
pub fn apply_nvml(report: &mut HardwareReport, record: &NvmlRecord) {
    report.nvidia_driver = record.driver_version.clone();
    report.cuda_driver = record.cuda_driver_version.map(cuda_version_string);
    for d in &record.devices {
        report.gpus.push(gpu_from_nvml(d, record.driver_version.as_deref()));
    }
}

/// Asks NVML (loaded at run time) about the machine; `Err` with NVML's message when the
/// library or driver is missing.
fn read_nvml() -> Result<NvmlRecord, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| e.to_string())?;
    let mut record = NvmlRecord {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_driver_version: nvml.sys_cuda_driver_version().ok(),
        devices: Vec::new(),
    };
    for i in 0..nvml.device_count().unwrap_or(0) {
        let Ok(d) = nvml.device_by_index(i) else { continue };
        let mem = d.memory_info().ok();
        record.devices.push(NvmlDeviceRecord {
            name: d.name().ok(),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            memory_free_bytes: mem.as_ref().map(|m| m.free),
        });
    }
    Ok(record)
}

fn nvml_gpus(report: &mut HardwareReport) {
    match read_nvml() {
        Ok(record) => apply_nvml(report, &record),
        Err(e) => report.notes.push(format!("NVML not available ({e}); no NVIDIA driver on this machine")),
    }
}

#[cfg(target_os = "linux")]
fn sysfs_gpus(report: &mut HardwareReport) {
    let Ok(dir) = std::fs::read_dir("/sys/class/drm") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("card") || name.contains('-') {
            continue;
        }
        let dev = e.path().join("device");
        let vendor = std::fs::read_to_string(dev.join("vendor")).unwrap_or_default().trim().to_string();
        if vendor != "0x1002" {
            continue; // NVIDIA comes from NVML; Intel/others through wgpu.
        }
        let read_u64 = |f: &str| std::fs::read_to_string(dev.join(f)).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let total = read_u64("mem_info_vram_total").unwrap_or(0);
        let used = read_u64("mem_info_vram_used");
        let product = std::fs::read_to_string(dev.join("product_name"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                format!("AMD GPU {}", std::fs::read_to_string(dev.join("device")).unwrap_or_default().trim())
            });
        report.gpus.push(GpuInfo {
            vendor: "amd".into(),
            name: product,
            vram_bytes: total,
            vram_free_bytes: used.map(|u| total.saturating_sub(u)),
            driver: std::fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_default(),
            api: "ROCm/Vulkan".into(),
            device_type: "discrete".into(),
            source: GpuSource::Sysfs,
        });
    }
}

#[cfg(target_os = "macos")]
fn apple_gpus(report: &mut HardwareReport) {
    if report.cpu.model.starts_with("Apple") {
        report.gpus.push(GpuInfo {
            vendor: "apple".into(),
            name: format!("{} GPU", report.cpu.model),
            vram_bytes: 0,
            vram_free_bytes: None,
            driver: String::new(),
            api: "Metal".into(),
            device_type: "integrated".into(),
            source: GpuSource::Sysctl,
        });
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_adapters(report: &mut HardwareReport) {
    // The backends the wgpu runtime can use (Vulkan, Metal, DX12), as `backend/wgpu/device.rs`
    // opens them: probing GL too would start EGL, whose display probes print to stderr on a
    // machine without one ("XDG_RUNTIME_DIR is invalid ..."), and a GL adapter serves nothing.
    let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..Default::default()
    });
    let adapters = instance.enumerate_adapters(wgpu::Backends::PRIMARY);
    if adapters.is_empty() {
        report.notes.push("wgpu found no adapters (no Vulkan/Metal/DX12 driver)".into());
    }
    for a in adapters {
        let i = a.get_info();
        let vendor = match i.vendor {
            0x10de => "nvidia".to_string(),
            0x1002 => "amd".to_string(),
            0x8086 => "intel".to_string(),
            0x106b => "apple".to_string(),
            0x10005 => "mesa".to_string(),
            v => format!("0x{v:04x}"),
        };
        report.gpus.push(GpuInfo {
            vendor,
            name: i.name.clone(),
            vram_bytes: 0,
            vram_free_bytes: None,
            driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
            api: format!("{:?}", i.backend),
            device_type: match i.device_type {
                wgpu::DeviceType::DiscreteGpu => "discrete",
                wgpu::DeviceType::IntegratedGpu => "integrated",
                wgpu::DeviceType::Cpu => "cpu",
                wgpu::DeviceType::VirtualGpu => "virtual",
                wgpu::DeviceType::Other => "other",
            }
            .into(),
            source: GpuSource::Wgpu,
        });
    }
}

/// Options of [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Enumerate wgpu adapters (can take a second while drivers load).
    pub wgpu: bool,
    /// Probe NVML.
    pub nvml: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self { wgpu: cfg!(feature = "wgpu"), nvml: true }
    }
}

/// Scans this machine. `home` is where free disk space is measured (the B3IQ home dir).
pub fn scan(home: &Path, opts: ScanOptions) -> HardwareReport {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_frequency())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpus = sys.cpus();
    let cpu = CpuInfo {
        model: cpus.first().map(|c| c.brand().trim().to_string()).unwrap_or_default(),
        vendor: cpus.first().map(|c| c.vendor_id().to_string()).unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        physical_cores: System::physical_core_count().unwrap_or(0) as u32,
        logical_cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(cpus.len() as u32),
        simd: simd_features(),
    };
    let mut report = HardwareReport {
        os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_string()),
        kernel: System::kernel_version().unwrap_or_default(),
        cpu,
        ram_total_bytes: sys.total_memory(),
        ram_available_bytes: sys.available_memory(),
        disk_free_bytes: disk_free_bytes(home),
        gpus: Vec::new(),
        nvidia_driver: None,
        cuda_driver: None,
        notes: Vec::new(),
    };
    if opts.nvml {
        nvml_gpus(&mut report);
    }
    #[cfg(target_os = "linux")]
    sysfs_gpus(&mut report);
    #[cfg(target_os = "macos")]
    apple_gpus(&mut report);
    if opts.wgpu {
        #[cfg(feature = "wgpu")]
        wgpu_adapters(&mut report);
        #[cfg(not(feature = "wgpu"))]
        report.notes.push("built without the `wgpu` feature; adapters not listed".into());
    }
    report
}

/// The backend [`choose_backend`] picks, and why (one sentence for the log and the wizard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendChoice {
    /// The backend to start.
    pub kind: crate::BackendKind,
    /// Why, e.g. "Intel Arc A770 (Vulkan, discrete) and a CPU-only llama.cpp build".
    pub reason: String,
}

/// Picks the inference backend for `config.json`'s `"backend": "auto"` (the default).
///
/// * llama.cpp when its build can offload to a GPU (`llama_gpu_offload`, from
///   [`crate::backend::llama::supports_gpu_offload`]): CUDA, Metal or Vulkan builds serve
///   their GPU best.
/// * the wgpu backend when llama.cpp is CPU-only and wgpu lists a real GPU (discrete or
///   integrated, not a CPU or virtual adapter such as Mesa's lavapipe) that is not NVIDIA's:
///   AMD, Intel, Apple or others without a llama.cpp GPU build (issue "wgpu fallback backend";
///   NVIDIA GPUs are served by a CUDA build of llama.cpp).
/// * llama.cpp on the CPU otherwise.
///
/// `wgpu_built` is whether the wgpu backend is compiled in (b3iq-runtime's `wgpu-backend`).
pub fn choose_backend(hw: &HardwareReport, llama_gpu_offload: bool, wgpu_built: bool) -> BackendChoice {
    use crate::BackendKind;
    if llama_gpu_offload {
        return BackendChoice {
            kind: BackendKind::LlamaCpp,
            reason: "llama.cpp is built with GPU offload".into(),
        };
    }
    let gpu = hw.gpus.iter().find(|g| {
        g.source == GpuSource::Wgpu
            && matches!(g.device_type.as_str(), "discrete" | "integrated")
            && g.vendor != "nvidia"
    });
    match gpu {
        Some(g) if wgpu_built => BackendChoice {
            kind: BackendKind::Wgpu,
            reason: format!(
                "{} ({}, {}) and a CPU-only llama.cpp build",
                g.name, g.api, g.device_type
            ),
        },
        Some(g) => BackendChoice {
            kind: BackendKind::LlamaCpp,
            reason: format!(
                "{} found, but this build has no wgpu backend: llama.cpp on the CPU",
                g.name
            ),
        },
        None => BackendChoice {
            kind: BackendKind::LlamaCpp,
            reason: "no GPU the wgpu backend should use: llama.cpp on the CPU".into(),
        },
    }
}

/// A cheap hint, without loading any GPU driver, that this machine may have a GPU other
/// than NVIDIA's: on Linux a `/sys/class/drm/card*` whose PCI vendor is AMD (0x1002) or
/// Intel (0x8086); on macOS an Apple silicon CPU. When false, [`choose_backend`] would pick
/// llama.cpp anyway, so the wgpu adapter scan (up to a second) can be skipped.
pub fn non_nvidia_gpu_hint() -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(dir) = std::fs::read_dir("/sys/class/drm") else { return false };
        dir.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("card")
                && !name.contains('-')
                && matches!(
                    std::fs::read_to_string(e.path().join("device/vendor"))
                        .unwrap_or_default()
                        .trim(),
                    "0x1002" | "0x8086"
                )
        })
    }
    #[cfg(target_os = "macos")]
    {
        cfg!(target_arch = "aarch64")
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        true
    }
}

/// Where a model would run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitTarget {
    /// Fully offloaded to a GPU.
    Gpu,
    /// On the CPU from RAM.
    Cpu,
    /// Does not fit.
    None,
}

/// Result of [`fit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitReport {
    /// The profile.
    pub profile: String,
    /// Where it would run.
    pub target: FitTarget,
    /// Whether it can run at all.
    pub fits: bool,
    /// Whether it meets the recommended memory (room for several sequences).
    pub comfortable: bool,
    /// Memory left after the model's needs (RAM or VRAM, by target), negative when short.
    pub headroom_bytes: i64,
    /// Whether there is disk space to install it (unless already installed).
    pub disk_ok: bool,
    /// Human-readable explanation.
    pub reason: String,
}

/// Fraction of memory kept free for the OS and other processes.
const RESERVE_FRACTION: f64 = 0.15;

/// Can `profile` run on this hardware, and with what headroom? GPU first (VRAM with a 15%
/// reserve), else CPU (available RAM with a 15% reserve of total RAM).
pub fn fit(profile: &ModelProfile, hw: &HardwareReport, installed: bool) -> FitReport {
    let disk_ok = installed || hw.disk_free_bytes > profile.size_bytes.saturating_add(profile.size_bytes / 10);
    let vram = hw.max_vram_bytes();
    let vram_usable = (vram as f64 * (1.0 - RESERVE_FRACTION)) as i64;
    if vram > 0 && vram_usable >= profile.min_vram_bytes as i64 {
        let headroom = vram_usable - profile.min_vram_bytes as i64;
        return FitReport {
            profile: profile.id.clone(),
            target: FitTarget::Gpu,
            fits: true,
            comfortable: headroom >= (profile.min_vram_bytes / 2) as i64,
            headroom_bytes: headroom,
            disk_ok,
            reason: format!("fits in GPU memory with {} MiB to spare", headroom >> 20),
        };
    }
    let reserve = (hw.ram_total_bytes as f64 * RESERVE_FRACTION) as i64;
    let usable = hw.ram_available_bytes as i64 - reserve;
    let headroom = usable - profile.min_ram_bytes as i64;
    let fits = headroom >= 0;
    FitReport {
        profile: profile.id.clone(),
        target: if fits { FitTarget::Cpu } else { FitTarget::None },
        fits,
        comfortable: usable >= profile.recommended_ram_bytes as i64,
        headroom_bytes: headroom,
        disk_ok,
        reason: if fits {
            format!("runs on the CPU with {} MiB of RAM to spare", headroom >> 20)
        } else {
            format!(
                "needs {} MiB of RAM but only {} MiB are usable; close other programs or pick a smaller profile",
                profile.min_ram_bytes >> 20,
                usable.max(0) >> 20
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded NVML answers (driver 550.54.14, CUDA 12.4).
    const RTX_4090_TOTAL: u64 = 25_757_220_864;
    const RTX_3060_TOTAL: u64 = 12_884_901_888;

    fn bare_report() -> HardwareReport {
        HardwareReport {
            os: "Linux".into(),
            kernel: "6.1".into(),
            cpu: CpuInfo {
                model: "AMD Ryzen 9 7950X".into(),
                vendor: "AuthenticAMD".into(),
                arch: "x86_64".into(),
                physical_cores: 16,
                logical_cores: 32,
                simd: vec!["avx2".into()],
            },
            ram_total_bytes: 64 << 30,
            ram_available_bytes: 60 << 30,
            disk_free_bytes: 500 << 30,
            gpus: Vec::new(),
            nvidia_driver: None,
            cuda_driver: None,
            notes: Vec::new(),
        }
    }

    fn nvml(devices: &[(&str, u64)]) -> NvmlRecord {
        NvmlRecord {
            driver_version: Some("550.54.14".into()),
            cuda_driver_version: Some(12040),
            devices: devices
                .iter()
                .map(|(name, total)| NvmlDeviceRecord {
                    name: Some(name.to_string()),
                    memory_total_bytes: Some(*total),
                    memory_free_bytes: Some(total - (1 << 30)),
                })
                .collect(),
        }
    }

    #[test]
    fn recorded_nvml_answers_become_gpus_with_their_memory() {
        let mut r = bare_report();
        apply_nvml(&mut r, &nvml(&[("NVIDIA GeForce RTX 4090", RTX_4090_TOTAL)]));
        assert_eq!(r.nvidia_driver.as_deref(), Some("550.54.14"));
        assert_eq!(r.cuda_driver.as_deref(), Some("12.4"));
        assert_eq!(r.gpus.len(), 1);
        let g = &r.gpus[0];
        assert_eq!(g.name, "NVIDIA GeForce RTX 4090");
        assert_eq!(g.vendor, "nvidia");
        assert_eq!(g.vram_bytes, RTX_4090_TOTAL);
        assert_eq!(g.vram_free_bytes, Some(RTX_4090_TOTAL - (1 << 30)));
        assert_eq!(g.driver, "550.54.14");
        assert_eq!(g.source, GpuSource::Nvml);
        assert_eq!(r.max_vram_bytes(), RTX_4090_TOTAL);
        // Failed calls: a generic name, unknown memory.
        let g = gpu_from_nvml(&NvmlDeviceRecord::default(), None);
        assert_eq!((g.name.as_str(), g.vram_bytes, g.vram_free_bytes), ("NVIDIA GPU", 0, None));
        assert_eq!(cuda_version_string(11080), "11.8");
    }

    #[test]
    fn a_24_gib_card_reporting_23_99_gib_lands_in_gpu_24() {
        let mut r = bare_report();
        apply_nvml(&mut r, &nvml(&[("NVIDIA GeForce RTX 4090", RTX_4090_TOTAL)]));
        // Truncating would say 23 GiB and put it a band lower.
        assert_eq!(RTX_4090_TOTAL >> 30, 23);
        let band = r.memory_band();
        assert_eq!(band, MemoryBand { id: "gpu-24", label: "GPU with 24 GiB" });
        assert_ne!(band, MemoryBand::ALL[1], "not the smallest GPU band");

        let mut r = bare_report();
        apply_nvml(&mut r, &nvml(&[("NVIDIA GeForce RTX 3060", RTX_3060_TOTAL)]));
        assert_eq!(r.memory_band(), MemoryBand { id: "gpu-12", label: "GPU with 12 GiB" });

        // The largest GPU decides.
        let mut r = bare_report();
        apply_nvml(&mut r, &nvml(&[("NVIDIA GeForce RTX 3060", RTX_3060_TOTAL), ("NVIDIA GeForce RTX 4090", RTX_4090_TOTAL)]));
        assert_eq!(r.memory_band().id, "gpu-24");
    }

    #[test]
    fn bands_follow_the_documented_steps() {
        let gib = |g: u64| Some(g << 30);
        assert_eq!(MemoryBand::for_gpu_memory(None), MemoryBand { id: "cpu", label: "CPU only" });
        let cases = [
            (0, "gpu-lt8"),
            (6, "gpu-lt8"),
            (8, "gpu-8"),
            (11, "gpu-8"),
            (12, "gpu-12"),
            (16, "gpu-16"),
            (23, "gpu-16"),
            (24, "gpu-24"),
            (47, "gpu-24"),
            (48, "gpu-48"),
            (80, "gpu-48"),
        ];
        for (g, id) in cases {
            assert_eq!(MemoryBand::for_gpu_memory(gib(g)).id, id, "{g} GiB");
        }
        // Half a GiB short still rounds up; more than that does not.
        assert_eq!(MemoryBand::for_gpu_memory(Some((8 << 30) - (1 << 29))).id, "gpu-8");
        assert_eq!(MemoryBand::for_gpu_memory(Some((8 << 30) - (1 << 29) - 1)).id, "gpu-lt8");
        let labels: Vec<&str> = MemoryBand::ALL.iter().map(|b| b.label).collect();
        assert_eq!(
            labels,
            [
                "CPU only",
                "GPU with less than 8 GiB",
                "GPU with 8 GiB",
                "GPU with 12 GiB",
                "GPU with 16 GiB",
                "GPU with 24 GiB",
                "GPU with 48 GiB or more"
            ]
        );
        assert_eq!(serde_json::to_value(MemoryBand::CPU).unwrap(), serde_json::json!({"id": "cpu", "label": "CPU only"}));
    }

    #[test]
    fn wgpu_adapters_do_not_make_a_gpu_band_and_apple_counts_its_shared_memory() {
        let mut r = bare_report();
        r.gpus.push(GpuInfo {
            vendor: "mesa".into(),
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            vram_bytes: 0,
            vram_free_bytes: None,
            driver: "llvmpipe".into(),
            api: "Vulkan".into(),
            device_type: "cpu".into(),
            source: GpuSource::Wgpu,
        });
        assert_eq!(r.memory_band(), MemoryBand::CPU);
        r.gpus.push(GpuInfo {
            vendor: "apple".into(),
            name: "Apple M2 Max GPU".into(),
            vram_bytes: 0,
            vram_free_bytes: None,
            driver: String::new(),
            api: "Metal".into(),
            device_type: "integrated".into(),
            source: GpuSource::Sysctl,
        });
        r.ram_total_bytes = 32 << 30;
        assert_eq!(r.memory_band().id, "gpu-24");
    }

    #[test]
    fn auto_backend_picks_wgpu_only_for_a_real_non_nvidia_gpu_without_a_llama_gpu_build() {
        use crate::BackendKind;
        let adapter = |vendor: &str, name: &str, ty: &str| GpuInfo {
            vendor: vendor.into(),
            name: name.into(),
            vram_bytes: 0,
            vram_free_bytes: None,
            driver: String::new(),
            api: "Vulkan".into(),
            device_type: ty.into(),
            source: GpuSource::Wgpu,
        };
        let mut r = bare_report();
        // No GPU at all, or only lavapipe (a CPU adapter): llama.cpp on the CPU.
        assert_eq!(choose_backend(&r, false, true).kind, BackendKind::LlamaCpp);
        r.gpus.push(adapter("mesa", "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu"));
        assert_eq!(choose_backend(&r, false, true).kind, BackendKind::LlamaCpp);
        // A virtual adapter or an NVIDIA card does not switch either.
        r.gpus.push(adapter("0x1af4", "virtio-gpu", "virtual"));
        r.gpus.push(adapter("nvidia", "NVIDIA GeForce RTX 4090", "discrete"));
        assert_eq!(choose_backend(&r, false, true).kind, BackendKind::LlamaCpp);
        // An Intel GPU with a CPU-only llama.cpp: wgpu, and the reason names it.
        r.gpus.push(adapter("intel", "Intel(R) Arc(tm) A770 Graphics", "discrete"));
        let c = choose_backend(&r, false, true);
        assert_eq!(c.kind, BackendKind::Wgpu);
        assert!(c.reason.contains("Arc(tm) A770"), "{}", c.reason);
        // A llama.cpp GPU build keeps llama.cpp; a build without wgpu cannot pick it.
        assert_eq!(choose_backend(&r, true, true).kind, BackendKind::LlamaCpp);
        let c = choose_backend(&r, false, false);
        assert_eq!(c.kind, BackendKind::LlamaCpp);
        assert!(c.reason.contains("no wgpu backend"), "{}", c.reason);
        // Only wgpu's own adapter list counts (sysfs and sysctl entries cannot be checked for
        // a usable Vulkan/Metal device).
        let mut r = bare_report();
        let mut amd = adapter("amd", "AMD Radeon RX 7900", "discrete");
        amd.source = GpuSource::Sysfs;
        r.gpus.push(amd.clone());
        assert_eq!(choose_backend(&r, false, true).kind, BackendKind::LlamaCpp);
        amd.source = GpuSource::Wgpu;
        r.gpus.push(amd);
        assert_eq!(choose_backend(&r, false, true).kind, BackendKind::Wgpu);
    }
}
