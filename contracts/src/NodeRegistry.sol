// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Ownable2Step, Ownable} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/// @title NodeRegistry
/// @notice Registers B3IQ host nodes. A node id (bytes32, b3iq-core `NodeId`) is bound to its Ed25519
///         public key, an operator wallet, a hardware-claims hash, a software version, an operating
///         mode and a device class. Every registration and update carries an EIP-712 attestation from
///         the enrollment attester (the control plane, which checked the node's Ed25519 proof of
///         possession off chain). The operator deregisters its node itself.
contract NodeRegistry is EIP712, Ownable2Step {
    /// @notice EIP-712 type of the attester's statement about a node.
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(bytes32 nodeId,bytes32 publicKey,address operator,bytes32 hardwareHash,uint32 softwareVersion,uint8 mode,uint8 deviceClass,uint256 nonce,uint64 deadline)"
    );

    /// @notice What the attester vouches for. `nonce` must equal `nonces(nodeId)`; it is consumed on use.
    struct Attestation {
        bytes32 nodeId;
        bytes32 publicKey;
        address operator;
        bytes32 hardwareHash;
        uint32 softwareVersion;
        uint8 mode;
        uint8 deviceClass;
        uint256 nonce;
        uint64 deadline;
    }

    /// @notice A registered node.
    struct Node {
        bytes32 publicKey;
        address operator;
        bytes32 hardwareHash;
        uint32 softwareVersion;
        uint8 mode;
        uint8 deviceClass;
        bool active;
        uint64 registeredAt;
    }

    /// @notice Number of device classes (0 .. DEVICE_CLASSES-1); StakeVault sizes stake per class.
    uint8 public constant DEVICE_CLASSES = 8;

    address public attester;
    mapping(bytes32 nodeId => Node) private _nodes;
    mapping(bytes32 nodeId => uint256) public nonces;

    event AttesterChanged(address indexed previous, address indexed current);
    event NodeRegistered(
        bytes32 indexed nodeId,
        address indexed operator,
        bytes32 publicKey,
        bytes32 hardwareHash,
        uint32 softwareVersion,
        uint8 mode,
        uint8 deviceClass
    );
    event NodeUpdated(
        bytes32 indexed nodeId, bytes32 hardwareHash, uint32 softwareVersion, uint8 mode, uint8 deviceClass
    );
    event NodeDeregistered(bytes32 indexed nodeId, address indexed operator);

    error ZeroAddress();
    error AttestationExpired(uint64 deadline, uint256 nowTs);
    error BadNonce(uint256 expected, uint256 given);
    error InvalidAttestation(address recovered);
    error NotOperator(bytes32 nodeId, address caller);
    error AlreadyRegistered(bytes32 nodeId);
    error NotRegistered(bytes32 nodeId);
    error PublicKeyMismatch(bytes32 nodeId);
    error BadDeviceClass(uint8 deviceClass);
    error ZeroNodeId();

    constructor(address initialOwner, address attester_)
        EIP712("B3IQ NodeRegistry", "1")
        Ownable(initialOwner)
    {
        if (attester_ == address(0)) revert ZeroAddress();
        attester = attester_;
        emit AttesterChanged(address(0), attester_);
    }

    /// @notice Governance rotates the enrollment attester key.
    function setAttester(address attester_) external onlyOwner {
        if (attester_ == address(0)) revert ZeroAddress();
        emit AttesterChanged(attester, attester_);
        attester = attester_;
    }

    /// @notice EIP-712 digest the attester signs for `a`.
    function attestationDigest(Attestation calldata a) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_TYPEHASH,
                    a.nodeId,
                    a.publicKey,
                    a.operator,
                    a.hardwareHash,
                    a.softwareVersion,
                    a.mode,
                    a.deviceClass,
                    a.nonce,
                    a.deadline
                )
            )
        );
    }

    /// @notice The EIP-712 domain separator (for off-chain signers).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _checkAttestation(Attestation calldata a, bytes calldata signature) private {
        if (a.nodeId == bytes32(0)) revert ZeroNodeId();
        if (a.operator != msg.sender) revert NotOperator(a.nodeId, msg.sender);
        if (a.deadline < block.timestamp) revert AttestationExpired(a.deadline, block.timestamp);
        if (a.deviceClass >= DEVICE_CLASSES) revert BadDeviceClass(a.deviceClass);
        uint256 expected = nonces[a.nodeId];
        if (a.nonce != expected) revert BadNonce(expected, a.nonce);
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(attestationDigest(a), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != attester) revert InvalidAttestation(recovered);
        nonces[a.nodeId] = expected + 1;
    }

    /// @notice Register (or re-register after deregistration) a node. Must be sent by `a.operator`.
    function register(Attestation calldata a, bytes calldata signature) external {
        _checkAttestation(a, signature);
        Node storage n = _nodes[a.nodeId];
        if (n.active) revert AlreadyRegistered(a.nodeId);
        // A node id is derived from its key: a re-registration must keep the same key.
        if (n.publicKey != bytes32(0) && n.publicKey != a.publicKey) revert PublicKeyMismatch(a.nodeId);
        _nodes[a.nodeId] = Node({
            publicKey: a.publicKey,
            operator: a.operator,
            hardwareHash: a.hardwareHash,
            softwareVersion: a.softwareVersion,
            mode: a.mode,
            deviceClass: a.deviceClass,
            active: true,
            registeredAt: uint64(block.timestamp)
        });
        emit NodeRegistered(
            a.nodeId, a.operator, a.publicKey, a.hardwareHash, a.softwareVersion, a.mode, a.deviceClass
        );
    }

    /// @notice Update hardware claims, software version, mode and device class of an active node,
    ///         with a fresh attestation. Must be sent by the current operator; key and operator are fixed.
    function update(Attestation calldata a, bytes calldata signature) external {
        Node storage n = _nodes[a.nodeId];
        if (!n.active) revert NotRegistered(a.nodeId);
        if (n.operator != msg.sender) revert NotOperator(a.nodeId, msg.sender);
        if (n.publicKey != a.publicKey) revert PublicKeyMismatch(a.nodeId);
        _checkAttestation(a, signature);
        n.hardwareHash = a.hardwareHash;
        n.softwareVersion = a.softwareVersion;
        n.mode = a.mode;
        n.deviceClass = a.deviceClass;
        emit NodeUpdated(a.nodeId, a.hardwareHash, a.softwareVersion, a.mode, a.deviceClass);
    }

    /// @notice The operator takes its node off the network. Stake stays in StakeVault (and slashable)
    ///         until it is unbonded there.
    function deregister(bytes32 nodeId) external {
        Node storage n = _nodes[nodeId];
        if (!n.active) revert NotRegistered(nodeId);
        if (n.operator != msg.sender) revert NotOperator(nodeId, msg.sender);
        n.active = false;
        emit NodeDeregistered(nodeId, msg.sender);
    }

    /// @notice The stored record of `nodeId` (all zero if never registered).
    function getNode(bytes32 nodeId) external view returns (Node memory) {
        return _nodes[nodeId];
    }

    /// @notice Operator wallet of `nodeId` (zero if never registered).
    function operatorOf(bytes32 nodeId) external view returns (address) {
        return _nodes[nodeId].operator;
    }

    function isActive(bytes32 nodeId) external view returns (bool) {
        return _nodes[nodeId].active;
    }
}
