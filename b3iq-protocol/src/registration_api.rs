//! On-chain registration on the wire: a node asking its control plane (the NodeRegistry's
//! attester) to vouch for it, and the contracts a node stakes in.
//!
//! * `POST /v1/node/registration` ([`RegistrationRequest`], signed by the node key, naming the
//!   control plane's audience and the operator wallet that will send the transaction) ->
//!   [`RegistrationGrant`]: the EIP-712 `Attestation` of `NodeRegistry` (every field derived by
//!   the control plane from its own records, none chosen by the node) and the attester's
//!   65-byte secp256k1 signature. The operator sends `NodeRegistry.register(attestation,
//!   signature)` before `deadline`.
//! * `GET /v1/network/contracts` -> [`NetworkContracts`]: public; the chain id and contract
//!   addresses a node stakes in (`b3iqd wallet stake`).

use b3iq_core::payout::EthAddress;
use b3iq_core::{Hash32, NodeId, NodeKey, NodePublicKey, OperatingMode, Signature};

use crate::error::{ProtocolError, Result};
use crate::messages::Audience;

/// Domain tag of [`RegistrationRequest::signing_message`].
pub const NODE_REGISTRATION_TAG: &[u8] = b"b3iq/cp/node-registration/v1";

/// Node -> control plane: attest this node for `NodeRegistry.register`, sent by `operator`.
///
/// Replay: the control plane accepts a request only when `sent_at_ms` is within its clock skew
/// and above the last one it accepted from the node (recorded durably), and only for its own
/// `audience`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// The node.
    pub node_id: NodeId,
    /// Its public key.
    pub public_key: NodePublicKey,
    /// The control plane asked (its `control.json` audience, as in the enrollment).
    pub audience: Audience,
    /// The operator wallet that sends the registration and stakes (`0x` + 40 hex).
    pub operator: EthAddress,
    /// Send time, unix ms.
    pub sent_at_ms: u64,
    /// Ed25519 signature over [`RegistrationRequest::signing_message`].
    pub signature: Signature,
}

impl RegistrationRequest {
    /// Signs a request.
    pub fn sign(key: &NodeKey, audience: Audience, operator: EthAddress, now_ms: u64) -> Self {
        let mut r = Self { node_id: key.node_id(), public_key: key.public(), audience, operator, sent_at_ms: now_ms, signature: Signature([0; 64]) };
        r.signature = key.sign_raw(&r.signing_message());
        r
    }

    /// `b"b3iq/cp/node-registration/v1" || node_id (32) || public_key (32) || audience length
    /// (u32 BE) || audience (ASCII) || operator (20) || sent_at_ms (u64 BE)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let a = self.audience.as_str().as_bytes();
        let mut m = Vec::with_capacity(NODE_REGISTRATION_TAG.len() + 96 + a.len());
        m.extend_from_slice(NODE_REGISTRATION_TAG);
        m.extend_from_slice(&self.node_id.0);
        m.extend_from_slice(self.public_key.as_bytes());
        // An audience is at most 128 bytes (`Audience::new`).
        m.extend_from_slice(&(a.len() as u32).to_be_bytes());
        m.extend_from_slice(a);
        m.extend_from_slice(&self.operator.0);
        m.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        m
    }

    /// Checks that the node id derives from the key, the operator is not the zero address,
    /// and the signature; returns the node id.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidMessage`] naming `node_id`, `operator` or `signature`.
    pub fn verify(&self) -> Result<NodeId> {
        if self.public_key.node_id() != self.node_id {
            return Err(ProtocolError::InvalidMessage { field: "node_id", reason: format!("registration: {} is not derived from the given public key", self.node_id) });
        }
        if self.operator.0 == [0; 20] {
            return Err(ProtocolError::InvalidMessage { field: "operator", reason: "registration: the operator is the zero address".into() });
        }
        if !self.public_key.verify_raw(&self.signing_message(), &self.signature) {
            return Err(ProtocolError::InvalidMessage { field: "signature", reason: "registration: Ed25519 signature does not verify".into() });
        }
        Ok(self.node_id)
    }
}

/// `NodeRegistry.Attestation`, field for field (Solidity names in snake case).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationAttestation {
    /// `nodeId`.
    pub node_id: NodeId,
    /// `publicKey`: the Ed25519 key the node enrolled with.
    pub public_key: NodePublicKey,
    /// `operator`: must send the transaction.
    pub operator: EthAddress,
    /// `hardwareHash`: the hardware fingerprint of the node's latest successful benchmark, all
    /// zeros when it has none.
    pub hardware_hash: Hash32,
    /// `softwareVersion`: the version in the node's latest heartbeat, `major << 16 | minor << 8
    /// | patch` (`0.1.0` is `0x000100`).
    pub software_version: u32,
    /// `mode`: always `network` (wire tag 2).
    pub mode: OperatingMode,
    /// `deviceClass` (0..8): sizes the minimum stake (`StakeVault.minStake`).
    pub device_class: u8,
    /// `nonce`: `NodeRegistry.nonces(nodeId)` when signed; consumed by the registration.
    pub nonce: u64,
    /// `deadline`: unix seconds after which the registry refuses it.
    pub deadline: u64,
}

