//! Network mode on the node: the owner's policy, and the admission of a request that arrives on
//! the gateway's tunnel.
//!
//! The node serves network requests only in `network` mode, only while enrolled (the gateway
//! checks the enrollment), and only within the owner's [`NetworkPolicy`]: a schedule (UTC days
//! and hours), a daily token budget, a share of the runtime's slots (at least one slot always
//! stays for local keys, which keep priority: they are never counted against the share), a
//! model allowlist and a price floor. A tunnelled request is authorised by the tunnel and its
//! signed [`RequestTicket`] alone, never by a local key ([`admit`]); its receipt is signed in
//! `network` mode, priced by the ticket.
//!
//! The tunnel itself (dialing the gateway, serving HTTP/2 on the connection) is the front door
//! `http::tunnel`.

pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{RequestId, SignedReceipt};
use b3iq_core::{NodePublicKey, OperatingMode};
use b3iq_protocol::gateway::{RequestTicket, TunnelModel};
use b3iq_protocol::messages::Audience;

use crate::context::{unix_now, unix_now_ms, Context, NodeState};
use crate::error::{HostError, Result};
use crate::store::receipts as receipts_sql;
use crate::store::{META_NETWORK_POLICY, META_TUNNEL_STATUS};

/// Clock skew allowed on ticket times, 30 s.
pub const TICKET_SKEW_MS: u64 = 30_000;

/// A window of the week in which network requests are served (UTC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleWindow {
    /// Days, 0 = Monday .. 6 = Sunday; empty: every day.
    #[serde(default)]
    pub days: Vec<u8>,
    /// First hour served, 0-23 (UTC).
    pub start_hour: u8,
    /// First hour no longer served, 1-24 (UTC), above `start_hour`.
    pub end_hour: u8,
}

/// The owner's network policy (state.db `meta.network_policy`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicy {
    /// When network requests are served; empty: always.
    pub schedule: Vec<ScheduleWindow>,
    /// Most tokens (prompt + completion) served to the network per UTC day; `None`: no limit.
    /// Checked when a request is admitted (a request admitted under the limit may end above it).
    pub max_tokens_per_day: Option<u64>,
    /// Most network requests at once (clamped to the runtime's slots minus one).
    pub max_concurrent: u32,
    /// Models served to the network (ids); empty: every served model.
    pub models: Vec<String>,
    /// The least price accepted: each component of a ticket's schedule must be at or above it.
    pub price_floor: PriceSchedule,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            schedule: Vec::new(),
            max_tokens_per_day: None,
            max_concurrent: 1,
            models: Vec::new(),
            price_floor: PriceSchedule::FREE,
        }
    }
}

