//! Development-chain RPCs (hardhat / anvil only), behind the `devnet` feature.

use alloy::providers::Provider;

use super::ChainClient;
use crate::error::Result;

impl ChainClient {
    /// Moves the chain clock forward by `seconds` and mines a block (`evm_increaseTime` +
    /// `evm_mine`; development nodes only).
    pub async fn increase_time(&self, seconds: u64) -> Result<()> {
        self.with_retries("evm_increaseTime", || async {
            self.provider
                .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
                .await
        })
        .await?;
        self.with_retries("evm_mine", || async {
            self.provider
                .raw_request::<_, serde_json::Value>("evm_mine".into(), Vec::<u64>::new())
                .await
        })
        .await?;
        Ok(())
    }
}
