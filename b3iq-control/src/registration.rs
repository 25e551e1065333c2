//! On-chain node registration, the control plane's side: it is `NodeRegistry`'s attester.
//!
//! A node asks with `POST /v1/node/registration` (b3iq-protocol's `RegistrationRequest`,
//! signed by its node key, naming this control plane's audience and the operator wallet). The
//! control plane ([`ControlPlane::attest_registration`]):
//!
//! 1. checks the signature, the audience, the clock skew (`max_clock_skew_ms`), that the node
//!    is enrolled here, active and unexpired, and that its latest heartbeat is in network mode;
//! 2. accepts the request once (`registration_requests`: its send time must be above the last
//!    accepted one, so a replayed request is refused; nothing secret is stored);
//! 3. derives every attested field from its own records, none from the request:
//!    * `publicKey`: the key the node enrolled with;
//!    * `softwareVersion`: the version in the latest heartbeat, `major << 16 | minor << 8 |
//!      patch` ([`software_version_word`]; a heartbeat without one is refused);
//!    * `hardwareHash` and `deviceClass`: from the node's latest successful `run_benchmark`
//!      job, the only hardware measurement the control plane holds: the class is the band of
//!      its generation throughput ([`device_class`], [`DEVICE_CLASS_FLOORS`]), the hash the
//!      sha256 of the measurement ([`hardware_hash`]); without a benchmark, class 0 and a zero
//!      hash. A node cannot pick a class (the request has no such field);
//!    * `mode`: network; `nonce`: `NodeRegistry.nonces(nodeId)` read from the chain now;
//!      `deadline`: the chain's latest block time (or the clock, whichever is later) plus
//!      [`DEADLINE_S`];
//! 4. signs the EIP-712 `Attestation` with the attester key (`settlement.attester_key_file`,
//!    secp256k1, made with mode 0600 on first start; `b3iq-control attester-address` prints
//!    the address the registry owner sets with `NodeRegistry.setAttester`).
//!
//! The operator then sends `NodeRegistry.register` itself (`b3iqd wallet register`).
//! `GET /v1/network/contracts` answers the chain id and contract addresses (public).

use std::sync::Arc;

use b3iq_chain::attestation::{registry_domain, sign_attestation, NodeAttestation};
use b3iq_chain::{ChainClient, Deployment, PrivateKeySigner, RetryPolicy, U256};
use b3iq_core::payout::EthAddress;
use b3iq_core::{Hash32, OperatingMode};
use b3iq_protocol::messages::JobResultData;
use b3iq_protocol::registration_api::{EcdsaSignature, NetworkContracts, RegistrationAttestation, RegistrationGrant, RegistrationRequest};

use crate::error::{ControlError, Result};
use crate::plane::ControlPlane;
use crate::store::{NodeRow, Refusal};

/// Seconds an attestation stays valid after it is signed.
pub const DEADLINE_S: u64 = 600;

/// Generation throughput (milli-tokens per second, the benchmark's `generated_tokens_per_s_milli`)
/// at which device classes 1 to 7 start; below the first, class 0.
pub const DEVICE_CLASS_FLOORS: [u64; 7] = [20_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000];

/// The device class of a measured generation throughput (milli-tokens/s); 0 when unmeasured.
pub fn device_class(generated_tokens_per_s_milli: Option<u64>) -> u8 {
    generated_tokens_per_s_milli.map_or(0, |g| DEVICE_CLASS_FLOORS.iter().filter(|f| g >= **f).count() as u8)
}

/// Domain tag of [`hardware_hash`].
pub const HARDWARE_HASH_TAG: &[u8] = b"b3iq/cp/hardware-claims/v1";

/// `sha256(b"b3iq/cp/hardware-claims/v1" || generated_tokens_per_s_milli || prompt_tokens_per_s_milli
/// || ttft_ms || measured_at_ms)` (each u64 BE) of a benchmark; all zeros without one.
pub fn hardware_hash(benchmark: Option<[u64; 4]>) -> Hash32 {
    match benchmark {
        None => Hash32([0; 32]),
        Some(fields) => {
            let mut m = HARDWARE_HASH_TAG.to_vec();
            for f in fields {
                m.extend_from_slice(&f.to_be_bytes());
            }
            Hash32(b3iq_core::digest::Sha256Digest::of(&m).0)
        }
    }
}

