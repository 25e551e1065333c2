// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Settlement
/// @notice Per-epoch settlement of B3IQ receipts. A settler posts, per epoch, the blake3 receipt root,
///         the keccak payout root and the totals. The contract stores ONE slot per epoch (the
///         commitment: the top 192 bits of the payout root and the 64-bit post time) and emits every
///         detail in `EpochPosted`. After the challenge window anyone can claim a payout leaf for its
///         account with an OpenZeppelin-compatible Merkle proof (sorted pairs, double-hashed leaf
///         `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`); a bitmap of
///         claimed indices prevents double claims. Payouts come from an escrow that is reserved when
///         the epoch is posted. During the challenge window a guardian can cancel a bad epoch.
/// @dev Gas: a claim reads the epoch slot and the bitmap word, verifies the proof against the stored
///      192-bit root prefix (second preimages of a 192-bit prefix cost 2^192 work), flips the bit and
///      transfers. It emits no event of its own; the token's Transfer(from = Settlement) and
///      `isClaimed` expose claims. This keeps a claim under 60,000 gas at 2^20 leaves.
contract Settlement is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    uint256 private constant ROOT_MASK = ~uint256(0xffffffffffffffff);

    IERC20 public immutable token;
    /// @notice Seconds after posting before claims open (and until which a guardian may cancel).
    uint64 public immutable challengeWindow;
    /// @notice Escrow not yet reserved by any epoch.
    uint256 public escrowAvailable;
    /// @dev Per epoch: payout root with its low 64 bits replaced by the post timestamp. Zero when
    ///      not posted (or cancelled).
    mapping(uint64 epochId => bytes32) private _epochs;
    /// @dev Claimed bitmap words, keyed by `epochId << 128 | index >> 8` (indices are below 2^64).
    mapping(uint256 key => uint256) private _claimed;

    event EscrowFunded(address indexed from, uint256 amount, uint256 available);
    event EscrowWithdrawn(address indexed to, uint256 amount, uint256 available);
    event EpochPosted(
        uint64 indexed epochId,
        bytes32 receiptRoot,
        bytes32 payoutRoot,
        uint256 totalPayout,
        uint64 receiptCount,
        uint64 leafCount,
        uint64 postedAt
    );
    event EpochCancelled(uint64 indexed epochId, uint256 refunded);

    error ZeroAddress();
    error ZeroAmount();
    error ZeroRoot();
    error EpochAlreadyPosted(uint64 epochId);
    error InsufficientEscrow(uint256 available, uint256 required);
    error RefundExceedsReserved(uint256 reserved, uint256 refund);
    error UnknownEpoch(uint64 epochId);
    error ChallengeWindowOpen(uint256 claimableAt, uint256 nowTs);
    error ChallengeWindowClosed(uint256 claimableAt, uint256 nowTs);
    error AlreadyClaimed(uint64 epochId, uint256 index);
    error InvalidProof(uint64 epochId, uint256 index);
    error TransferFailed();
    error IndexTooLarge(uint256 index);

    constructor(address admin, IERC20 token_, uint64 challengeWindow_) {
        if (admin == address(0) || address(token_) == address(0)) revert ZeroAddress();
        token = token_;
        challengeWindow = challengeWindow_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Add tokens to the payout escrow (needs an ERC-20 allowance).
    function fund(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 available = escrowAvailable + amount;
        escrowAvailable = available;
        emit EscrowFunded(msg.sender, amount, available);
    }

    /// @notice Admin takes back escrow that no epoch has reserved.
    function withdrawEscrow(address to, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (to == address(0)) revert ZeroAddress();
        uint256 available = escrowAvailable;
        if (amount > available) revert InsufficientEscrow(available, amount);
        escrowAvailable = available - amount;
        token.safeTransfer(to, amount);
        emit EscrowWithdrawn(to, amount, available - amount);
    }

    /// @notice Settler posts an epoch; reserves `totalPayout` from the escrow.
    function postEpoch(
        uint64 epochId,
        bytes32 receiptRoot,
        bytes32 payoutRoot,
        uint256 totalPayout,
        uint64 receiptCount,
        uint64 leafCount
    ) external onlyRole(SETTLER_ROLE) {
        if (uint256(payoutRoot) & ROOT_MASK == 0) revert ZeroRoot();
        if (_epochs[epochId] != bytes32(0)) revert EpochAlreadyPosted(epochId);
        uint256 available = escrowAvailable;
        if (totalPayout > available) revert InsufficientEscrow(available, totalPayout);
        unchecked {
            escrowAvailable = available - totalPayout;
        }
        uint64 ts = uint64(block.timestamp);
        _epochs[epochId] = bytes32((uint256(payoutRoot) & ROOT_MASK) | ts);
        emit EpochPosted(epochId, receiptRoot, payoutRoot, totalPayout, receiptCount, leafCount, ts);
    }

    /// @notice Block timestamp at which `epochId` was posted (0 if not posted or cancelled).
    function postedAt(uint64 epochId) public view returns (uint64) {
        return uint64(uint256(_epochs[epochId]));
    }

    /// @notice The stored commitment of `epochId`: top 192 bits of the payout root, low 64 bits the
    ///         post time.
    function epochCommitment(uint64 epochId) external view returns (bytes32) {
        return _epochs[epochId];
    }

    /// @notice Guardian cancels a posted epoch during its challenge window and returns its reservation
    ///         (`totalPayout` from its `EpochPosted` event) to the escrow.
    function cancelEpoch(uint64 epochId, uint256 totalPayout) external onlyRole(GUARDIAN_ROLE) {
        uint64 at = postedAt(epochId);
        if (at == 0) revert UnknownEpoch(epochId);
        uint256 claimableAt = uint256(at) + challengeWindow;
        if (block.timestamp >= claimableAt) revert ChallengeWindowClosed(claimableAt, block.timestamp);
        // Nothing of an epoch is paid before its window closes, so the refund is bounded by what
        // the contract holds beyond the unreserved escrow.
        uint256 reserved = token.balanceOf(address(this)) - escrowAvailable;
        if (totalPayout > reserved) revert RefundExceedsReserved(reserved, totalPayout);
        delete _epochs[epochId];
        escrowAvailable += totalPayout;
        emit EpochCancelled(epochId, totalPayout);
    }

    /// @notice Pay leaf `index` of epoch `epochId` to `account`. Anyone may submit it.
    /// @dev Same checks as `MerkleProof.verifyCalldata` with OpenZeppelin's double-hashed leaf and
    ///      commutative (sorted-pair) keccak, written in assembly to keep claims cheap.
    function claim(uint64 epochId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
    {
        uint256 stored = uint256(_epochs[epochId]);
        if (stored == 0) revert UnknownEpoch(epochId);
        unchecked {
            uint256 claimableAt = uint256(uint64(stored)) + challengeWindow;
            if (block.timestamp < claimableAt) revert ChallengeWindowOpen(claimableAt, block.timestamp);
        }
        if (index >> 64 != 0) revert IndexTooLarge(index);
        uint256 bit = 1 << (index & 0xff);
        uint256 slot;
        uint256 word;
        assembly ("memory-safe") {
            mstore(0x00, or(shl(128, epochId), shr(8, index)))
            mstore(0x20, _claimed.slot)
            slot := keccak256(0x00, 0x40)
            word := sload(slot)
        }
        if (word & bit != 0) revert AlreadyClaimed(epochId, index);
        bytes32 h;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, index)
            mstore(add(m, 0x20), account)
            mstore(add(m, 0x40), amount)
            mstore(0x00, keccak256(m, 0x60))
            h := keccak256(0x00, 0x20)
            let end := add(proof.offset, shl(5, proof.length))
            for { let p := proof.offset } lt(p, end) { p := add(p, 0x20) } {
                let sibling := calldataload(p)
                switch lt(h, sibling)
                case 1 {
                    mstore(0x00, h)
                    mstore(0x20, sibling)
                }
                default {
                    mstore(0x00, sibling)
                    mstore(0x20, h)
                }
                h := keccak256(0x00, 0x40)
            }
        }
        if ((uint256(h) ^ stored) & ROOT_MASK != 0) revert InvalidProof(epochId, index);
        assembly ("memory-safe") {
            sstore(slot, or(word, bit))
        }
        address t = address(token);
        bool ok;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, 0xa9059cbb00000000000000000000000000000000000000000000000000000000)
            mstore(add(m, 0x04), account)
            mstore(add(m, 0x24), amount)
            mstore(0x00, 0)
            ok := call(gas(), t, 0, m, 0x44, 0x00, 0x20)
            ok := and(ok, or(and(eq(returndatasize(), 0x20), eq(mload(0x00), 1)), iszero(returndatasize())))
        }
        if (!ok) revert TransferFailed();
    }

    /// @notice Whether leaf `index` of `epochId` was claimed.
    function isClaimed(uint64 epochId, uint256 index) external view returns (bool) {
        if (index >> 64 != 0) return false;
        return _claimed[(uint256(epochId) << 128) | (index >> 8)] & (1 << (index & 0xff)) != 0;
    }
}
