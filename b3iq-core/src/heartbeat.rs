//! Signed heartbeats: a managed node's periodic health report to its control plane.
//!
//! Public by design: ids, statuses, counts and digests only (no prompts, keys, URLs or paths).
//!
//! Two versions are decoded side by side (`docs/formats.md` §3.4): version 1 (the fields up to
//! the model inventory) and version 2, which adds the sender's software version
//! ([`Heartbeat::software_version`]). A heartbeat is written as version 2 when it carries one.

use crate::codec::{Canonical, Reader, Writer};
use crate::digest::Sha256Digest;
use crate::error::{CoreError, Result};
use crate::identity::NodeId;
use crate::mode::OperatingMode;
use crate::signed::{Kind, Signed, SignedKind};
use crate::version::{SoftwareVersion, MAX_VERSION_LEN};

/// Maximum number of model digests in one heartbeat.
pub const MAX_INVENTORY: u32 = 256;

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Starting up, not serving yet. Tag 0.
    Starting,
    /// Serving normally. Tag 1.
    Healthy,
    /// Serving with problems (slow, low memory, a backend down). Tag 2.
    Degraded,
    /// Not serving. Tag 3.
    Unhealthy,
}

impl HealthStatus {
    const ALL: [HealthStatus; 4] = [HealthStatus::Starting, HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Unhealthy];
    /// Wire tag.
    pub fn tag(self) -> u8 {
        match self {
            HealthStatus::Starting => 0,
            HealthStatus::Healthy => 1,
            HealthStatus::Degraded => 2,
            HealthStatus::Unhealthy => 3,
        }
    }
}

impl Canonical for HealthStatus {
    const NAME: &'static str = "health status";
    fn encode_to(&self, w: &mut Writer) {
        w.u8(self.tag());
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let tag = r.u8("health")?;
        HealthStatus::ALL.into_iter().find(|h| h.tag() == tag).ok_or(CoreError::InvalidTag { field: "health", tag })
    }
}

/// Counters reported in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatCounts {
    /// Requests running now.
    pub active_requests: u32,
    /// Requests waiting in the queue.
    pub queued_requests: u32,
    /// Requests completed since start.
    pub completed_requests: u64,
    /// Requests failed since start.
    pub failed_requests: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Seconds since the host started.
    pub uptime_s: u64,
}

/// A heartbeat (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Sending node.
    pub node_id: NodeId,
    /// Send time, unix ms.
    pub sent_at_ms: u64,
    /// Per-node sequence number (increasing), so a control plane can drop replays.
    pub sequence: u64,
    /// Current operating mode.
    pub mode: OperatingMode,
    /// Health.
    pub health: HealthStatus,
    /// Counters.
    pub counts: HeartbeatCounts,
    /// Digests of the installed model artifacts (at most 256).
    pub model_inventory: Vec<Sha256Digest>,
    /// Version 2: the running `b3iqd`'s version (SemVer, at most 64 bytes; see
    /// [`crate::version`]), so the control plane sees which nodes need an update. `None`
    /// (absent in JSON) for a version-1 heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

/// A signed heartbeat.
pub type SignedHeartbeat = Signed<Heartbeat>;

impl Heartbeat {
    /// Appends the canonical body: the version-1 fields, then (version 2) the software version.
    fn encode_body_to(&self, w: &mut Writer) {
        w.put(&self.node_id);
        w.u64(self.sent_at_ms);
        w.u64(self.sequence);
        w.put(&self.mode);
        w.put(&self.health);
        w.u32(self.counts.active_requests);
        w.u32(self.counts.queued_requests);
        w.u64(self.counts.completed_requests);
        w.u64(self.counts.failed_requests);
        w.u64(self.counts.generated_tokens);
        w.u64(self.counts.uptime_s);
        w.list(&self.model_inventory, |w, d| w.put(d));
        if let Some(v) = &self.software_version {
            w.str(v);
        }
    }

    /// The body's version: 2 when it carries a software version, else 1.
    pub fn version(&self) -> u8 {
        if self.software_version.is_some() {
            2
        } else {
            1
        }
    }

