// Hardhat 2 is used ONLY for its local node (`hardhat node`), which runs offline.
// Contracts are compiled by compile.js with the pinned solcjs, not by hardhat.
/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      // Instant mining per transaction; tests move time with evm_increaseTime + evm_mine.
      mining: { auto: true },
      // Deterministic default accounts (hardhat's well-known test mnemonic), funded.
      accounts: { count: 20 },
    },
  },
};