/// A 65-byte secp256k1 signature `r || s || v` (`v` 27 or 28), `0x` + 130 hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcdsaSignature(pub [u8; 65]);

impl serde::Serialize for EcdsaSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(self.0)))
    }
}

impl<'de> serde::Deserialize<'de> for EcdsaSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let body = s.strip_prefix("0x").ok_or_else(|| serde::de::Error::custom("a signature starts with 0x"))?;
        let mut out = [0u8; 65];
        hex::decode_to_slice(body, &mut out).map_err(|e| serde::de::Error::custom(format!("a signature is 0x + 130 hex characters: {e}")))?;
        Ok(Self(out))
    }
}

/// Control plane -> node: the signed attestation to register with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationGrant {
    /// Chain id of the registry (EIP-712 domain).
    pub chain_id: u64,
    /// The `NodeRegistry` contract (EIP-712 verifying contract).
    pub node_registry: EthAddress,
    /// The attester that signed (must be `NodeRegistry.attester()`).
    pub attester: EthAddress,
    /// What is attested.
    pub attestation: RegistrationAttestation,
    /// The attester's EIP-712 signature over it.
    pub signature: EcdsaSignature,
}

/// The chain and contracts of a control plane's network (public).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkContracts {
    /// Chain id.
    pub chain_id: u64,
    /// The stake and payout token (an ERC-20 contract; named so that no field is a credential's).
    pub stake_token: EthAddress,
    /// `NodeRegistry`.
    pub node_registry: EthAddress,
    /// `StakeVault`.
    pub stake_vault: EthAddress,
    /// `Settlement`.
    pub settlement: EthAddress,
    /// `Disputes` (`b3iqd dispute list | appeal`).
    pub disputes: EthAddress,
    /// The attester address this control plane signs registrations with.
    pub attester: EthAddress,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NodeKey {
        NodeKey::from_seed([7; 32])
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let k = key();
        let op = EthAddress([0x11; 20]);
        let r = RegistrationRequest::sign(&k, Audience::new("cp-1").unwrap(), op, 1_000);
        assert_eq!(r.verify().unwrap(), k.node_id());
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RegistrationRequest>(&text).unwrap(), r);
        let mut x = r.clone();
        x.operator = EthAddress([0x12; 20]);
        assert!(x.verify().is_err(), "another operator");
        let mut x = r.clone();
        x.audience = Audience::new("cp-2").unwrap();
        assert!(x.verify().is_err(), "another control plane");
        let mut x = r.clone();
        x.sent_at_ms += 1;
        assert!(x.verify().is_err(), "another time");
        let mut x = RegistrationRequest::sign(&k, Audience::new("cp-1").unwrap(), EthAddress([0; 20]), 1_000);
        assert!(matches!(x.verify(), Err(ProtocolError::InvalidMessage { field: "operator", .. })));
        x.node_id = NodeKey::from_seed([8; 32]).node_id();
        assert!(matches!(x.verify(), Err(ProtocolError::InvalidMessage { field: "node_id", .. })));
    }

    #[test]
    fn signatures_and_grants_parse_strictly() {
        let s = EcdsaSignature([0xab; 65]);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text.len(), 2 + 2 + 130);
        assert_eq!(serde_json::from_str::<EcdsaSignature>(&text).unwrap(), s);
        for bad in ["\"ab\"", "\"0xab\"", "\"0x\"", &text.replace("0x", "")] {
            assert!(serde_json::from_str::<EcdsaSignature>(bad).is_err(), "{bad}");
        }
        let k = key();
        let g = RegistrationGrant {
            chain_id: 31337,
            node_registry: EthAddress([1; 20]),
            attester: EthAddress([2; 20]),
            attestation: RegistrationAttestation { node_id: k.node_id(), public_key: k.public(), operator: EthAddress([3; 20]), hardware_hash: Hash32([0; 32]), software_version: 0x000100, mode: OperatingMode::Network, device_class: 0, nonce: 0, deadline: 99 },
            signature: s,
        };
        let mut v = serde_json::to_value(&g).unwrap();
        assert_eq!(serde_json::from_value::<RegistrationGrant>(v.clone()).unwrap(), g);
        v["attestation"]["extra"] = 1.into();
        assert!(serde_json::from_value::<RegistrationGrant>(v).is_err(), "unknown fields are refused");
    }
}
