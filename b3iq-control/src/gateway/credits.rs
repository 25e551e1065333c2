//! Gateway keys and credits: `b3iq_gateway_` keys owned by an organisation, the organisation's
//! credit balance in integer micro-credits, holds for each request's worst-case price, and a
//! double-entry ledger.
//!
//! A gateway request goes: [`ControlPlane::authenticate_gateway_key`] →
//! [`ControlPlane::place_hold`] (rate limit, spend limit, balance; the worst-case price moves
//! from `available` to `held`) → forward → [`ControlPlane::settle_hold`] with the node's
//! receipt (the charge to the node's earnings, the rest back to `available`), or
//! [`ControlPlane::release_hold`] when the request failed before a receipt. A gateway that
//! crashes between the two leaves an open hold; [`ControlPlane::expire_holds`] (run every
//! [`HOLD_SWEEP_INTERVAL`] by `b3iq-control serve`, see [`ControlPlane::spawn_hold_sweeper`])
//! releases holds older than [`HOLD_MAX_AGE_MS`].
//!
//! Every movement is one store transaction whose ledger rows sum to zero; balances can never
//! go below zero (a guard in each `UPDATE` and a CHECK in the schema), so concurrent holds
//! can never overdraw. Ledger accounts (see docs/control.md, "Gateway keys and credits"):
//!
//! | account | what |
//! |---|---|
//! | `external:topup` | where top-ups come from (minus everything ever added) |
//! | `org:<id>:available` | what the organisation can spend |
//! | `org:<id>:held` | its open holds |
//! | `node:<b3n_...>:earned` | what a node earned from settled charges |
//!
//! The rate limit is a token bucket per key kept in the store and taken in the hold's own
//! transaction, so it holds across replicas (a key gets its rate, not N times it); a copy of
//! the bucket in each replica's memory refuses a key far over its rate before it costs a store
//! write. Spend limits and balances are in the store too.
//!
//! ```no_run
//! # async fn f(cp: &b3iq_control::ControlPlane, token: &str, node: b3iq_core::NodeId, receipt: [u8; 32], now: u64) -> b3iq_control::Result<()> {
//! let key = cp.authenticate_gateway_key(token, now).await?;
//! let hold = cp.place_hold(&key, 12_000, now).await?; // worst-case price, micro-credits
//! // ... forward; the node signs a receipt priced 7_500 ...
//! cp.settle_hold(&hold.id, 7_500, &node, &receipt, now).await?; // 4_500 back to available
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::NodeId;
use rand::RngCore;

use crate::error::{ControlError, Result};
use crate::plane::ControlPlane;
use crate::store::credits::HoldSettlement;
use crate::store::Refusal;

pub use crate::store::credits::{
    CreditBalance, GatewayKey, Hold, HoldRecord, HoldState, LedgerCheck, LedgerEntry,
    LedgerMismatch, LedgerRow, MAX_AMOUNT,
};

/// Requests per minute of a key made without `--rate-per-min`.
pub const DEFAULT_RATE_PER_MIN: u32 = 60;
/// Highest rate a key may have (requests per minute).
pub const MAX_RATE_PER_MIN: u32 = 1_000_000;
/// Open holds older than this are released by the sweeper (1 h): the gateway must settle or
/// release a request within it, so a crashed gateway locks credits at most this long.
pub const HOLD_MAX_AGE_MS: u64 = 3_600_000;
/// How far before a ticket's issue time an awaited receipt's start may lie (the node's clock
/// may run behind the control plane's; heartbeats bound the skew well below this).
const AWAIT_CLOCK_SLACK_MS: u64 = 600_000;
/// Most receipts of a node read when looking for an awaited one.
const AWAIT_SCAN_LIMIT: u32 = 10_000;
/// How often `b3iq-control serve` sweeps stale holds.
pub const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most ledger transactions listed at once.
pub const MAX_LEDGER_LISTED: u32 = 500;
/// Longest top-up reference (characters).
pub const MAX_REFERENCE_CHARS: usize = 200;
/// Holds released per store query by the sweeper.
const SWEEP_BATCH: u32 = 500;
/// Buckets kept before idle ones (full again) are dropped.
const MAX_BUCKETS: usize = 10_000;

