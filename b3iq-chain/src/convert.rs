//! Conversions between b3iq-core types and alloy's.

use alloy::primitives::{Address, B256};
use b3iq_core::payout::EthAddress;
use b3iq_core::{Hash32, NodeId};

/// Converts a core hash to a `bytes32`.
pub fn b256(h: &Hash32) -> B256 {
    B256::from(h.0)
}

/// Converts a core node id to a `bytes32`.
pub fn node_b256(id: &NodeId) -> B256 {
    B256::from(id.0)
}

/// Converts a core address to an alloy address.
pub fn to_address(a: &EthAddress) -> Address {
    Address::from(a.0)
}

/// Converts an alloy address to a core address.
pub fn from_address(a: &Address) -> EthAddress {
    EthAddress(a.0 .0)
}
