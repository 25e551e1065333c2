//! The hosted gateway (the Network flow): developers call its OpenAI-compatible `/v1` with a
//! `b3iq_gateway_` key; it holds credits for the worst case, picks a node among those with a
//! live tunnel, forwards the request over the node's tunnel with a signed ticket, and settles
//! the hold against the node's signed receipt. It stores no prompt and no output, and logs none.
//!
//! | module | what |
//! |---|---|
//! | [`credits`] | gateway keys, credit balances, holds and the double-entry ledger |
//! | [`tunnel`] | the node-dialed tunnels: challenge, signed hello, registry |
//! | [`proxy`] | `/v1/models`, `/v1/chat/completions`, `/v1/completions`: admission, routing, forwarding, settlement |
//! | [`reputation`] | node reputation from what the gateway sees, in the store, weighing the choice of node |
//! | [`verification`] | sampling attested requests, holding them, verifier jobs on other nodes, verdicts and disputes |
//! | [`canary`] | the gateway's own requests to nodes that need checking, always verified |
//!
//! The gateway runs in the control plane's daemon, on its HTTPS port, over the same store; more
//! replicas are more daemons over one Postgres (see `docs/control.md`, "Gateway").

pub mod canary;
pub mod credits;
pub mod proxy;
mod queue;
pub mod reputation;
pub mod stake;
pub mod tunnel;
pub mod verification;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use b3iq_core::metering::PriceSchedule;
use b3iq_core::NodeKey;
use b3iq_protocol::messages::Audience;
use tokio::sync::Notify;

use crate::plane::ControlPlane;

/// Tunables, with the defaults of [`GatewayConfig::new`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The network's price (the tickets' schedule).
    pub price: PriceSchedule,
    /// How long a ticket stays valid after issue.
    pub ticket_ttl_ms: u64,
    /// Most requests waiting for a node per model; past it, 429 with `Retry-After`.
    pub max_queue_per_model: usize,
    /// How long a request waits for a node with spare capacity before 429.
    pub queue_wait: Duration,
    /// Tries on distinct nodes before the first byte (a tunnel that fails, or a node that
    /// answers 429 or 503).
    pub max_attempts: usize,
    /// `max_tokens` assumed when a request sends none (the node's own default).
    pub default_max_tokens: u32,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// This replica's internal base URL (`https://host:port`) where other replicas relay
    /// requests for the tunnels it holds; `None`: a single gateway (no registry in the store).
    pub replica_url: Option<String>,
    /// The PEM certificate(s) other replicas present (the shared home's certificate).
    pub replica_ca_pem: Option<String>,
    /// Route only to nodes staked on chain ([`stake`]); `None`: stake is not checked.
    pub stake: Option<stake::StakeCheck>,
    /// Verification in the network (`control.json` `verification`).
    pub verification: verification::VerificationSettings,
}

