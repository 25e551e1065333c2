// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {StakeVault} from "./StakeVault.sol";
import {Settlement} from "./Settlement.sol";

/// @title Disputes
/// @notice Objective-evidence disputes against a node's work in a posted settlement epoch.
///         A challenger opens a dispute with a bond and an evidence hash within `evidenceWindow` of the
///         epoch's posting (shorter than the stake unbonding delay, so stake cannot escape). The node's
///         stake is frozen while the dispute is open. A verifier committee votes; `quorum` votes decide.
///         An upheld dispute can be appealed by the node operator during `appealWindow`; an arbiter
///         decides appeals. A slash executes only after the appeal window (or a rejected appeal), and
///         slashed funds go to the StakeVault escrow.
contract Disputes is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");

    enum Status {
        None,
        Open,
        Upheld,
        Rejected,
        Appealed,
        Overturned,
        Executed
    }

    struct Dispute {
        bytes32 nodeId;
        address challenger;
        uint64 epochId;
        uint64 openedAt;
        uint64 appealDeadline;
        Status status;
        uint16 upholdVotes;
        uint16 rejectVotes;
        bytes32 evidenceHash;
        uint256 bond;
        uint256 slashAmount;
    }

    IERC20 public immutable token;
    NodeRegistry public immutable registry;
    StakeVault public immutable vault;
    Settlement public immutable settlement;
    uint64 public immutable evidenceWindow;
    uint64 public immutable appealWindow;
    uint256 public immutable bondAmount;
    uint16 public immutable quorum;

    uint256 public disputeCount;
    /// @notice Bonds of rejected or overturned disputes, held until governance releases them.
    uint256 public forfeitedBonds;
    mapping(uint256 disputeId => Dispute) private _disputes;
    mapping(uint256 disputeId => mapping(address verifier => bool)) public hasVoted;

    event DisputeOpened(
        uint256 indexed disputeId,
        bytes32 indexed nodeId,
        uint64 indexed epochId,
        address challenger,
        bytes32 evidenceHash,
        uint256 slashAmount
    );
    event Voted(uint256 indexed disputeId, address indexed verifier, bool uphold);
    event DisputeResolved(uint256 indexed disputeId, Status status, uint64 appealDeadline);
    event Appealed(uint256 indexed disputeId, address indexed operator);
    event AppealDecided(uint256 indexed disputeId, bool overturned);
    event SlashExecuted(uint256 indexed disputeId, bytes32 indexed nodeId, uint256 slashed);
    event ForfeitedBondsReleased(address indexed to, uint256 amount);

    error ZeroAddress();
    error EvidenceWindowNotShorterThanUnbonding(uint64 evidenceWindow, uint64 unbondingDelay);
    error BadQuorum();
    error UnknownNode(bytes32 nodeId);
    error ZeroEvidence();
    error ZeroAmount();
    error EvidenceWindowClosed(uint256 deadline, uint256 nowTs);
    error UnknownEpoch(uint64 epochId);
    error UnknownDispute(uint256 disputeId);
    error WrongStatus(uint256 disputeId, Status status);
    error AlreadyVoted(uint256 disputeId, address verifier);
    error NotOperator(uint256 disputeId, address caller);
    error AppealWindowClosed(uint256 deadline, uint256 nowTs);
    error AppealWindowOpen(uint256 deadline, uint256 nowTs);
    error InsufficientForfeits(uint256 available, uint256 requested);

    constructor(
        address admin,
        IERC20 token_,
        NodeRegistry registry_,
        StakeVault vault_,
        Settlement settlement_,
        uint64 evidenceWindow_,
        uint64 appealWindow_,
        uint256 bondAmount_,
        uint16 quorum_
    ) {
        if (
            admin == address(0) || address(token_) == address(0) || address(registry_) == address(0)
                || address(vault_) == address(0) || address(settlement_) == address(0)
        ) revert ZeroAddress();
        uint64 unbonding = vault_.unbondingDelay();
        if (evidenceWindow_ >= unbonding) revert EvidenceWindowNotShorterThanUnbonding(evidenceWindow_, unbonding);
        if (quorum_ == 0) revert BadQuorum();
        token = token_;
        registry = registry_;
        vault = vault_;
        settlement = settlement_;
        evidenceWindow = evidenceWindow_;
        appealWindow = appealWindow_;
        bondAmount = bondAmount_;
        quorum = quorum_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Open a dispute against `nodeId` for its work in the posted epoch `epochId`. Takes
    ///         `bondAmount` from the caller (needs an allowance).
    function open(bytes32 nodeId, uint64 epochId, bytes32 evidenceHash, uint256 slashAmount)
        external
        returns (uint256 disputeId)
    {
        if (registry.operatorOf(nodeId) == address(0)) revert UnknownNode(nodeId);
        if (evidenceHash == bytes32(0)) revert ZeroEvidence();
        if (slashAmount == 0) revert ZeroAmount();
        uint64 postedAt = settlement.postedAt(epochId);
        if (postedAt == 0) revert UnknownEpoch(epochId);
        uint256 deadline = uint256(postedAt) + evidenceWindow;
        if (block.timestamp > deadline) revert EvidenceWindowClosed(deadline, block.timestamp);
        disputeId = ++disputeCount;
        _disputes[disputeId] = Dispute({
            nodeId: nodeId,
            challenger: msg.sender,
            epochId: epochId,
            openedAt: uint64(block.timestamp),
            appealDeadline: 0,
            status: Status.Open,
            upholdVotes: 0,
            rejectVotes: 0,
            evidenceHash: evidenceHash,
            bond: bondAmount,
            slashAmount: slashAmount
        });
        vault.freeze(nodeId);
        if (bondAmount != 0) token.safeTransferFrom(msg.sender, address(this), bondAmount);
        emit DisputeOpened(disputeId, nodeId, epochId, msg.sender, evidenceHash, slashAmount);
    }

    function _get(uint256 disputeId) private view returns (Dispute storage d) {
        d = _disputes[disputeId];
        if (d.status == Status.None) revert UnknownDispute(disputeId);
    }

    /// @notice A committee member votes. When `quorum` members agree, the dispute is resolved:
    ///         upheld (appeal window starts) or rejected (bond forfeited, stake unfrozen).
    function vote(uint256 disputeId, bool uphold) external onlyRole(VERIFIER_ROLE) {
        Dispute storage d = _get(disputeId);
        if (d.status != Status.Open) revert WrongStatus(disputeId, d.status);
        if (hasVoted[disputeId][msg.sender]) revert AlreadyVoted(disputeId, msg.sender);
        hasVoted[disputeId][msg.sender] = true;
        emit Voted(disputeId, msg.sender, uphold);
        if (uphold) {
            if (++d.upholdVotes >= quorum) {
                d.status = Status.Upheld;
                d.appealDeadline = uint64(block.timestamp) + appealWindow;
                emit DisputeResolved(disputeId, Status.Upheld, d.appealDeadline);
            }
        } else if (++d.rejectVotes >= quorum) {
            d.status = Status.Rejected;
            forfeitedBonds += d.bond;
            vault.unfreeze(d.nodeId);
            emit DisputeResolved(disputeId, Status.Rejected, 0);
        }
    }

    /// @notice The node's operator appeals an upheld dispute before the appeal deadline.
    function appeal(uint256 disputeId) external {
        Dispute storage d = _get(disputeId);
        if (d.status != Status.Upheld) revert WrongStatus(disputeId, d.status);
        if (registry.operatorOf(d.nodeId) != msg.sender) revert NotOperator(disputeId, msg.sender);
        if (block.timestamp > d.appealDeadline) revert AppealWindowClosed(d.appealDeadline, block.timestamp);
        d.status = Status.Appealed;
        emit Appealed(disputeId, msg.sender);
    }

    /// @notice The arbiter decides an appeal: overturn (no slash, bond forfeited) or confirm (slash
    ///         becomes executable at once).
    function decideAppeal(uint256 disputeId, bool overturn) external onlyRole(ARBITER_ROLE) {
        Dispute storage d = _get(disputeId);
        if (d.status != Status.Appealed) revert WrongStatus(disputeId, d.status);
        emit AppealDecided(disputeId, overturn);
        if (overturn) {
            d.status = Status.Overturned;
            forfeitedBonds += d.bond;
            vault.unfreeze(d.nodeId);
        } else {
            d.status = Status.Upheld;
            d.appealDeadline = uint64(block.timestamp);
        }
    }

    /// @notice Execute the slash of an upheld dispute once its appeal window has passed. Anyone may
    ///         call it. The challenger's bond is returned.
    function executeSlash(uint256 disputeId) external returns (uint256 slashed) {
        Dispute storage d = _get(disputeId);
        if (d.status != Status.Upheld) revert WrongStatus(disputeId, d.status);
        if (block.timestamp <= d.appealDeadline) revert AppealWindowOpen(d.appealDeadline, block.timestamp);
        d.status = Status.Executed;
        vault.unfreeze(d.nodeId);
        slashed = vault.slash(d.nodeId, d.slashAmount, disputeId);
        if (d.bond != 0) token.safeTransfer(d.challenger, d.bond);
        emit SlashExecuted(disputeId, d.nodeId, slashed);
    }

    /// @notice Governance releases forfeited bonds.
    function releaseForfeitedBonds(address to, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (to == address(0)) revert ZeroAddress();
        if (amount > forfeitedBonds) revert InsufficientForfeits(forfeitedBonds, amount);
        forfeitedBonds -= amount;
        token.safeTransfer(to, amount);
        emit ForfeitedBondsReleased(to, amount);
    }

    function getDispute(uint256 disputeId) external view returns (Dispute memory) {
        return _disputes[disputeId];
    }
}
