//! Control-plane ingestion (issue "Control plane and Managed mode", performance part): the real
//! `b3iq-control serve` binary over HTTPS on loopback (its self-signed certificate pinned, HTTP/2
//! by ALPN as the node's own client negotiates), with the real SQLite store and a real Postgres
//! server (initdb + pg_ctl in a temp dir, `fsync` and `synchronous_commit` on), fed by a load
//! generator simulating `NODES` (10,000) nodes with their own Ed25519 keys, each enrolled by
//! proof of possession through the control plane's own rules before the measurement.
//!
//! Phases per store (nothing before the first is timed: key generation, enrollment, signing):
//! * heartbeats, closed loop: `CONCURRENCY` requests in flight over `CONNECTIONS` HTTP/2
//!   connections, `HB_TOTAL` heartbeats round-robin over the nodes (each node's sequence
//!   increases; a node's next heartbeat is sent ~10,000 requests after its last);
//! * heartbeats, open loop at `HB_RATE`/s for `HB_SECONDS`: latency from each request's
//!   scheduled send time (a stalled server is charged for the requests it delays);
//! * receipts: `RECEIPTS_TOTAL` signed receipts in signed `ReceiptUpload` batches of 256 (one
//!   node per batch), `RECEIPT_CONCURRENCY` uploads in flight; then one batch sent again, which
//!   must store nothing.
//!
//! The load generator pre-signs every message before each phase (the server's verification is
//! real: one Ed25519 check per heartbeat, one per upload plus one per receipt). The machine has
//! 2 cores and the generator competes with the server for them: the CPU time of the server, of
//! Postgres and of the generator are reported for each phase.
//!
//! Then the managed-mode overhead of a node: two real `b3iqd` with the default model, both
//! claimed, one enrolled against a real `b3iq-control` (default 30 s heartbeat interval), idle
//! for `IDLE_SECONDS` (60): CPU time from `/proc/<pid>/stat`, RSS from `/proc/<pid>/status`.
//!
//!     cargo build -p b3iq-control-daemon -p b3iqd
//!     B3IQ_TEST_MODEL=... cargo bench -p b3iq-benches --bench control_ingest --profile dev
//!
//! (`cargo xtask bench-control` does both.) The binaries are found beside the bench's own
//! (`target/<profile>/`). Env: `STORES` (`sqlite,postgres`), `NODES` (10000), `HB_TOTAL`
//! (100000), `HB_RATE` (5000), `HB_SECONDS` (15), `CONCURRENCY` (64), `CONNECTIONS` (8),
//! `RECEIPTS_TOTAL` (204800), `RECEIPT_CONCURRENCY` (4), `POOL_SIZE` (Postgres connections of
//! the control plane, control.json `pool_size`: 32), `IDLE_SECONDS` (60; 0 skips),
//! `SMOKE=1` (a few seconds of everything, for CI). Appends one JSON line to
//! `benches/results/control_ingest.jsonl` (not in smoke mode) and prints it.

#[path = "../../b3iq-control/tests/support/pg.rs"]
#[allow(missing_docs)]
mod pg;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b3iq_control::ControlHome;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::mode::OperatingMode;
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId};
use b3iq_core::NodeKey;
use b3iq_protocol::messages::{EnrollmentRequest, HeartbeatRequest, ReceiptUpload};
use serde_json::{json, Value};

mod support;
use support::*;

struct Params {
    nodes: usize,
    hb_total: usize,
    hb_rate: usize,
    hb_seconds: u64,
    concurrency: usize,
    connections: usize,
    receipts_total: usize,
    receipt_concurrency: usize,
    idle_seconds: u64,
    pool_size: usize,
    smoke: bool,
}