impl NetworkPolicy {
    /// Checks the fields.
    ///
    /// # Errors
    /// `InvalidParameter` naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent == 0 || self.max_concurrent > 1024 {
            return Err(HostError::InvalidParameter(
                "max_concurrent must be 1 to 1024".into(),
            ));
        }
        if self.schedule.len() > 32 || self.models.len() > 16 {
            return Err(HostError::InvalidParameter(
                "at most 32 schedule windows and 16 models".into(),
            ));
        }
        for w in &self.schedule {
            if w.start_hour > 23
                || w.end_hour > 24
                || w.end_hour <= w.start_hour
                || w.days.iter().any(|d| *d > 6)
                || w.days.len() > 7
            {
                return Err(HostError::InvalidParameter("a schedule window needs days 0 (Monday) to 6 and hours 0 <= start_hour < end_hour <= 24 (UTC)".into()));
            }
        }
        for m in &self.models {
            b3iq_core::codec::check_identifier("models", m, 128)
                .map_err(|e| HostError::InvalidParameter(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether the schedule allows `unix_s` (UTC).
    pub fn in_schedule(&self, unix_s: u64) -> bool {
        if self.schedule.is_empty() {
            return true;
        }
        let day = ((unix_s / 86_400 + 3) % 7) as u8; // 1970-01-01 was a Thursday (3 = Thursday, 0 = Monday)
        let hour = ((unix_s % 86_400) / 3600) as u8;
        self.schedule.iter().any(|w| {
            (w.days.is_empty() || w.days.contains(&day))
                && hour >= w.start_hour
                && hour < w.end_hour
        })
    }

    /// Whether a ticket's schedule is at or above the floor.
    pub fn price_ok(&self, p: &PriceSchedule) -> bool {
        p.prompt_per_1m_tokens >= self.price_floor.prompt_per_1m_tokens
            && p.completion_per_1m_tokens >= self.price_floor.completion_per_1m_tokens
            && p.per_request >= self.price_floor.per_request
    }
}

/// The persisted policy (the default when none was saved).
///
/// # Errors
/// `Db`; `Config` for a corrupt row.
pub fn policy(st: &Context) -> Result<NetworkPolicy> {
    match st.db.meta_get(META_NETWORK_POLICY)? {
        None => Ok(NetworkPolicy::default()),
        Some(s) => serde_json::from_str(&s)
            .map_err(|e| HostError::Config(format!("state.db network_policy: {e}"))),
    }
}

/// Validates and saves the policy (audited).
///
/// # Errors
/// `InvalidParameter`; `Db`.
pub fn set_policy(st: &Context, p: &NetworkPolicy) -> Result<()> {
    p.validate()?;
    let json = serde_json::to_string(p).map_err(|e| HostError::Internal(e.to_string()))?;
    st.db.meta_set(META_NETWORK_POLICY, &json)?;
    st.db
        .audit(st.now(), "owner", "network.policy", "network", "ok", &json);
    Ok(())
}

/// The concurrency the node offers the network: the policy's, at most the runtime's slots minus
/// one (one slot always stays for local keys). 0 when the runtime has a single slot.
pub fn offered_concurrency(st: &Context, p: &NetworkPolicy) -> u32 {
    p.max_concurrent.min(st.config.parallel.saturating_sub(1))
}

/// Why the node cannot enter network mode now, if it cannot: it must be enrolled, serve a model
/// the policy allows, and keep a local slot.
pub fn not_ready(st: &NodeState) -> Option<String> {
    let enrolled = crate::managed::enrollment(&st.db).ok().flatten().is_some();
    if !enrolled {
        return Some(
            "network mode needs an enrollment in a control plane first (`b3iqd enroll`)".into(),
        );
    }
    let p = policy(st).unwrap_or_default();
    if offered_concurrency(st, &p) == 0 {
        return Some(format!("network mode keeps one slot for local keys, so it needs \"parallel\" of at least 2 in config.json (now {})", st.config.parallel));
    }
    if tunnel_models(st, &p).is_empty() {
        return Some("no served model is allowed by the network policy's model list".into());
    }
    None
}

/// The models offered on the tunnel: served, allowed by the policy, with a real digest.
pub fn tunnel_models(st: &NodeState, p: &NetworkPolicy) -> Vec<TunnelModel> {
    let mut v: Vec<TunnelModel> = st
        .served_models()
        .into_iter()
        .filter(|m| (p.models.is_empty() || p.models.contains(&m.id)) && m.digest.0 != [0; 32])
        .map(|m| TunnelModel {
            model_id: m.id,
            digest: m.digest,
        })
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.model_id == b.model_id);
    v.truncate(b3iq_protocol::gateway::MAX_TUNNEL_MODELS);
    v
}

/// What a tunnel serves under: the gateway's id and ticket key, from the challenge the node
/// answered, and the request ids seen on it. Inserted as a request extension by the tunnel
/// only: a request on the local listener can never carry it.
#[derive(Debug, Clone)]
pub struct TunnelContext {
    /// The gateway's id.
    pub gateway_id: Audience,
    /// The key its tickets are signed with.
    pub ticket_key: NodePublicKey,
    /// Request ids seen on this tunnel with their ticket expiry (unix ms): a replay is refused
    /// before any work.
    seen: Arc<Mutex<HashMap<RequestId, u64>>>,
}

impl TunnelContext {
    /// A context for a tunnel opened with this gateway.
    pub fn new(gateway_id: Audience, ticket_key: NodePublicKey) -> TunnelContext {
        TunnelContext {
            gateway_id,
            ticket_key,
            seen: Default::default(),
        }
    }

    /// Records `id` (valid until `expires_at_ms`); `false` when it was seen before. Expired
    /// entries are dropped as new ones arrive.
    fn first_use(&self, id: RequestId, expires_at_ms: u64, now_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 4096 {
            seen.retain(|_, exp| *exp + TICKET_SKEW_MS > now_ms);
        }
        seen.insert(id, expires_at_ms).is_none()
    }
}

/// One admitted network request: its ticket, and its place in the network share (released when
/// the last clone is dropped, that is when the request's inference ends).
#[derive(Debug)]
pub struct NetworkGrant {
    /// The verified ticket.
    pub ticket: RequestTicket,
    st: Arc<NodeState>,
}

impl Drop for NetworkGrant {
    fn drop(&mut self) {
        self.st.network_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tokens served to the network since the start of today (UTC), requests, and the micro-credits
/// their receipts charged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Today {
    /// Network requests receipted today.
    pub requests: u64,
    /// Prompt + completion tokens.
    pub tokens: u64,
    /// Sum of the receipts' prices, micro-credits.
    pub earned_micro_credits: u64,
}

/// Today's network usage (UTC day), from the receipts.
///
/// # Errors
/// `Db`.
pub fn today(st: &NodeState) -> Result<Today> {
    let since = unix_now() / 86_400 * 86_400;
    let mut t = Today::default();
    for (p, c, signed) in receipts_sql::network_since(&st.db, since, 1_000_000)? {
        t.requests += 1;
        t.tokens += u64::from(p) + u64::from(c);
        if let Ok(r) = SignedReceipt::decode(&signed) {
            t.earned_micro_credits = t
                .earned_micro_credits
                .saturating_add(r.body().price_micro_credits);
        }
    }
    Ok(t)
}

/// The ticket of a tunnel request (its `x-b3iq-ticket` header), signed by the tunnel's gateway for this
/// node and valid at `now_ms` (within [`TICKET_SKEW_MS`]); `what` names it in the error.
///
/// # Errors
/// `InvalidTicket` (401) for a missing, malformed, forged, foreign or expired ticket.
pub(crate) fn checked_ticket(
    st: &NodeState,
    t: &TunnelContext,
    ticket_header: Option<&str>,
    what: &str,
    now_ms: u64,
) -> Result<RequestTicket> {
    let raw = ticket_header.ok_or_else(|| {
        HostError::InvalidTicket(format!(
            "send the gateway's {what} in {}",
            b3iq_protocol::gateway::TICKET_HEADER
        ))
    })?;
    let ticket =
        RequestTicket::from_header(raw).map_err(|e| HostError::InvalidTicket(e.to_string()))?;
    ticket
        .verify_for(&t.ticket_key, &t.gateway_id, &st.node_id, now_ms, TICKET_SKEW_MS)
        .map_err(|e| HostError::InvalidTicket(e.to_string()))?;
    Ok(ticket)
}

/// Admits a request that arrived on the tunnel with `ticket_header` (the `x-b3iq-ticket`
/// value): the node is in network mode; the ticket is the tunnel gateway's, for this node, in
/// its window, for a model the policy allows and the node serves, at or above the price floor,
/// and its request id is new; the schedule, the daily token budget and the network share allow
/// it. Nothing of the request is read before this passes.
///
/// # Errors
/// `InvalidTicket` (401) for the ticket; `NetworkPolicy` (403) for the policy;
/// `NetworkBusy` (429) when the share is full; `ModelNotFound`.
pub fn admit(
    st: &Arc<NodeState>,
    t: &TunnelContext,
    ticket_header: Option<&str>,
) -> Result<Arc<NetworkGrant>> {
    let now_ms = unix_now_ms();
    let ticket = checked_ticket(st, t, ticket_header, "ticket", now_ms)?;
    if st.mode() != OperatingMode::Network {
        return Err(HostError::NetworkPolicy(format!(
            "the node is in {} mode",
            st.mode()
        )));
    }
    let p = policy(st)?;
    if !p.price_ok(&ticket.price) {
        return Err(HostError::NetworkPolicy(
            "the ticket's price is below the owner's price floor".into(),
        ));
    }
    if !(p.models.is_empty() || p.models.contains(&ticket.model_id)) {
        return Err(HostError::NetworkPolicy(format!(
            "model {} is not offered to the network",
            ticket.model_id
        )));
    }
    if st.served_model(&ticket.model_id).is_none() {
        return Err(HostError::ModelNotFound(ticket.model_id.clone()));
    }
    if !p.in_schedule(now_ms / 1000) {
        return Err(HostError::NetworkPolicy(
            "outside the owner's network schedule".into(),
        ));
    }
    if let Some(limit) = p.max_tokens_per_day {
        if receipts_sql::network_tokens_since(&st.db, unix_now() / 86_400 * 86_400)? >= limit {
            return Err(HostError::NetworkPolicy(format!(
                "today's network token budget ({limit}) is spent"
            )));
        }
    }
    if !t.first_use(ticket.request_id, ticket.expires_at_ms, now_ms)
        || receipts_sql::request_id_used(&st.db, &ticket.request_id.to_hex())?
    {
        return Err(HostError::InvalidTicket(
            "this ticket's request id was already used".into(),
        ));
    }
    let limit = offered_concurrency(st, &p);
    let prev = st.network_in_flight.fetch_add(1, Ordering::AcqRel);
    let grant = Arc::new(NetworkGrant {
        ticket,
        st: st.clone(),
    });
    if prev >= limit {
        // Dropping the grant gives the place back.
        drop(grant);
        return Err(HostError::NetworkBusy(1));
    }
    Ok(grant)
}

/// `b3iqd network on`, on the machine: network mode for an enrolled node with a local slot to
/// spare, with `p` as the policy when given. The running daemon opens its tunnel within
/// seconds (once it serves a model the policy allows).
///
/// # Errors
/// `ModeNotAvailable` when not enrolled; `InvalidParameter` for a policy or a runtime with one
/// slot; `Db`.
pub fn enable(ctx: &Context, p: Option<&NetworkPolicy>) -> Result<NetworkPolicy> {
    if crate::managed::enrollment(&ctx.db)?.is_none() {
        return Err(HostError::ModeNotAvailable("network".into()));
    }
    if let Some(p) = p {
        set_policy(ctx, p)?;
    }
    let p = policy(ctx)?;
    if offered_concurrency(ctx, &p) == 0 {
        return Err(HostError::InvalidParameter(format!("network mode keeps one slot for local keys, so it needs \"parallel\" of at least 2 in config.json (now {})", ctx.config.parallel)));
    }
    crate::context::mode::store(&ctx.db, OperatingMode::Network)?;
    ctx.db
        .audit(ctx.now(), "owner", "mode.change", "network", "ok", "cli");
    Ok(p)
}

/// `b3iqd network off`: back to managed mode (the tunnel closes gracefully within seconds).
///
/// # Errors
/// `Db`.
pub fn disable(ctx: &Context) -> Result<OperatingMode> {
    let m = if crate::managed::enrollment(&ctx.db)?.is_some() {
        OperatingMode::Managed
    } else {
        OperatingMode::Local
    };
    crate::context::mode::store(&ctx.db, m)?;
    ctx.db
        .audit(ctx.now(), "owner", "mode.change", m.as_str(), "ok", "cli");
    Ok(m)
}

/// The tunnel's state, for `b3iqd status` and the wizard.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TunnelStatus {
    /// `connected`, `connecting`, `down` (with `error`) or `off`.
    pub state: String,
    /// The gateway's id while connected.
    pub gateway_id: Option<String>,
    /// Since when, unix ms.
    pub since_ms: u64,
    /// The last failure, if any.
    pub error: Option<String>,
}

/// Records the tunnel's state.
pub fn set_tunnel_status(st: &NodeState, s: &TunnelStatus) {
    if let Ok(j) = serde_json::to_string(s) {
        let _ = st.db.meta_set(META_TUNNEL_STATUS, &j);
    }
}

/// The tunnel's last recorded state.
pub fn tunnel_status(st: &NodeState) -> TunnelStatus {
    st.db
        .meta_get(META_TUNNEL_STATUS)
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_floors() {
        let p = NetworkPolicy {
            schedule: vec![ScheduleWindow {
                days: vec![0, 1, 2, 3, 4],
                start_hour: 9,
                end_hour: 17,
            }],
            ..Default::default()
        };
        p.validate().unwrap();
        // 2026-11-30 was a Monday.
        let monday_10 = 1_796_000_400 - 1_796_000_400 % 86_400 + 10 * 3600;
        let monday = 1_796_000_400 / 86_400;
        assert_eq!((monday + 3) % 7, 0, "the test's day is a Monday");
        assert!(p.in_schedule(monday_10));
        assert!(!p.in_schedule(monday_10 + 8 * 3600), "18:00");
        assert!(!p.in_schedule(monday_10 + 5 * 86_400), "Saturday");
        assert!(NetworkPolicy::default().in_schedule(monday_10 + 5 * 86_400));
        let bad = NetworkPolicy {
            schedule: vec![ScheduleWindow {
                days: vec![],
                start_hour: 9,
                end_hour: 9,
            }],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(NetworkPolicy {
            max_concurrent: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        let floor = NetworkPolicy {
            price_floor: PriceSchedule::per_1k(100, 200).unwrap(),
            ..Default::default()
        };
        assert!(floor.price_ok(&PriceSchedule::per_1k(100, 200).unwrap()));
        assert!(!floor.price_ok(&PriceSchedule::per_1k(100, 199).unwrap()));
        let json = serde_json::to_string(&floor).unwrap();
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&json).unwrap(), floor);
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"shell": true}"#).is_err());
    }
}
