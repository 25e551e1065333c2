//! What the store keeps for the hosted gateway's keys and credits: the row types both backends
//! read and write, the ledger's account names, and the limits on amounts. The rules are in
//! `crate::gateway::credits` (the use cases) and in each backend (one transaction per
//! movement); docs/control.md, "Gateway keys and credits", describes the ledger.
//!
//! Amounts are integer micro-credits (`u64` in the API, `BIGINT`/`INTEGER` in the databases,
//! so one movement is at most [`MAX_AMOUNT`]).

use b3iq_core::NodeId;

/// Largest amount of one movement (a top-up, a hold, a charge, a spend limit): 10^15
/// micro-credits (10^9 credits). Far below `i64::MAX`, so sums of many movements still fit the
/// databases' signed 64-bit integers.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;

/// A `b3iq_gateway_` key as the store keeps it (the token itself is never stored: only its
/// sha256, beside this row).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayKey {
    /// `gk_` + 16 hex (shown to operators; not a secret).
    pub id: String,
    /// The organisation whose credits it spends.
    pub org_id: String,
    /// Display name (1 to 64 of letters, digits, space, `. _ -`).
    pub name: String,
    /// Requests per minute (a token bucket per key, per replica).
    pub rate_per_min: u32,
    /// Most micro-credits per UTC day: settled charges plus open holds of the day. `None`:
    /// only the organisation's balance bounds it.
    pub spend_limit_per_day: Option<u64>,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
    /// Revocation time, unix ms; a revoked key authenticates nothing and places no hold.
    pub revoked_at_ms: Option<u64>,
}

/// Credits reserved for one gateway request: its worst-case price, moved from the
/// organisation's `available` to its `held` account until the request is settled or released.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// Random id.
    #[serde(with = "hex_16")]
    pub id: [u8; 16],
    /// The organisation charged.
    pub org_id: String,
    /// The key that placed it (its spend limit counts it).
    pub key_id: String,
    /// Micro-credits held.
    pub amount: u64,
    /// When it was placed, unix ms (its UTC day is the one its key's spend limit counts).
    pub created_at_ms: u64,
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Placed, not yet settled or released.
    Open,
    /// Settled against a node's receipt.
    Settled,
    /// Released by the gateway (the request failed before a receipt).
    Released,
    /// Released by the sweeper (older than the bound; a crashed gateway).
    Expired,
}

impl HoldState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Open => "open",
            HoldState::Settled => "settled",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<HoldState> {
        [HoldState::Open, HoldState::Settled, HoldState::Released, HoldState::Expired].into_iter().find(|x| x.as_str() == s)
    }
}

/// A hold with how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldRecord {
    /// The hold.
    #[serde(flatten)]
    pub hold: Hold,
    /// Its state.
    pub state: HoldState,
    /// The settled charge.
    pub charge: Option<u64>,
    /// The node paid.
    pub node_id: Option<NodeId>,
    /// The receipt it was settled against (each receipt settles one hold).
    #[serde(with = "hex_32_opt")]
    pub receipt_id: Option<[u8; 32]>,
    /// When it was settled, released or expired, unix ms.
    pub closed_at_ms: Option<u64>,
}

/// A settlement to store: the charge moves to the node's earnings, the rest of the hold back
/// to the organisation's available balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSettlement {
    /// The hold.
    pub hold_id: [u8; 16],
    /// Micro-credits charged (at most the hold's amount).
    pub charge: u64,
    /// The node that served the request.
    pub node_id: NodeId,
    /// The node's signed receipt id.
    pub receipt_id: [u8; 32],
    /// Now, unix ms.
    pub now_ms: u64,
}

/// An organisation's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CreditBalance {
    /// Micro-credits a new hold can take.
    pub available: u64,
    /// Micro-credits in open holds.
    pub held: u64,
    /// Micro-credits charged so far (the sum of every settled charge).
    pub spent_total: u64,
    /// Micro-credits added by top-ups so far.
    pub topped_up_total: u64,
}

/// One row of a ledger transaction: `amount` added to `account` (negative: taken from it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerRow {
    /// Account name (see [`account`]).
    pub account: String,
    /// Signed micro-credits.
    pub amount: i64,
}

