//! Gateway <-> node messages of network mode (the node-dialed tunnel and the request ticket).
//!
//! * **Tunnel.** The node asks its control plane for a [`TunnelChallenge`] (the gateway's id,
//!   a single-use nonce, the key that will sign its tickets), signs a [`TunnelHello`] over it
//!   with its node key (its own domain tag, see [`TunnelHello::signing_message`]) and opens the
//!   tunnel with it: an HTTP/1.1 upgrade on the control plane's HTTPS port, after which the node
//!   serves HTTP/2 on that connection and the gateway is the client (cloudflared's http2
//!   design). The hello names the models the node serves on the tunnel, each with its artifact
//!   digest, and how many requests it takes at once.
//! * **Ticket.** Each forwarded request carries a [`RequestTicket`] signed by the gateway's
//!   ticket key (header [`TICKET_HEADER`], hex of the JSON): the request id the receipt must
//!   carry, the node it is for, the model, the price schedule, the worst-case price held for
//!   it, the trust tier, the replayable-sampling `seed_key`, an org-free billing reference and
//!   a short validity window. The node checks it ([`RequestTicket::verify_for`]) before any work,
//!   and signs its receipt in `network` mode priced by the ticket.
//!
//! Like [`crate::messages`], every type is built from ids, hashes, counts, times and enums: no
//! prompt, output, key secret, customer identity, URL or path fits.

use b3iq_core::codec::check_identifier;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::Nonce;
use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{RequestId, SignedReceipt};
use b3iq_core::{NodeId, NodeKey, NodePublicKey, OperatingMode, Signature, TrustTier};

use crate::error::{ProtocolError, Result};
use crate::messages::Audience;

/// Domain tag of tunnel hellos.
pub const TUNNEL_HELLO_TAG: &[u8] = b"b3iq/gw/tunnel-hello/v1";
/// Domain tag of request tickets.
pub const TICKET_TAG: &[u8] = b"b3iq/gw/ticket/v1";
/// HTTP header carrying a ticket (hex of its JSON) on a tunnelled request.
pub const TICKET_HEADER: &str = "x-b3iq-ticket";
/// HTTP header carrying the signed hello (hex of its JSON) on the tunnel's upgrade request.
pub const HELLO_HEADER: &str = "x-b3iq-tunnel-hello";
/// HTTP header carrying the node's signed receipt (hex of its b3iq-core encoding) on a
/// non-streamed answer.
pub const RECEIPT_HEADER: &str = "x-b3iq-receipt";
/// Prefix of the SSE comment line carrying the receipt (hex) before `data: [DONE]`.
pub const RECEIPT_SSE_PREFIX: &str = ": b3iq-receipt ";
/// The `Upgrade` protocol token of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "b3iq-tunnel/1";
/// Most models one hello may announce.
pub const MAX_TUNNEL_MODELS: usize = 16;
/// Longest model id (as in b3iq-core receipts).
pub const MAX_MODEL_ID_LEN: usize = 128;
/// Longest validity window of a ticket: 10 minutes.
pub const MAX_TICKET_VALIDITY_MS: u64 = 10 * 60 * 1000;
/// Largest hex-encoded ticket or hello accepted in a header (16 KiB).
pub const MAX_HEADER_HEX: usize = 16 * 1024;

fn invalid(field: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidMessage { field, reason: reason.into() }
}

/// Gateway -> node: what a tunnel hello must answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelChallenge {
    /// The gateway's id (the hello's audience).
    pub gateway_id: Audience,
    /// Single-use nonce.
    pub nonce: Nonce,
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// The challenge is refused from this time on, unix ms.
    pub expires_at_ms: u64,
    /// The key that signs this gateway's request tickets (the node accepts tickets from it
    /// for the tunnel's life).
    pub ticket_key: NodePublicKey,
}

/// A model a node serves on its tunnel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelModel {
    /// Model id (identifier, at most 128 bytes), as in the node's receipts.
    pub model_id: String,
    /// sha256 of the artifact serving it.
    pub digest: Sha256Digest,
}

