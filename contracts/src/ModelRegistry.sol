// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable2Step, Ownable} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/// @title ModelRegistry
/// @notice Model publishers register the hash of a signed model manifest (b3iq-core manifest, signed
///         off chain with the publisher's Ed25519 key, whose public key is recorded here) with a stake
///         and a royalty recipient (the payout address of the publisher's 10% share). Governance (the
///         owner) can delist a model. A publisher retires its own model; stake is withdrawable
///         `withdrawDelay` seconds after a retirement or delisting.
contract ModelRegistry is Ownable2Step {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Listed,
        Retired,
        Delisted
    }

    struct Model {
        bytes32 manifestHash;
        bytes32 publisherKey;
        address publisher;
        address royaltyRecipient;
        Status status;
        uint64 registeredAt;
        uint64 withdrawableAt;
        uint256 stake;
    }

    IERC20 public immutable token;
    uint64 public immutable withdrawDelay;
    uint256 public minPublisherStake;
    mapping(bytes32 modelId => Model) private _models;

    event MinPublisherStakeSet(uint256 amount);
    event ModelRegistered(
        bytes32 indexed modelId,
        address indexed publisher,
        bytes32 manifestHash,
        bytes32 publisherKey,
        address royaltyRecipient,
        uint256 stake
    );
    event RoyaltyRecipientChanged(bytes32 indexed modelId, address royaltyRecipient);
    event ModelRetired(bytes32 indexed modelId);
    event ModelDelisted(bytes32 indexed modelId, bytes32 reasonHash);
    event StakeWithdrawn(bytes32 indexed modelId, address indexed to, uint256 amount);

    error ZeroAddress();
    error ZeroValue();
    error AlreadyRegistered(bytes32 modelId);
    error NotPublisher(bytes32 modelId, address caller);
    error NotListed(bytes32 modelId);
    error StakeBelowMinimum(uint256 stake, uint256 required);
    error StakeLocked(uint64 withdrawableAt, uint256 nowTs);
    error NothingToWithdraw(bytes32 modelId);

    constructor(address initialOwner, IERC20 token_, uint64 withdrawDelay_, uint256 minPublisherStake_)
        Ownable(initialOwner)
    {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
        withdrawDelay = withdrawDelay_;
        minPublisherStake = minPublisherStake_;
        emit MinPublisherStakeSet(minPublisherStake_);
    }

    function setMinPublisherStake(uint256 amount) external onlyOwner {
        minPublisherStake = amount;
        emit MinPublisherStakeSet(amount);
    }

    /// @notice Register `modelId` (b3iq-core model id, 32 bytes) with the hash of its signed manifest.
    ///         The caller becomes the publisher and deposits `stake` (needs an allowance).
    function register(
        bytes32 modelId,
        bytes32 manifestHash,
        bytes32 publisherKey,
        address royaltyRecipient,
        uint256 stake
    ) external {
        if (modelId == bytes32(0) || manifestHash == bytes32(0) || publisherKey == bytes32(0)) revert ZeroValue();
        if (royaltyRecipient == address(0)) revert ZeroAddress();
        if (_models[modelId].status != Status.None) revert AlreadyRegistered(modelId);
        if (stake < minPublisherStake) revert StakeBelowMinimum(stake, minPublisherStake);
        _models[modelId] = Model({
            manifestHash: manifestHash,
            publisherKey: publisherKey,
            publisher: msg.sender,
            royaltyRecipient: royaltyRecipient,
            status: Status.Listed,
            registeredAt: uint64(block.timestamp),
            withdrawableAt: 0,
            stake: stake
        });
        if (stake != 0) token.safeTransferFrom(msg.sender, address(this), stake);
        emit ModelRegistered(modelId, msg.sender, manifestHash, publisherKey, royaltyRecipient, stake);
    }

    function setRoyaltyRecipient(bytes32 modelId, address royaltyRecipient) external {
        Model storage m = _models[modelId];
        if (m.publisher != msg.sender) revert NotPublisher(modelId, msg.sender);
        if (m.status != Status.Listed) revert NotListed(modelId);
        if (royaltyRecipient == address(0)) revert ZeroAddress();
        m.royaltyRecipient = royaltyRecipient;
        emit RoyaltyRecipientChanged(modelId, royaltyRecipient);
    }

    /// @notice Publisher withdraws its model from the network.
    function retire(bytes32 modelId) external {
        Model storage m = _models[modelId];
        if (m.publisher != msg.sender) revert NotPublisher(modelId, msg.sender);
        if (m.status != Status.Listed) revert NotListed(modelId);
        m.status = Status.Retired;
        m.withdrawableAt = uint64(block.timestamp) + withdrawDelay;
        emit ModelRetired(modelId);
    }

    /// @notice Governance delists a model (e.g. a manifest found to misdescribe its weights).
    function delist(bytes32 modelId, bytes32 reasonHash) external onlyOwner {
        Model storage m = _models[modelId];
        if (m.status != Status.Listed) revert NotListed(modelId);
        m.status = Status.Delisted;
        m.withdrawableAt = uint64(block.timestamp) + withdrawDelay;
        emit ModelDelisted(modelId, reasonHash);
    }

    /// @notice Publisher takes its stake back after retirement/delisting plus `withdrawDelay`.
    function withdrawStake(bytes32 modelId) external {
        Model storage m = _models[modelId];
        if (m.publisher != msg.sender) revert NotPublisher(modelId, msg.sender);
        if (m.status == Status.Listed) revert StakeLocked(0, block.timestamp);
        if (block.timestamp < m.withdrawableAt) revert StakeLocked(m.withdrawableAt, block.timestamp);
        uint256 amount = m.stake;
        if (amount == 0) revert NothingToWithdraw(modelId);
        m.stake = 0;
        token.safeTransfer(msg.sender, amount);
        emit StakeWithdrawn(modelId, msg.sender, amount);
    }

    function getModel(bytes32 modelId) external view returns (Model memory) {
        return _models[modelId];
    }

    function isListed(bytes32 modelId) external view returns (bool) {
        return _models[modelId].status == Status.Listed;
    }
}
