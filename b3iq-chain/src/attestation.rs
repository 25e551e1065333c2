//! EIP-712 node attestations: what the enrollment attester (the control plane, after checking
//! the node's Ed25519 proof of possession off chain) signs so that an operator can register its
//! node in `NodeRegistry`.
//!
//! Domain: name `B3IQ NodeRegistry`, version `1`, the chain id and the registry address. Type:
//! `Attestation(bytes32 nodeId,bytes32 publicKey,address operator,bytes32 hardwareHash,
//! uint32 softwareVersion,uint8 mode,uint8 deviceClass,uint256 nonce,uint64 deadline)`.

use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct};
use b3iq_core::{Hash32, NodePublicKey, OperatingMode};

use crate::bindings::node_registry::NodeRegistry;
use crate::error::{ChainError, Result};

/// What the attester vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAttestation {
    /// The node's Ed25519 public key (its node id is derived from it).
    pub public_key: NodePublicKey,
    /// Operator wallet (must send the registration).
    pub operator: Address,
    /// Hash of the node's hardware claims.
    pub hardware_hash: Hash32,
    /// Software version, e.g. `0x000100` for 0.1.0.
    pub software_version: u32,
    /// Operating mode.
    pub mode: OperatingMode,
    /// Device class (0..8), sizes the stake.
    pub device_class: u8,
    /// `NodeRegistry.nonces(nodeId)` at signing time.
    pub nonce: U256,
    /// Unix seconds after which the attestation is refused.
    pub deadline: u64,
}

impl NodeAttestation {
    /// The ABI struct.
    pub fn to_sol(&self) -> NodeRegistry::Attestation {
        NodeRegistry::Attestation {
            nodeId: B256::from(self.public_key.node_id().0),
            publicKey: B256::from(self.public_key.to_bytes()),
            operator: self.operator,
            hardwareHash: B256::from(self.hardware_hash.0),
            softwareVersion: self.software_version,
            mode: self.mode.tag(),
            deviceClass: self.device_class,
            nonce: self.nonce,
            deadline: self.deadline,
        }
    }
}

/// The EIP-712 domain of a NodeRegistry deployment.
pub fn registry_domain(chain_id: u64, registry: Address) -> Eip712Domain {
    alloy::sol_types::eip712_domain! {
        name: "B3IQ NodeRegistry",
        version: "1",
        chain_id: chain_id,
        verifying_contract: registry,
    }
}

/// The digest the attester signs.
pub fn attestation_digest(attestation: &NodeRegistry::Attestation, domain: &Eip712Domain) -> B256 {
    attestation.eip712_signing_hash(domain)
}

/// Signs an attestation; returns the ABI struct and the 65-byte `r || s || v` signature.
pub fn sign_attestation(
    attester: &PrivateKeySigner,
    domain: &Eip712Domain,
    attestation: &NodeAttestation,
) -> Result<(NodeRegistry::Attestation, Bytes)> {
    let sol = attestation.to_sol();
    let digest = attestation_digest(&sol, domain);
    let sig = attester
        .sign_hash_sync(&digest)
        .map_err(|e| ChainError::Signing {
            action: "sign attestation".into(),
            message: e.to_string(),
        })?;
    Ok((sol, Bytes::from(sig.as_bytes().to_vec())))
}

/// The address that signed `signature` (65 bytes, `r || s || v`) over `attestation` in
/// `domain`, so a node can check a control plane's attestation before paying gas for it.
///
/// # Errors
/// [`ChainError::Signing`] for a signature that does not parse or recover.
pub fn recover_attester(
    domain: &Eip712Domain,
    attestation: &NodeRegistry::Attestation,
    signature: &[u8],
) -> Result<Address> {
    let bad = |m: String| ChainError::Signing { action: "recover attestation signer".into(), message: m };
    let sig = alloy::primitives::Signature::try_from(signature).map_err(|e| bad(e.to_string()))?;
    sig.recover_address_from_prehash(&attestation_digest(attestation, domain)).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_is_recovered_and_a_changed_attestation_names_another() {
        let attester = PrivateKeySigner::random();
        let domain = registry_domain(31337, Address::repeat_byte(9));
        let a = NodeAttestation {
            public_key: b3iq_core::NodeKey::from_seed([3; 32]).public(),
            operator: Address::repeat_byte(1),
            hardware_hash: Hash32([0; 32]),
            software_version: 0x00_01_00,
            mode: OperatingMode::Network,
            device_class: 2,
            nonce: U256::from(4),
            deadline: 1_000,
        };
        let (sol, sig) = sign_attestation(&attester, &domain, &a).unwrap();
        assert_eq!(recover_attester(&domain, &sol, &sig).unwrap(), attester.address());
        let mut other = sol.clone();
        other.deviceClass = 3;
        assert_ne!(recover_attester(&domain, &other, &sig).unwrap(), attester.address());
        assert!(recover_attester(&domain, &sol, &sig[..64]).is_err(), "64 bytes");
    }
}
