//! What the owner sees of models and hardware: the catalog view for `/api/models` and
//! `b3iqd model list`, GGUF inspection, and the hardware view for `/api/hardware` (shapes in
//! docs/api.md), all computed by b3iq-runtime (the scan, the memory band, the fit check).

use std::path::Path;

use b3iq_runtime::catalog::{Catalog, DEFAULT_PROFILE};
use b3iq_runtime::hardware::HardwareReport;
use b3iq_runtime::store::InstalledModel;
use serde_json::{json, Value};

use crate::context::runtime::model_store;
use crate::context::NodeState;
use crate::error::{HostError, Result};

/// The hardware summary of docs/api.md: `{"cpu_model", "cpu_cores", "memory_total_bytes",
/// "gpus": [{"name", "vendor", "memory_bytes", "driver", "backend"}]}` (GPUs from vendor probes;
/// wgpu adapters listed only when no vendor probe found one).
pub fn hardware_json(hw: &HardwareReport) -> Value {
    use b3iq_runtime::hardware::GpuSource;
    let vendor_probed = hw.gpus.iter().any(|g| g.source != GpuSource::Wgpu);
    let gpus: Vec<Value> = hw
        .gpus
        .iter()
        .filter(|g| !vendor_probed || g.source != GpuSource::Wgpu)
        .filter(|g| g.device_type != "cpu")
        .map(|g| {
            json!({"name": g.name, "vendor": g.vendor, "memory_bytes": (g.vram_bytes > 0).then_some(g.vram_bytes),
                   "driver": (!g.driver.is_empty()).then(|| g.driver.clone()), "backend": (!g.api.is_empty()).then(|| g.api.clone())})
        })
        .collect();
    let cores = if hw.cpu.logical_cores > 0 {
        hw.cpu.logical_cores
    } else {
        hw.cpu.physical_cores
    };
    json!({"cpu_model": hw.cpu.model, "cpu_cores": cores, "memory_total_bytes": hw.ram_total_bytes, "gpus": gpus})
}

/// `/api/hardware` and `b3iqd hardware`: `{"hardware", "sku_band": {"id", "label"}, "fits": [...]}`
/// where each fit is `{"profile", "fits", "target", "comfortable", "required_memory_bytes",
/// "recommended_memory_bytes", "reason"}`.
pub fn hardware_view(hw: &HardwareReport, installed: &[InstalledModel]) -> Value {
    let band = hw.memory_band();
    let fits: Vec<Value> = Catalog::builtin()
        .profiles
        .iter()
        .map(|p| {
            let f = b3iq_runtime::hardware::fit(p, hw, installed.iter().any(|m| m.sha256 == p.sha256));
            json!({"profile": p.id, "fits": f.fits, "target": f.target, "comfortable": f.comfortable,
                   "required_memory_bytes": p.min_ram_bytes, "recommended_memory_bytes": p.recommended_ram_bytes, "reason": f.reason})
        })
        .collect();
    json!({"hardware": hardware_json(hw), "sku_band": {"id": band.id, "label": band.label}, "fits": fits})
}

/// The models installed in the node's store (empty when the store cannot be read).
pub fn installed(st: &NodeState) -> Vec<InstalledModel> {
    model_store(&st.home)
        .and_then(|s| Ok(s.list()?))
        .unwrap_or_default()
}

/// `/api/models`: the catalog with installed/loaded/fits flags.
pub fn catalog_json(st: &NodeState) -> Value {
    let installed = installed(st);
    let served = st.served_models();
    let hw = st.hardware();
    let profiles: Vec<Value> = Catalog::builtin()
        .profiles
        .iter()
        .map(|p| {
            let inst = installed.iter().any(|m| m.sha256 == p.sha256);
            let loaded = served.iter().any(|m| m.info.sha256 == p.sha256 || m.profile.as_deref() == Some(p.id.as_str()));
            json!({
                "id": p.id, "name": p.name, "family": p.family, "parameters": p.parameters,
                "quantization": p.quantization, "size_bytes": p.size_bytes, "sha256": p.sha256,
                "license": p.license, "context_length": p.context_length,
                "installed": inst, "loaded": loaded, "fits": b3iq_runtime::hardware::fit(p, hw, inst).fits,
                "default": p.id == DEFAULT_PROFILE,
            })
        })
        .collect();
    let cells = crate::context::loaded::kv_cells(&st.config);
    let served_json: Vec<Value> = served
        .iter()
        .map(|m| {
            let resident = b3iq_runtime::gguf::GgufInfo::read_path(&m.info.path)
                .map(|h| crate::context::loaded::resident_estimate(&h, cells))
                .unwrap_or(m.info.size_bytes);
            json!({"id": m.id, "profile": m.profile, "sha256": m.info.sha256, "size_bytes": m.info.size_bytes,
                   "resident_bytes_estimate": resident, "in_flight": st.model_uses.in_flight(&m.id),
                   "last_used_ms": st.model_uses.last_used_ms(&m.id)})
        })
        .collect();
    let installed_json: Vec<Value> = installed
        .iter()
        .map(|m| json!({"id": crate::context::loaded::served_id(m), "sha256": m.sha256, "size_bytes": m.size_bytes, "profile": m.profile, "file_name": m.file_name, "installed_at": m.installed_at}))
        .collect();
    json!({"profiles": profiles, "installed": installed_json, "loaded": served.first().map(|m| m.id.clone()),
           "served": served_json, "max_loaded_models": st.config.max_loaded_models,
           "memory_budget_bytes": st.model_memory_budget()})
}

/// The built-in catalog as JSON (for `b3iqd model list`).
pub fn catalog_profiles() -> Vec<Value> {
    Catalog::builtin()
        .profiles
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "size_bytes": p.size_bytes, "sha256": p.sha256, "license": p.license, "default": p.id == DEFAULT_PROFILE}))
        .collect()
}

/// Inspect a GGUF file's header (bounded, hostile-input-safe parser from b3iq-runtime).
pub fn inspect_file(path: &Path) -> Result<Value> {
    let info = b3iq_runtime::gguf::GgufInfo::read_path(path)
        .map_err(|e| HostError::InvalidParameter(format!("not a valid GGUF file: {e}")))?;
    serde_json::to_value(&info).map_err(|e| HostError::Internal(e.to_string()))
}
