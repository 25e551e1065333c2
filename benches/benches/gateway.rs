//! The hosted gateway (issue "gateway", performance part), on loopback, with the real
//! `b3iq-control serve` binary (HTTPS, its self-signed certificate pinned, HTTP/2 by ALPN, SQLite
//! store) serving the gateway. Two parts, each with its own control plane:
//!
//! * **real**: a real `b3iqd` with the default model (`$B3IQ_TEST_MODEL`), `parallel` 9 in
//!   config.json, enrolled, a network policy of `max_concurrent` 8, switched to network mode, its
//!   tunnel up. Streaming chat completions (fixed prompts, temperature 0, fixed `max_tokens`,
//!   usage included) at concurrency 1, 4 and 8, through the gateway (gateway key, hold, ticket,
//!   tunnel, receipt, settlement) and to the same node directly (its local API, a local key),
//!   interleaved round by round (the order alternates) so machine noise falls on both. Reports
//!   aggregate generated tokens/s per path and their ratio (target >= 0.95), and the TTFT the
//!   gateway adds (median; target <= 10 ms).
//! * **fake**: the gateway alone in front of an in-bench node that speaks the real tunnel
//!   protocol (a node key enrolled in the control plane by proof of possession, the challenge,
//!   a signed `TunnelHello`, the HTTP/1.1 upgrade, then hyper's HTTP/2 server on the upgraded
//!   connection), sends signed heartbeats, and answers each ticketed request at once: it checks
//!   the ticket's signature, then streams a short SSE answer (role, 4 content chunks, finish,
//!   usage) ending in a receipt signed with its key and priced by the ticket, which the gateway
//!   checks and settles. The same handler is also served directly (b3iq-host's own HTTPS front
//!   door, same certificate, same client, tickets pre-signed with the gateway's ticket key), so
//!   "added latency" is gateway minus direct at the same load. Closed loop at `CONCURRENCY` (64)
//!   for `FAKE_REQUESTS` per path in interleaved blocks, and open loop at each of `RATES` (2,000/s, the
//!   target, and 250/s) for `RATE_SECONDS` (10) per path, latency counted from each request's scheduled time. Target:
//!   at least 2,000 requests/s with p99 added latency under 20 ms. CPU per phase: the control plane
//!   process, the fake node's threads and the load generator's threads (this process).
//!
//! The load generator, the gateway, the fake node (or b3iqd's llama.cpp threads) share the
//! machine's cores; the CPU split says who used what.
//!
//!     cargo build -p b3iq-control-daemon -p b3iqd
//!     B3IQ_TEST_MODEL=... cargo bench -p b3iq-benches --bench gateway --profile dev
//!
//! (`cargo xtask bench-gateway` does both, with the request path's crates at opt-level 3.)
//! Env: `PARTS` (`fake,real`), `CONCURRENCY` (64), `CONNECTIONS` (8), `FAKE_REQUESTS` (20000),
//! `RATES` (`2000,250`), `RATE_SECONDS` (10), `ROUNDS` (4), `MAX_TOKENS` (128), `PARALLEL` (9),
//! `SMOKE=1` (a few seconds of each, nothing written). Appends one JSON line to
//! `benches/results/gateway.jsonl` (not in smoke mode) and prints it.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_control::ControlHome;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId};
use b3iq_core::{NodeKey, NodePublicKey, OperatingMode, TrustTier};
use b3iq_protocol::gateway::{
    RequestTicket, TicketFields, TunnelChallenge, TunnelHello, TunnelModel, HELLO_HEADER,
    RECEIPT_SSE_PREFIX, TICKET_HEADER, TUNNEL_PROTOCOL,
};
use b3iq_protocol::messages::{Audience, EnrollmentRequest, HeartbeatRequest};
use serde_json::{json, Value};

mod support;
use support::*;

struct Params {
    concurrency: usize,
    connections: usize,
    fake_requests: usize,
    rates: Vec<usize>,
    rate_seconds: u64,
    rounds: usize,
    max_tokens: u32,
    parallel: u32,
    smoke: bool,
}

impl Params {
    fn from_env() -> Params {
        let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
        let d = |full: usize, small: usize| if smoke { small } else { full };
        Params {
            concurrency: env("CONCURRENCY", 64),
            connections: env("CONNECTIONS", 8),
            fake_requests: env("FAKE_REQUESTS", d(20_000, 1_000)),
            rates: std::env::var("RATES")
                .unwrap_or_else(|_| {
                    if smoke {
                        "500".into()
                    } else {
                        "2000,250".into()
                    }
                })
                .split(',')
                .filter_map(|r| r.trim().parse().ok())
                .collect(),
            rate_seconds: env("RATE_SECONDS", if smoke { 1 } else { 10 }),
            rounds: env("ROUNDS", d(4, 1)),
            max_tokens: env("MAX_TOKENS", if smoke { 16 } else { 128 }),
            parallel: env("PARALLEL", 9),
            smoke,
        }
    }
}

