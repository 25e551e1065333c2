// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title B3TestToken
/// @notice ERC-20 standing in for B3 in tests and local demos ONLY. Production deployments pass the
///         address of the real token to the other contracts instead of deploying this one.
contract B3TestToken is ERC20, Ownable {
    constructor(address initialOwner) ERC20("B3 Test Token", "tB3") Ownable(initialOwner) {}

    /// @notice Mint test tokens (owner only).
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