/// Per-key token buckets for gateway request rates, in this process's memory: the cheap first
/// check; the store's bucket ([`crate::store::credits::take_rate`]) is the one that counts.
/// A bucket holds at most one minute of the key's rate and starts full, so a key can burst its
/// whole rate at once and then sustains it.
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Per key: the bucket's `(units, at_ms)`, as [`crate::store::credits::take_rate`] keeps it.
    buckets: Mutex<HashMap<String, (u64, u64)>>,
}

impl RateLimiter {
    /// Takes one request from `key_id`'s bucket at `now_ms`; `Err(retry_after_ms)` when empty.
    pub fn check(
        &self,
        key_id: &str,
        rate_per_min: u32,
        now_ms: u64,
    ) -> std::result::Result<(), u64> {
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_BUCKETS {
            // A bucket idle for a minute is full again: forgetting it changes nothing.
            m.retain(|_, b| now_ms.saturating_sub(b.1) < 60_000);
        }
        let b = crate::store::credits::take_rate(m.get(key_id).copied(), rate_per_min, now_ms)?;
        m.insert(key_id.to_string(), b);
        Ok(())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A key name: 1 to 64 of letters, digits, space, `. _ -`.
fn check_key_name(name: &str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            field: "name",
            reason: "use 1 to 64 of letters, digits, space, `. _ -`".into(),
        })
    }
}

fn check_amount(field: &'static str, v: u64) -> Result<()> {
    if v == 0 || v > MAX_AMOUNT {
        return Err(ControlError::Invalid {
            field,
            reason: format!("{v} micro-credits; use 1 to {MAX_AMOUNT}"),
        });
    }
    Ok(())
}

