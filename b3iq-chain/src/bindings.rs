//! Contract bindings generated at compile time from the committed Hardhat-format artifacts in
//! `contracts/artifacts/` (ABI + creation bytecode), so `deploy` ships exactly the bytecode that
//! `contracts/ci.sh` checks is reproducible from the Solidity sources.
//!
//! Each contract lives in its own module because the ABIs mention each other's structs
//! (`Disputes` takes a `Settlement.EpochRef`).

#![allow(missing_docs, clippy::too_many_arguments)]

/// The test ERC-20 standing in for B3 (tests and local demos only).
pub mod token {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        B3TestToken,
        "../contracts/artifacts/B3TestToken.json"
    );
}

/// `NodeRegistry`: node ids bound to Ed25519 keys and operators by EIP-712 attestations.
pub mod node_registry {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        NodeRegistry,
        "../contracts/artifacts/NodeRegistry.json"
    );
}

/// `StakeVault`: per-node stake, unbonding, slashing through `Disputes` only.
pub mod stake_vault {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        StakeVault,
        "../contracts/artifacts/StakeVault.json"
    );
}

/// `Settlement`: per-epoch commitments, challenge window, Merkle claims from escrow.
pub mod settlement {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        Settlement,
        "../contracts/artifacts/Settlement.json"
    );
}

/// `Disputes`: bonded disputes, committee votes, appeal window, slash execution.
pub mod disputes {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        Disputes,
        "../contracts/artifacts/Disputes.json"
    );
}

/// `ModelRegistry`: publishers, signed manifest hashes, royalty recipients, delisting.
pub mod model_registry {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        ModelRegistry,
        "../contracts/artifacts/ModelRegistry.json"
    );
}

pub use disputes::Disputes;
pub use model_registry::ModelRegistry;
pub use node_registry::NodeRegistry;
pub use settlement::Settlement;
pub use stake_vault::StakeVault;
pub use token::B3TestToken;