/// Node -> gateway: the signed opening of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelHello {
    /// The node.
    pub node_id: NodeId,
    /// Its public key (the node id derives from it).
    pub public_key: NodePublicKey,
    /// The challenge's gateway id.
    pub gateway_id: Audience,
    /// The challenge's nonce.
    pub nonce: Nonce,
    /// The node's mode when it signed (must be `network`).
    pub mode: OperatingMode,
    /// Most requests the node takes at once on the tunnel (its network share), 1 to 1024.
    pub max_concurrent: u32,
    /// Models served on the tunnel, sorted, unique, 1 to [`MAX_TUNNEL_MODELS`].
    pub models: Vec<TunnelModel>,
    /// Signing time, unix ms.
    pub sent_at_ms: u64,
    /// Ed25519 over [`TunnelHello::signing_message`].
    pub signature: Signature,
}

fn put_str(m: &mut Vec<u8>, s: &str) {
    m.extend_from_slice(&(s.len() as u32).to_be_bytes());
    m.extend_from_slice(s.as_bytes());
}

fn check_models(models: &[TunnelModel]) -> Result<()> {
    if models.is_empty() || models.len() > MAX_TUNNEL_MODELS {
        return Err(invalid("models", format!("{} models; announce 1 to {MAX_TUNNEL_MODELS}", models.len())));
    }
    for m in models {
        check_identifier("model_id", &m.model_id, MAX_MODEL_ID_LEN)?;
    }
    if models.windows(2).any(|w| w[0].model_id >= w[1].model_id) {
        return Err(invalid("models", "model ids must be sorted and unique"));
    }
    Ok(())
}

impl TunnelHello {
    /// Signs a hello answering `challenge`.
    ///
    /// # Errors
    /// `InvalidMessage` for a bad model list or concurrency.
    pub fn sign(key: &NodeKey, challenge: &TunnelChallenge, mode: OperatingMode, max_concurrent: u32, mut models: Vec<TunnelModel>, now_ms: u64) -> Result<Self> {
        models.sort();
        let mut h = Self {
            node_id: key.node_id(),
            public_key: key.public(),
            gateway_id: challenge.gateway_id.clone(),
            nonce: challenge.nonce,
            mode,
            max_concurrent,
            models,
            sent_at_ms: now_ms,
            signature: Signature([0; 64]),
        };
        h.check_fields()?;
        h.signature = key.sign_raw(&h.signing_message());
        Ok(h)
    }

    fn check_fields(&self) -> Result<()> {
        if !(1..=1024).contains(&self.max_concurrent) {
            return Err(invalid("max_concurrent", format!("{}; use 1 to 1024", self.max_concurrent)));
        }
        check_models(&self.models)
    }

