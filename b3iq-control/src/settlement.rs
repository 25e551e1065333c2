//! Settlement epochs, the control plane's side: close, build, post, serve proofs.
//!
//! On a schedule (`settlement.epoch_interval_s` in `control.json`) the [`Settler`]:
//!
//! 1. **closes** an epoch: the store assigns it every network receipt not yet in an epoch that
//!    started before the close time (`ControlStore::close_epoch`: a receipt's epoch is set once,
//!    in one transaction, so it belongs to exactly one epoch; a receipt uploaded late lands in
//!    the next one);
//! 2. **builds** it with the b3iq-protocol [`EpochBuilder`] from the stored signed receipts.
//!    Their signatures were checked when their upload was accepted
//!    (`ReceiptUpload::verify`), so they enter as [`VerifiedReceipt::assume_verified`] and are
//!    not checked again (a million receipts build in seconds). Payees: each node's payout
//!    address (`POST /v1/node/payout-address`), the publishers, protocol and verifier accounts
//!    of `control.json`. Receipts of a node without a payout address are left out of the epoch
//!    (logged; the node sets its address with `b3iqd wallet set-address`);
//! 3. **stores the claim file** (every leaf and proof) before anything is sent, so a restart
//!    posts exactly what was built;
//! 4. **funds and posts** it with `ChainClient::ensure_epoch_posted`: the chain's commitment for
//!    the epoch id is read first and nothing is sent when it is already there (a post that
//!    timed out, or one sent just before a crash), the escrow is topped up from the settler's
//!    tokens only by what is missing; then records the post.
//!
//! Every tick first finishes epochs closed but not recorded as posted (oldest first), so a
//! crash at any point (even `kill -9` between the send and the record) ends with the epoch
//! posted exactly once. An epoch whose receipts all fell out (no payee, nothing to pay) is
//! recorded with `posted_at` 0 and has nothing to claim.
//!
//! `GET /v1/payouts/{address}` ([`Settler::payouts`]) answers each posted epoch's leaf and
//! proof for an address; `b3iqd wallet claim` sends them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use b3iq_chain::{ChainClient, Deployment, EpochCommit, EpochPost, PrivateKeySigner, RetryPolicy};
use b3iq_core::payout::EthAddress;
use b3iq_core::merkle::{MerkleProof, MerkleTree};
use b3iq_core::receipt::{ReceiptId, SignedReceipt};
use b3iq_core::split::SplitPolicy;
use b3iq_core::Hash32;
use b3iq_host::context::unix_now_ms;
use b3iq_protocol::payout_api::{AccountPayouts, EpochPayout};
use b3iq_protocol::settlement::ClaimFile;
use b3iq_protocol::{EpochBuilder, EpochConfig, Payees, ProtocolError, VerifiedReceipt};

use crate::error::{ControlError, Result};
use crate::store::{ControlStore, EpochRow};

/// `control.json` `settlement`: absent, the control plane settles nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementSettings {
    /// JSON-RPC URL of the chain (`http://127.0.0.1:8545`).
    pub rpc_url: String,
    /// The contracts' addresses (`token`, `node_registry`, `stake_vault`, `settlement`,
    /// `disputes`, `model_registry`); only `token` and `settlement` are used here.
    pub deployment: Deployment,
    /// The settler's wallet key file (`0x` + 64 hex, mode 0600), relative to the home or
    /// absolute. The wallet needs Settlement's `SETTLER_ROLE`, gas, and the tokens it funds the
    /// escrow with.
    pub settler_key_file: String,
    /// The NodeRegistry attester's key file (secp256k1, `0x` + 64 hex, mode 0600), relative to
    /// the home or absolute; made on first start when absent (default `attester.key`).
    /// `b3iq-control attester-address` prints its address for `NodeRegistry.setAttester`. It
    /// signs registration attestations only, never transactions (see `crate::registration`).
    #[serde(default = "default_attester_key")]
    pub attester_key_file: String,
    /// Seconds between epoch closes (default 3600).
    #[serde(default = "default_interval")]
    pub epoch_interval_s: u64,
    /// Token base units per micro-credit, decimal (default `1000000000000`: 1 token of 18
    /// decimals per credit).
    #[serde(default = "default_units")]
    pub token_units_per_micro_credit: String,
    /// Protocol treasury.
    pub protocol_account: EthAddress,
    /// Verifier pool.
    pub verifier_account: EthAddress,
    /// Route network requests only to nodes staked on chain (`StakeVault.isStaked`: registered,
    /// active, bonded stake at least the device class's minimum); see `gateway::stake`.
    /// Default `false` (stake is not checked).
    #[serde(default)]
    pub require_stake: bool,
    /// Seconds a node's stake answer is cached by the gateway (default 10).
    #[serde(default = "default_stake_cache")]
    pub stake_cache_s: u64,
    /// Royalty recipient per model id (a model not listed has no publisher: its share goes to
    /// the protocol, core's split rule).
    #[serde(default)]
    pub publishers: BTreeMap<String, EthAddress>,
}

