//! The dispute tool: the control plane, as the verifier committee's tool, takes disputes from
//! checked evidence to a slash on chain (`docs/control.md`, "Disputes").
//!
//! 1. **Record.** Evidence ([`b3iq_core::evidence::Evidence`]) from the gateway's verification
//!    (two verifiers' `fail`s, see [`crate::gateway::verification`]) or from an operator
//!    (`b3iq-control dispute open --evidence FILE`) is checked completely with
//!    [`check_evidence`] (every signature, one accused node, the fault itself; verdicts only
//!    from active enrolled nodes) by [`record_evidence`]. Evidence that does not check is refused here,
//!    before anything is stored or sent. Checked evidence is stored as a `pending` dispute
//!    (`disputes`, one per evidence hash).
//! 2. **Open.** When the disputed receipt's settlement epoch is posted (the contract only takes
//!    disputes about posted epochs), the chain's `DisputeOpened` events are read first: a
//!    dispute with this evidence hash against this node that is already there (a send that
//!    timed out, or one sent just before a crash) is recorded, not opened again. Otherwise the
//!    tool approves the bond and sends `Disputes.open(nodeId, epochId, evidenceHash,
//!    slash_amount)`; `evidenceHash` is [`b3iq_core::evidence::Evidence::hash`]. An epoch
//!    whose evidence window closed makes the dispute `expired`.
//! 3. **Vote.** Each configured committee key that has not voted votes to uphold.
//! 4. **Appeal window, slash.** Once upheld, the node's operator may appeal
//!    (`b3iqd dispute appeal`) until the appeal deadline; an appeal waits for the arbiter
//!    (`appealed`). After the deadline (or a confirmed appeal) the tool sends
//!    `Disputes.executeSlash` (`executed`). A dispute voted down is `rejected`, an appeal won
//!    `overturned`.
//!
//! Every step is recorded in the store before the next, and every tick reads the chain's state
//! of an opened dispute before sending anything, so a restart resumes where it stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use b3iq_chain::bindings::disputes::Disputes::Dispute as ChainDispute;
use b3iq_chain::{ChainClient, ChainError, Deployment, PrivateKeySigner, RetryPolicy};
use b3iq_core::evidence::{check_evidence, Evidence, EvidenceRules, EvidenceSubject};
use b3iq_core::NodeId;

use crate::error::{ControlError, Result};
use crate::store::{ControlStore, DisputeRow, DISPUTE_ACTIVE};

/// `control.json` `disputes`: absent, disputes are recorded but never opened on chain. Needs
/// `settlement` (its chain and deployment).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeSettings {
    /// The challenger's wallet key file (`0x` + 64 hex, mode 0600), relative to the home or
    /// absolute: it opens disputes (pays the bond: tokens and gas) and executes slashes.
    pub key_file: String,
    /// The verifier committee's wallets (`VERIFIER_ROLE` on `Disputes`) the control plane votes
    /// with; may name `key_file` too.
    #[serde(default)]
    pub verifier_key_files: Vec<String>,
    /// The slash asked per dispute, token base units (decimal, above zero).
    pub slash_amount: String,
    /// `fail` verdicts from distinct enrolled verifiers that make failed-verification evidence
    /// (default 2; at least 2).
    #[serde(default = "default_min_fails")]
    pub min_fail_verdicts: usize,
    /// Seconds between ticks (default 5).
    #[serde(default = "default_interval")]
    pub interval_s: u64,
}

fn default_min_fails() -> usize {
    2
}

fn default_interval() -> u64 {
    5
}

impl DisputeSettings {
    /// The evidence rules these settings give.
    pub fn rules(&self) -> EvidenceRules {
        EvidenceRules { min_fail_verdicts: self.min_fail_verdicts }
    }
}

/// Disputes listed per tick.
const ACTIVE_SCANNED: u32 = 1000;

fn invalid(e: b3iq_core::evidence::EvidenceError) -> ControlError {
    ControlError::Invalid { field: "evidence", reason: e.to_string() }
}

