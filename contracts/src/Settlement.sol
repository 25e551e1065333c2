// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Settlement
/// @notice Per-epoch settlement of B3IQ receipts. A settler posts, per epoch, the blake3 receipt root,
///         the keccak payout root and the totals; the contract stores ONE commitment slot and emits the
///         details in `EpochPosted`. After the challenge window, anyone can claim a payout leaf for its
///         account with an OpenZeppelin-compatible Merkle proof (sorted pairs, double-hashed leaf
///         `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`); a bitmap of
///         claimed indices prevents double claims. Payouts come from an escrow that is reserved when
///         the epoch is posted. During the challenge window a guardian can cancel a bad epoch.
contract Settlement is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice What a claimer (or a disputer) presents to open an epoch's commitment. It is read from
    ///         the `EpochPosted` event: `detailsHash = keccak256(abi.encode(receiptRoot, totalPayout,
    ///         receiptCount, leafCount))`.
    struct EpochRef {
        bytes32 payoutRoot;
        uint64 postedAt;
        bytes32 detailsHash;
    }

    IERC20 public immutable token;
    /// @notice Seconds after posting before claims open (and until which a guardian may cancel).
    uint64 public immutable challengeWindow;
    /// @notice Escrow not yet reserved by any epoch.
    uint256 public escrowAvailable;
    /// @notice keccak256(abi.encode(EpochRef)) per epoch id; zero when not posted (or cancelled).
    mapping(uint64 epochId => bytes32) public commitments;
    mapping(uint64 epochId => mapping(uint256 word => uint256)) private _claimed;

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
    event Claimed(uint64 indexed epochId, uint256 index, address indexed account, uint256 amount);

    error ZeroAddress();
    error ZeroAmount();
    error EpochAlreadyPosted(uint64 epochId);
    error InsufficientEscrow(uint256 available, uint256 required);
    error UnknownEpoch(uint64 epochId);
    error ChallengeWindowOpen(uint256 claimableAt, uint256 nowTs);
    error ChallengeWindowClosed(uint256 claimableAt, uint256 nowTs);
    error AlreadyClaimed(uint64 epochId, uint256 index);
    error InvalidProof(uint64 epochId, uint256 index);
    error DetailsMismatch(uint64 epochId);

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

    /// @notice `keccak256(abi.encode(receiptRoot, totalPayout, receiptCount, leafCount))`.
    function detailsHash(bytes32 receiptRoot, uint256 totalPayout, uint64 receiptCount, uint64 leafCount)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(receiptRoot, totalPayout, receiptCount, leafCount));
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
        if (commitments[epochId] != bytes32(0)) revert EpochAlreadyPosted(epochId);
        uint256 available = escrowAvailable;
        if (totalPayout > available) revert InsufficientEscrow(available, totalPayout);
        unchecked {
            escrowAvailable = available - totalPayout;
        }
        uint64 postedAt = uint64(block.timestamp);
        commitments[epochId] = keccak256(
            abi.encode(payoutRoot, postedAt, detailsHash(receiptRoot, totalPayout, receiptCount, leafCount))
        );
        emit EpochPosted(epochId, receiptRoot, payoutRoot, totalPayout, receiptCount, leafCount, postedAt);
    }

    /// @notice Reverts unless `ref` opens the commitment of `epochId`.
    function checkEpoch(uint64 epochId, EpochRef calldata ref) public view {
        if (commitments[epochId] != keccak256(abi.encode(ref)) || ref.postedAt == 0) revert UnknownEpoch(epochId);
    }

    /// @notice Guardian cancels a posted epoch during its challenge window; the reservation returns to escrow.
    function cancelEpoch(
        uint64 epochId,
        EpochRef calldata ref,
        bytes32 receiptRoot,
        uint256 totalPayout,
        uint64 receiptCount,
        uint64 leafCount
    ) external onlyRole(GUARDIAN_ROLE) {
        checkEpoch(epochId, ref);
        if (ref.detailsHash != detailsHash(receiptRoot, totalPayout, receiptCount, leafCount)) {
            revert DetailsMismatch(epochId);
        }
        uint256 claimableAt = uint256(ref.postedAt) + challengeWindow;
        if (block.timestamp >= claimableAt) revert ChallengeWindowClosed(claimableAt, block.timestamp);
        delete commitments[epochId];
        escrowAvailable += totalPayout;
        emit EpochCancelled(epochId, totalPayout);
    }

    /// @notice Pay leaf `index` of epoch `epochId` to `account`. Anyone may submit it.
    function claim(
        uint64 epochId,
        EpochRef calldata ref,
        uint256 index,
        address account,
        uint256 amount,
        bytes32[] calldata proof
    ) external {
        checkEpoch(epochId, ref);
        uint256 claimableAt = uint256(ref.postedAt) + challengeWindow;
        if (block.timestamp < claimableAt) revert ChallengeWindowOpen(claimableAt, block.timestamp);
        uint256 wordIndex = index >> 8;
        uint256 bit = 1 << (index & 0xff);
        uint256 word = _claimed[epochId][wordIndex];
        if (word & bit != 0) revert AlreadyClaimed(epochId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, ref.payoutRoot, leaf)) revert InvalidProof(epochId, index);
        _claimed[epochId][wordIndex] = word | bit;
        token.safeTransfer(account, amount);
        emit Claimed(epochId, index, account, amount);
    }

    function isClaimed(uint64 epochId, uint256 index) external view returns (bool) {
        return _claimed[epochId][index >> 8] & (1 << (index & 0xff)) != 0;
    }
}
