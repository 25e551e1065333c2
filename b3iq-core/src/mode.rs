//! The node's operating mode, shared by receipts, heartbeats and the job policy.

use crate::codec::{Canonical, Reader, Writer};
use crate::error::{CoreError, Result};

/// How the node is operated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatingMode {
    /// Private endpoint for the owner; no cloud at all. Wire tag 0.
    Local,
    /// Enrolled with a control plane for remote support (outbound only). Wire tag 1.
    Managed,
    /// Serves paid network jobs, settled on chain. Wire tag 2.
    Network,
}

impl OperatingMode {
    /// All modes in wire-tag order.
    pub const ALL: [OperatingMode; 3] = [OperatingMode::Local, OperatingMode::Managed, OperatingMode::Network];

    /// Wire tag.
    pub const fn tag(self) -> u8 {
        match self {
            OperatingMode::Local => 0,
            OperatingMode::Managed => 1,
            OperatingMode::Network => 2,
        }
    }

    /// Lowercase name (`local`, `managed`, `network`), as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperatingMode::Local => "local",
            OperatingMode::Managed => "managed",
            OperatingMode::Network => "network",
        }
    }
}

impl std::fmt::Display for OperatingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OperatingMode {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        OperatingMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| CoreError::field("mode", format!("{s:?} is not one of local, managed, network")))
    }
}

impl Canonical for OperatingMode {
    const NAME: &'static str = "operating mode";
    fn encode_to(&self, w: &mut Writer) {
        w.u8(self.tag());
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let tag = r.u8("mode")?;
        OperatingMode::ALL
            .into_iter()
            .find(|m| m.tag() == tag)
            .ok_or(CoreError::InvalidTag { field: "mode", tag })
    }
}