/// One ledger transaction of an organisation: its rows sum to zero.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerEntry {
    /// Transaction number (increasing).
    pub tx_id: u64,
    /// `topup`, `hold`, `settle`, `release` or `expire`.
    pub kind: String,
    /// The organisation.
    pub org_id: String,
    /// The gateway key of a hold, settlement or release.
    pub key_id: Option<String>,
    /// The hold, hex.
    pub hold_id: Option<String>,
    /// The node paid by a settlement.
    pub node_id: Option<String>,
    /// The receipt of a settlement, hex.
    pub receipt_id: Option<String>,
    /// A top-up's reference (payment id, invoice); empty otherwise.
    pub reference: String,
    /// When, unix ms.
    pub created_at_ms: u64,
    /// The rows.
    pub rows: Vec<LedgerRow>,
}

/// An account whose stored balance differs from the sum of its ledger rows, or from what the
/// holds say it should be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerMismatch {
    /// The account (or `org:<id>:spent_total`, `org:<id>:held_by_holds`, ...).
    pub account: String,
    /// What the stored balance or counter says.
    pub stored: i128,
    /// What the rows or holds add up to.
    pub expected: i128,
}

/// The whole ledger checked in one snapshot (`b3iq-control admin ledger-check`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct LedgerCheck {
    /// Sum of every ledger row: 0 when every movement was double entry.
    pub sum: i128,
    /// Transactions.
    pub transactions: u64,
    /// Rows.
    pub rows: u64,
    /// Accounts.
    pub accounts: u64,
    /// Transactions whose rows do not sum to zero (at most 100 listed).
    pub unbalanced_transactions: Vec<u64>,
    /// Accounts below zero other than `external:*` (the schema refuses them; listed if found).
    pub negative_accounts: Vec<String>,
    /// Stored balances that differ from their rows, `held` accounts that differ from the open
    /// holds, node earnings and spent totals that differ from the settled charges.
    pub mismatches: Vec<LedgerMismatch>,
}

impl LedgerCheck {
    /// Whether the ledger is consistent: it sums to zero, every transaction balances, no
    /// account is negative, every balance matches its rows and the holds.
    pub fn ok(&self) -> bool {
        self.sum == 0 && self.unbalanced_transactions.is_empty() && self.negative_accounts.is_empty() && self.mismatches.is_empty()
    }
}

/// The ledger's account names. Only `external:*` accounts may go below zero (the schema's
/// CHECK and every decrement's guard).
pub mod account {
    /// Where top-ups come from: its balance is minus everything ever added.
    pub const TOPUP: &str = "external:topup";

    /// What an organisation can spend.
    pub fn available(org_id: &str) -> String {
        format!("org:{org_id}:available")
    }

    /// What an organisation's open holds reserve.
    pub fn held(org_id: &str) -> String {
        format!("org:{org_id}:held")
    }

    /// What a node has earned from settled charges.
    pub fn earned(node: &b3iq_core::NodeId) -> String {
        format!("node:{}:earned", node.to_text())
    }
}

/// Stored ledger transaction kinds.
pub mod kind {
    /// Credits added by an operator on the control plane's machine.
    pub const TOPUP: &str = "topup";
    /// A hold placed.
    pub const HOLD: &str = "hold";
    /// A hold settled against a receipt.
    pub const SETTLE: &str = "settle";
    /// A hold released by the gateway.
    pub const RELEASE: &str = "release";
    /// A hold released by the sweeper.
    pub const EXPIRE: &str = "expire";
}

/// An amount as the databases' signed integer.
pub(crate) fn amount(v: u64) -> crate::Result<i64> {
    if v > MAX_AMOUNT {
        return Err(crate::ControlError::Invalid { field: "amount", reason: format!("{v} micro-credits is over the limit of {MAX_AMOUNT} per movement") });
    }
    Ok(v as i64)
}

/// Checks a transaction's rows before they are written: they sum to zero, and each account
/// appears once. Returns them sorted by account (every transaction changes balances in that
/// order, so concurrent ones on Postgres take row locks in one order and cannot deadlock),
/// without zero rows.
pub(crate) fn balanced(rows: &[(String, i64)]) -> crate::Result<Vec<(String, i64)>> {
    let sum: i128 = rows.iter().map(|(_, a)| i128::from(*a)).sum();
    if sum != 0 {
        return Err(crate::ControlError::Store(format!("ledger transaction does not balance (sum {sum})")));
    }
    let mut v: Vec<(String, i64)> = rows.iter().filter(|(_, a)| *a != 0).cloned().collect();
    v.sort();
    if v.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(crate::ControlError::Store("ledger transaction names an account twice".into()));
    }
    Ok(v)
}