impl GatewayConfig {
    /// Defaults: 100 / 200 micro-credits per 1,000 prompt / completion tokens, 5-minute tickets,
    /// 64 waiting requests per model for at most 10 s, 3 attempts, 256 default tokens, 1 MiB.
    pub fn new() -> GatewayConfig {
        GatewayConfig {
            price: PriceSchedule {
                prompt_per_1m_tokens: 100_000,
                completion_per_1m_tokens: 200_000,
                per_request: 0,
            },
            ticket_ttl_ms: 5 * 60 * 1000,
            max_queue_per_model: 64,
            queue_wait: Duration::from_secs(10),
            max_attempts: 3,
            default_max_tokens: 256,
            max_body_bytes: 1 << 20,
            replica_url: None,
            replica_ca_pem: None,
            stake: None,
            verification: verification::VerificationSettings::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of the gateway (rendered in the control plane's `/metrics`).
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Requests answered, by outcome.
    pub requests: Mutex<HashMap<&'static str, u64>>,
    /// Attempts that moved to another node before the first byte.
    pub failovers: std::sync::atomic::AtomicU64,
    /// Answers whose receipt was missing or did not check (the node is not paid).
    pub bad_receipts: std::sync::atomic::AtomicU64,
    /// Verification events (`not_verifiable`, `sampled`, `pass`, `fail`, ...; see
    /// [`verification`]).
    pub verification: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Canary outcomes (`pass`, `fail`, `inconclusive`, `error`; see [`canary`]).
    pub canaries: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl GatewayMetrics {
    pub(crate) fn count(&self, outcome: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    pub(crate) fn verification(&self, event: &'static str) {
        bump(&self.verification, event);
    }

    pub(crate) fn canary(&self, outcome: &'static str) {
        bump(&self.canaries, outcome);
    }

    /// The count of canaries that ended with `outcome`.
    pub fn canary_count(&self, outcome: &str) -> u64 {
        count_of(&self.canaries, outcome)
    }

    /// The count of a verification event.
    pub fn verification_count(&self, event: &str) -> u64 {
        count_of(&self.verification, event)
    }

    /// Prometheus text.
    pub fn render(&self, tunnels: usize) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = String::from("# TYPE b3iq_gateway_requests_total counter\n");
        let mut rows: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        rows.sort();
        for (k, v) in rows {
            s.push_str(&format!(
                "b3iq_gateway_requests_total{{outcome=\"{k}\"}} {v}\n"
            ));
        }
        s.push_str(&format!(
            "# TYPE b3iq_gateway_failovers_total counter\nb3iq_gateway_failovers_total {}\n",
            self.failovers.load(Relaxed)
        ));
        s.push_str(&format!(
            "# TYPE b3iq_gateway_bad_receipts_total counter\nb3iq_gateway_bad_receipts_total {}\n",
            self.bad_receipts.load(Relaxed)
        ));
        render_counter(&mut s, "b3iq_gateway_verification_total", "event", &self.verification);
        render_counter(&mut s, "b3iq_gateway_canaries_total", "outcome", &self.canaries);
        s.push_str(&format!(
            "# TYPE b3iq_gateway_tunnels gauge\nb3iq_gateway_tunnels {tunnels}\n"
        ));
        s
    }
}

type Counts = Mutex<std::collections::BTreeMap<&'static str, u64>>;

fn bump(m: &Counts, k: &'static str) {
    *m.lock().unwrap_or_else(|p| p.into_inner()).entry(k).or_default() += 1;
}

fn count_of(m: &Counts, k: &str) -> u64 {
    m.lock().unwrap_or_else(|p| p.into_inner()).get(k).copied().unwrap_or(0)
}

/// Appends a counter `name` with one row per key of `m`, labelled `label`.
fn render_counter(s: &mut String, name: &str, label: &str, m: &Counts) {
    s.push_str(&format!("# TYPE {name} counter\n"));
    for (k, v) in m.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        s.push_str(&format!("{name}{{{label}=\"{k}\"}} {v}\n"));
    }
}

/// The gateway.
pub struct Gateway {
    cp: Arc<ControlPlane>,
    id: Audience,
    ticket_key: NodeKey,
    config: GatewayConfig,
    tunnels: tunnel::Registry,
    /// Woken when a request ends or a tunnel opens (waiting requests look again).
    capacity: Notify,
    /// Requests waiting for a node, per public model id, first come first served.
    waiting: queue::WaitQueue,
    /// Node freshness checks (heartbeat, status), cached for a second.
    fresh: Mutex<HashMap<b3iq_core::NodeId, (std::time::Instant, bool)>>,
    /// The on-chain stake check, when configured.
    stake: Option<stake::StakeGate>,
    /// Checked receipts of the last hour (model, time, TTFT, speed), for route readiness.
    samples: Mutex<std::collections::VecDeque<Sample>>,
    /// The client that relays to other replicas (with [`GatewayConfig::replica_url`]).
    relay_client: Option<reqwest::Client>,
    /// Other replicas' tunnel sessions, re-read at most once a second.
    remote: Mutex<(Option<std::time::Instant>, Vec<crate::store::TunnelSession>)>,
    /// Node reputation (events for the store, scores for routing).
    reputation: reputation::Book,
    /// Sampled requests held for verification (count and bytes).
    held: verification::Held,
    /// Canaries in flight, sent, and recent verdicts per node.
    canaries: canary::Canaries,
    /// Counters.
    pub metrics: GatewayMetrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("id", &self.id)
            .field("tunnels", &self.tunnels.all().len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway of `cp` (its id is the control plane's audience) signing tickets with
    /// `ticket_key`.
    pub fn new(cp: Arc<ControlPlane>, ticket_key: NodeKey, config: GatewayConfig) -> Arc<Gateway> {
        let id = cp.config().audience.clone();
        let stake_gate = config.stake.clone().map(stake::StakeGate::new);
        let relay_client = config.replica_url.as_ref().and_then(|_| {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none());
            if let Some(pem) = &config.replica_ca_pem {
                b = b.tls_built_in_root_certs(false);
                for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes()).unwrap_or_default() {
                    b = b.add_root_certificate(c);
                }
            }
            b.build()
                .map_err(
                    |e| tracing::error!(error = %e, "gateway: cannot build the replica client"),
                )
                .ok()
        });
        let gw = Arc::new(Gateway {
            relay_client,
            remote: Mutex::new((None, Vec::new())),
            cp,
            id,
            ticket_key,
            config,
            tunnels: tunnel::Registry::default(),
            capacity: Notify::new(),
            waiting: queue::WaitQueue::default(),
            fresh: Mutex::new(HashMap::new()),
            stake: stake_gate,
            samples: Mutex::new(std::collections::VecDeque::new()),
            reputation: reputation::Book::default(),
            held: verification::Held::default(),
            canaries: canary::Canaries::default(),
            metrics: GatewayMetrics::default(),
        });
        Gateway::spawn_reputation_flush(&gw);
        Gateway::spawn_canaries(&gw);
        gw
    }

    /// The control plane.
    pub fn control_plane(&self) -> &Arc<ControlPlane> {
        &self.cp
    }

    /// The live tunnels.
    pub fn tunnels(&self) -> &tunnel::Registry {
        &self.tunnels
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The key tickets are signed with.
    pub fn ticket_public_key(&self) -> b3iq_core::NodePublicKey {
        self.ticket_key.public()
    }
}

/// The window of the readiness medians, one hour.
pub const READINESS_WINDOW_MS: u64 = 3_600_000;
/// Most samples kept for the medians.
pub const MAX_SAMPLES: usize = 100_000;

/// One checked receipt, as route readiness counts it.
#[derive(Debug, Clone)]
struct Sample {
    model: String,
    at_ms: u64,
    ttft_ms: u64,
    tokens_per_s_milli: u64,
}

impl Gateway {
    /// Records a checked receipt of `model` for the readiness medians.
    pub(crate) fn record_sample(&self, model: &str, r: &b3iq_core::receipt::Receipt, now_ms: u64) {
        let gen_ms = r.duration_ms.saturating_sub(r.ttft_ms).max(1);
        let tps = u64::from(r.completion_tokens).saturating_mul(1_000_000) / gen_ms;
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(Sample {
            model: model.to_string(),
            at_ms: now_ms,
            ttft_ms: r.ttft_ms,
            tokens_per_s_milli: tps,
        });
        while q.len() > MAX_SAMPLES
            || q.front()
                .is_some_and(|s| s.at_ms + READINESS_WINDOW_MS < now_ms)
        {
            q.pop_front();
        }
    }

    /// Route readiness per model (public: counts, tiers, queue state and medians; see
    /// `b3iq_protocol::gateway::RouteReadiness`). Readiness counts this replica's tunnels and
    /// samples.
    pub async fn readiness(&self, now_ms: u64) -> b3iq_protocol::gateway::NetworkReadiness {
        use b3iq_protocol::gateway::{RouteReadiness, TierCount};
        let mut by_model: std::collections::BTreeMap<String, RouteReadiness> = Default::default();
        for t in self.tunnels.all() {
            if !(t.is_open().await && self.is_fresh(&t).await) {
                continue;
            }
            for m in &t.models {
                let e = by_model
                    .entry(m.public_id.clone())
                    .or_insert_with(|| RouteReadiness {
                        model: m.public_id.clone(),
                        nodes_ready: 0,
                        tiers: Vec::new(),
                        capacity: 0,
                        in_flight: 0,
                        waiting: 0,
                        window_s: (READINESS_WINDOW_MS / 1000) as u32,
                        samples: 0,
                        median_ttft_ms: None,
                        median_tokens_per_s_milli: None,
                    });
                e.nodes_ready += 1;
                e.capacity += t.max_concurrent;
                e.in_flight += t.in_flight.load(std::sync::atomic::Ordering::Acquire);
                // Every node is tier 0 (best effort) until verification (issue "Verifiable
                // inference") assigns higher tiers.
                match e
                    .tiers
                    .iter_mut()
                    .find(|x| x.tier == b3iq_core::TrustTier::BestEffort)
                {
                    Some(x) => x.nodes += 1,
                    None => e.tiers.push(TierCount {
                        tier: b3iq_core::TrustTier::BestEffort,
                        nodes: 1,
                    }),
                }
            }
        }
        let waiting = self.waiting.lengths();
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        fn median(mut v: Vec<u64>) -> Option<u64> {
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        }
        for (model, r) in by_model.iter_mut() {
            r.waiting = waiting.get(model).copied().unwrap_or(0) as u32;
            let recent: Vec<&Sample> = samples
                .iter()
                .filter(|s| &s.model == model && s.at_ms + READINESS_WINDOW_MS >= now_ms)
                .collect();
            r.samples = recent.len() as u32;
            r.median_ttft_ms = median(recent.iter().map(|s| s.ttft_ms).collect());
            r.median_tokens_per_s_milli =
                median(recent.iter().map(|s| s.tokens_per_s_milli).collect());
        }
        b3iq_protocol::gateway::NetworkReadiness {
            models: by_model.into_values().collect(),
            generated_at_ms: now_ms,
        }
    }
}

/// The gateway's routes (node tunnels and the public OpenAI-compatible API), to merge with the
/// control plane's.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/node/tunnel/challenge", post(proxy::tunnel_challenge))
        .route("/v1/node/tunnel", post(proxy::open_tunnel))
        .route("/v1/models", get(proxy::models))
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/responses", post(proxy::responses))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/metrics/gateway", get(proxy::metrics))
        .route("/v1/network/models", get(proxy::readiness))
        .route(
            "/v1/internal/relay/{node_id}/v1/chat/completions",
            post(proxy::relay_chat),
        )
        .route(
            "/v1/internal/relay/{node_id}/v1/completions",
            post(proxy::relay_completions),
        )
        .route(
            "/v1/internal/relay/{node_id}/v1/responses",
            post(proxy::relay_responses),
        )
        .route(
            "/v1/internal/relay/{node_id}/v1/embeddings",
            post(proxy::relay_embeddings),
        )
        // An early 401 (a mistyped key) must reach HTTP/2 clients as a status, not a reset
        // stream: read the rest of a small unread body first (the node's rule, b3iq-host).
        .layer(axum::middleware::from_fn(
            b3iq_host::http::finish_request_body,
        ))
        .with_state(gw)
}
