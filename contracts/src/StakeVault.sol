// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable2Step, Ownable} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {NodeRegistry} from "./NodeRegistry.sol";

/// @title StakeVault
/// @notice Holds the stake of every node, sized by device class. Stake leaves through an unbonding
///         delay; while a dispute against the node is open its stake cannot be withdrawn. Only the
///         Disputes contract can slash, and slashed funds stay escrowed here until governance
///         releases them.
contract StakeVault is Ownable2Step {
    using SafeERC20 for IERC20;

    struct Stake {
        uint128 bonded;
        uint128 unbonding;
        uint64 unbondingReleaseAt;
        uint32 openDisputes;
    }

    IERC20 public immutable token;
    NodeRegistry public immutable registry;
    /// @notice Delay between `requestUnbond` and `withdraw`.
    uint64 public immutable unbondingDelay;
    /// @notice The only address allowed to slash and freeze (set once).
    address public disputes;
    /// @notice Minimum bonded stake per device class for a node to count as staked.
    mapping(uint8 deviceClass => uint256) public minStake;
    mapping(bytes32 nodeId => Stake) private _stakes;
    /// @notice Slashed funds held in escrow until governance releases them.
    uint256 public slashedEscrow;

    event DisputesSet(address disputes);
    event MinStakeSet(uint8 indexed deviceClass, uint256 amount);
    event Staked(bytes32 indexed nodeId, address indexed from, uint256 amount, uint256 bonded);
    event UnbondRequested(bytes32 indexed nodeId, uint256 amount, uint64 releaseAt);
    event Withdrawn(bytes32 indexed nodeId, address indexed to, uint256 amount);
    event Slashed(bytes32 indexed nodeId, uint256 indexed disputeId, uint256 amount);
    event SlashedReleased(address indexed to, uint256 amount);

    error ZeroAddress();
    error ZeroAmount();
    error DisputesAlreadySet();
    error NotDisputes(address caller);
    error NotOperator(bytes32 nodeId, address caller);
    error NodeNotActive(bytes32 nodeId);
    error BelowMinimumStake(uint256 bonded, uint256 required);
    error InsufficientBonded(uint256 bonded, uint256 requested);
    error NothingUnbonding(bytes32 nodeId);
    error UnbondingNotElapsed(uint64 releaseAt, uint256 nowTs);
    error FrozenByDispute(bytes32 nodeId, uint32 openDisputes);
    error InsufficientEscrow(uint256 escrow, uint256 requested);

    constructor(address initialOwner, IERC20 token_, NodeRegistry registry_, uint64 unbondingDelay_)
        Ownable(initialOwner)
    {
        if (address(token_) == address(0) || address(registry_) == address(0)) revert ZeroAddress();
        token = token_;
        registry = registry_;
        unbondingDelay = unbondingDelay_;
    }

    modifier onlyDisputes() {
        if (msg.sender != disputes) revert NotDisputes(msg.sender);
        _;
    }

    /// @notice Wire the Disputes contract (once).
    function setDisputes(address disputes_) external onlyOwner {
        if (disputes_ == address(0)) revert ZeroAddress();
        if (disputes != address(0)) revert DisputesAlreadySet();
        disputes = disputes_;
        emit DisputesSet(disputes_);
    }

    function setMinStake(uint8 deviceClass, uint256 amount) external onlyOwner {
        minStake[deviceClass] = amount;
        emit MinStakeSet(deviceClass, amount);
    }

    function _requireOperator(bytes32 nodeId) private view returns (NodeRegistry.Node memory n) {
        n = registry.getNode(nodeId);
        if (n.operator != msg.sender) revert NotOperator(nodeId, msg.sender);
    }

    /// @notice Add stake to an active node. Sent by its operator; the bonded total after the deposit
    ///         must reach the minimum for the node's device class.
    function stake(bytes32 nodeId, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        NodeRegistry.Node memory n = _requireOperator(nodeId);
        if (!n.active) revert NodeNotActive(nodeId);
        Stake storage s = _stakes[nodeId];
        uint256 bonded = uint256(s.bonded) + amount;
        uint256 required = minStake[n.deviceClass];
        if (bonded < required) revert BelowMinimumStake(bonded, required);
        s.bonded = uint128(bonded);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Staked(nodeId, msg.sender, amount, bonded);
    }

    /// @notice Start unbonding `amount` of bonded stake; it stays slashable until withdrawn.
    ///         A new request adds to the unbonding amount and restarts the delay.
    function requestUnbond(bytes32 nodeId, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _requireOperator(nodeId);
        Stake storage s = _stakes[nodeId];
        if (amount > s.bonded) revert InsufficientBonded(s.bonded, amount);
        s.bonded -= uint128(amount);
        s.unbonding += uint128(amount);
        uint64 releaseAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReleaseAt = releaseAt;
        emit UnbondRequested(nodeId, amount, releaseAt);
    }

    /// @notice Withdraw unbonded stake to the operator once the delay has passed and no dispute is open.
    function withdraw(bytes32 nodeId) external {
        _requireOperator(nodeId);
        Stake storage s = _stakes[nodeId];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding(nodeId);
        if (block.timestamp < s.unbondingReleaseAt) revert UnbondingNotElapsed(s.unbondingReleaseAt, block.timestamp);
        if (s.openDisputes != 0) revert FrozenByDispute(nodeId, s.openDisputes);
        s.unbonding = 0;
        s.unbondingReleaseAt = 0;
        token.safeTransfer(msg.sender, amount);
        emit Withdrawn(nodeId, msg.sender, amount);
    }

    /// @notice Disputes marks a node as under dispute (blocks withdrawals).
    function freeze(bytes32 nodeId) external onlyDisputes {
        _stakes[nodeId].openDisputes += 1;
    }

    /// @notice Disputes closes one dispute against a node.
    function unfreeze(bytes32 nodeId) external onlyDisputes {
        _stakes[nodeId].openDisputes -= 1;
    }

    /// @notice Slash up to `amount` (bonded first, then unbonding) into escrow. Disputes only, after a
    ///         dispute was upheld and its appeal window passed. Returns what was actually slashed.
    function slash(bytes32 nodeId, uint256 amount, uint256 disputeId) external onlyDisputes returns (uint256 slashed) {
        Stake storage s = _stakes[nodeId];
        uint256 fromBonded = amount <= s.bonded ? amount : s.bonded;
        s.bonded -= uint128(fromBonded);
        uint256 rest = amount - fromBonded;
        uint256 fromUnbonding = rest <= s.unbonding ? rest : s.unbonding;
        s.unbonding -= uint128(fromUnbonding);
        slashed = fromBonded + fromUnbonding;
        slashedEscrow += slashed;
        emit Slashed(nodeId, disputeId, slashed);
    }

    /// @notice Governance releases escrowed slashed funds (e.g. to the harmed party or the treasury).
    function releaseSlashed(address to, uint256 amount) external onlyOwner {
        if (to == address(0)) revert ZeroAddress();
        if (amount > slashedEscrow) revert InsufficientEscrow(slashedEscrow, amount);
        slashedEscrow -= amount;
        token.safeTransfer(to, amount);
        emit SlashedReleased(to, amount);
    }

    function stakeOf(bytes32 nodeId) external view returns (Stake memory) {
        return _stakes[nodeId];
    }

    /// @notice True when the node's bonded stake meets the minimum of its current device class.
    function isStaked(bytes32 nodeId) external view returns (bool) {
        NodeRegistry.Node memory n = registry.getNode(nodeId);
        uint256 bonded = _stakes[nodeId].bonded;
        return n.active && bonded > 0 && bonded >= minStake[n.deviceClass];
    }
}