// ---- processes and CPU accounting -------------------------------------------------------------

/// CPU seconds of the control plane (gateway), of the node (fake node threads, or b3iqd) and of
/// the load generator (the rest of this process).
#[derive(Clone, Copy)]
struct Cpu {
    gateway: f64,
    node: f64,
    load_generator: f64,
}

fn cpu_now(gateway: u32, node: Option<u32>) -> Cpu {
    let (fake_node, rest) = own_threads_cpu_s("gwb-node");
    Cpu {
        gateway: cpu_s(gateway),
        node: node.map(cpu_s).unwrap_or(fake_node),
        load_generator: rest,
    }
}

fn cpu_cores(before: Cpu, after: Cpu, secs: f64) -> Value {
    json!({
        "gateway": (after.gateway - before.gateway) / secs,
        "node": (after.node - before.node) / secs,
        "load_generator": (after.load_generator - before.load_generator) / secs,
    })
}

// ---- statistics ----------------------------------------------------------------------------------

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn lat_summary(ms: &[f64]) -> Value {
    let s = sorted(ms.to_vec());
    json!({"p50": pct(&s, 0.50), "p90": pct(&s, 0.90), "p99": pct(&s, 0.99), "max": pct(&s, 1.0)})
}

// ---- the control plane's side of the setup (in process, before it serves) ------------------------

/// A control home with an organisation, credits, a gateway key and `enroll` (node keys)
/// enrolled by proof of possession; plus an enrollment token for a real node. The store is
/// closed again before `b3iq-control serve` opens it.
struct Setup {
    gateway_token: String,
    enrollment_token: String,
    audience: Audience,
    ticket_key: NodeKey,
    price: PriceSchedule,
}

async fn setup_control(home: &Path, heartbeat_interval_s: u64, enroll: &[&NodeKey]) -> Setup {
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        home.join("control.json"),
        json!({"store": "sqlite", "heartbeat_interval_s": heartbeat_interval_s}).to_string(),
    )
    .unwrap();
    let h = ControlHome::locate(Some(home.to_path_buf())).unwrap();
    let (settings, cp) = h.open().await.expect("open the control plane");
    let now = now_ms();
    let org = cp.create_org("bench", now).await.unwrap();
    cp.add_credits(&org.id, 1_000_000_000_000_000, "bench-seed", now)
        .await
        .unwrap();
    let (_, gateway_token) = cp
        .create_gateway_key(
            &org.id,
            "bench",
            b3iq_control::gateway::credits::MAX_RATE_PER_MIN,
            None,
            now,
        )
        .await
        .unwrap();
    for k in enroll {
        let (_, tok) = cp
            .create_enrollment_token(&org.id, 3_600_000, now)
            .await
            .unwrap();
        let c = cp.challenge(now).await.unwrap();
        let proof = k
            .sign_object(EnrollmentProof {
                node_id: k.node_id(),
                public_key: k.public(),
                audience: settings.audience.as_str().into(),
                nonce: c.nonce,
                signed_at_ms: now,
            })
            .unwrap();
        cp.enroll(
            &tok,
            &EnrollmentRequest {
                challenge_id: c.challenge_id,
                proof,
            },
            now,
        )
        .await
        .expect("enroll");
    }
    let (_, enrollment_token) = cp
        .create_enrollment_token(&org.id, 3_600_000, now)
        .await
        .unwrap();
    let gw = h.gateway(&settings, cp.clone()).unwrap();
    let price = gw.config().price;
    drop(gw);
    drop(cp);
    Setup {
        gateway_token,
        enrollment_token,
        audience: Audience::new(&settings.audience).unwrap(),
        ticket_key: h.ticket_key().unwrap(),
        price,
    }
}

/// HTTPS clients with the control plane's certificate pinned (the node's own client: reqwest,
/// rustls, HTTP/2 by ALPN), one connection each.
async fn https_clients(base: &str, ca_pem: &str, n: usize) -> Vec<reqwest::Client> {
    let clients: Vec<reqwest::Client> = (0..n)
        .map(|_| b3iq_host::managed::client(Some(ca_pem)).unwrap())
        .collect();
    for c in &clients {
        let r = c
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert!(r.status().is_success());
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    }
    clients
}