/// `major << 16 | minor << 8 | patch` of a SemVer version (pre-release and build dropped).
///
/// # Errors
/// `Invalid` for a version that does not parse or a part above 255.
pub fn software_version_word(v: &str) -> Result<u32> {
    let bad = |reason: String| ControlError::Invalid { field: "software_version", reason };
    b3iq_core::version::SoftwareVersion::parse(v).map_err(|e| bad(e.to_string()))?;
    let core = v.split(['-', '+']).next().unwrap_or("");
    let mut word = 0u32;
    for part in core.split('.') {
        let n: u32 = part.parse().ok().filter(|n| *n <= 255).ok_or_else(|| bad(format!("{v}: each of major, minor and patch must be at most 255 for the registry's uint32")))?;
        word = word << 8 | n;
    }
    Ok(word)
}

/// The attester: its key and a read-only view of the chain.
pub struct Registrar {
    signer: PrivateKeySigner,
    chain: ChainClient,
    deployment: Deployment,
    chain_id: u64,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").field("attester", &self.signer.address()).field("node_registry", &self.deployment.node_registry).finish()
    }
}

fn eth(a: b3iq_chain::Address) -> EthAddress {
    EthAddress(a.0 .0)
}

impl Registrar {
    /// Connects to the chain (reads only; the key signs attestations, never transactions).
    ///
    /// # Errors
    /// `Chain` when the chain cannot be reached.
    pub async fn connect(rpc_url: &str, deployment: Deployment, signer: PrivateKeySigner) -> Result<Registrar> {
        let chain = ChainClient::connect(rpc_url, signer.clone(), RetryPolicy::default()).await?;
        let chain_id = chain.chain_id().await?;
        Ok(Registrar { signer, chain, deployment, chain_id })
    }

    /// The attester's address (what `NodeRegistry.setAttester` must name).
    pub fn address(&self) -> EthAddress {
        eth(self.signer.address())
    }

    /// The chain id and contract addresses.
    pub fn contracts(&self) -> NetworkContracts {
        let d = &self.deployment;
        NetworkContracts { chain_id: self.chain_id, stake_token: eth(d.token), node_registry: eth(d.node_registry), stake_vault: eth(d.stake_vault), settlement: eth(d.settlement), disputes: eth(d.disputes), attester: self.address() }
    }

    /// Reads the node's registry nonce and the chain's time, and signs `claims`.
    async fn sign(&self, claims: &RegistrationClaims, now_ms: u64) -> Result<RegistrationGrant> {
        let n = &claims.node;
        let nonce = self.chain.attestation_nonce(&self.deployment, &n.node_id).await?;
        let nonce = u64::try_from(nonce).map_err(|_| ControlError::Chain(format!("NodeRegistry.nonces({}) is above 2^64", n.node_id)))?;
        let deadline = self.chain.block_timestamp().await?.max(now_ms / 1000) + DEADLINE_S;
        let att = NodeAttestation {
            public_key: n.public_key,
            operator: b3iq_chain::Address::from(claims.operator.0),
            hardware_hash: claims.hardware_hash,
            software_version: claims.software_version,
            mode: OperatingMode::Network,
            device_class: claims.device_class,
            nonce: U256::from(nonce),
            deadline,
        };
        let domain = registry_domain(self.chain_id, self.deployment.node_registry);
        let (_, sig) = sign_attestation(&self.signer, &domain, &att)?;
        let signature = EcdsaSignature(sig.as_ref().try_into().map_err(|_| ControlError::Chain(format!("attestation signature of {} bytes, not 65", sig.len())))?);
        Ok(RegistrationGrant {
            chain_id: self.chain_id,
            node_registry: eth(self.deployment.node_registry),
            attester: self.address(),
            attestation: RegistrationAttestation {
                node_id: n.node_id,
                public_key: att.public_key,
                operator: claims.operator,
                hardware_hash: att.hardware_hash,
                software_version: att.software_version,
                mode: att.mode,
                device_class: att.device_class,
                nonce,
                deadline,
            },
            signature,
        })
    }
}

/// What the control plane attests for a node, derived from its own records (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationClaims {
    /// The node as enrolled (its public key is attested).
    pub node: NodeRow,
    /// The operator wallet named by the request.
    pub operator: EthAddress,
    /// `softwareVersion` ([`software_version_word`] of the latest heartbeat's version).
    pub software_version: u32,
    /// `deviceClass` ([`device_class`] of the latest benchmark; 0 without one).
    pub device_class: u8,
    /// `hardwareHash` ([`hardware_hash`] of the latest benchmark; zeros without one).
    pub hardware_hash: Hash32,
}

impl ControlPlane {
    /// Attests a node for `NodeRegistry.register`: [`ControlPlane::registration_claims`], then
    /// the registry nonce and deadline from the chain, signed by the attester.
    ///
    /// # Errors
    /// `Refused(NotFound)` when this control plane has no attester (no `settlement` in
    /// `control.json`); as [`ControlPlane::registration_claims`]; `Chain`.
    pub async fn attest_registration(&self, r: &RegistrationRequest, now_ms: u64) -> Result<RegistrationGrant> {
        let registrar = self.registrar()?.clone();
        let claims = self.registration_claims(r, now_ms).await?;
        registrar.sign(&claims, now_ms).await
    }