fn default_interval() -> u64 {
    3600
}

fn default_attester_key() -> String {
    "attester.key".into()
}

fn default_stake_cache() -> u64 {
    10
}

fn default_units() -> String {
    "1000000000000".into()
}

/// Epochs listed when looking for unfinished ones or answering payouts.
const EPOCHS_SCANNED: u32 = 1000;

/// Receipt trees kept for inclusion lookups (a million-receipt epoch's tree is about 100 MB).
pub const TREES_CACHED: usize = 2;

/// Closes, builds, posts and serves settlement epochs (see the module docs).
pub struct Settler {
    store: Arc<dyn ControlStore>,
    chain: ChainClient,
    deployment: Deployment,
    settings: SettlementSettings,
    units: u128,
    chain_id: u64,
    /// When the first epoch may close (process start + interval), unix ms.
    first_close_ms: u64,
    /// The receipt trees of the epochs last asked about (`receipt_tree`), newest first, at most
    /// [`TREES_CACHED`]. Locked across a rebuild, so rebuilds run one at a time and lookups
    /// waiting on one find its tree.
    tree_cache: tokio::sync::Mutex<std::collections::VecDeque<Arc<ReceiptTree>>>,
}

/// The receipt tree of a built epoch, as committed on chain: its leaves are the accepted
/// receipt ids in ascending order (b3iq-core's blake3 tree, RFC 6962 shape).
#[derive(Debug)]
pub struct ReceiptTree {
    /// Epoch id.
    pub epoch_id: u64,
    /// The accepted receipt ids, ascending (a leaf index is a position here).
    pub ids: Vec<ReceiptId>,
    /// The tree over them.
    pub tree: MerkleTree,
}

impl ReceiptTree {
    /// The leaf index and inclusion proof of `id`, `None` when the epoch left it out.
    pub fn prove(&self, id: &ReceiptId) -> Option<(u64, MerkleProof)> {
        let i = self.ids.binary_search(id).ok()? as u64;
        self.tree.prove(i).ok().map(|p| (i, p))
    }
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler").field("settler", &self.chain.address()).field("settlement", &self.deployment.settlement).finish()
    }
}

impl Settler {
    /// Connects the settler's wallet to the chain.
    ///
    /// # Errors
    /// `Config` for a zero interval or a bad unit; `Chain` when the chain cannot be reached.
    pub async fn connect(store: Arc<dyn ControlStore>, settings: SettlementSettings, signer: PrivateKeySigner, now_ms: u64) -> Result<Settler> {
        if settings.epoch_interval_s == 0 {
            return Err(ControlError::Config("control.json settlement.epoch_interval_s must be above zero".into()));
        }
        let units = settings
            .token_units_per_micro_credit
            .parse::<u128>()
            .ok()
            .filter(|u| *u > 0)
            .ok_or_else(|| ControlError::Config(format!("control.json settlement.token_units_per_micro_credit {:?}: a whole number above zero", settings.token_units_per_micro_credit)))?;
        let chain = ChainClient::connect(&settings.rpc_url, signer, RetryPolicy::default()).await?;
        let chain_id = chain.chain_id().await?;
        Ok(Settler { store, chain, deployment: settings.deployment, first_close_ms: now_ms.saturating_add(settings.epoch_interval_s.saturating_mul(1000)), settings, units, chain_id, tree_cache: tokio::sync::Mutex::new(std::collections::VecDeque::new()) })
    }

    /// The settler's wallet address.
    pub fn address(&self) -> EthAddress {
        EthAddress(self.chain.address().0 .0)
    }