/// Waits until the gateway lists a model (a tunnel up and a fresh heartbeat); returns its id.
async fn wait_model(c: &reqwest::Client, base: &str, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = c
            .get(format!("{base}/v1/models"))
            .bearer_auth(token)
            .send()
            .await
        {
            let v: Value = r.json().await.unwrap_or_default();
            if let Some(id) = v["data"][0]["id"].as_str() {
                return id.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway lists no model after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn gateway_metric(c: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = c
        .get(format!("{base}/metrics/gateway"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---- the fake node -----------------------------------------------------------------------------

/// A node that answers every ticketed request at once with a short SSE stream and a receipt.
#[derive(Clone)]
struct FakeNode {
    key: Arc<NodeKey>,
    ticket_key: NodePublicKey,
    gateway_id: Audience,
    digest: Sha256Digest,
}

/// Content chunks per answer (the receipt's completion tokens).
const FAKE_CHUNKS: u32 = 4;
/// The model id the fake node serves under (the gateway names it by its catalog profile id).
const FAKE_MODEL: &str = "fake-smollm2";

async fn fake_chat(State(n): State<FakeNode>, headers: HeaderMap, body: Bytes) -> Response {
    let now = now_ms();
    let Some(t) = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestTicket::from_header(v).ok())
    else {
        return (StatusCode::UNAUTHORIZED, "send a ticket").into_response();
    };
    if let Err(e) = t.verify_for(&n.ticket_key, &n.gateway_id, &n.key.node_id(), now, 60_000) {
        return (StatusCode::FORBIDDEN, e.to_string()).into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    if v["stream"] != true {
        return (StatusCode::BAD_REQUEST, "the fake node streams only").into_response();
    }
    // A prompt token is at least a byte of the body (what the gateway's hold assumes).
    let prompt_tokens = (body.len() as u32 / 4).max(1);
    let price = t
        .price
        .price(u64::from(prompt_tokens), u64::from(FAKE_CHUNKS))
        .unwrap();
    let salt = CommitmentSalt::from_bytes(t.seed_key);
    let receipt = Receipt {
        node_id: n.key.node_id(),
        request_id: t.request_id,
        model_id: t.model_id.clone(),
        artifact_digest: n.digest,
        backend: "fake".into(),
        mode: OperatingMode::Network,
        prompt_tokens,
        completion_tokens: FAKE_CHUNKS,
        started_at_ms: now,
        ttft_ms: 0,
        duration_ms: 0,
        price_micro_credits: price,
        prompt_commitment: Commitment::prompt(&salt, &body),
        output_commitment: Commitment::output(&salt, b"tok tok tok tok "),
        commitment_basis: None,
        attestation_digest: None,
    }
    .sign(&n.key)
    .unwrap();
    let head = format!(
        r#""id":"chatcmpl-{}","object":"chat.completion.chunk","created":{},"model":"{}""#,
        hex::encode(t.request_id.0),
        now / 1000,
        t.model_id
    );
    let mut events: Vec<Bytes> = Vec::with_capacity(10);
    events.push(Bytes::from(format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n")));
    for _ in 0..FAKE_CHUNKS {
        events.push(Bytes::from(format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok \"}},\"finish_reason\":null}}]}}\n\n")));
    }
    events.push(Bytes::from(format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\n")));
    events.push(Bytes::from(format!(
        "data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{FAKE_CHUNKS},\"total_tokens\":{}}}}}\n\n",
        prompt_tokens + FAKE_CHUNKS
    )));
    events.push(Bytes::from(format!(
        "{RECEIPT_SSE_PREFIX}{}\n\n",
        hex::encode(receipt.encode())
    )));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut r = Response::new(Body::from_stream(futures_util::stream::iter(
        events
            .into_iter()
            .map(Ok::<Bytes, std::convert::Infallible>),
    )));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn fake_router(n: FakeNode) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(fake_chat))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(n)
}

/// Opens the fake node's tunnel (challenge, signed hello, upgrade) and serves HTTP/2 on it
/// until it ends.
async fn fake_tunnel(base: String, ca_pem: String, n: FakeNode, share: u32) {
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let ch: TunnelChallenge = c
        .post(format!("{base}/v1/node/tunnel/challenge"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models = vec![TunnelModel {
        model_id: FAKE_MODEL.into(),
        digest: n.digest,
    }];
    let hello =
        TunnelHello::sign(&n.key, &ch, OperatingMode::Network, share, models, now_ms()).unwrap();
    let resp = c
        .post(format!("{base}/v1/node/tunnel"))
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(reqwest::header::UPGRADE, TUNNEL_PROTOCOL)
        .header(HELLO_HEADER, hello.to_header())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::SWITCHING_PROTOCOLS,
        "tunnel refused: {:?}",
        resp.text().await
    );
    let up = resp.upgrade().await.unwrap();
    let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(share);
    let svc = hyper_util::service::TowerToHyperService::new(fake_router(n));
    if let Err(e) = b
        .serve_connection(hyper_util::rt::TokioIo::new(up), svc)
        .await
    {
        eprintln!("gateway bench: the fake node's tunnel ended: {e}");
    }
}

/// Signed heartbeats of the fake node every `every` (the gateway routes to fresh nodes only).
async fn fake_heartbeats(
    base: String,
    ca_pem: String,
    key: Arc<NodeKey>,
    digest: Sha256Digest,
    every: Duration,
) {
    let c = b3iq_host::managed::client(Some(&ca_pem)).unwrap();
    let mut seq = 0u64;
    loop {
        seq += 1;
        let hb = Heartbeat {
            node_id: key.node_id(),
            sent_at_ms: now_ms(),
            sequence: seq,
            mode: OperatingMode::Network,
            health: HealthStatus::Healthy,
            counts: HeartbeatCounts {
                active_requests: 0,
                queued_requests: 0,
                completed_requests: 0,
                failed_requests: 0,
                generated_tokens: 0,
                uptime_s: seq,
            },
            model_inventory: vec![digest],
            software_version: None,
        };
        let body = HeartbeatRequest {
            heartbeat: key.sign_object(hb).unwrap(),
        };
        match c
            .post(format!("{base}/v1/node/heartbeat"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!(
                "gateway bench: heartbeat refused: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => eprintln!("gateway bench: heartbeat failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

// ---- the load generator for the fake part ------------------------------------------------------

/// Where a request goes: the gateway (a gateway key) or the fake node's handler directly (a
/// ticket pre-signed with the gateway's ticket key, as the gateway would send it).
#[derive(Clone)]
enum Path2 {
    Gateway {
        token: Arc<str>,
    },
    Direct {
        tickets: Arc<Vec<String>>,
        next: Arc<AtomicUsize>,
    },
}

struct Target {
    clients: Vec<reqwest::Client>,
    url: String,
    path: Path2,
    body: Bytes,
}

#[derive(Default)]
struct Run {
    /// Total latency (request sent to `[DONE]` read), ms.
    total_ms: Vec<f64>,
    /// Time to the first byte of the body, ms.
    ttfb_ms: Vec<f64>,
    errors: usize,
}

impl Target {
    /// One streamed request; (first body byte, end) after `t0`, or None on any failure.
    async fn call(&self, i: usize, t0: Instant) -> Option<(f64, f64)> {
        let mut rb = self.clients[i % self.clients.len()]
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone());
        match &self.path {
            Path2::Gateway { token } => rb = rb.bearer_auth(token),
            Path2::Direct { tickets, next } => {
                let k = next.fetch_add(1, Ordering::Relaxed);
                rb = rb.header(TICKET_HEADER, tickets.get(k)?.as_str());
            }
        }
        let mut r = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gateway bench: {e}");
                return None;
            }
        };
        if r.status() != 200 {
            eprintln!(
                "gateway bench: HTTP {}: {}",
                r.status(),
                r.text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
            return None;
        }
        let mut first = None;
        let mut body = Vec::with_capacity(2048);
        while let Some(c) = r.chunk().await.ok()? {
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1e3);
            body.extend_from_slice(&c);
        }
        let end = t0.elapsed().as_secs_f64() * 1e3;
        let receipt_seen = body
            .windows(RECEIPT_SSE_PREFIX.len())
            .any(|w| w == RECEIPT_SSE_PREFIX.as_bytes());
        let gateway = matches!(self.path, Path2::Gateway { .. });
        if !body.ends_with(b"data: [DONE]\n\n") || receipt_seen == gateway {
            eprintln!(
                "gateway bench: a malformed answer: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
            return None;
        }
        Some((first.unwrap_or(end), end))
    }
}

/// Closed loop: `concurrency` workers, `n` requests, as fast as answers come.
async fn closed_loop(t: &Arc<Target>, n: usize, concurrency: usize) -> (Duration, Run) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (t, next) = (t.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match t.call(i, Instant::now()).await {
                    Some((ttfb, total)) => {
                        run.ttfb_ms.push(ttfb);
                        run.total_ms.push(total);
                    }
                    None => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for h in tasks {
        let r = h.await.unwrap();
        all.total_ms.extend(r.total_ms);
        all.ttfb_ms.extend(r.ttfb_ms);
        all.errors += r.errors;
    }
    (start.elapsed(), all)
}

/// Open loop: request `i` is due at `i / rate` s and its latency counts from then (a server
/// that falls behind is charged for the wait). At most 4096 in flight.
async fn open_loop(t: &Arc<Target>, rate: usize, seconds: u64) -> (Duration, Run) {
    let n = rate * seconds as usize;
    let run = Arc::new(Mutex::new(Run::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(4096));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0;
    while sent < n {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while sent < due {
            let scheduled = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let permit = slots.clone().acquire_owned().await.unwrap();
            let (t, run, i) = (t.clone(), run.clone(), sent);
            tokio::spawn(async move {
                let r = t.call(i, scheduled).await;
                let mut g = run.lock().unwrap();
                match r {
                    Some((ttfb, total)) => {
                        g.ttfb_ms.push(ttfb);
                        g.total_ms.push(total);
                    }
                    None => g.errors += 1,
                }
                drop(permit);
            });
            sent += 1;
        }
    }
    let _ = slots.acquire_many(4096).await.unwrap();
    let wall = start.elapsed();
    let run = std::mem::take(&mut *run.lock().unwrap());
    (wall, run)
}

fn phase(
    name: &str,
    requests: usize,
    wall: Duration,
    run: &Run,
    cpu: Value,
    extra: Value,
) -> Value {
    let secs = wall.as_secs_f64();
    let v = json!({
        "phase": name,
        "requests": requests,
        "errors": run.errors,
        "seconds": secs,
        "requests_per_s": run.total_ms.len() as f64 / secs,
        "latency_ms": lat_summary(&run.total_ms),
        "ttfb_ms": lat_summary(&run.ttfb_ms),
        "cpu_cores": cpu,
        "extra": extra,
    });
    eprintln!(
        "gateway bench: {name}: {}",
        serde_json::to_string(&v).unwrap()
    );
    v
}

fn added(gw: &Value, direct: &Value) -> Value {
    let d =
        |k: &str, p: &str| gw[k][p].as_f64().unwrap_or(0.0) - direct[k][p].as_f64().unwrap_or(0.0);
    json!({"latency_ms": {"p50": d("latency_ms", "p50"), "p90": d("latency_ms", "p90"), "p99": d("latency_ms", "p99")}, "ttfb_ms": {"p50": d("ttfb_ms", "p50"), "p99": d("ttfb_ms", "p99")}})
}

/// Part "fake": the gateway in front of the fake node, against the fake node's handler called
/// directly.
async fn fake_part(p: &Params, node_rt: &tokio::runtime::Handle) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("b3iq-bench-gateway-")
        .tempdir()
        .unwrap();
    let home = dir.path().join("control");
    let key = Arc::new(NodeKey::from_seed([0x6b; 32]));
    let s = setup_control(&home, 30, &[&key]).await;
    let (server, base) = serve_control(&home);
    let gw_pid = server.0.id();
    let ca = std::fs::read_to_string(home.join("tls/self-signed.crt.pem")).unwrap();
    let profile = b3iq_runtime::catalog::Catalog::builtin()
        .profiles
        .first()
        .expect("a catalog profile");
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&profile.sha256, &mut digest).unwrap();
    let fake = FakeNode {
        key: key.clone(),
        ticket_key: s.ticket_key.public(),
        gateway_id: s.audience.clone(),
        digest: Sha256Digest(digest),
    };
    let share = 1024u32;
    let hb_task = node_rt.spawn(fake_heartbeats(
        base.clone(),
        ca.clone(),
        key.clone(),
        fake.digest,
        Duration::from_secs(5),
    ));
    let tunnel_task = node_rt.spawn(fake_tunnel(base.clone(), ca.clone(), fake.clone(), share));
    // The same handler on b3iq-host's own HTTPS front door (same certificate), for the direct
    // path.
    let (direct_url, _stop_direct) = {
        let h = ControlHome::locate(Some(home.clone())).unwrap();
        let tls = h.tls(&h.settings().unwrap()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let app = fake_router(fake.clone());
        let limits = b3iq_host::http::serve::ServeLimits {
            max_connections: 1024,
            ..Default::default()
        };
        node_rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            b3iq_host::http::serve::serve(l, app, limits, Some(tls.server_config.clone()), rx).await
        });
        (format!("https://127.0.0.1:{port}"), tx)
    };
    let clients = https_clients(&base, &ca, p.connections).await;
    let model = wait_model(&clients[0], &base, &s.gateway_token).await;
    let direct_clients = https_clients(&direct_url, &ca, p.connections).await;
    let body = Bytes::from(json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}).to_string());
    let direct_body = {
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["model"] = json!(FAKE_MODEL);
        Bytes::from(v.to_string())
    };
    // Tickets for the direct path, signed before the clock as the gateway would sign them.
    let n_direct =
        p.fake_requests + p.rates.iter().sum::<usize>() * p.rate_seconds as usize + 2_000;
    let worst = s.price.price(body.len() as u64, 16).unwrap();
    let tickets: Vec<String> = par_map(n_direct, |_| {
        let now = now_ms();
        RequestTicket::sign(
            &s.ticket_key,
            TicketFields {
                request_id: RequestId(rand::random()),
                gateway_id: s.audience.clone(),
                node_id: key.node_id(),
                model_id: FAKE_MODEL.into(),
                price: s.price,
                max_price_micro_credits: worst,
                tier: TrustTier::BestEffort,
                seed_key: rand::random(),
                billing_ref: rand::random(),
                issued_at_ms: now,
                expires_at_ms: now + 9 * 60 * 1000,
            },
        )
        .unwrap()
        .to_header()
    });
    let gw = Arc::new(Target {
        clients,
        url: format!("{base}/v1/chat/completions"),
        path: Path2::Gateway {
            token: s.gateway_token.clone().into(),
        },
        body,
    });
    let direct = Arc::new(Target {
        clients: direct_clients,
        url: format!("{direct_url}/v1/chat/completions"),
        path: Path2::Direct {
            tickets: Arc::new(tickets),
            next: Arc::new(AtomicUsize::new(0)),
        },
        body: direct_body,
    });
    let streamed0 = gateway_metric(
        &gw.clients[0],
        &base,
        "b3iq_gateway_requests_total{outcome=\"streamed\"}",
    )
    .await;

    // Warm-up (not reported).
    for t in [&gw, &direct] {
        let (_, r) = closed_loop(t, 1_000, p.concurrency).await;
        assert_eq!(r.errors, 0, "warm-up failed");
    }

    // Closed loop, interleaved in blocks so noise falls on both paths.
    let blocks = if p.smoke { 1 } else { 4 };
    let per_block = p.fake_requests / blocks;
    let mut closed = [
        (Duration::ZERO, Run::default(), 0.0f64, 0.0f64, 0.0f64),
        (Duration::ZERO, Run::default(), 0.0, 0.0, 0.0),
    ];
    for b in 0..blocks {
        for j in 0..2 {
            let which = if b % 2 == 0 { j } else { 1 - j };
            let t = if which == 0 { &gw } else { &direct };
            let before = cpu_now(gw_pid, None);
            let (wall, run) = closed_loop(t, per_block, p.concurrency).await;
            let after = cpu_now(gw_pid, None);
            let acc = &mut closed[which];
            acc.0 += wall;
            acc.1.total_ms.extend(run.total_ms);
            acc.1.ttfb_ms.extend(run.ttfb_ms);
            acc.1.errors += run.errors;
            acc.2 += after.gateway - before.gateway;
            acc.3 += after.node - before.node;
            acc.4 += after.load_generator - before.load_generator;
        }
    }
    let closed_v: Vec<Value> = closed
        .iter()
        .enumerate()
        .map(|(i, (wall, run, g, n, l))| {
            let secs = wall.as_secs_f64();
            phase(
                if i == 0 { "fake/gateway_closed_loop" } else { "fake/direct_closed_loop" },
                per_block * blocks,
                *wall,
                run,
                json!({"gateway": g / secs, "node": n / secs, "load_generator": l / secs}),
                json!({"concurrency": p.concurrency, "connections": p.connections, "blocks": blocks}),
            )
        })
        .collect();

    // Open loop at a fixed rate: the gateway, then directly.
    let mut open_v = Vec::new();
    for &rate in &p.rates {
        let mut pair = Vec::new();
        for (name, t) in [
            ("fake/gateway_open_loop", &gw),
            ("fake/direct_open_loop", &direct),
        ] {
            let before = cpu_now(gw_pid, None);
            let (wall, run) = open_loop(t, rate, p.rate_seconds).await;
            let after = cpu_now(gw_pid, None);
            pair.push(phase(
                name,
                rate * p.rate_seconds as usize,
                wall,
                &run,
                cpu_cores(before, after, wall.as_secs_f64()),
                json!({"target_rate": rate, "connections": p.connections}),
            ));
            // Let a backlog drain before the next phase.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        open_v.push(json!({"rate": rate, "gateway": pair[0], "direct": pair[1], "added": added(&pair[0], &pair[1])}));
    }
    let streamed = gateway_metric(
        &gw.clients[0],
        &base,
        "b3iq_gateway_requests_total{outcome=\"streamed\"}",
    )
    .await
        - streamed0;
    let bad_receipts =
        gateway_metric(&gw.clients[0], &base, "b3iq_gateway_bad_receipts_total").await;
    let no_receipt = gateway_metric(
        &gw.clients[0],
        &base,
        "b3iq_gateway_requests_total{outcome=\"no_receipt\"}",
    )
    .await;
    assert_eq!(
        (bad_receipts, no_receipt),
        (0, 0),
        "every fake receipt checks and settles"
    );
    hb_task.abort();
    tunnel_task.abort();
    drop(server);
    json!({
        "closed_loop": {"gateway": closed_v[0], "direct": closed_v[1], "added": added(&closed_v[0], &closed_v[1])},
        "open_loop": open_v,
        "gateway_streamed_requests": streamed,
        "gateway_bad_receipts": bad_receipts,
        "answer": {"content_chunks": FAKE_CHUNKS, "events": FAKE_CHUNKS + 5},
    })
}

// ---- part "real": a real b3iqd in network mode ---------------------------------------------------

const PROMPTS: [&str; 8] = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Describe, step by step, how bread is baked in a village bakery.",
    "Write a long letter from a sailor to his sister about the sea.",
    "Explain how a river shapes the valley it runs through, in detail.",
    "Tell a long story about a fox who learns to read.",
    "Describe a busy market in the morning, stall by stall.",
    "Write a long diary entry of a scientist at a polar station.",
    "Tell the story of a small town's first train, from the station master's view.",
];

/// One streamed chat completion; (TTFT: first non-empty content delta, completion tokens from
/// the usage chunk).
async fn stream_chat(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> (f64, u32) {
    let t0 = Instant::now();
    let r = c
        .post(url)
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "{url}");
    let mut s = r;
    let mut buf = String::new();
    let mut ttft = None;
    let mut tokens = 0;
    while let Some(b) = s.chunk().await.expect("body") {
        buf.push_str(&String::from_utf8_lossy(&b));
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            let Some(data) = ev.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return (ttft.unwrap_or(f64::NAN), tokens);
            }
            let v: Value = serde_json::from_str(data).expect("chunk json");
            assert!(v.get("error").is_none(), "{v}");
            if ttft.is_none()
                && v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            {
                ttft = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                tokens = u as u32;
            }
        }
    }
    panic!("no [DONE] from {url}");
}

/// `c` concurrent streams (prompt i to stream i); (wall s, TTFTs ms, completion tokens).
async fn batch(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    model: &str,
    conc: usize,
    max_tokens: u32,
) -> (f64, Vec<f64>, u64) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conc {
        let (c, url, key, model) = (
            c.clone(),
            url.to_string(),
            key.to_string(),
            model.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            stream_chat(
                &c,
                &url,
                &key,
                &model,
                PROMPTS[i % PROMPTS.len()],
                max_tokens,
            )
            .await
        }));
    }
    let mut ttfts = Vec::new();
    let mut tokens = 0u64;
    for t in tasks {
        let (ttft, n) = t.await.unwrap();
        ttfts.push(ttft);
        tokens += u64::from(n);
    }
    (t0.elapsed().as_secs_f64(), ttfts, tokens)
}

async fn real_part(p: &Params) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("b3iq-bench-gateway-real-")
        .tempdir()
        .unwrap();
    let home = dir.path().join("control");
    let s = setup_control(&home, 2, &[]).await;
    let (server, base) = serve_control(&home);
    let gw_pid = server.0.id();
    let ca_path = home.join("tls/self-signed.crt.pem");
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let node = start_b3iqd(&dir.path().join("node"), Some(p.parallel));
    let node_pid = node.child.0.id();
    let local = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let cookie = claim(&node, &local).await;
    let r = local
        .post(format!("{}/api/keys", node.base))
        .header("cookie", &cookie)
        .json(&json!({"name": "bench", "scopes": ["inference"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let local_key = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Value = local
        .get(format!("{}/v1/models", node.base))
        .bearer_auth(&local_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let direct_model = v["data"][0]["id"].as_str().unwrap().to_string();
    let tok_file = dir.path().join("enroll.token");
    std::fs::write(&tok_file, format!("{}\n", s.enrollment_token)).unwrap();
    let out = Command::new(workspace_bin("b3iqd"))
        .args([
            "enroll",
            "--control",
            &base,
            "--token-file",
            tok_file.to_str().unwrap(),
            "--ca-file",
        ])
        .arg(&ca_path)
        .env("B3IQ_HOME", &node.home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "b3iqd enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let share = (p.parallel - 1).min(8);
    let policy = json!({"max_concurrent": share, "price_floor": {"prompt_per_1m_tokens": 0, "completion_per_1m_tokens": 0, "per_request": 0}});
    let r = local
        .put(format!("{}/api/network", node.base))
        .header("cookie", &cookie)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = local
        .post(format!("{}/api/mode", node.base))
        .header("cookie", &cookie)
        .json(&json!({"mode": "network"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // The gateway's client: the certificate pinned, no 30 s limit (a batch of 8 long streams on
    // two busy cores can take longer).
    let gwc = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let gw_model = wait_model(&gwc, &base, &s.gateway_token).await;
    let gw_url = format!("{base}/v1/chat/completions");
    let direct_url = format!("{}/v1/chat/completions", node.base);
    // Warm-up: both paths, every concurrency once (not reported).
    for conc in [1, 8] {
        let d = batch(&local, &direct_url, &local_key, &direct_model, conc, 16).await;
        let g = batch(&gwc, &gw_url, &s.gateway_token, &gw_model, conc, 16).await;
        eprintln!(
            "gateway bench: real warm-up c={conc}: direct {:.2} s, gateway {:.2} s",
            d.0, g.0
        );
    }
    let mut rows = Vec::new();
    for conc in [1usize, 4, 8].into_iter().filter(|c| *c as u32 <= share) {
        let (mut d, mut g) = (Vec::new(), Vec::new());
        let before = cpu_now(gw_pid, Some(node_pid));
        let t = Instant::now();
        for r in 0..p.rounds {
            for j in 0..2 {
                let via_gateway = (r + j) % 2 == 1;
                if via_gateway {
                    g.push(
                        batch(
                            &gwc,
                            &gw_url,
                            &s.gateway_token,
                            &gw_model,
                            conc,
                            p.max_tokens,
                        )
                        .await,
                    );
                } else {
                    d.push(
                        batch(
                            &local,
                            &direct_url,
                            &local_key,
                            &direct_model,
                            conc,
                            p.max_tokens,
                        )
                        .await,
                    );
                }
            }
        }
        let cpu = cpu_cores(
            before,
            cpu_now(gw_pid, Some(node_pid)),
            t.elapsed().as_secs_f64(),
        );
        let tps = |v: &[(f64, Vec<f64>, u64)]| {
            v.iter().map(|b| b.2 as f64).sum::<f64>() / v.iter().map(|b| b.0).sum::<f64>()
        };
        let ttfts = |v: &[(f64, Vec<f64>, u64)]| {
            v.iter()
                .flat_map(|b| b.1.iter().copied())
                .collect::<Vec<f64>>()
        };
        let paired_ratio: Vec<f64> = d
            .iter()
            .zip(&g)
            .map(|(a, b)| (b.2 as f64 / b.0) / (a.2 as f64 / a.0))
            .collect();
        let paired_ttft: Vec<f64> = d
            .iter()
            .zip(&g)
            .map(|(a, b)| median(&b.1) - median(&a.1))
            .collect();
        let (td, tg) = (tps(&d), tps(&g));
        let row = json!({
            "concurrency": conc,
            "rounds": p.rounds,
            "direct": {"tok_s": td, "ttft_ms_median": median(&ttfts(&d)), "tokens": d.iter().map(|b| b.2).collect::<Vec<_>>(), "tok_s_per_round": d.iter().map(|b| b.2 as f64 / b.0).collect::<Vec<_>>()},
            "gateway": {"tok_s": tg, "ttft_ms_median": median(&ttfts(&g)), "tokens": g.iter().map(|b| b.2).collect::<Vec<_>>(), "tok_s_per_round": g.iter().map(|b| b.2 as f64 / b.0).collect::<Vec<_>>()},
            "gateway_over_direct_tok_s": tg / td,
            "gateway_over_direct_tok_s_median_paired": median(&paired_ratio),
            "ttft_added_ms_median": median(&ttfts(&g)) - median(&ttfts(&d)),
            "ttft_added_ms_median_paired": median(&paired_ttft),
            "cpu_cores": cpu,
        });
        eprintln!(
            "gateway bench: real c={conc}: {}",
            serde_json::to_string(&row).unwrap()
        );
        rows.push(row);
    }
    let bad_receipts = gateway_metric(&gwc, &base, "b3iq_gateway_bad_receipts_total").await;
    assert_eq!(bad_receipts, 0, "every receipt of the real node checks");
    drop(server);
    drop(node);
    json!({"parallel": p.parallel, "network_share": share, "max_tokens": p.max_tokens, "model": gw_model, "rows": rows, "gateway_bad_receipts": bad_receipts})
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("gateway: run with `cargo bench` (skipped under cargo test)");
        return;
    }
    let p = Params::from_env();
    let smoke = p.smoke;
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "fake,real".into());
    // The fake node on its own runtime (one thread, named, so its CPU is told apart from the
    // load generator's).
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gwb-node")
        .enable_all()
        .build()
        .unwrap();
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gwb-load")
        .enable_all()
        .build()
        .unwrap();
    let handle = node_rt.handle().clone();
    let out = load.block_on(async move {
        let fake = if parts.contains("fake") { fake_part(&p, &handle).await } else { Value::Null };
        let have_model = std::env::var_os("B3IQ_TEST_MODEL").is_some_and(|m| !m.is_empty());
        let real = if parts.contains("real") && (have_model || !p.smoke) {
            real_part(&p).await
        } else {
            eprintln!("gateway bench: part \"real\" skipped (PARTS, or a smoke run without B3IQ_TEST_MODEL)");
            Value::Null
        };
        json!({
            "bench": "gateway",
            "unix_ms": now_ms(),
            "machine": machine(),
            "params": {"concurrency": p.concurrency, "connections": p.connections, "fake_requests": p.fake_requests, "rates": p.rates, "rate_seconds": p.rate_seconds, "rounds": p.rounds, "max_tokens": p.max_tokens, "parallel": p.parallel, "smoke": p.smoke, "store_dir": std::env::temp_dir()},
            "fake": fake,
            "real": real,
            "targets": {"gateway_over_direct_tok_s_min": 0.95, "ttft_added_ms_max": 10.0, "fake_requests_per_s_min": 2000, "fake_added_p99_ms_max": 20.0},
        })
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    if !smoke {
        use std::io::Write;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let _ = std::fs::create_dir_all(&dir);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.jsonl"))
            .unwrap();
        let _ = writeln!(f, "{}", serde_json::to_string(&out).unwrap());
    }
    drop(node_rt);
}
