//! Audit log reads and the redacted support bundle (`.tar.gz`).
//!
//! The bundle holds ids, counts, versions, hardware and metrics. It never holds keys, tokens,
//! hashes, passwords, prompts, outputs or home-directory paths: it is built from an allowlist of
//! fields, and a final scrub replaces anything that looks like a credential or a path under the
//! home directory (a test checks both).

use serde_json::{json, Value};

use crate::context::{Context, NodeState};
use crate::error::{HostError, Result};
use crate::store::audit;

/// Replace credentials and home paths in text.
pub fn scrub(text: &str, home: &str) -> String {
    let mut out = if home.len() > 1 {
        text.replace(home, "$B3IQ_HOME")
    } else {
        text.to_string()
    };
    for prefix in [
        "b3iq_local_",
        "b3iq_support_",
        "b3iq_setup_",
        "b3iq_gateway_",
    ] {
        let mut res = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(prefix) {
            res.push_str(&rest[..i]);
            res.push_str(prefix);
            res.push_str("[REDACTED]");
            let after = &rest[i + prefix.len()..];
            let n = after
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(after.len());
            rest = &after[n..];
        }
        res.push_str(rest);
        out = res;
    }
    out
}

/// Build the bundle. Blocking (reads state.db).
pub fn build_bundle(st: &NodeState) -> Result<Vec<u8>> {
    let now = st.now();
    let cfg = &st.config;
    let config = json!({
        "version": cfg.version, "listen": cfg.listen, "allowed_hosts_count": cfg.allowed_hosts.len(),
        "model": cfg.model.as_ref().map(|m| if m.contains('/') { "<path>".to_string() } else { m.clone() }),
        "setup_token_ttl_s": cfg.setup_token_ttl_s, "session_ttl_s": cfg.session_ttl_s, "parallel": cfg.parallel,
        "max_queue": cfg.max_queue, "threads": cfg.threads, "context_tokens": cfg.context_tokens,
        "backend": cfg.backend, "prompt_cache": cfg.prompt_cache,
        "kv_unified": cfg.kv_unified, "kv_cells": cfg.kv_cells,
    });
    let node = json!({
        "node_id": st.node_id.to_text(), "node_code": st.node_code(), "version": env!("CARGO_PKG_VERSION"),
        "mode": st.mode().as_str(), "claimed": st.claimed()?, "uptime_s": st.started.elapsed().as_secs(),
        // The address bound: this server's, or for an offline bundle a running daemon's.
        "listen": match st.listen.get() { Some(a) => Some(a.to_string()), None => st.running_listen()?.map(|a| a.to_string()) },
        "os": std::env::consts::OS, "arch": std::env::consts::ARCH,
        "models": st.served_models().iter().map(|m| json!({"id": m.id, "sha256": m.info.sha256, "size_bytes": m.info.size_bytes, "backend": m.info.backend.as_str(), "context_length": m.info.context_length})).collect::<Vec<_>>(),
        "runtime": st.runtime.as_ref().map(|r| { let b = r.backend_info(); json!({"name": b.name, "threads": b.threads, "metrics": r.metrics()}) }),
    });
    let mut counts = serde_json::Map::new();
    for t in [
        "users",
        "sessions",
        "api_keys",
        "support_grants",
        "receipts",
        "usage",
        "audit_events",
        "jobs",
        "job_seen",
        "trust_roots",
    ] {
        counts.insert(t.to_string(), json!(st.db.count(t)?));
    }
    counts.insert("schema_version".into(), json!(st.db.schema_version()?));
    counts.insert("integrity_check".into(), json!(st.db.integrity_check()?));
    let audit: Vec<Value> = audit::recent(&st.db, 200)?
        .into_iter()
        .map(|e| json!({"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "outcome": e.outcome}))
        .collect();
    let metrics = st.metrics.render(
        st.runtime.as_ref().map(|r| r.metrics()),
        st.db.count("receipts")?,
    );
    let files: Vec<(&str, String)> = vec![
        (
            "manifest.json",
            pretty(
                &json!({"format": "b3iq-support-bundle/v1", "created_at": now, "files": ["node.json", "hardware.json", "config.json", "counts.json", "audit.json", "metrics.txt"], "redacted": true}),
            ),
        ),
        ("node.json", pretty(&node)),
        (
            "hardware.json",
            pretty(&crate::models::hardware_json(st.hardware())),
        ),
        ("config.json", pretty(&config)),
        ("counts.json", pretty(&Value::Object(counts))),
        ("audit.json", pretty(&json!(audit))),
        ("metrics.txt", metrics),
    ];
    let home = st.home.root().to_string_lossy().to_string();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in files {
        let body = scrub(&body, &home);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(now);
        h.set_cksum();
        tar.append_data(&mut h, format!("b3iq-support/{name}"), body.as_bytes())
            .map_err(|e| HostError::Internal(format!("bundle: {e}")))?;
    }
    let gz = tar
        .into_inner()
        .map_err(|e| HostError::Internal(format!("bundle: {e}")))?;
    gz.finish()
        .map_err(|e| HostError::Internal(format!("bundle: {e}")))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// Most bytes [`read_bundle`] decompresses (bundles are a few KiB; this stops gzip bombs).
pub const MAX_BUNDLE_TEXT: u64 = 16 * 1024 * 1024;

/// Read a bundle back into `(name, text)` pairs (tests and `b3iqd support-bundle --list`).
/// Bundles are outside bytes: anything that is not a gzip'd tar of UTF-8 files, or that
/// unpacks to more than [`MAX_BUNDLE_TEXT`], is an `InvalidParameter` error.
pub fn read_bundle(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    use std::io::Read;
    let bad = |e: &dyn std::fmt::Display| {
        HostError::InvalidParameter(format!("not a support bundle: {e}"))
    };
    let gz = flate2::read::GzDecoder::new(bytes).take(MAX_BUNDLE_TEXT + 1024 * 1024);
    let mut ar = tar::Archive::new(gz);
    let mut out = Vec::new();
    let mut left = MAX_BUNDLE_TEXT;
    for e in ar.entries().map_err(|e| bad(&e))? {
        let e = e.map_err(|e| bad(&e))?;
        let name = e
            .path()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut buf = Vec::new();
        e.take(left + 1)
            .read_to_end(&mut buf)
            .map_err(|e| bad(&e))?;
        if buf.len() as u64 > left {
            return Err(bad(&format!(
                "it unpacks to more than {MAX_BUNDLE_TEXT} bytes"
            )));
        }
        left -= buf.len() as u64;
        let text = String::from_utf8(buf).map_err(|_| bad(&format!("{name} is not UTF-8 text")))?;
        out.push((name, text));
    }
    Ok(out)
}

/// Build the bundle from a home without a running server (`b3iqd support-bundle`).
///
/// # Errors
/// As [`build_bundle`].
pub fn build_offline_bundle(ctx: Context) -> Result<Vec<u8>> {
    build_bundle(&NodeState::new(ctx, None, Vec::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_credentials_and_home() {
        let s = scrub(
            "key b3iq_local_abcDEF123456 at /root/.b3iq/state.db, b3iq_support_X9.",
            "/root/.b3iq",
        );
        assert_eq!(
            s,
            "key b3iq_local_[REDACTED] at $B3IQ_HOME/state.db, b3iq_support_[REDACTED]."
        );
    }
}