    /// Checks a registration request (see the module docs), accepts it once, and derives what
    /// is attested from the control plane's records.
    ///
    /// # Errors
    /// `Invalid` for a forged request, another audience, a stale clock or a heartbeat without
    /// a usable software version; `Refused` for an unknown, suspended, revoked or expired node
    /// (`UnknownNode`, ...), one not in network mode (`NotNetworkMode`), a replayed request
    /// (`Replayed`); `Store`.
    pub async fn registration_claims(&self, r: &RegistrationRequest, now_ms: u64) -> Result<RegistrationClaims> {
        let node = r.verify()?;
        if r.audience != self.config().audience {
            return Err(ControlError::Invalid { field: "audience", reason: format!("registration: addressed to {}, this control plane is {}", r.audience.as_str(), self.config().audience.as_str()) });
        }
        if r.sent_at_ms.abs_diff(now_ms) > self.config().max_clock_skew_ms {
            return Err(ControlError::Invalid { field: "sent_at_ms", reason: format!("registration: the node's clock is {} ms away from the control plane's", r.sent_at_ms.abs_diff(now_ms)) });
        }
        let n = self.active_node(&node, now_ms).await?;
        let beat = n.last_heartbeat.as_ref().ok_or_else(|| Refusal::NotNetworkMode("nothing: no heartbeat yet".into()))?;
        let mode = beat.body["mode"].as_str().unwrap_or("unknown");
        if mode != "network" {
            return Err(Refusal::NotNetworkMode(mode.to_string()).into());
        }
        let version = beat.body["software_version"].as_str().ok_or_else(|| ControlError::Invalid { field: "software_version", reason: "the node's heartbeats carry no software version; update b3iqd".into() })?;
        let software_version = software_version_word(version)?;
        let benchmark = self.store().last_job(&node, "run_benchmark", "succeeded").await?.and_then(|j| {
            let at = j.finished_at_ms?;
            match serde_json::from_value::<JobResultData>(j.result?).ok()? {
                JobResultData::Benchmark { generated_tokens_per_s_milli, prompt_tokens_per_s_milli, ttft_ms } => Some([generated_tokens_per_s_milli, prompt_tokens_per_s_milli, ttft_ms, at]),
                _ => None,
            }
        });
        self.store().accept_registration_request(&node, r.sent_at_ms, &r.operator.to_string().to_lowercase(), now_ms).await?;
        Ok(RegistrationClaims { node: n, operator: r.operator, software_version, device_class: device_class(benchmark.map(|b| b[0])), hardware_hash: hardware_hash(benchmark) })
    }

    /// The attester.
    ///
    /// # Errors
    /// `Refused(NotFound)` when this control plane has none (no `settlement` in `control.json`).
    pub fn registrar(&self) -> Result<&Arc<Registrar>> {
        self.registrar.get().ok_or_else(|| Refusal::NotFound("a chain for registration and stake on this network (its control plane has no `settlement` section in control.json; ask its operator)".into()).into())
    }

    /// Attaches the attester (once; later calls are ignored).
    pub fn set_registrar(&self, r: Arc<Registrar>) {
        let _ = self.registrar.set(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_classes_follow_the_generation_bands() {
        assert_eq!(device_class(None), 0, "unmeasured");
        assert_eq!(device_class(Some(0)), 0);
        assert_eq!(device_class(Some(19_999)), 0);
        assert_eq!(device_class(Some(20_000)), 1);
        assert_eq!(device_class(Some(199_999)), 3);
        assert_eq!(device_class(Some(1_600_000)), 7);
        assert_eq!(device_class(Some(u64::MAX)), 7, "at most the registry's last class");
    }

    #[test]
    fn software_versions_pack_into_the_registry_word() {
        assert_eq!(software_version_word("0.1.0").unwrap(), 0x00_01_00);
        assert_eq!(software_version_word("1.2.3-rc.1+abc").unwrap(), 0x01_02_03);
        assert_eq!(software_version_word("255.255.255").unwrap(), 0xFF_FF_FF);
        for bad in ["256.0.0", "1.2", "x", ""] {
            assert!(software_version_word(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hardware_hash_names_its_measurement() {
        assert_eq!(hardware_hash(None), Hash32([0; 32]));
        let a = hardware_hash(Some([1, 2, 3, 4]));
        assert_ne!(a, Hash32([0; 32]));
        assert_ne!(a, hardware_hash(Some([1, 2, 3, 5])));
        assert_eq!(a, hardware_hash(Some([1, 2, 3, 4])));
    }
}