/// Checks `evidence` completely (verdicts count only from active nodes enrolled here) and records it
/// as a `pending` dispute, or returns the dispute already recorded for it.
///
/// # Errors
/// `Invalid` (field `evidence`) when it does not check: nothing is stored; `Store`.
pub async fn record_evidence(store: &dyn ControlStore, evidence: &Evidence, rules: &EvidenceRules, now_ms: u64) -> Result<DisputeRow> {
    let subject = checked(store, evidence, rules).await?;
    let row = DisputeRow {
        evidence_hash: subject.evidence_hash.0,
        kind: subject.kind.as_str().into(),
        subject: subject.node_id,
        request_id: subject.request_id.0,
        status: "pending".into(),
        chain_tx: None,
        opened_at_ms: now_ms,
        evidence: Some(evidence.encode()),
        epoch_id: None,
        chain_dispute_id: None,
        vote_tx: None,
        slash_tx: None,
        updated_at_ms: now_ms,
    };
    store.open_dispute(&row).await?;
    Ok(store.dispute(&row.evidence_hash).await?.unwrap_or(row))
}

/// [`check_evidence`] with the active enrolled nodes of `store` as the trusted verifiers.
async fn checked(store: &dyn ControlStore, evidence: &Evidence, rules: &EvidenceRules) -> Result<EvidenceSubject> {
    let mut known = Vec::new();
    if let Evidence::FailedVerification { verdicts, .. } = evidence {
        for v in verdicts {
            let id = v.body().verifier;
            // A revoked or suspended node's verdicts do not count.
            if store.node(&id).await?.is_some_and(|n| n.status == crate::store::NodeStatus::Active) {
                known.push(id);
            }
        }
    }
    check_evidence(evidence, rules, &|n: &NodeId| known.contains(n)).map_err(invalid)
}

/// Drives disputes on chain (see the module docs).
pub struct DisputeTool {
    store: Arc<dyn ControlStore>,
    chain: ChainClient,
    voters: Vec<ChainClient>,
    deployment: Deployment,
    slash: b3iq_chain::U256,
    settings: DisputeSettings,
    wake: tokio::sync::Notify,
    /// One tick at a time (the gateway's wake and the timer may race).
    ticking: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DisputeTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisputeTool").field("challenger", &self.chain.address()).field("disputes", &self.deployment.disputes).finish()
    }
}

fn chain_status(d: &ChainDispute) -> u8 {
    d.status
}

impl DisputeTool {
    /// Connects the challenger's and the committee's wallets to `rpc_url`.
    ///
    /// # Errors
    /// `Config` for a bad slash amount, a quorum below 2 or a zero interval; `Chain` when the
    /// chain cannot be reached.
    pub async fn connect(store: Arc<dyn ControlStore>, rpc_url: &str, deployment: Deployment, settings: DisputeSettings, challenger: PrivateKeySigner, verifiers: Vec<PrivateKeySigner>) -> Result<DisputeTool> {
        let slash = settings
            .slash_amount
            .parse::<b3iq_chain::U256>()
            .ok()
            .filter(|v| !v.is_zero())
            .ok_or_else(|| ControlError::Config(format!("control.json disputes.slash_amount {:?}: a whole number of token base units above zero", settings.slash_amount)))?;
        if settings.min_fail_verdicts < 2 {
            return Err(ControlError::Config("control.json disputes.min_fail_verdicts must be at least 2 (one verifier's fail is never evidence)".into()));
        }
        if settings.interval_s == 0 {
            return Err(ControlError::Config("control.json disputes.interval_s must be above zero".into()));
        }
        let chain = ChainClient::connect(rpc_url, challenger, RetryPolicy::default()).await?;
        let mut voters = Vec::new();
        for v in verifiers {
            voters.push(ChainClient::connect(rpc_url, v, RetryPolicy::default()).await?);
        }
        Ok(DisputeTool { store, chain, voters, deployment, slash, settings, wake: tokio::sync::Notify::new(), ticking: tokio::sync::Mutex::new(()) })
    }

    /// Loads key files (relative to `home`) for [`DisputeTool::connect`].
    ///
    /// # Errors
    /// `Config` naming the file.
    pub fn load_keys(home: &Path, settings: &DisputeSettings) -> Result<(PrivateKeySigner, Vec<PrivateKeySigner>)> {
        let load = |f: &str, what: &str| {
            let p = if Path::new(f).is_relative() { home.join(f) } else { f.into() };
            b3iq_chain::key_file::load_key_file(&p).map_err(|e| ControlError::Config(format!("control.json disputes.{what}: {e}")))
        };
        let challenger = load(&settings.key_file, "key_file")?;
        let verifiers = settings.verifier_key_files.iter().map(|f| load(f, "verifier_key_files")).collect::<Result<_>>()?;
        Ok((challenger, verifiers))
    }