/// Whether `account` may hold a negative balance.
pub(crate) fn may_go_negative(account: &str) -> bool {
    account.starts_with("external:")
}

mod hex_16 {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

mod hex_32_opt {
    pub fn serialize<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_must_balance_and_name_each_account_once() {
        let ok = balanced(&[("b".into(), 5), ("a".into(), -5), ("c".into(), 0)]).unwrap();
        assert_eq!(ok, [("a".to_string(), -5), ("b".to_string(), 5)]);
        assert!(balanced(&[("a".into(), -5), ("b".into(), 4)]).is_err());
        assert!(balanced(&[("a".into(), -5), ("a".into(), 5)]).is_err());
        assert!(amount(MAX_AMOUNT).is_ok() && amount(MAX_AMOUNT + 1).is_err());
    }
}

/// The `gateway_keys` columns both backends read into a [`GatewayKey`].
pub(crate) const GATEWAY_KEY_COLUMNS: &str = "id, org_id, name, rate_per_min, spend_limit_per_day, created_at_ms, revoked_at_ms";

/// The `credit_holds` columns both backends read into a [`HoldRecord`].
pub(crate) const HOLD_COLUMNS: &str = "id, org_id, key_id, amount, created_at_ms, state, charge, node_id, receipt_id, closed_at_ms";

/// Top-ups over the whole control plane stop here (4 * 10^18 micro-credits), so that no balance
/// or sum can pass the databases' signed 64-bit integers (SQLite would turn an overflowing
/// integer into a float).
pub const MAX_TOTAL_TOPUPS: u64 = 4_000_000_000_000_000_000;

/// How a ledger transaction is described (the `ledger_tx` row).
pub(crate) struct TxMeta<'a> {
    pub kind: &'static str,
    pub org_id: &'a str,
    pub key_id: Option<&'a str>,
    pub hold_id: Option<&'a [u8]>,
    pub node_id: Option<String>,
    pub receipt_id: Option<&'a [u8]>,
    pub reference: &'a str,
    pub now_ms: u64,
}

/// A hold row's columns, as read by either backend, checked into a [`HoldRecord`].
pub(crate) struct RawHold {
    pub id: Vec<u8>,
    pub org_id: String,
    pub key_id: String,
    pub amount: i64,
    pub created_at_ms: i64,
    pub state: String,
    pub charge: Option<i64>,
    pub node_id: Option<String>,
    pub receipt_id: Option<Vec<u8>>,
    pub closed_at_ms: Option<i64>,
}

impl RawHold {
    pub(crate) fn check(self) -> crate::Result<HoldRecord> {
        let bad = |what: &str| crate::ControlError::Store(format!("the database holds an invalid {what} for a credit hold"));
        Ok(HoldRecord {
            hold: Hold {
                id: self.id.as_slice().try_into().map_err(|_| bad("id"))?,
                org_id: self.org_id,
                key_id: self.key_id,
                amount: self.amount as u64,
                created_at_ms: self.created_at_ms as u64,
            },
            state: HoldState::parse(&self.state).ok_or_else(|| bad("state"))?,
            charge: self.charge.map(|c| c as u64),
            node_id: self.node_id.map(|n| NodeId::parse(&n)).transpose().map_err(|_| bad("node id"))?,
            receipt_id: self.receipt_id.map(|r| r.as_slice().try_into()).transpose().map_err(|_| bad("receipt id"))?,
            closed_at_ms: self.closed_at_ms.map(|t| t as u64),
        })
    }
}