    /// `TUNNEL_HELLO_TAG || node_id (32) || public_key (32) || gateway_id (u32 BE length ||
    /// bytes) || nonce (32) || mode (u8) || max_concurrent (u32 BE) || model count (u32 BE) ||
    /// per model: id (u32 BE length || bytes) || digest (32) || sent_at_ms (u64 BE)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(TUNNEL_HELLO_TAG.len() + 160 + self.models.len() * 72);
        m.extend_from_slice(TUNNEL_HELLO_TAG);
        m.extend_from_slice(&self.node_id.0);
        m.extend_from_slice(self.public_key.as_bytes());
        put_str(&mut m, self.gateway_id.as_str());
        m.extend_from_slice(&self.nonce.0);
        m.push(self.mode.tag());
        m.extend_from_slice(&self.max_concurrent.to_be_bytes());
        m.extend_from_slice(&(self.models.len() as u32).to_be_bytes());
        for x in &self.models {
            put_str(&mut m, &x.model_id);
            m.extend_from_slice(&x.digest.0);
        }
        m.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        m
    }

    /// Checks the hello against the challenge it answers at `now_ms` (allowing `max_skew_ms`
    /// on the signing time): fields, the key derives the node id, the signature, the gateway id
    /// and nonce, network mode, the challenge's expiry. Returns the node id. Recording the nonce
    /// as used is the caller's job.
    ///
    /// # Errors
    /// `InvalidMessage` naming the field that does not hold.
    pub fn verify(&self, challenge: &TunnelChallenge, now_ms: u64, max_skew_ms: u64) -> Result<NodeId> {
        self.check_fields()?;
        if self.public_key.node_id() != self.node_id {
            return Err(invalid("node_id", format!("tunnel hello: {} is not derived from the given public key", self.node_id)));
        }
        if !self.public_key.verify_raw(&self.signing_message(), &self.signature) {
            return Err(invalid("signature", "tunnel hello: Ed25519 signature does not verify"));
        }
        if self.gateway_id != challenge.gateway_id {
            return Err(invalid("gateway_id", format!("tunnel hello for {}, not this gateway ({})", self.gateway_id.as_str(), challenge.gateway_id.as_str())));
        }
        if self.nonce != challenge.nonce {
            return Err(invalid("nonce", "tunnel hello answers another challenge"));
        }
        if now_ms >= challenge.expires_at_ms {
            return Err(invalid("nonce", "the tunnel challenge has expired; ask for a new one"));
        }
        if self.sent_at_ms.abs_diff(now_ms) > max_skew_ms {
            return Err(invalid("sent_at_ms", "the node's clock is outside the allowed skew; fix the node's clock"));
        }
        if self.mode != OperatingMode::Network {
            return Err(invalid("mode", format!("the node is in {} mode; only a node in network mode opens a tunnel", self.mode)));
        }
        Ok(self.node_id)
    }

    /// The hello as a header value (hex of its JSON).
    pub fn to_header(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses [`TunnelHello::to_header`]'s output.
    ///
    /// # Errors
    /// `InvalidMessage` for an oversized, non-hex or malformed value.
    pub fn from_header(v: &str) -> Result<Self> {
        from_hex_json("tunnel hello", v)
    }
}