impl ControlPlane {
    /// Makes a `b3iq_gateway_` key for `org` (id or name): `rate_per_min` requests per minute
    /// (1 to [`MAX_RATE_PER_MIN`]) and at most `spend_limit_per_day` micro-credits per UTC day
    /// (settled charges plus open holds; `None`: the balance is the only bound). Returns the key
    /// and its token, which is shown once: only its sha256 is stored.
    ///
    /// # Errors
    /// `Invalid` for a bad name, rate or limit; `Refused(NotFound)` for an unknown organisation.
    pub async fn create_gateway_key(
        &self,
        org: &str,
        name: &str,
        rate_per_min: u32,
        spend_limit_per_day: Option<u64>,
        now_ms: u64,
    ) -> Result<(GatewayKey, String)> {
        check_key_name(name)?;
        if rate_per_min == 0 || rate_per_min > MAX_RATE_PER_MIN {
            return Err(ControlError::Invalid {
                field: "rate_per_min",
                reason: format!("{rate_per_min}; use 1 to {MAX_RATE_PER_MIN} requests per minute"),
            });
        }
        if let Some(l) = spend_limit_per_day {
            check_amount("spend_limit_per_day", l)?;
        }
        let org = self.org(org).await?;
        let cred = Credential::generate(CredentialKind::Gateway, &mut rand::rngs::OsRng);
        let key = GatewayKey {
            id: format!("gk_{}", hex::encode(random::<8>())),
            org_id: org.id,
            name: name.to_string(),
            rate_per_min,
            spend_limit_per_day,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        self.store()
            .create_gateway_key(&key, &cred.hash_for_storage().0)
            .await?;
        tracing::info!(key = %key.id, org = %key.org_id, "gateway key created");
        Ok((key, cred.expose_secret().to_string()))
    }

    /// Revokes a gateway key of `org_id` (at once, on every replica: each request reads the
    /// key from the store). Revoking a revoked key is a no-op.
    ///
    /// # Errors
    /// `Refused(NotFound)` when `org_id` has no such key (another organisation's key included).
    pub async fn revoke_gateway_key(&self, org_id: &str, key_id: &str, now_ms: u64) -> Result<()> {
        if self
            .store()
            .revoke_gateway_key(org_id, key_id, now_ms)
            .await?
        {
            tracing::info!(key = %key_id, org = %org_id, "gateway key revoked");
        }
        Ok(())
    }

    /// The gateway keys of `org_id`, oldest first (ids, names, limits; never the tokens).
    ///
    /// # Errors
    /// `Store`.
    pub async fn gateway_keys(&self, org_id: &str) -> Result<Vec<GatewayKey>> {
        self.store().gateway_keys(org_id).await
    }

    /// The key behind a `b3iq_gateway_` token.
    ///
    /// # Errors
    /// `Unauthorized` with a clear message for a malformed token (format, checksum), a token
    /// of another kind (`b3iq_local_`, `b3iq_enroll_`, ...), an unknown or a revoked key.
    pub async fn authenticate_gateway_key(&self, token: &str, _now_ms: u64) -> Result<GatewayKey> {
        let cred = Credential::parse_kind(token.trim(), CredentialKind::Gateway)
            .map_err(|e| ControlError::Unauthorized(format!("gateway key: {e}")))?;
        let key = self
            .store()
            .gateway_key_by_hash(&cred.hash_for_storage().0)
            .await?
            .ok_or_else(|| ControlError::Unauthorized("unknown gateway key; ask an operator of your organisation for one (`b3iq-control admin gateway-key create`)".into()))?;
        // Revoked is revoked whatever the clocks say (a replica's clock may trail the one that
        // revoked it).
        if key.revoked_at_ms.is_some() {
            return Err(ControlError::Unauthorized(
                "this gateway key was revoked; ask an operator of your organisation for a new one"
                    .into(),
            ));
        }
        Ok(key)
    }

    /// Adds `amount` micro-credits to `org` (id or name) from `external:topup`, recorded with
    /// `reference` (the payment or invoice id: each reference tops up once). Only the control
    /// plane's machine does this (`b3iq-control admin add-credits`); there is no HTTP route.
    /// Returns the new available balance.
    ///
    /// # Errors
    /// `Invalid` for an amount outside 1..=[`MAX_AMOUNT`] or a bad reference;
    /// `Refused(NotFound)` for an unknown organisation; `Refused(Exists)` for a used reference.
    pub async fn add_credits(
        &self,
        org: &str,
        amount: u64,
        reference: &str,
        now_ms: u64,
    ) -> Result<u64> {
        check_amount("amount", amount)?;
        if reference.trim().is_empty()
            || reference.chars().count() > MAX_REFERENCE_CHARS
            || reference.chars().any(char::is_control)
        {
            return Err(ControlError::Invalid {
                field: "reference",
                reason: format!(
                    "1 to {MAX_REFERENCE_CHARS} printable characters (a payment or invoice id)"
                ),
            });
        }
        let org = self.org(org).await?;
        let available = self
            .store()
            .add_credits(&org.id, amount, reference, now_ms)
            .await?;
        tracing::info!(org = %org.id, amount, available, "credits added");
        Ok(available)
    }

    /// An organisation's credits: available, held by open requests, spent and topped up so far.
    ///
    /// # Errors
    /// `Store`.
    pub async fn credit_balance(&self, org_id: &str) -> Result<CreditBalance> {
        self.store().credit_balance(org_id).await
    }

    /// An organisation's latest ledger transactions with their rows, newest first (at most
    /// [`MAX_LEDGER_LISTED`]).
    ///
    /// # Errors
    /// `Store`.
    pub async fn credit_ledger(&self, org_id: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        self.store()
            .ledger_entries(org_id, limit.min(MAX_LEDGER_LISTED))
            .await
    }

    /// Reserves `amount` micro-credits (the request's worst-case price) for one request of
    /// `key`: takes one request from the key's rate, then, in one store transaction, checks
    /// the key is not revoked, adds the amount to the key's spend of the UTC day within its
    /// limit, and moves it from the organisation's available to its held account. Concurrent
    /// holds can never overdraw: the move is a guarded `UPDATE`.
    ///
    /// # Errors
    /// `Refused(RateLimited { retry_after_ms })` (429), `Refused(SpendLimit)` and
    /// `Refused(InsufficientCredits)` (402), `Refused(KeyRevoked)`, `Invalid` for an amount
    /// outside 1..=[`MAX_AMOUNT`].
    pub async fn place_hold(&self, key: &GatewayKey, amount: u64, now_ms: u64) -> Result<Hold> {
        check_amount("amount", amount)?;
        if key.revoked_at_ms.is_some() {
            return Err(Refusal::KeyRevoked.into());
        }
        if let Err(retry_after_ms) = self.gateway_rate.check(&key.id, key.rate_per_min, now_ms) {
            return Err(Refusal::RateLimited {
                rate_per_min: key.rate_per_min,
                retry_after_ms,
            }
            .into());
        }
        let hold = Hold {
            id: random(),
            org_id: key.org_id.clone(),
            key_id: key.id.clone(),
            amount,
            created_at_ms: now_ms,
        };
        self.store().place_hold(&hold).await?;
        Ok(hold)
    }

    /// Settles a hold against the node's receipt, in one transaction: `charge` (at most the
    /// hold) to the node's earnings, the rest back to the organisation's available balance.
    /// Idempotent: a hold settled before answers `Ok(false)` and changes nothing.
    ///
    /// # Errors
    /// `Invalid` for a charge above the hold; `Refused(HoldClosed)` for a hold released or
    /// expired before (nothing is charged); `Refused(ReceiptCharged)` for a receipt that
    /// settled another hold; `Refused(NotFound)` for an unknown hold.
    pub async fn settle_hold(
        &self,
        hold_id: &[u8; 16],
        charge: u64,
        node: &NodeId,
        receipt_id: &[u8; 32],
        now_ms: u64,
    ) -> Result<bool> {
        self.store()
            .settle_hold(&HoldSettlement {
                hold_id: *hold_id,
                charge,
                node_id: *node,
                receipt_id: *receipt_id,
                now_ms,
            })
            .await
    }

    /// Keeps an open hold for its node's receipt by upload: the client went away mid-stream, so
    /// the node's receipt (outcome `cancelled`, for the tokens it produced) never came back on
    /// the tunnel; the node's outbox uploads it to the control plane, and
    /// [`ControlPlane::settle_uploaded`] settles the hold with it, checked against `ticket` as
    /// the gateway checks a tunnelled receipt. A receipt stored before the mark is found here.
    /// A hold whose receipt never comes is released by the stale-hold sweep
    /// ([`HOLD_MAX_AGE_MS`]), after one last look for the receipt.
    ///
    /// # Errors
    /// `Store`.
    pub async fn await_receipt(
        &self,
        hold_id: &[u8; 16],
        ticket: &b3iq_protocol::gateway::RequestTicket,
        now_ms: u64,
    ) -> Result<()> {
        if self
            .store()
            .await_hold_receipt(hold_id, &ticket.request_id.0, &ticket.to_header())
            .await?
        {
            self.settle_stored(hold_id, ticket, now_ms).await?;
        }
        Ok(())
    }

    /// Settles the open holds waiting for one of `receipts` (just uploaded by `node_key`'s
    /// node), each checked against its ticket; returns how many it settled. A receipt that does
    /// not match its ticket settles nothing (the node is not paid) and is logged.
    ///
    /// # Errors
    /// `Store`.
    pub async fn settle_uploaded(
        &self,
        receipts: &[b3iq_core::receipt::SignedReceipt],
        node_key: &b3iq_core::NodePublicKey,
        now_ms: u64,
    ) -> Result<u32> {
        let ids: Vec<[u8; 16]> = receipts
            .iter()
            .filter(|r| r.body().mode == b3iq_core::OperatingMode::Network)
            .map(|r| r.body().request_id.0)
            .collect();
        let mut settled = 0;
        for (rid, hold_id, ticket) in self.store().holds_awaiting(&ids).await? {
            let Some(r) = receipts.iter().find(|r| r.body().request_id.0 == rid) else {
                continue;
            };
            if self
                .settle_with(&hold_id, &ticket, r, node_key, now_ms)
                .await?
            {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Looks among the node's stored network receipts for the one of `ticket`'s request and
    /// settles the hold with it; `Ok(true)` when it did.
    async fn settle_stored(
        &self,
        hold_id: &[u8; 16],
        ticket: &b3iq_protocol::gateway::RequestTicket,
        now_ms: u64,
    ) -> Result<bool> {
        let Some(node) = self.store().node(&ticket.node_id).await? else {
            return Ok(false);
        };
        // The node's clock may run behind ours: look from well before the ticket's issue.
        let since = ticket.issued_at_ms.saturating_sub(AWAIT_CLOCK_SLACK_MS);
        for signed in self
            .store()
            .network_receipts_since(&ticket.node_id, since, AWAIT_SCAN_LIMIT)
            .await?
        {
            let Ok(r) = b3iq_core::receipt::SignedReceipt::decode(&signed) else {
                continue;
            };
            if r.body().request_id == ticket.request_id {
                return self
                    .settle_with(hold_id, &ticket.to_header(), &r, &node.public_key, now_ms)
                    .await;
            }
        }
        Ok(false)
    }

    async fn settle_with(
        &self,
        hold_id: &[u8; 16],
        ticket: &str,
        r: &b3iq_core::receipt::SignedReceipt,
        node_key: &b3iq_core::NodePublicKey,
        now_ms: u64,
    ) -> Result<bool> {
        let ticket = match b3iq_protocol::gateway::RequestTicket::from_header(ticket) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "a hold awaiting its receipt has an unreadable ticket");
                return Ok(false);
            }
        };
        let price = match ticket.check_receipt(r, node_key) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(node = %ticket.node_id, reason = %e, "an uploaded receipt does not match the ticket of the hold awaiting it; not paid");
                return Ok(false);
            }
        };
        match self
            .settle_hold(hold_id, price, &ticket.node_id, &r.receipt_id().0, now_ms)
            .await
        {
            Ok(done) => {
                if done {
                    tracing::info!(node = %ticket.node_id, charge = price, "a hold whose client went away mid-stream was settled with the node's uploaded receipt");
                }
                Ok(done)
            }
            // Released, expired or settled with this receipt meanwhile: nothing to do.
            Err(ControlError::Refused(
                Refusal::HoldClosed(_) | Refusal::ReceiptCharged | Refusal::NotFound(_),
            )) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Releases an open hold entirely (the request failed before a receipt). Idempotent:
    /// `Ok(false)` for a hold no longer open.
    ///
    /// # Errors
    /// `Refused(NotFound)` for an unknown hold.
    pub async fn release_hold(&self, hold_id: &[u8; 16], now_ms: u64) -> Result<bool> {
        self.store().release_hold(hold_id, now_ms, false).await
    }

    /// A hold and how it ended.
    ///
    /// # Errors
    /// `Store`.
    pub async fn hold(&self, hold_id: &[u8; 16]) -> Result<Option<HoldRecord>> {
        self.store().hold(hold_id).await
    }

    /// Releases every open hold placed `older_than_ms` or more before `now_ms` (recorded as
    /// `expire`), so a crashed gateway cannot lock credits for ever. Returns how many it
    /// released. Safe to run on several replicas at once (each hold is released once).
    ///
    /// # Errors
    /// `Store`.
    pub async fn expire_holds(&self, older_than_ms: u64, now_ms: u64) -> Result<u64> {
        let before = now_ms.saturating_sub(older_than_ms);
        let mut released = 0;
        loop {
            let ids = self.store().open_holds_before(before, SWEEP_BATCH).await?;
            for id in &ids {
                // A hold waiting for an uploaded receipt gets one last look for it.
                if let Some(t) = self.store().hold_awaiting_ticket(id).await? {
                    if let Ok(t) = b3iq_protocol::gateway::RequestTicket::from_header(&t) {
                        if self.settle_stored(id, &t, now_ms).await? {
                            continue;
                        }
                    }
                }
                match self.store().release_hold(id, now_ms, true).await {
                    Ok(true) => released += 1,
                    Ok(false) | Err(ControlError::Refused(Refusal::NotFound(_))) => {}
                    Err(e) => return Err(e),
                }
            }
            if (ids.len() as u32) < SWEEP_BATCH {
                break;
            }
        }
        if released > 0 {
            tracing::warn!(
                released,
                older_than_ms,
                "stale credit holds released (a gateway did not settle or release them)"
            );
        }
        Ok(released)
    }

    /// Runs [`ControlPlane::expire_holds`] with `max_age_ms` every `every` until the task is
    /// aborted (`b3iq-control serve` runs it with [`HOLD_MAX_AGE_MS`] and
    /// [`HOLD_SWEEP_INTERVAL`]).
    pub fn spawn_hold_sweeper(
        self: &Arc<Self>,
        max_age_ms: u64,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let cp = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = cp
                    .expire_holds(max_age_ms, b3iq_host::context::unix_now_ms())
                    .await
                {
                    tracing::error!(error = %e, "stale hold sweep failed");
                }
            }
        })
    }

    /// What a node has earned from settled charges, micro-credits.
    ///
    /// # Errors
    /// `Store`.
    pub async fn node_earnings(&self, node: &NodeId) -> Result<u64> {
        self.store().node_earnings(node).await
    }

    /// Checks the whole ledger in one snapshot: the rows sum to zero, every transaction
    /// balances, no guarded account is negative, every balance equals its rows, every held
    /// account its open holds, every node's earnings and organisation's spent total the
    /// settled charges ([`LedgerCheck::ok`]).
    ///
    /// # Errors
    /// `Store`.
    pub async fn ledger_check(&self) -> Result<LedgerCheck> {
        self.store().ledger_check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_per_minute_and_says_when_to_retry() {
        let r = RateLimiter::default();
        for _ in 0..3 {
            r.check("k", 3, 1_000).unwrap();
        }
        assert_eq!(
            r.check("k", 3, 1_000),
            Err(20_000),
            "one request per 20 s at 3 per minute"
        );
        assert_eq!(r.check("k", 3, 11_000), Err(10_000));
        r.check("k", 3, 21_000).unwrap();
        assert!(r.check("k", 3, 21_000).is_err());
        // Another key has its own bucket; a clock stepping back refills nothing.
        r.check("other", 1, 21_000).unwrap();
        assert_eq!(r.check("other", 1, 5_000), Err(60_000));
        // An idle minute fills the bucket to one minute of rate, no more.
        for _ in 0..3 {
            r.check("k", 3, 1_000_000).unwrap();
        }
        assert!(r.check("k", 3, 1_000_000).is_err());
    }

    #[test]
    fn refusals_map_to_openai_style_statuses_and_codes() {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let parts = |r: Refusal| ControlError::Refused(r).parts();
        assert_eq!(
            parts(Refusal::InsufficientCredits {
                available: 1,
                needed: 2
            }),
            (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_quota"
            )
        );
        assert_eq!(
            parts(Refusal::SpendLimit {
                limit: 1,
                used: 1,
                needed: 1
            }),
            (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "spend_limit_reached"
            )
        );
        assert_eq!(
            parts(Refusal::RateLimited {
                rate_per_min: 1,
                retry_after_ms: 1
            }),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded"
            )
        );
        assert_eq!(parts(Refusal::KeyRevoked).0, StatusCode::UNAUTHORIZED);
        let resp = ControlError::Refused(Refusal::RateLimited {
            rate_per_min: 3,
            retry_after_ms: 1_001,
        })
        .into_response();
        assert_eq!(
            resp.headers().get(axum::http::header::RETRY_AFTER).unwrap(),
            "2"
        );
        assert_eq!(
            ControlError::Refused(Refusal::RateLimited {
                rate_per_min: 3,
                retry_after_ms: 1_001
            })
            .retry_after_ms(),
            Some(1_001)
        );
    }
}
