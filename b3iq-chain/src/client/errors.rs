//! Decoding what the chain node answered: reverts against every contract's errors, which
//! transport failures may be retried (and which may not, because the transaction may already have
//! been accepted), and the mapping to [`ChainError`].

use alloy::sol_types::SolInterface;
use alloy::transports::{RpcError, TransportErrorKind};

use crate::bindings::{disputes, model_registry, node_registry, settlement, stake_vault, token};
use crate::error::ChainError;

/// Decodes revert data against the errors of every B3IQ contract (and `Error(string)` /
/// `Panic(uint256)`); falls back to hex.
pub fn decode_revert(data: &[u8]) -> String {
    macro_rules! try_decode {
        ($($t:ty),* $(,)?) => {
            $(
                if let Ok(e) = <$t as SolInterface>::abi_decode(data) {
                    return format!("{e:?}");
                }
            )*
        };
    }
    try_decode!(
        settlement::Settlement::SettlementErrors,
        disputes::Disputes::DisputesErrors,
        stake_vault::StakeVault::StakeVaultErrors,
        node_registry::NodeRegistry::NodeRegistryErrors,
        model_registry::ModelRegistry::ModelRegistryErrors,
        token::B3TestToken::B3TestTokenErrors,
        alloy::sol_types::GenericContractError,
    );
    format!("0x{}", hex::encode(data))
}

/// True when a transaction send can be retried without risking a duplicate: the request
/// provably did not reach the node (connection refused or failed to connect), or the node said
/// "try again later" (HTTP 429/503, rate-limit codes). A timeout after the request was written is
/// NOT safe: the node may have accepted the transaction.
pub(super) fn is_safe_to_resend(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::Transport(TransportErrorKind::HttpError(h)) => h.status == 429 || h.status == 503,
        RpcError::Transport(TransportErrorKind::Custom(inner)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(err) = source {
                if let Some(r) = err.downcast_ref::<alloy::transports::http::reqwest::Error>() {
                    return r.is_connect();
                }
                source = err.source();
            }
            false
        }
        RpcError::ErrorResp(p) => p.code == 429 || p.code == -32005,
        _ => false,
    }
}

/// True for failures worth retrying for reads: the request never got a JSON-RPC answer.
pub(super) fn is_transient(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(h) => h.status == 429 || h.status >= 500,
            _ => true,
        },
        RpcError::ErrorResp(p) => p.code == 429 || p.code == -32005,
        _ => false,
    }
}

/// A send whose answer was lost after the request was written: the transaction may or may not
/// have been accepted.
pub(super) fn ambiguous_send(action: &str, e: &RpcError<TransportErrorKind>) -> ChainError {
    ChainError::SendOutcomeUnknown {
        action: action.to_string(),
        reason: e.to_string(),
    }
}

/// A JSON-RPC failure that is not retried (or no longer): a revert (decoded), a rejection by the
/// node, an answer that does not decode, or another transport failure.
pub(super) fn map_transport(action: &str, e: RpcError<TransportErrorKind>) -> ChainError {
    match e {
        RpcError::ErrorResp(p) => match p.as_revert_data() {
            Some(data) => ChainError::Reverted {
                action: action.to_string(),
                error: decode_revert(&data),
            },
            None => ChainError::Rejected {
                action: action.to_string(),
                message: p.message.to_string(),
            },
        },
        e @ (RpcError::NullResp | RpcError::DeserError { .. }) => ChainError::Unexpected {
            action: action.to_string(),
            message: e.to_string(),
        },
        other => ChainError::Transport {
            action: action.to_string(),
            message: other.to_string(),
        },
    }
}

/// A contract call or send failure: a revert (decoded from the error data wherever alloy put
/// it), a transport failure, or an answer the ABI does not match.
pub(super) fn map_contract(action: &str, e: alloy::contract::Error) -> ChainError {
    if let Some(data) = e.as_revert_data() {
        return ChainError::Reverted {
            action: action.to_string(),
            error: decode_revert(&data),
        };
    }
    match e {
        alloy::contract::Error::TransportError(t) => map_transport(action, t),
        other => ChainError::Unexpected {
            action: action.to_string(),
            message: other.to_string(),
        },
    }
}
