//! Hardware summary for the wizard (CPU, memory, GPUs), the SKU band and model fit per profile.

use b3iq_runtime::catalog::Catalog;
use serde_json::{json, Value};

/// Scan the machine once: `{"cpu_model", "cpu_cores", "memory_total_bytes", "gpus": [...]}`.
pub fn summary() -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    json!({"cpu_model": cpu_model, "cpu_cores": cores, "memory_total_bytes": mem, "gpus": gpus()})
}

/// NVIDIA GPUs as the driver reports them in /proc (no library load); empty elsewhere.
fn gpus() -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        for e in rd.flatten() {
            if let Ok(info) = std::fs::read_to_string(e.path().join("information")) {
                let name = info
                    .lines()
                    .find(|l| l.starts_with("Model:"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_else(|| "NVIDIA GPU".into());
                out.push(json!({"name": name, "memory_bytes": null}));
            }
        }
    }
    out
}

/// The SKU band: the largest GPU memory, rounded down to a band; `cpu` without a GPU.
pub fn sku_band(hw: &Value) -> Value {
    let vram = hw["gpus"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["memory_bytes"].as_u64()).max().unwrap_or(0))
        .unwrap_or(0);
    let has_gpu = hw["gpus"].as_array().is_some_and(|g| !g.is_empty());
    let gib = vram >> 30;
    let (id, label) = if !has_gpu {
        ("cpu", "CPU only")
    } else if gib >= 48 {
        ("gpu-48", "GPU with 48 GiB or more")
    } else if gib >= 24 {
        ("gpu-24", "GPU with 24 GiB")
    } else if gib >= 16 {
        ("gpu-16", "GPU with 16 GiB")
    } else if gib >= 12 {
        ("gpu-12", "GPU with 12 GiB")
    } else if gib >= 8 {
        ("gpu-8", "GPU with 8 GiB")
    } else {
        ("gpu-lt8", "GPU with less than 8 GiB")
    };
    json!({"id": id, "label": label})
}

/// Whether each catalog profile fits this machine's memory.
pub fn fits(hw: &Value) -> Vec<Value> {
    let mem = hw["memory_total_bytes"].as_u64().unwrap_or(0);
    Catalog::builtin()
        .profiles
        .iter()
        .map(|p| {
            let ok = mem >= p.min_ram_bytes;
            let reason = if mem >= p.recommended_ram_bytes {
                "fits in system memory"
            } else if ok {
                "fits, with little room for parallel requests"
            } else {
                "needs more system memory than this machine has"
            };
            json!({"profile": p.id, "fits": ok, "required_memory_bytes": p.min_ram_bytes, "recommended_memory_bytes": p.recommended_ram_bytes, "reason": reason})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_the_documented_fields() {
        let s = summary();
        assert!(s["cpu_cores"].as_u64().unwrap() >= 1);
        assert!(s["memory_total_bytes"].as_u64().unwrap() > 0);
        assert!(s["gpus"].is_array());
        assert!(!fits(&s).is_empty());
    }

    #[test]
    fn bands() {
        assert_eq!(sku_band(&json!({"gpus": []}))["id"], "cpu");
        assert_eq!(sku_band(&json!({"gpus": [{"memory_bytes": 24u64 << 30}]}))["id"], "gpu-24");
        assert_eq!(sku_band(&json!({"gpus": [{"memory_bytes": 6u64 << 30}]}))["id"], "gpu-lt8");
    }
}