    /// One step: finishes every epoch not yet recorded as posted, then closes (and finishes) a
    /// new one when the interval has passed since the last close. Returns the epochs finished.
    ///
    /// # Errors
    /// `Store`, `Chain`: the next tick retries (posting never twice).
    pub async fn tick(&self, now_ms: u64) -> Result<Vec<u64>> {
        let mut done = Vec::new();
        let mut open: Vec<EpochRow> = self.store.epochs(EPOCHS_SCANNED).await?.into_iter().filter(|e| e.posted_at.is_none()).collect();
        open.sort_by_key(|e| e.epoch_id);
        for e in open {
            self.finish(&e).await?;
            done.push(e.epoch_id);
        }
        let due = match self.store.epochs(1).await?.first() {
            Some(last) => now_ms >= last.closed_at_ms.saturating_add(self.settings.epoch_interval_s.saturating_mul(1000)),
            None => now_ms >= self.first_close_ms,
        };
        if due {
            match self.store.close_epoch(now_ms, now_ms).await {
                Ok(Some(e)) => {
                    tracing::info!(epoch = e.epoch_id, receipts = e.receipt_count, "settlement: epoch closed");
                    self.finish(&e).await?;
                    done.push(e.epoch_id);
                }
                Ok(None) => {}
                // Another replica closed it at the same moment; its settler finishes it.
                Err(ControlError::Refused(crate::store::Refusal::Exists(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Builds (or reads the stored claim file of) a closed epoch, posts it once, records it.
    async fn finish(&self, e: &EpochRow) -> Result<()> {
        let file: ClaimFile = match &e.claim_file {
            Some(f) => serde_json::from_str(f).map_err(|x| ControlError::Store(format!("epoch {} claim file: {x}", e.epoch_id)))?,
            None => {
                let f = self.build(e).await?;
                let text = serde_json::to_string(&f).map_err(|x| ControlError::Store(x.to_string()))?;
                self.store.set_epoch_claim_file(e.epoch_id, &text).await?;
                f
            }
        };
        if file.claims.is_empty() {
            self.store.set_epoch_posted(e.epoch_id, None, 0).await?;
            tracing::warn!(epoch = e.epoch_id, "settlement: nothing to pay in this epoch; not posted");
            return Ok(());
        }
        let post = self.chain.ensure_epoch_posted(&self.deployment, &EpochCommit::try_from(&file)?).await?;
        let tx = match &post {
            EpochPost::Posted(p) => Some(p.outcome.tx_hash.to_string()),
            EpochPost::AlreadyPosted { .. } => None,
        };
        if let EpochPost::Posted(p) = &post {
            tracing::info!(epoch = e.epoch_id, tx = %p.outcome.tx_hash, gas = p.outcome.gas_used, total = %file.total_payout, "settlement: epoch posted");
        } else {
            tracing::info!(epoch = e.epoch_id, "settlement: epoch was already on chain; recorded");
        }
        self.store.set_epoch_posted(e.epoch_id, tx.as_deref(), post.posted_at()).await
    }

    /// An epoch builder holding the stored receipts of a closed epoch (with today's payees).
    async fn builder(&self, e: &EpochRow) -> Result<(EpochBuilder, b3iq_protocol::settlement::BatchReport)> {
        let mut hosts = BTreeMap::new();
        for (node, address) in self.store.payout_addresses().await? {
            hosts.insert(node, EthAddress::parse(&address).map_err(|x| ControlError::Store(format!("payout address of {node}: {x}")))?);
        }
        let payees = Payees { hosts, publishers: self.settings.publishers.clone(), protocol: self.settings.protocol_account, verifier: self.settings.verifier_account };
        let config = EpochConfig { epoch_id: e.epoch_id, start_ms: e.start_ms, end_ms: e.end_ms, token_units_per_micro_credit: self.units, policy: SplitPolicy::default() };
        let mut b = EpochBuilder::new(config, payees)?;
        let mut receipts = Vec::with_capacity(e.receipt_count as usize);
        for bytes in self.store.epoch_receipts(e.epoch_id).await? {
            receipts.push(VerifiedReceipt::assume_verified(SignedReceipt::decode(&bytes).map_err(|x| ControlError::Store(format!("stored receipt: {x}")))?));
        }
        let report = b.add_all_verified(receipts);
        Ok((b, report))
    }

    /// The receipt tree of a built epoch (the leaves its posted `receipt_root` commits to),
    /// rebuilt from the stored receipts and checked against the claim file's root.
    ///
    /// # Errors
    /// `Refused(NotFound)` for an epoch not built yet; `Store` when the rebuilt root differs
    /// from the committed one (a node's payout address set after the build changes which
    /// receipts a rebuild accepts).
    ///
    /// Cost: a rebuild reads, decodes and re-adds every receipt of the epoch (about the epoch
    /// build's time); the last [`TREES_CACHED`] trees are kept and rebuilds run one at a time.
    pub async fn receipt_tree(&self, e: &EpochRow) -> Result<Arc<ReceiptTree>> {
        let mut cache = self.tree_cache.lock().await;
        if let Some(t) = cache.iter().find(|t| t.epoch_id == e.epoch_id) {
            return Ok(t.clone());
        }
        let Some(f) = e.claim_file.as_deref() else {
            return Err(crate::store::Refusal::NotFound(format!("built epoch {}", e.epoch_id)).into());
        };
        let file: ClaimFile = serde_json::from_str(f).map_err(|x| ControlError::Store(format!("epoch {} claim file: {x}", e.epoch_id)))?;
        let (b, _) = self.builder(e).await?;
        let ids: Vec<ReceiptId> = b.receipt_ids().copied().collect();
        let tree = MerkleTree::from_leaves(ids.iter().map(|i| i.0));
        let root = if ids.is_empty() { Hash32([0; 32]) } else { tree.root() };
        if root != file.receipt_root {
            return Err(ControlError::Store(format!("epoch {}: the receipt tree rebuilt from the stored receipts does not match the committed receipt root", e.epoch_id)));
        }
        let t = Arc::new(ReceiptTree { epoch_id: e.epoch_id, ids, tree });
        cache.push_front(t.clone());
        cache.truncate(TREES_CACHED);
        Ok(t)
    }

    /// Builds the claim file of a closed epoch from its stored receipts.
    async fn build(&self, e: &EpochRow) -> Result<ClaimFile> {
        let (b, report) = self.builder(e).await?;
        if !report.rejected.is_empty() {
            tracing::warn!(epoch = e.epoch_id, left_out = report.rejected.len(), first = %report.rejected[0].1, "settlement: receipts left out of the epoch");
        }
        match b.build() {
            Ok(s) => Ok(s.claim_file()?),
            Err(ProtocolError::EmptyEpoch { .. }) => Ok(ClaimFile {
                epoch_id: e.epoch_id,
                receipt_root: Hash32([0; 32]),
                payout_root: Hash32([0; 32]),
                total_payout: "0".into(),
                receipt_count: 0,
                leaf_count: 0,
                claims: Vec::new(),
            }),
            Err(x) => Err(x.into()),
        }
    }

    /// What `account` can claim: its leaf and proof in every posted epoch that pays it,
    /// oldest first (claimed or not: `b3iqd wallet claim` skips claimed ones on chain).
    ///
    /// # Errors
    /// `Store`.
    pub async fn payouts(&self, account: &EthAddress) -> Result<AccountPayouts> {
        let mut epochs = Vec::new();
        let mut rows = self.store.epochs(EPOCHS_SCANNED).await?;
        rows.sort_by_key(|e| e.epoch_id);
        for e in rows {
            let (Some(posted_at), Some(f)) = (e.posted_at.filter(|t| *t > 0), e.claim_file.as_deref()) else { continue };
            let file: ClaimFile = serde_json::from_str(f).map_err(|x| ControlError::Store(format!("epoch {} claim file: {x}", e.epoch_id)))?;
            if let Some(leaf) = file.claims.into_iter().find(|c| &c.entry.account == account) {
                epochs.push(EpochPayout { epoch_id: e.epoch_id, posted_at, entry: leaf.entry, proof: leaf.proof });
            }
        }
        Ok(AccountPayouts { account: *account, chain_id: self.chain_id, settlement: EthAddress(self.deployment.settlement.0 .0), epochs })
    }

    /// Ticks every `min(epoch_interval_s, 5)` seconds until `stop` is set; errors are logged
    /// and retried on the next tick.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let period = Duration::from_secs(self.settings.epoch_interval_s.clamp(1, 5));
        loop {
            if let Err(e) = self.tick(unix_now_ms()).await {
                tracing::warn!(error = %e, "settlement: tick failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }
}