    fn decode_version(version: u8, r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            node_id: r.get()?,
            sent_at_ms: r.u64("sent_at_ms")?,
            sequence: r.u64("sequence")?,
            mode: r.get()?,
            health: r.get()?,
            counts: HeartbeatCounts {
                active_requests: r.u32("active_requests")?,
                queued_requests: r.u32("queued_requests")?,
                completed_requests: r.u64("completed_requests")?,
                failed_requests: r.u64("failed_requests")?,
                generated_tokens: r.u64("generated_tokens")?,
                uptime_s: r.u64("uptime_s")?,
            },
            model_inventory: r.list(MAX_INVENTORY, "model_inventory", |r| r.get())?,
            software_version: if version >= 2 {
                let v = r.str(MAX_VERSION_LEN as u32, "software_version")?;
                SoftwareVersion::parse(&v)?;
                Some(v)
            } else {
                None
            },
        })
    }
}

impl SignedKind for Heartbeat {
    const KIND: Kind = Kind::Heartbeat;
    fn version(&self) -> u8 {
        Heartbeat::version(self)
    }
    fn encode_body(&self, w: &mut Writer) {
        self.encode_body_to(w)
    }
    fn decode_body(version: u8, r: &mut Reader<'_>) -> Result<Self> {
        Self::decode_version(version, r)
    }
    fn check(&self) -> Result<()> {
        if let Some(v) = &self.software_version {
            SoftwareVersion::parse(v)?;
        }
        Ok(())
    }
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    #[test]
    fn heartbeat_json_has_only_public_fields() {
        let k = NodeKey::from_seed([1; 32]);
        let hb = Heartbeat {
            node_id: k.node_id(),
            sent_at_ms: 1,
            sequence: 2,
            mode: OperatingMode::Managed,
            health: HealthStatus::Healthy,
            counts: HeartbeatCounts::default(),
            model_inventory: vec![Sha256Digest([9; 32])],
            software_version: None,
        };
        let v = serde_json::to_value(&hb).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["counts", "health", "mode", "model_inventory", "node_id", "sent_at_ms", "sequence"]);
        let mut ck: Vec<_> = v["counts"].as_object().unwrap().keys().cloned().collect();
        ck.sort();
        assert_eq!(ck, ["active_requests", "completed_requests", "failed_requests", "generated_tokens", "queued_requests", "uptime_s"]);
        let s = k.sign_object(hb).unwrap();
        assert_eq!(SignedHeartbeat::decode(&s.encode()).unwrap().verify_self_certified().unwrap(), k.node_id());
        let mut big = s.body().clone();
        big.model_inventory = vec![Sha256Digest([0; 32]); MAX_INVENTORY as usize + 1];
        assert!(k.sign_object(big).is_err());
    }

    #[test]
    fn version_2_carries_the_software_version_and_version_1_still_decodes() {
        let k = NodeKey::from_seed([1; 32]);
        let v1 = Heartbeat {
            node_id: k.node_id(),
            sent_at_ms: 1,
            sequence: 2,
            mode: OperatingMode::Managed,
            health: HealthStatus::Healthy,
            counts: HeartbeatCounts::default(),
            model_inventory: vec![],
            software_version: None,
        };
        let v2 = Heartbeat { software_version: Some("1.4.2-rc.1".into()), ..v1.clone() };
        let s1 = k.sign_object(v1.clone()).unwrap();
        let s2 = k.sign_object(v2.clone()).unwrap();
        assert_eq!((s1.version(), s2.version()), (1, 2));
        // Binary and JSON round trips keep each version; version 1's JSON has no new key.
        for s in [&s1, &s2] {
            let back = SignedHeartbeat::decode(&s.encode()).unwrap();
            assert_eq!(&back, s);
            back.verify_self_certified().unwrap();
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(&serde_json::from_str::<SignedHeartbeat>(&j).unwrap(), s);
        }
        assert!(!serde_json::to_string(&s1).unwrap().contains("software_version"));
        assert_eq!(serde_json::to_value(&s2).unwrap()["body"]["software_version"], "1.4.2-rc.1");
        // The version-2 body is the version-1 body plus the string: a v1 envelope around v2
        // bytes has trailing bytes and is refused, and the version byte is signed.
        let mut forged = s2.encode();
        forged[0] = 1;
        assert!(SignedHeartbeat::decode(&forged).is_err());
        // A version that is not SemVer cannot be signed, nor decoded from JSON.
        let bad = Heartbeat { software_version: Some("latest".into()), ..v1.clone() };
        assert_eq!(k.sign_object(bad).unwrap_err().code(), "invalid_field");
        let j = serde_json::to_string(&s2).unwrap().replace("1.4.2-rc.1", "1.4");
        assert!(serde_json::from_str::<SignedHeartbeat>(&j).is_err());
    }
}