impl Params {
    fn from_env() -> Params {
        let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
        let d = |full: usize, small: usize| if smoke { small } else { full };
        Params {
            nodes: env("NODES", d(10_000, 200)),
            hb_total: env("HB_TOTAL", d(100_000, 2_000)),
            hb_rate: env("HB_RATE", d(5_000, 500)),
            hb_seconds: env("HB_SECONDS", if smoke { 2 } else { 15 }),
            concurrency: env("CONCURRENCY", 64),
            connections: env("CONNECTIONS", 8),
            receipts_total: env("RECEIPTS_TOTAL", d(204_800, 2_560)),
            receipt_concurrency: env("RECEIPT_CONCURRENCY", 4),
            idle_seconds: env("IDLE_SECONDS", if smoke { 0 } else { 60 }),
            pool_size: env("POOL_SIZE", 32),
            smoke,
        }
    }
}

// ---- processes and CPU accounting -------------------------------------------------------------

// ---- the simulated nodes ------------------------------------------------------------------------

/// Real Ed25519 node keys, one per simulated node (deterministic seeds: the same fleet each run).
fn node_keys(n: usize) -> Vec<NodeKey> {
    par_map(n, |i| {
        let mut seed = [0x5a; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        NodeKey::from_seed(seed)
    })
}

/// Enrolls every key through the control plane's rules (a token, a challenge, a proof of
/// possession each), in process on the store the served control plane will open.
async fn enroll_fleet(home: &Path, keys: &Arc<Vec<NodeKey>>) {
    let (settings, cp) = ControlHome::locate(Some(home.to_path_buf()))
        .unwrap()
        .open()
        .await
        .expect("open the control plane");
    let org = cp.create_org("bench", now_ms()).await.unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cp, keys, next, org, audience) = (
            cp.clone(),
            keys.clone(),
            next.clone(),
            org.id.clone(),
            settings.audience.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(k) = keys.get(i) else { break };
                let now = now_ms();
                let (_, tok) = cp
                    .create_enrollment_token(&org, 3_600_000, now)
                    .await
                    .unwrap();
                let c = cp.challenge(now).await.unwrap();
                let proof = k
                    .sign_object(EnrollmentProof {
                        node_id: k.node_id(),
                        public_key: k.public(),
                        audience: audience.as_str().into(),
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
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(cp);
}

/// Pre-signed heartbeat bodies: `count` of them round-robin over the nodes, each node's
/// sequence continuing from `seqs`.
fn sign_heartbeats(keys: &[NodeKey], seqs: &mut [u64], count: usize) -> Vec<bytes::Bytes> {
    let n = keys.len();
    let plan: Vec<(usize, u64)> = (0..count)
        .map(|i| {
            let node = i % n;
            seqs[node] += 1;
            (node, seqs[node])
        })
        .collect();
    let digest = Sha256Digest([7; 32]);
    let now = now_ms();
    par_map(count, |i| {
        let (node, seq) = plan[i];
        let k = &keys[node];
        let hb = Heartbeat {
            node_id: k.node_id(),
            sent_at_ms: now,
            sequence: seq,
            mode: OperatingMode::Managed,
            health: HealthStatus::Healthy,
            counts: HeartbeatCounts {
                active_requests: 0,
                queued_requests: 0,
                completed_requests: seq * 3,
                failed_requests: 0,
                generated_tokens: seq * 300,
                uptime_s: seq * 30,
            },
            model_inventory: vec![digest],
            software_version: None,
        };
        bytes::Bytes::from(
            serde_json::to_vec(&HeartbeatRequest {
                heartbeat: k.sign_object(hb).unwrap(),
            })
            .unwrap(),
        )
    })
}

/// Pre-signed receipt uploads: `batches` of 256 receipts, each batch from its own node.
fn sign_receipt_uploads(keys: &[NodeKey], batches: usize, first_batch: usize) -> Vec<bytes::Bytes> {
    let now = now_ms();
    par_map(batches, |b| {
        let b = b + first_batch;
        let k = &keys[b % keys.len()];
        let receipts = (0..256u32)
            .map(|j| {
                let mut rid = [0u8; 16];
                rid[..8].copy_from_slice(&(b as u64).to_le_bytes());
                rid[8..12].copy_from_slice(&j.to_le_bytes());
                let salt = CommitmentSalt::from_bytes([j as u8; 32]);
                Receipt {
                    node_id: k.node_id(),
                    request_id: RequestId(rid),
                    model_id: "smollm2-135m-instruct-q4_1".into(),
                    artifact_digest: Sha256Digest([7; 32]),
                    backend: "llama.cpp".into(),
                    mode: OperatingMode::Managed,
                    prompt_tokens: 20 + j % 50,
                    completion_tokens: 100 + j % 100,
                    started_at_ms: now - 60_000 + u64::from(j),
                    ttft_ms: 30,
                    duration_ms: 900,
                    price_micro_credits: u64::from(j) * 10,
                    prompt_commitment: Commitment::prompt(&salt, b"p"),
                    output_commitment: Commitment::output(&salt, b"o"),
                    commitment_basis: None,
                    attestation_digest: None,
                }
                .sign(k)
                .unwrap()
            })
            .collect();
        bytes::Bytes::from(
            serde_json::to_vec(&ReceiptUpload::sign(k, receipts, now).unwrap()).unwrap(),
        )
    })
}

// ---- the load generator ------------------------------------------------------------------------

struct Clients {
    clients: Vec<reqwest::Client>,
    base: String,
}

impl Clients {
    /// `connections` clients (the node's own: `b3iq_host::managed::client` with the pinned
    /// certificate); each holds one HTTP/2 connection.
    async fn new(base: &str, ca_pem: &str, connections: usize) -> Clients {
        let clients = (0..connections)
            .map(|_| b3iq_host::managed::client(Some(ca_pem)).unwrap())
            .collect::<Vec<_>>();
        for c in &clients {
            let r = c
                .get(format!("{base}/healthz"))
                .send()
                .await
                .expect("healthz");
            assert!(r.status().is_success());
            assert_eq!(
                r.version(),
                reqwest::Version::HTTP_2,
                "the node's client negotiates HTTP/2"
            );
        }
        Clients {
            clients,
            base: base.to_string(),
        }
    }

    /// POSTs a pre-encoded JSON body; returns (latency, the answer when 200).
    async fn post(&self, i: usize, path: &str, body: bytes::Bytes) -> Option<Value> {
        let r = self.clients[i % self.clients.len()]
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .ok()?;
        let ok = r.status() == 200;
        let b = r.bytes().await.ok()?;
        if !ok {
            eprintln!(
                "control_ingest: {path}: {}",
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
            return None;
        }
        serde_json::from_slice(&b).ok()
    }
}

#[derive(Default)]
struct Run {
    latencies_us: Vec<u64>,
    errors: usize,
    answers: Vec<Value>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// CPU seconds of the server, of Postgres (postmaster and backends) and of this process.
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    postgres: f64,
    client: f64,
}

fn cpu_now(server: u32, postmaster: Option<u32>) -> Cpu {
    Cpu {
        server: cpu_s(server),
        postgres: postmaster.map(cpu_tree_s).unwrap_or(0.0),
        client: cpu_s(std::process::id()),
    }
}

fn report(
    name: &str,
    items: usize,
    per_item: usize,
    wall: Duration,
    mut run: Run,
    (before, after): (Cpu, Cpu),
    extra: Value,
) -> Value {
    run.latencies_us.sort_unstable();
    let secs = wall.as_secs_f64();
    let v = json!({
        "phase": name,
        "requests": items,
        "items": items * per_item,
        "errors": run.errors,
        "seconds": secs,
        "requests_per_s": items as f64 / secs,
        "items_per_s": (items * per_item) as f64 / secs,
        "latency_ms": {"p50": pct(&run.latencies_us, 0.50), "p90": pct(&run.latencies_us, 0.90), "p99": pct(&run.latencies_us, 0.99), "max": pct(&run.latencies_us, 1.0)},
        "cpu_cores": {
            "server": (after.server - before.server) / secs,
            "postgres": (after.postgres - before.postgres) / secs,
            "load_generator": (after.client - before.client) / secs,
        },
        "extra": extra,
    });
    eprintln!(
        "control_ingest: {name}: {}",
        serde_json::to_string(&v).unwrap()
    );
    v
}

/// Closed loop: `concurrency` workers send `bodies` in order as fast as answers come.
async fn closed_loop(
    c: &Arc<Clients>,
    path: &'static str,
    bodies: Vec<bytes::Bytes>,
    concurrency: usize,
) -> (Duration, Run) {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (c, bodies, next) = (c.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = bodies.get(i) else { break };
                let s = Instant::now();
                match c.post(i, path, b.clone()).await {
                    Some(a) => {
                        run.latencies_us.push(s.elapsed().as_micros() as u64);
                        run.answers.push(a);
                    }
                    None => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        let r = t.await.unwrap();
        all.latencies_us.extend(r.latencies_us);
        all.answers.extend(r.answers);
        all.errors += r.errors;
    }
    (t0.elapsed(), all)
}

/// Open loop: request `i` is due at `i / rate` s; its latency counts from then, so a server that
/// falls behind is charged for the wait. At most 4096 in flight.
async fn open_loop(
    c: &Arc<Clients>,
    path: &'static str,
    bodies: Vec<bytes::Bytes>,
    rate: usize,
) -> (Duration, Run) {
    let n = bodies.len();
    let run = Arc::new(Mutex::new(Run::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(4096));
    let t0 = Instant::now();
    let mut bodies = bodies.into_iter().enumerate();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0;
    while sent < n {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while sent < due {
            let (i, b) = bodies.next().unwrap();
            let scheduled = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
            let permit = slots.clone().acquire_owned().await.unwrap();
            let (c, run) = (c.clone(), run.clone());
            tokio::spawn(async move {
                let r = c.post(i, path, b).await;
                let lat = scheduled.elapsed().as_micros() as u64;
                let mut g = run.lock().unwrap();
                match r {
                    Some(_) => g.latencies_us.push(lat),
                    None => g.errors += 1,
                }
                drop(permit);
            });
            sent += 1;
        }
    }
    let _ = slots.acquire_many(4096).await.unwrap();
    let wall = t0.elapsed();
    let run = std::mem::take(&mut *run.lock().unwrap());
    (wall, run)
}

async fn metrics(c: &Clients) -> String {
    c.clients[0]
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn bench_store(store: &str, p: &Params, keys: &Arc<Vec<NodeKey>>) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("b3iq-bench-control-")
        .tempdir()
        .unwrap();
    let home = dir.path().join("control");
    std::fs::create_dir_all(&home).unwrap();
    let pg = (store == "postgres").then(pg::Pg::start_durable);
    let url = match &pg {
        Some(pg) => Some(pg.create_db("b3iq_bench").await),
        None => None,
    };
    // The Postgres URL goes in a file named by control.json, as an operator would keep it.
    let settings = match &url {
        Some(u) => {
            std::fs::write(home.join("database-url"), u).unwrap();
            json!({"store": store, "database_url_file": "database-url", "pool_size": p.pool_size})
        }
        None => json!({"store": store}),
    };
    std::fs::write(home.join("control.json"), settings.to_string()).unwrap();

    let t = Instant::now();
    enroll_fleet(&home, keys).await;
    let enroll_s = t.elapsed().as_secs_f64();
    eprintln!(
        "control_ingest: {store}: {} nodes enrolled in {enroll_s:.1} s (not measured)",
        keys.len()
    );

    let (server, base) = serve_control(&home);
    let server_pid = server.0.id();
    let postmaster = pg.as_ref().and_then(|p| p.postmaster_pid());
    let ca = std::fs::read_to_string(home.join("tls/self-signed.crt.pem")).unwrap();
    let c = Arc::new(Clients::new(&base, &ca, p.connections).await);
    let mut seqs = vec![0u64; keys.len()];
    let hb = "/v1/node/heartbeat";

    // Warm-up (not reported): every connection, the statement caches, the pool.
    let warm = sign_heartbeats(keys, &mut seqs, (p.nodes / 5).max(p.concurrency * 4));
    let (_, w) = closed_loop(&c, hb, warm, p.concurrency).await;
    assert_eq!(w.errors, 0, "warm-up heartbeats refused");

    let bodies = sign_heartbeats(keys, &mut seqs, p.hb_total);
    let before = cpu_now(server_pid, postmaster);
    let (wall, run) = closed_loop(&c, hb, bodies, p.concurrency).await;
    let hb_closed = report(
        &format!("{store}/heartbeats_closed_loop"),
        p.hb_total,
        1,
        wall,
        run,
        (before, cpu_now(server_pid, postmaster)),
        json!({"concurrency": p.concurrency, "connections": p.connections}),
    );

    let n = p.hb_rate * p.hb_seconds as usize;
    let bodies = sign_heartbeats(keys, &mut seqs, n);
    let before = cpu_now(server_pid, postmaster);
    let (wall, run) = open_loop(&c, hb, bodies, p.hb_rate).await;
    let hb_open = report(
        &format!("{store}/heartbeats_open_loop"),
        n,
        1,
        wall,
        run,
        (before, cpu_now(server_pid, postmaster)),
        json!({"target_rate": p.hb_rate, "connections": p.connections}),
    );

    let m = metrics(&c).await;
    let accepted = metric(&m, "b3iq_control_heartbeats_total{outcome=\"accepted\"}");
    let refused: u64 = ["forged", "stale_sequence", "clock_skew", "denied"]
        .iter()
        .map(|o| {
            metric(
                &m,
                &format!("b3iq_control_heartbeats_total{{outcome=\"{o}\"}}"),
            )
        })
        .sum();

    // Receipts: batches of 256 from rotating nodes.
    let batches = p.receipts_total.div_ceil(256);
    let bodies = sign_receipt_uploads(keys, batches, 0);
    let again = bodies[0].clone();
    let before = cpu_now(server_pid, postmaster);
    let (wall, run) = closed_loop(&c, "/v1/node/receipts", bodies, p.receipt_concurrency).await;
    let stored: u64 = run
        .answers
        .iter()
        .map(|a| a["stored"].as_u64().unwrap_or(0))
        .sum();
    let dups: u64 = run
        .answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap_or(0))
        .sum();
    let receipts = report(
        &format!("{store}/receipts"),
        batches,
        256,
        wall,
        run,
        (before, cpu_now(server_pid, postmaster)),
        json!({"batch": 256, "concurrency": p.receipt_concurrency, "stored": stored, "duplicates": dups}),
    );
    assert_eq!(
        (stored, dups),
        ((batches * 256) as u64, 0),
        "every receipt stored once"
    );
    let retry = c.post(0, "/v1/node/receipts", again).await.expect("retry");
    assert_eq!(
        (retry["stored"].as_u64(), retry["duplicates"].as_u64()),
        (Some(0), Some(256)),
        "a retried batch stores nothing"
    );

    drop(server);
    json!({
        "store": store,
        "nodes": keys.len(),
        "enrollment_setup_s": enroll_s,
        "heartbeats_accepted_total": accepted,
        "heartbeats_refused_total": refused,
        "phases": [hb_closed, hb_open, receipts],
    })
}

// ---- idle overhead of managed mode --------------------------------------------------------------

fn ctl(home: &Path, args: &[&str]) {
    let out = Command::new(workspace_bin("b3iq-control"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "b3iq-control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn idle_overhead(seconds: u64) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("b3iq-bench-idle-")
        .tempdir()
        .unwrap();
    let cph = dir.path().join("control");
    std::fs::create_dir_all(&cph).unwrap();
    ctl(&cph, &["admin", "create-org", "acme"]);
    let (_cp, url) = serve_control(&cph);
    let local = start_b3iqd(&dir.path().join("local"), None);
    let managed = start_b3iqd(&dir.path().join("managed"), None);
    claim(&local, &reqwest::Client::new()).await;
    claim(&managed, &reqwest::Client::new()).await;
    let tok = dir.path().join("token");
    ctl(
        &cph,
        &[
            "admin",
            "enrollment-token",
            "--org",
            "acme",
            "--out",
            tok.to_str().unwrap(),
        ],
    );
    let out = Command::new(workspace_bin("b3iqd"))
        .args([
            "enroll",
            "--control",
            &url,
            "--token-file",
            tok.to_str().unwrap(),
            "--ca-file",
        ])
        .arg(cph.join("tls/self-signed.crt.pem"))
        .env("B3IQ_HOME", &managed.home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "b3iqd enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Let both settle (the running daemon picks the enrollment up, sends its first heartbeat and
    // opens its long-poll).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (lp, mp) = (local.child.0.id(), managed.child.0.id());
    let (l0, m0) = (cpu_s(lp), cpu_s(mp));
    let (mut lr, mut mr) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        lr.push(rss_kb(lp));
        mr.push(rss_kb(mp));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (l1, m1) = (cpu_s(lp), cpu_s(mp));
    let status = Command::new(workspace_bin("b3iqd"))
        .arg("status")
        .env("B3IQ_HOME", &managed.home)
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let v = json!({
        "seconds": secs,
        "heartbeat_interval_s": 30,
        "local": {"cpu_percent": (l1 - l0) / secs * 100.0, "rss_kb_mean": mean(&lr), "rss_kb_max": max(&lr)},
        "managed": {"cpu_percent": (m1 - m0) / secs * 100.0, "rss_kb_mean": mean(&mr), "rss_kb_max": max(&mr), "last_heartbeat": st["managed"]["last_heartbeat"]},
        "managed_minus_local": {"cpu_percent": ((m1 - m0) - (l1 - l0)) / secs * 100.0, "rss_kb_mean": mean(&mr) - mean(&lr), "rss_kb_max": max(&mr) as i64 - max(&lr) as i64},
        "targets": {"cpu_percent_max": 1.0, "rss_mb_max": 10.0},
    });
    eprintln!(
        "control_ingest: idle: {}",
        serde_json::to_string(&v).unwrap()
    );
    v
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("control_ingest: run with `cargo bench` (skipped under cargo test)");
        return;
    }
    let p = Params::from_env();
    let stores: Vec<String> = std::env::var("STORES")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let t = Instant::now();
        let keys = Arc::new(node_keys(p.nodes));
        eprintln!("control_ingest: {} node keys in {:.1} s (not measured)", keys.len(), t.elapsed().as_secs_f64());
        let mut results = Vec::new();
        for s in &stores {
            results.push(bench_store(s, &p, &keys).await);
        }
        let idle = if p.idle_seconds > 0 { idle_overhead(p.idle_seconds).await } else { Value::Null };
        let out = json!({
            "bench": "control_ingest",
            "unix_ms": now_ms(),
            "machine": machine(),
            "params": {"nodes": p.nodes, "hb_total": p.hb_total, "hb_rate": p.hb_rate, "hb_seconds": p.hb_seconds, "concurrency": p.concurrency, "connections": p.connections, "receipts_total": p.receipts_total, "receipt_concurrency": p.receipt_concurrency, "idle_seconds": p.idle_seconds, "postgres_pool_size": p.pool_size, "smoke": p.smoke},
            "stores": results,
            "idle": idle,
            "targets": {"heartbeats_per_s_min": 5000, "heartbeat_p99_ms_max": 50, "receipts_per_s_min": 20000, "idle_cpu_percent_max": 1.0, "idle_rss_mb_max": 10},
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        if !p.smoke {
            use std::io::Write;
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
            let _ = std::fs::create_dir_all(&dir);
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("control_ingest.jsonl")).unwrap();
            let _ = writeln!(f, "{}", serde_json::to_string(&out).unwrap());
        }
    });
}