fn from_hex_json<T: serde::de::DeserializeOwned>(what: &'static str, v: &str) -> Result<T> {
    if v.len() > MAX_HEADER_HEX {
        return Err(invalid("header", format!("{what}: {} bytes, at most {MAX_HEADER_HEX}", v.len())));
    }
    let bytes = hex::decode(v.trim()).map_err(|e| invalid("header", format!("{what}: not hex: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid("header", format!("{what}: {e}")))
}

/// Gateway -> node: the authority to serve one request, and its price.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTicket {
    /// The request id the node's receipt must carry.
    pub request_id: RequestId,
    /// The gateway that issued it.
    pub gateway_id: Audience,
    /// The node that must serve it.
    pub node_id: NodeId,
    /// The model it is for.
    pub model_id: String,
    /// The price the receipt must be computed with.
    pub price: PriceSchedule,
    /// Credits held for the request: the most its receipt may charge, micro-credits.
    pub max_price_micro_credits: u64,
    /// Least trust tier the route requires.
    pub tier: TrustTier,
    /// Key of the replayable sampling draws (the verification design).
    pub seed_key: [u8; 32],
    /// An opaque billing reference (no organisation or key id).
    pub billing_ref: [u8; 16],
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// The node refuses the ticket from this time on, unix ms (at most 10 minutes after issue).
    pub expires_at_ms: u64,
    /// Ed25519 by the gateway's ticket key over [`RequestTicket::signing_message`].
    pub signature: Signature,
}

/// The fields of a ticket before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFields {
    /// See [`RequestTicket::request_id`].
    pub request_id: RequestId,
    /// See [`RequestTicket::gateway_id`].
    pub gateway_id: Audience,
    /// See [`RequestTicket::node_id`].
    pub node_id: NodeId,
    /// See [`RequestTicket::model_id`].
    pub model_id: String,
    /// See [`RequestTicket::price`].
    pub price: PriceSchedule,
    /// See [`RequestTicket::max_price_micro_credits`].
    pub max_price_micro_credits: u64,
    /// See [`RequestTicket::tier`].
    pub tier: TrustTier,
    /// See [`RequestTicket::seed_key`].
    pub seed_key: [u8; 32],
    /// See [`RequestTicket::billing_ref`].
    pub billing_ref: [u8; 16],
    /// See [`RequestTicket::issued_at_ms`].
    pub issued_at_ms: u64,
    /// See [`RequestTicket::expires_at_ms`].
    pub expires_at_ms: u64,
}

impl RequestTicket {
    /// Signs a ticket with the gateway's ticket key.
    ///
    /// # Errors
    /// `InvalidMessage` for a bad model id or validity window.
    pub fn sign(key: &NodeKey, f: TicketFields) -> Result<Self> {
        let mut t = Self {
            request_id: f.request_id,
            gateway_id: f.gateway_id,
            node_id: f.node_id,
            model_id: f.model_id,
            price: f.price,
            max_price_micro_credits: f.max_price_micro_credits,
            tier: f.tier,
            seed_key: f.seed_key,
            billing_ref: f.billing_ref,
            issued_at_ms: f.issued_at_ms,
            expires_at_ms: f.expires_at_ms,
            signature: Signature([0; 64]),
        };
        t.check_fields()?;
        t.signature = key.sign_raw(&t.signing_message());
        Ok(t)
    }

    fn check_fields(&self) -> Result<()> {
        check_identifier("model_id", &self.model_id, MAX_MODEL_ID_LEN)?;
        if self.expires_at_ms <= self.issued_at_ms || self.expires_at_ms - self.issued_at_ms > MAX_TICKET_VALIDITY_MS {
            return Err(invalid("expires_at_ms", format!("a ticket is valid for 1 ms to {MAX_TICKET_VALIDITY_MS} ms after issue")));
        }
        Ok(())
    }

    /// `TICKET_TAG || request_id (16) || gateway_id (u32 BE length || bytes) || node_id (32) ||
    /// model_id (u32 BE length || bytes) || prompt_per_1m, completion_per_1m, per_request,
    /// max_price (u64 BE each) || tier (u8) || seed_key (32) || billing_ref (16) ||
    /// issued_at_ms, expires_at_ms (u64 BE each)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(TICKET_TAG.len() + 256);
        m.extend_from_slice(TICKET_TAG);
        m.extend_from_slice(&self.request_id.0);
        put_str(&mut m, self.gateway_id.as_str());
        m.extend_from_slice(&self.node_id.0);
        put_str(&mut m, &self.model_id);
        for v in [self.price.prompt_per_1m_tokens, self.price.completion_per_1m_tokens, self.price.per_request, self.max_price_micro_credits] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.push(self.tier.level());
        m.extend_from_slice(&self.seed_key);
        m.extend_from_slice(&self.billing_ref);
        m.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        m.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        m
    }

    /// The node's check: fields, the signature by `ticket_key`, addressed to `node` from
    /// `gateway_id`, and valid at `now_ms` (with `max_skew_ms` either side). Replay (a request id
    /// seen before) is the caller's check.
    ///
    /// # Errors
    /// `InvalidMessage` naming the field that does not hold.
    pub fn verify_for(&self, ticket_key: &NodePublicKey, gateway_id: &Audience, node: &NodeId, now_ms: u64, max_skew_ms: u64) -> Result<()> {
        self.check_fields()?;
        if !ticket_key.verify_raw(&self.signing_message(), &self.signature) {
            return Err(invalid("signature", "request ticket: Ed25519 signature does not verify with the gateway's ticket key"));
        }
        if &self.gateway_id != gateway_id {
            return Err(invalid("gateway_id", "request ticket from another gateway"));
        }
        if &self.node_id != node {
            return Err(invalid("node_id", format!("request ticket for node {}, not this node", self.node_id)));
        }
        if now_ms.saturating_add(max_skew_ms) < self.issued_at_ms {
            return Err(invalid("issued_at_ms", "request ticket issued in the future; check the clocks"));
        }
        if now_ms >= self.expires_at_ms.saturating_add(max_skew_ms) {
            return Err(invalid("expires_at_ms", "request ticket expired"));
        }
        Ok(())
    }

    /// The ticket as a header value (hex of its JSON).
    pub fn to_header(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses [`RequestTicket::to_header`]'s output.
    ///
    /// # Errors
    /// `InvalidMessage` for an oversized, non-hex or malformed value.
    pub fn from_header(v: &str) -> Result<Self> {
        from_hex_json("request ticket", v)
    }

    /// The gateway's check of the node's receipt for this ticket: signed by `node_key` (the
    /// tunnel's), for this node, request and model, in network mode, priced exactly by the
    /// ticket's schedule from its own token counts, and within the held amount. Returns the
    /// receipt's price.
    ///
    /// # Errors
    /// `InvalidMessage` naming what does not hold; `Core` for a bad signature.
    pub fn check_receipt(&self, receipt: &SignedReceipt, node_key: &NodePublicKey) -> Result<u64> {
        receipt.verify(node_key)?;
        let r = receipt.body();
        if r.node_id != self.node_id || r.request_id != self.request_id {
            return Err(invalid("receipt", "the receipt is for another node or request"));
        }
        if r.model_id != self.model_id {
            return Err(invalid("receipt", format!("the receipt names model {}, the ticket {}", r.model_id, self.model_id)));
        }
        if r.mode != OperatingMode::Network {
            return Err(invalid("receipt", format!("the receipt was signed in {} mode, not network", r.mode)));
        }
        let want = self.price.price(u64::from(r.prompt_tokens), u64::from(r.completion_tokens))?;
        if r.price_micro_credits != want {
            return Err(invalid("receipt", format!("the receipt charges {} micro-credits; the ticket's price for its tokens is {want}", r.price_micro_credits)));
        }
        if want > self.max_price_micro_credits {
            return Err(invalid("receipt", format!("the receipt charges {want} micro-credits, above the {} held", self.max_price_micro_credits)));
        }
        Ok(want)
    }
}

/// One trust tier and how many ready nodes have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierCount {
    /// The tier.
    pub tier: TrustTier,
    /// Ready nodes at it.
    pub nodes: u32,
}

