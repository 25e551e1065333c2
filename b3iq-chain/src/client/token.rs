//! `B3TestToken` (or any ERC-20 with the same ABI subset): mint (test token only), approve,
//! balance.

use alloy::primitives::{Address, U256};
use alloy::providers::DynProvider;

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::B3TestToken;
use crate::error::Result;

impl ChainClient {
    /// `B3TestToken` (or any ERC-20 with the same ABI subset) at `d.token`.
    pub fn token(&self, d: &Deployment) -> B3TestToken::B3TestTokenInstance<DynProvider> {
        B3TestToken::new(d.token, self.provider.clone())
    }

    /// Mints test tokens (test token owner only).
    pub async fn mint(&self, d: &Deployment, to: Address, amount: U256) -> Result<TxOutcome> {
        self.send("B3TestToken.mint", self.token(d).mint(to, amount))
            .await
    }

    /// ERC-20 approve.
    pub async fn approve(
        &self,
        d: &Deployment,
        spender: Address,
        amount: U256,
    ) -> Result<TxOutcome> {
        self.send("ERC20.approve", self.token(d).approve(spender, amount))
            .await
    }

    /// ERC-20 balance.
    pub async fn balance_of(&self, d: &Deployment, who: Address) -> Result<U256> {
        self.call("ERC20.balanceOf", self.token(d).balanceOf(who))
            .await
    }
}
