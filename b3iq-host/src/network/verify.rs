//! Verifier jobs on the node (network mode): the gateway sends a sampled request that another
//! node served (its signed receipt, its opened attestation) on this node's tunnel, `POST
//! /v1/node/verify`, and the node answers its signed verdict
//! (`docs/verification.md`, "In the network").
//!
//! A job is authorised like a network request, by a [`RequestTicket`] of the tunnel's gateway
//! for this node (signature, window, single-use request id), marked as a verifier's ticket by
//! its zero price (an inference ticket is refused here). Its `seed_key` is the verified
//! request's. The node must be in network mode and hold the artifact the receipt names (by
//! sha256); it replays with b3iq-runtime's verifier, one job at a time, on the blocking pool.

use std::sync::Arc;

use b3iq_core::attestation::SignedVerdict;
use b3iq_core::metering::PriceSchedule;
use b3iq_core::OperatingMode;
use b3iq_protocol::gateway::RequestTicket;
use b3iq_protocol::verification::VerifyJob;

use super::TunnelContext;
use crate::context::{unix_now_ms, NodeState};
use crate::error::{HostError, Result};

/// One verification at a time (it loads the model a second time and runs a prefill).
static VERIFY_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Checks a verifier ticket (the `x-b3iq-ticket` value) on a tunnel.
///
/// # Errors
/// `InvalidTicket` (401) for a missing, forged, expired, replayed or priced ticket;
/// `NetworkPolicy` (403) outside network mode.
pub fn admit(
    st: &NodeState,
    t: &TunnelContext,
    ticket_header: Option<&str>,
) -> Result<RequestTicket> {
    let now_ms = unix_now_ms();
    let ticket = super::checked_ticket(st, t, ticket_header, "verifier ticket", now_ms)?;
    if ticket.price != PriceSchedule::FREE || ticket.max_price_micro_credits != 0 {
        return Err(HostError::InvalidTicket(
            "a verifier job needs a verifier ticket (price zero), not a request's".into(),
        ));
    }
    if st.mode() != OperatingMode::Network {
        return Err(HostError::NetworkPolicy(format!(
            "the node is in {} mode",
            st.mode()
        )));
    }
    if !t.first_use(ticket.request_id, ticket.expires_at_ms, now_ms) {
        return Err(HostError::InvalidTicket(
            "this ticket's request id was already used".into(),
        ));
    }
    Ok(ticket)
}

/// Runs one verifier job: the served artifact the receipt names, b3iq-runtime's
/// `verify_attestation` with the ticket's seed key, and the verdict signed with the node key.
///
/// # Errors
/// `InvalidParameter` (400) for a malformed job; `ModelNotFound` when this node does not serve
/// the receipt's artifact; `Runtime` when the model cannot be loaded or run.
pub async fn run(st: &Arc<NodeState>, ticket: &RequestTicket, job: VerifyJob) -> Result<SignedVerdict> {
    let (receipt, opened) = job
        .open()
        .map_err(|e| HostError::InvalidParameter(format!("verifier job: {e}")))?;
    let digest = receipt.body().artifact_digest;
    let model = st
        .served_models()
        .into_iter()
        .find(|m| m.digest == digest)
        .ok_or_else(|| HostError::ModelNotFound(format!("the artifact {digest}")))?;
    let _slot = VERIFY_SLOTS
        .acquire()
        .await
        .map_err(|_| HostError::Internal("verifier closed".into()))?;
    let threads = if st.config.threads > 0 {
        st.config.threads
    } else {
        b3iq_runtime::llama::LlamaConfig::default().threads
    };
    let (st2, seed_key, request) = (st.clone(), ticket.seed_key, ticket.request_id);
    let path = model.info.path.clone();
    let signed = tokio::task::spawn_blocking(move || -> Result<SignedVerdict> {
        let m = b3iq_runtime::llama::load_llama_model(&path, 0).map_err(HostError::Runtime)?;
        let input = b3iq_runtime::verify::AttestationInput {
            receipt: &receipt,
            attestation: &opened.attestation,
            prompt: &opened.prompt,
            completion: &opened.completion,
            seed_key: Some(seed_key),
        };
        let v = b3iq_runtime::verify::verify_attestation(&m, threads, &input)
            .map_err(HostError::Runtime)?;
        let body = v.to_verdict(
            &input,
            st2.node_id,
            b3iq_runtime::attest::llama_runtime_fingerprint(threads),
            unix_now_ms(),
        );
        #[cfg(debug_assertions)]
        let body = debug_lying_verifier(body);
        st2.db.audit(
            st2.now(),
            "system",
            "network.verify",
            &request.to_hex(),
            "ok",
            &format!("{:?} {}", body.outcome, body.metric),
        );
        b3iq_core::Signed::sign(body, &st2.key)
            .map_err(|e| HostError::Internal(format!("sign verdict: {e}")))
    })
    .await
    .map_err(|e| HostError::Internal(format!("verifier task: {e}")))??;
    Ok(signed)
}

/// Debug builds only (tests of the second verifier): with `B3IQ_DEBUG_LYING_VERIFIER=1` in the
/// environment, this node signs a `fail` whatever its replay found (a lying verifier accusing
/// honest work, which one verifier's word must never turn into a dispute). Compiled out of
/// release builds.
#[cfg(debug_assertions)]
fn debug_lying_verifier(mut body: b3iq_core::attestation::VerificationVerdict) -> b3iq_core::attestation::VerificationVerdict {
    if std::env::var_os("B3IQ_DEBUG_LYING_VERIFIER").is_some() {
        tracing::warn!("debug build: signing a false fail verdict (B3IQ_DEBUG_LYING_VERIFIER)");
        body.outcome = b3iq_core::attestation::VerdictOutcome::FailChunk(0);
        body.metric = "debug: lying verifier".into();
    }
    body
}