fn model_id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    check_identifier("model", &s, MAX_MODEL_ID_LEN).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// Public: one model's route readiness on the network (`GET /v1/network/models`). Counts,
/// tiers, queue state and medians only: the type has no field that could hold a node id or
/// address, a tunnel detail, an organisation or a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteReadiness {
    /// The public model id (a catalog profile id).
    #[serde(deserialize_with = "model_id")]
    pub model: String,
    /// Nodes ready now (live tunnel, fresh healthy heartbeat, enrolled and active).
    pub nodes_ready: u32,
    /// Ready nodes per trust tier.
    pub tiers: Vec<TierCount>,
    /// Requests the ready nodes take at once (the sum of their network shares).
    pub capacity: u32,
    /// Requests in flight on them.
    pub in_flight: u32,
    /// Requests waiting for a node.
    pub waiting: u32,
    /// The window of the medians, seconds (one hour).
    pub window_s: u32,
    /// Receipts the medians are computed from.
    pub samples: u32,
    /// Median time to first token over the window, ms.
    pub median_ttft_ms: Option<u64>,
    /// Median generation speed over the window, tokens per second x 1000.
    pub median_tokens_per_s_milli: Option<u64>,
}

/// Public: every routed model's readiness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkReadiness {
    /// Per model, sorted by model id.
    pub models: Vec<RouteReadiness>,
    /// When it was computed, unix ms.
    pub generated_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(gw: &NodeKey) -> TunnelChallenge {
        TunnelChallenge { gateway_id: Audience::new("gw-test").unwrap(), nonce: Nonce([7; 32]), issued_at_ms: 1_000, expires_at_ms: 121_000, ticket_key: gw.public() }
    }

    fn models() -> Vec<TunnelModel> {
        vec![TunnelModel { model_id: "smollm2".into(), digest: Sha256Digest([1; 32]) }]
    }

    #[test]
    fn a_hello_verifies_only_for_its_challenge_key_and_mode() {
        let (node, gw) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let c = challenge(&gw);
        let h = TunnelHello::sign(&node, &c, OperatingMode::Network, 4, models(), 2_000).unwrap();
        assert_eq!(h.verify(&c, 2_000, 60_000).unwrap(), node.node_id());
        let parsed = TunnelHello::from_header(&h.to_header()).unwrap();
        assert_eq!(parsed, h);
        let code = |r: Result<NodeId>| match r {
            Err(ProtocolError::InvalidMessage { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut other = c.clone();
        other.nonce = Nonce([8; 32]);
        assert_eq!(code(h.verify(&other, 2_000, 60_000)), "nonce");
        assert_eq!(code(h.verify(&c, 121_000, 60_000)), "nonce", "expired challenge");
        assert_eq!(code(h.verify(&c, 200_000, 60_000)), "nonce");
        let mut forged = h.clone();
        forged.max_concurrent = 8;
        assert_eq!(code(forged.verify(&c, 2_000, 60_000)), "signature");
        let local = TunnelHello::sign(&node, &c, OperatingMode::Managed, 4, models(), 2_000).unwrap();
        assert_eq!(code(local.verify(&c, 2_000, 60_000)), "mode");
        let mut stolen = h.clone();
        stolen.public_key = gw.public();
        assert_eq!(code(stolen.verify(&c, 2_000, 60_000)), "node_id");
        assert!(TunnelHello::sign(&node, &c, OperatingMode::Network, 0, models(), 2_000).is_err());
        assert!(TunnelHello::sign(&node, &c, OperatingMode::Network, 1, vec![], 2_000).is_err());
        let dup = vec![models()[0].clone(), models()[0].clone()];
        assert!(TunnelHello::sign(&node, &c, OperatingMode::Network, 1, dup, 2_000).is_err());
        assert!(TunnelHello::from_header("zz").is_err());
        assert!(TunnelHello::from_header(&"00".repeat(MAX_HEADER_HEX)).is_err());
    }

    fn fields(node: &NodeKey) -> TicketFields {
        TicketFields {
            request_id: RequestId([3; 16]),
            gateway_id: Audience::new("gw-test").unwrap(),
            node_id: node.node_id(),
            model_id: "smollm2".into(),
            price: PriceSchedule::per_1k(100, 200).unwrap(),
            max_price_micro_credits: 1_000,
            tier: TrustTier::BestEffort,
            seed_key: [4; 32],
            billing_ref: [5; 16],
            issued_at_ms: 10_000,
            expires_at_ms: 70_000,
        }
    }

    #[test]
    fn a_ticket_verifies_for_its_node_gateway_key_and_window() {
        let (node, gw) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let t = RequestTicket::sign(&gw, fields(&node)).unwrap();
        let id = Audience::new("gw-test").unwrap();
        t.verify_for(&gw.public(), &id, &node.node_id(), 10_000, 0).unwrap();
        assert_eq!(RequestTicket::from_header(&t.to_header()).unwrap(), t);
        assert!(t.verify_for(&node.public(), &id, &node.node_id(), 10_000, 0).is_err(), "another key");
        assert!(t.verify_for(&gw.public(), &Audience::new("gw-other").unwrap(), &node.node_id(), 10_000, 0).is_err());
        assert!(t.verify_for(&gw.public(), &id, &gw.node_id(), 10_000, 0).is_err(), "another node");
        assert!(t.verify_for(&gw.public(), &id, &node.node_id(), 70_000, 0).is_err(), "expired");
        assert!(t.verify_for(&gw.public(), &id, &node.node_id(), 9_000, 0).is_err(), "not yet valid");
        let mut cheaper = t.clone();
        cheaper.price.completion_per_1m_tokens = 1;
        assert!(cheaper.verify_for(&gw.public(), &id, &node.node_id(), 10_000, 0).is_err(), "a changed price breaks the signature");
        let mut long = fields(&node);
        long.expires_at_ms = long.issued_at_ms + MAX_TICKET_VALIDITY_MS + 1;
        assert!(RequestTicket::sign(&gw, long).is_err());
    }
}
