//! Hardware scan and model fit check.
//!
//! [`scan`] reports the CPU (model, cores, SIMD features), RAM, free disk at the home dir, the
//! OS, and GPUs: NVIDIA through NVML (loaded at run time, so machines without the driver work),
//! AMD through sysfs on Linux, Apple silicon through `sysctl` on macOS, and every adapter wgpu
//! can see (Vulkan/Metal/DX12/GL, behind the `wgpu` feature; mesa's lavapipe shows up as a CPU
//! adapter). [`fit`] says whether a model profile can run here and with what headroom.

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

fn nvml_gpus(report: &mut HardwareReport) {
    match nvml_wrapper::Nvml::init() {
        Ok(nvml) => {
            report.nvidia_driver = nvml.sys_driver_version().ok();
            report.cuda_driver = nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
            let n = nvml.device_count().unwrap_or(0);
            for i in 0..n {
                let Ok(d) = nvml.device_by_index(i) else { continue };
                let mem = d.memory_info().ok();
                report.gpus.push(GpuInfo {
                    vendor: "nvidia".into(),
                    name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    vram_bytes: mem.as_ref().map(|m| m.total).unwrap_or(0),
                    vram_free_bytes: mem.as_ref().map(|m| m.free),
                    driver: report.nvidia_driver.clone().unwrap_or_default(),
                    api: "CUDA".into(),
                    device_type: "discrete".into(),
                    source: GpuSource::Nvml,
                });
            }
        }
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
    let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..Default::default()
    });
    let adapters = instance.enumerate_adapters(wgpu::Backends::all());
    if adapters.is_empty() {
        report.notes.push("wgpu found no adapters (no Vulkan/Metal/DX12/GL driver)".into());
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