/// What [`LedgerCheck`] is computed from, read by either backend in one snapshot.
#[derive(Default)]
pub(crate) struct CheckInput {
    /// Stored balances.
    pub accounts: Vec<(String, i64)>,
    /// Per account: the sum of its rows and their count.
    pub row_sums: Vec<(String, i128, u64)>,
    pub transactions: u64,
    pub unbalanced: Vec<u64>,
    /// Per organisation: the sum of its open holds.
    pub open_held: Vec<(String, i128)>,
    /// Per organisation: the sum of its settled charges.
    pub settled_by_org: Vec<(String, i128)>,
    /// Per node (text id): the sum of the charges settled to it.
    pub settled_by_node: Vec<(String, i128)>,
    /// Per organisation: stored spent and topped-up totals.
    pub totals: Vec<(String, i128, i128)>,
    /// Per organisation: the sum of its top-ups' credits.
    pub topups_by_org: Vec<(String, i128)>,
}

impl CheckInput {
    pub(crate) fn check(self) -> LedgerCheck {
        use std::collections::{BTreeMap, BTreeSet};
        let balances: BTreeMap<&str, i64> = self.accounts.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let sums: BTreeMap<&str, i128> = self.row_sums.iter().map(|(a, s, _)| (a.as_str(), *s)).collect();
        let mut out = LedgerCheck {
            sum: self.row_sums.iter().map(|(_, s, _)| *s).sum(),
            transactions: self.transactions,
            rows: self.row_sums.iter().map(|(_, _, n)| *n).sum(),
            accounts: self.accounts.len() as u64,
            unbalanced_transactions: self.unbalanced,
            ..LedgerCheck::default()
        };
        let mut mismatch = |account: String, stored: i128, expected: i128| {
            if stored != expected {
                out.mismatches.push(LedgerMismatch { account, stored, expected });
            }
        };
        // Every stored balance is the sum of its rows.
        let names: BTreeSet<&str> = balances.keys().chain(sums.keys()).copied().collect();
        for a in &names {
            mismatch(a.to_string(), balances.get(a).copied().map(i128::from).unwrap_or(0), sums.get(a).copied().unwrap_or(0));
        }
        let balance = |a: &str| balances.get(a).copied().map(i128::from).unwrap_or(0);
        // Each organisation's held account is the sum of its open holds.
        let open: BTreeMap<&str, i128> = self.open_held.iter().map(|(o, s)| (o.as_str(), *s)).collect();
        let held_orgs: BTreeSet<String> = balances
            .keys()
            .filter_map(|a| a.strip_prefix("org:")?.strip_suffix(":held").map(str::to_string))
            .chain(open.keys().map(|o| o.to_string()))
            .collect();
        for o in held_orgs {
            mismatch(format!("{} (open holds)", account::held(&o)), balance(&account::held(&o)), open.get(o.as_str()).copied().unwrap_or(0));
        }
        // Each node's earnings are the charges settled to it.
        let by_node: BTreeMap<&str, i128> = self.settled_by_node.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let nodes: BTreeSet<String> = balances
            .keys()
            .filter_map(|a| a.strip_prefix("node:")?.strip_suffix(":earned").map(str::to_string))
            .chain(by_node.keys().map(|n| n.to_string()))
            .collect();
        for n in nodes {
            let a = format!("node:{n}:earned");
            mismatch(format!("{a} (settled charges)"), balance(&a), by_node.get(n.as_str()).copied().unwrap_or(0));
        }
        // Each organisation's totals are its settled charges and its top-ups.
        let by_org: BTreeMap<&str, i128> = self.settled_by_org.iter().map(|(o, s)| (o.as_str(), *s)).collect();
        let topups: BTreeMap<&str, i128> = self.topups_by_org.iter().map(|(o, s)| (o.as_str(), *s)).collect();
        let totals: BTreeMap<&str, (i128, i128)> = self.totals.iter().map(|(o, s, t)| (o.as_str(), (*s, *t))).collect();
        let orgs: BTreeSet<&str> = totals.keys().chain(by_org.keys()).chain(topups.keys()).copied().collect();
        for o in orgs {
            let (spent, topped) = totals.get(o).copied().unwrap_or((0, 0));
            mismatch(format!("org:{o}:spent_total"), spent, by_org.get(o).copied().unwrap_or(0));
            mismatch(format!("org:{o}:topped_up_total"), topped, topups.get(o).copied().unwrap_or(0));
        }
        out.negative_accounts = self.accounts.iter().filter(|(a, b)| *b < 0 && !may_go_negative(a)).map(|(a, _)| a.clone()).collect();
        out
    }
}
