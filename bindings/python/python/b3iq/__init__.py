"""B3IQ for Python: embed a local inference host and verify its signed objects.

Everything here is implemented in Rust (``b3iq._b3iq``, built from ``b3iq-core``); this package
re-exports it and adds the exception hierarchy (``b3iq.errors``). See the README for a quick
start.
"""

from . import _b3iq
from ._b3iq import (
    Credential,
    Job,
    MerkleTree,
    ModelManifest,
    NodeId,
    NodeKey,
    NodePublicKey,
    PayoutTree,
    PriceSchedule,
    Receipt,
    SeenSet,
    SignedJob,
    SignedManifest,
    SignedReceipt,
    SplitPolicy,
    TrustRoots,
    commit_output,
    commit_prompt,
    decide_job,
    keccak256,
    merkle_leaf_hash,
    merkle_root,
    payout_leaf,
    split,
    verify_inclusion,
    verify_payout,
    version,
)
from .host import LocalNode, Runtime, TokenStream
from .errors import (
    B3iqAuthError,
    B3iqError,
    B3iqExpiredError,
    B3iqIOError,
    B3iqPolicyError,
    B3iqReplayError,
    B3iqRuntimeError,
    B3iqStateError,
    B3iqValueError,
)

__version__ = version()

__all__ = [
    "LocalNode",
    "Runtime",
    "TokenStream",
    "Credential",
    "Job",
    "MerkleTree",
    "ModelManifest",
    "NodeId",
    "NodeKey",
    "NodePublicKey",
    "PayoutTree",
    "PriceSchedule",
    "Receipt",
    "SeenSet",
    "SignedJob",
    "SignedManifest",
    "SignedReceipt",
    "SplitPolicy",
    "TrustRoots",
    "commit_output",
    "commit_prompt",
    "decide_job",
    "keccak256",
    "merkle_leaf_hash",
    "merkle_root",
    "payout_leaf",
    "split",
    "verify_inclusion",
    "verify_payout",
    "version",
    "B3iqError",
    "B3iqValueError",
    "B3iqAuthError",
    "B3iqExpiredError",
    "B3iqReplayError",
    "B3iqPolicyError",
    "B3iqIOError",
    "B3iqRuntimeError",
    "B3iqStateError",
]