    /// The evidence rules in force.
    pub fn rules(&self) -> EvidenceRules {
        self.settings.rules()
    }

    /// Asks the running loop ([`DisputeTool::run`]) for a tick now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Checks and records `evidence` ([`record_evidence`]), then takes it as far as it goes
    /// now. Evidence that does not check is refused before any transaction.
    ///
    /// # Errors
    /// `Invalid` for evidence that does not check; `Store`; `Chain`.
    pub async fn open(&self, evidence: &Evidence, now_ms: u64) -> Result<DisputeRow> {
        let row = record_evidence(self.store.as_ref(), evidence, &self.rules(), now_ms).await?;
        let _one = self.ticking.lock().await;
        self.advance(row, now_ms).await
    }

    /// Advances every active dispute; returns them as they are now. A dispute whose step fails
    /// (the chain refused or could not be reached) is logged, returned as it was, and retried on
    /// the next tick; the others go on.
    ///
    /// # Errors
    /// `Store` when the disputes cannot be listed.
    pub async fn tick(&self, now_ms: u64) -> Result<Vec<DisputeRow>> {
        let _one = self.ticking.lock().await;
        let mut out = Vec::new();
        for row in self.store.list_disputes(true, ACTIVE_SCANNED).await? {
            match self.advance(row.clone(), now_ms).await {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(node = %row.subject, evidence = %hex::encode(row.evidence_hash), status = %row.status, error = %e, "disputes: a step failed; retrying on the next tick");
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    /// Ticks every `interval_s` (or when woken) until `stop` is set; errors are logged and
    /// retried.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let period = Duration::from_secs(self.settings.interval_s);
        loop {
            if let Err(e) = self.tick(b3iq_host::context::unix_now_ms()).await {
                tracing::warn!(error = %e, "disputes: tick failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.wake.notified() => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    /// One dispute as far as it goes now; each change is stored before the next step.
    async fn advance(&self, mut row: DisputeRow, now_ms: u64) -> Result<DisputeRow> {
        if !DISPUTE_ACTIVE.contains(&row.status.as_str()) {
            return Ok(row);
        }
        if row.status == "pending" && !self.open_on_chain(&mut row, now_ms).await? {
            return Ok(row);
        }
        let id = self.chain_id_of(&row)?;
        let mut d = self.chain.dispute(&self.deployment, id).await?;
        if chain_status(&d) == 1 {
            for v in &self.voters {
                if !v.has_voted(&self.deployment, id, v.address()).await? {
                    let t = v.vote_dispute(&self.deployment, id, true).await?;
                    tracing::info!(dispute = %id, voter = %v.address(), tx = %t.tx_hash, "disputes: voted to uphold");
                    row.vote_tx.get_or_insert_with(|| t.tx_hash.to_string());
                    row.status = "voted".into();
                    self.save(&mut row, now_ms).await?;
                }
            }
            d = self.chain.dispute(&self.deployment, id).await?;
        }
        // Status: 1 Open, 2 Upheld, 3 Rejected, 4 Appealed, 5 Overturned, 6 Executed.
        let status = match chain_status(&d) {
            1 => if row.vote_tx.is_some() || row.status == "voted" { "voted" } else { "opened" },
            2 => {
                let now = self.chain.block_timestamp().await?;
                if now > d.appealDeadline {
                    match self.chain.execute_slash(&self.deployment, id).await {
                        Ok(t) => {
                            tracing::warn!(dispute = %id, node = %row.subject, tx = %t.tx_hash, "disputes: slash executed");
                            row.slash_tx = Some(t.tx_hash.to_string());
                            "executed"
                        }
                        // A block mined between the read and the send can still be inside the window.
                        Err(ChainError::Reverted { error, .. }) if error.starts_with("AppealWindowOpen") => "upheld",
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    "upheld"
                }
            }
            3 => "rejected",
            4 => "appealed",
            5 => "overturned",
            6 => "executed",
            other => return Err(ControlError::Chain(format!("Disputes.getDispute({id}): unexpected status {other}"))),
        };
        if row.status != status {
            row.status = status.into();
            self.save(&mut row, now_ms).await?;
            // A resolved dispute feeds the node's reputation once (core's `Dispute` event): a
            // slash is a lost dispute; one voted down or overturned on appeal is won.
            let lost = match status {
                "executed" => Some(true),
                "rejected" | "overturned" => Some(false),
                _ => None,
            };
            if let Some(lost) = lost {
                let event = b3iq_core::reputation::ReputationEvent {
                    node_id: row.subject,
                    at_ms: now_ms,
                    kind: b3iq_core::reputation::ReputationEventKind::Dispute { lost },
                };
                self.store.apply_reputation(vec![event], b3iq_core::reputation::ReputationParams::default()).await?;
            }
        }
        Ok(row)
    }

    /// A pending dispute: opens it on chain once its epoch is posted (or records the one
    /// already there). `Ok(false)` while it must wait, or when it expired.
    async fn open_on_chain(&self, row: &mut DisputeRow, now_ms: u64) -> Result<bool> {
        let Some(epoch) = self.epoch_of(row).await? else { return Ok(false) };
        if row.epoch_id != Some(epoch) {
            row.epoch_id = Some(epoch);
            self.save(row, now_ms).await?;
        }
        match self.store.epoch(epoch).await? {
            Some(e) if e.posted_at.is_some_and(|t| t > 0) => {}
            _ => return Ok(false),
        }
        let hash = b3iq_core::Hash32(row.evidence_hash);
        let already = self
            .chain
            .disputes_opened(&self.deployment, Some(&row.subject))
            .await?
            .into_iter()
            .find(|e| e.evidenceHash.0 == row.evidence_hash);
        if let Some(e) = already {
            tracing::info!(dispute = %e.disputeId, "disputes: already opened on chain; recorded");
            row.chain_dispute_id = Some(e.disputeId.to_string());
        } else {
            let bond = self.chain.dispute_bond(&self.deployment).await?;
            if !bond.is_zero() {
                self.chain.approve(&self.deployment, self.deployment.disputes, bond).await?;
            }
            match self.chain.open_dispute(&self.deployment, &row.subject, epoch, &hash, self.slash).await {
                Ok((id, t)) => {
                    tracing::warn!(dispute = %id, node = %row.subject, epoch, tx = %t.tx_hash, "disputes: opened on chain");
                    row.chain_dispute_id = Some(id.to_string());
                    row.chain_tx = Some(t.tx_hash.to_string());
                }
                Err(ChainError::Reverted { error, .. }) if error.starts_with("EvidenceWindowClosed") => {
                    tracing::warn!(node = %row.subject, epoch, "disputes: the epoch's evidence window closed before the dispute could be opened");
                    row.status = "expired".into();
                    self.save(row, now_ms).await?;
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        row.status = "opened".into();
        self.save(row, now_ms).await?;
        Ok(true)
    }

    /// The settlement epoch holding the accused node's disputed receipt, once one of the
    /// evidence's receipts is stored here and in a closed epoch.
    async fn epoch_of(&self, row: &DisputeRow) -> Result<Option<u64>> {
        if row.epoch_id.is_some() {
            return Ok(row.epoch_id);
        }
        let Some(bytes) = &row.evidence else { return Ok(None) };
        let e = Evidence::decode(bytes).map_err(|e| ControlError::Store(format!("stored dispute evidence: {e}")))?;
        let receipts = match &e {
            Evidence::ConflictingReceipts { a, b } => vec![a.receipt_id(), b.receipt_id()],
            Evidence::FailedVerification { receipt, .. } => vec![receipt.receipt_id()],
        };
        for r in receipts {
            if let Some(Some(epoch)) = self.store.receipt_epoch(&r.0).await? {
                return Ok(Some(epoch));
            }
        }
        Ok(None)
    }

    fn chain_id_of(&self, row: &DisputeRow) -> Result<b3iq_chain::U256> {
        row.chain_dispute_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ControlError::Store(format!("dispute {} is {} without a chain dispute id", hex::encode(row.evidence_hash), row.status)))
    }

    async fn save(&self, row: &mut DisputeRow, now_ms: u64) -> Result<()> {
        row.updated_at_ms = now_ms;
        self.store.update_dispute(row).await
    }
}
