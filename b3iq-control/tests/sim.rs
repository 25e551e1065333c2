//! Seeded simulation of nodes and the control plane under faults (issue 19, first slice).
//!
//! One control plane (the real `ControlPlane` over a real SQLite file) and 3 to 10 simulated
//! nodes (real keys, real signed messages from b3iq-core and b3iq-protocol, b3iq-core's own job
//! check `Signed<Job>::open` with a seen set), in simulated time. Every message between a node
//! and the control plane goes through a seeded network that drops, duplicates, delays (and so
//! reorders) and partitions; the control plane crashes and restarts with its durable state (the
//! SQLite file, the job key) kept; each node's clock is skewed, one of them beyond the allowed
//! skew; an adversary replays captured messages, re-signs a captured heartbeat with its own key,
//! and pushes jobs signed by its own key to nodes. The gateway's credits run beside it: holds
//! placed, settled with the node's receipt or abandoned by a crash, swept at the end.
//!
//! Invariants, checked continuously and after the network heals:
//! * no job runs unless the control plane signed it for that node, in time, once;
//! * no heartbeat of the badly skewed node, and no replayed or re-signed one, is accepted;
//! * every receipt a node wrote is stored by the control plane, once;
//! * credit holds all end settled or released, charges equal the settled receipts' prices and
//!   the nodes' earnings, and the ledger sums to zero;
//! * a seed run twice gives the same trace hash.
//!
//! Not simulated yet (see docs/testing.md): the node's own HTTP client, tunnel and durable
//! stores (the node side here is b3iq-core's logic, not `b3iqd`'s), the gateway's routing, and
//! scheduling inside the control plane (calls are awaited one at a time).
//!
//! `cargo test -p b3iq-control --test sim` runs [`SEEDS_IN_CI`] seeds;
//! `B3IQ_SIM_SEEDS=N` (or `cargo xtask sim --seeds N`) runs more, `B3IQ_SIM_SEED=S` one. A failing
//! seed prints the command that replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use b3iq_control::store::sqlite::SqliteStore;
use b3iq_control::store::Operator;
use b3iq_control::{ControlConfig, ControlPlane};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts};
use b3iq_core::job::{Job, JobKind, MemorySeenSet, SignedJob, TrustRoots};
use b3iq_core::mode::OperatingMode;
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use b3iq_core::{NodeKey, Signed};
use b3iq_protocol::messages::{
    Audience, EnrollmentRequest, HeartbeatRequest, JobOutcome, JobPoll, JobResultData,
    JobResultReport, ReceiptUpload,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeds run by `cargo test` (CI).
const SEEDS_IN_CI: u64 = 200;
/// Simulated time of one run (5 minutes), then the network heals for [`HEAL_MS`].
const RUN_MS: u64 = 300_000;
const HEAL_MS: u64 = 60_000;
/// Allowed clock skew (the control plane's and the nodes' job check).
const SKEW_MS: u64 = 120_000;
const START: u64 = 1_800_000_000_000;
const AUDIENCE: &str = "cp-sim";

/// What one node-to-control-plane message is.
#[derive(Clone)]
enum Msg {
    Heartbeat(HeartbeatRequest),
    Upload(ReceiptUpload),
    Poll(JobPoll),
    Result(JobResultReport),
}

struct SimNode {
    key: NodeKey,
    /// This node's clock minus the true time.
    skew_ms: i64,
    /// The next heartbeat sequence.
    seq: u64,
    /// Receipts written and not yet acknowledged by the control plane.
    outbox: BTreeMap<[u8; 32], SignedReceipt>,
    /// Every receipt this node wrote.
    written: BTreeSet<[u8; 32]>,
    trust: TrustRoots,
    seen: MemorySeenSet,
    /// Jobs run, by id, and their results not yet acknowledged, in the order they ran (not by
    /// job id: the control plane draws job ids at random, and the order reports are sent in
    /// decides which ones a lossy network drops, so keying by id made a seed's trace differ
    /// from run to run).
    ran: Vec<[u8; 16]>,
    unreported: Vec<JobResultReport>,
    /// The highest job sequence run (the poll's `after_sequence`).
    last_job_seq: u64,
    /// Cut off from the control plane until then (true time).
    partitioned_until: u64,
    requests: u64,
    /// The highest heartbeat sequence the control plane accepted.
    max_hb_accepted: u64,
}

impl SimNode {
    fn clock(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.skew_ms)
    }
}

/// The run's record: everything that happened, in order, for the trace hash and the report.
#[derive(Default)]
struct Trace {
    bytes: Vec<u8>,
    events: u64,
}

impl Trace {
    fn log(&mut self, now: u64, what: &str) {
        self.bytes.extend_from_slice(&now.to_le_bytes());
        self.bytes.extend_from_slice(what.as_bytes());
        self.bytes.push(b'\n');
        self.events += 1;
        if std::env::var_os("B3IQ_SIM_TRACE").is_some() {
            println!("{:>9} {what}", now - START);
        }
    }

    fn hash(&self) -> [u8; 32] {
        Sha256Digest::of(&self.bytes).0
    }
}

struct World {
    rng: StdRng,
    dir: tempfile::TempDir,
    job_key: [u8; 32],
    cp: Arc<ControlPlane>,
    op: Operator,
    org: String,
    nodes: Vec<SimNode>,
    /// In flight: (delivery time, order) -> (node index, message).
    net: BTreeMap<(u64, u64), (usize, Msg)>,
    order: u64,
    /// Messages the adversary saw on the wire.
    captured: Vec<(usize, Msg)>,
    adversary: NodeKey,
    /// Jobs the operator queued, by id (hex).
    queued: BTreeSet<String>,
    /// Open holds of the gateway: hold id -> (node, price it will charge).
    holds: Vec<([u8; 16], usize, u64)>,
    gateway_key: b3iq_control::gateway::credits::GatewayKey,
    settled_prices: u64,
    trace: Trace,
    faults: Faults,
}

/// Fault rates of a run, drawn from its seed.
#[derive(Debug, Clone, Copy)]
struct Faults {
    drop: f64,
    dup: f64,
    max_delay_ms: u64,
    partition: f64,
    crash: f64,
    replay: f64,
}

fn plane(path: &Path, job_key: [u8; 32]) -> Arc<ControlPlane> {
    let store = Arc::new(SqliteStore::open(path).expect("open the control plane's store"));
    let mut cfg = ControlConfig::new(Audience::new(AUDIENCE).unwrap());
    cfg.heartbeat_interval_ms = 5_000;
    cfg.max_clock_skew_ms = SKEW_MS;
    Arc::new(ControlPlane::new(store, cfg, NodeKey::from_seed(job_key)))
}

impl World {
    async fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let faults = Faults {
            drop: rng.gen_range(0.0..0.3),
            dup: rng.gen_range(0.0..0.2),
            max_delay_ms: rng.gen_range(0..5_000),
            partition: rng.gen_range(0.0..0.02),
            crash: rng.gen_range(0.0..0.01),
            replay: rng.gen_range(0.0..0.1),
        };
        // In memory where the system has it: a simulated crash keeps the file, and fsync there
        // costs nothing, so seeds run at simulation speed.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let job_key: [u8; 32] = rng.gen();
        let cp = plane(&dir.path().join("control.db"), job_key);
        let org = cp.create_org("sim", START).await.unwrap();
        cp.create_operator("sim", "operator", "a long operator password", START)
            .await
            .unwrap();
        let op = cp
            .store()
            .operator_by_username("operator")
            .await
            .unwrap()
            .unwrap();
        cp.add_credits(&org.id, 1_000_000_000, "sim", START)
            .await
            .unwrap();
        let (gateway_key, _) = cp
            .create_gateway_key(&org.id, "sim", 1_000_000, None, START)
            .await
            .unwrap();
        let n = rng.gen_range(3..=10);
        let mut nodes = Vec::new();
        for i in 0..n {
            let key = NodeKey::from_seed(rng.gen());
            // One node's clock is far outside the allowed skew; the others within half of it.
            let skew_ms = if i == 0 {
                3 * SKEW_MS as i64
            } else {
                rng.gen_range(-(SKEW_MS as i64) / 2..=(SKEW_MS as i64) / 2)
            };
            // Enrollment is not under faults here (plane.rs tests its refusals).
            let (_, tok) = cp
                .create_enrollment_token(&org.id, 60_000, START)
                .await
                .unwrap();
            let c = cp.challenge(START).await.unwrap();
            let proof = key
                .sign_object(EnrollmentProof {
                    node_id: key.node_id(),
                    public_key: key.public(),
                    audience: AUDIENCE.into(),
                    nonce: c.nonce,
                    signed_at_ms: START,
                })
                .unwrap();
            let acc = cp
                .enroll(
                    &tok,
                    &EnrollmentRequest {
                        challenge_id: c.challenge_id,
                        proof,
                    },
                    START,
                )
                .await
                .unwrap();
            nodes.push(SimNode {
                key,
                skew_ms,
                seq: 1,
                outbox: BTreeMap::new(),
                written: BTreeSet::new(),
                trust: TrustRoots::new([acc.job_key]).with_max_clock_skew_ms(SKEW_MS),
                seen: MemorySeenSet::default(),
                ran: Vec::new(),
                unreported: Vec::new(),
                last_job_seq: 0,
                partitioned_until: 0,
                requests: 0,
                max_hb_accepted: 0,
            });
        }
        let adversary = NodeKey::from_seed(rng.gen());
        World {
            rng,
            dir,
            job_key,
            cp,
            op,
            org: org.id,
            nodes,
            net: BTreeMap::new(),
            order: 0,
            captured: Vec::new(),
            adversary,
            queued: BTreeSet::new(),
            holds: Vec::new(),
            gateway_key,
            settled_prices: 0,
            trace: Trace::default(),
            faults,
        }
    }

    /// Sends through the faulty network (`faulty` false once it heals).
    fn send(&mut self, now: u64, node: usize, m: Msg, faulty: bool) {
        if faulty {
            if self.nodes[node].partitioned_until > now || self.rng.gen_bool(self.faults.drop) {
                return;
            }
            let copies = if self.rng.gen_bool(self.faults.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = now + self.rng.gen_range(0..=self.faults.max_delay_ms);
                self.order += 1;
                self.net.insert((at, self.order), (node, m.clone()));
            }
        } else {
            self.order += 1;
            self.net.insert((now, self.order), (node, m));
        }
    }

    /// Does what each node does on its tick: a heartbeat, an upload of its outbox, a poll,
    /// reports of finished jobs, and maybe serves a request (a receipt and a gateway hold).
    async fn node_tick(&mut self, now: u64, i: usize, faulty: bool) {
        let t = self.nodes[i].clock(now);
        let n = &mut self.nodes[i];
        let hb = HeartbeatRequest {
            heartbeat: n
                .key
                .sign_object(Heartbeat {
                    node_id: n.key.node_id(),
                    sent_at_ms: t,
                    sequence: n.seq,
                    mode: OperatingMode::Managed,
                    health: HealthStatus::Healthy,
                    counts: HeartbeatCounts::default(),
                    model_inventory: vec![],
                    software_version: None,
                })
                .unwrap(),
        };
        n.seq += 1;
        // A request served: its receipt goes to the outbox; the gateway held its price.
        let served = self.rng.gen_bool(0.5);
        if served {
            let n = &mut self.nodes[i];
            n.requests += 1;
            let price = 10 + n.requests % 90;
            let salt = CommitmentSalt::from_bytes([n.requests as u8; 32]);
            let r = Receipt {
                node_id: n.key.node_id(),
                request_id: RequestId((n.requests as u128 | (i as u128) << 64).to_le_bytes()),
                model_id: "smollm2-135m-instruct-q4_1".into(),
                artifact_digest: Sha256Digest([7; 32]),
                backend: "llama.cpp".into(),
                mode: OperatingMode::Managed,
                prompt_tokens: 10,
                completion_tokens: 20,
                started_at_ms: t,
                ttft_ms: 30,
                duration_ms: 500,
                price_micro_credits: price,
                prompt_commitment: Commitment::prompt(&salt, b"p"),
                output_commitment: Commitment::output(&salt, b"o"),
                commitment_basis: None,
                attestation_digest: None,
            }
            .sign(&n.key)
            .unwrap();
            let id = r.receipt_id().0;
            n.written.insert(id);
            n.outbox.insert(id, r);
            let hold = self
                .cp
                .place_hold(&self.gateway_key, 1_000, now)
                .await
                .expect("a hold within the balance and rate");
            self.holds.push((hold.id, i, price));
            // The gateway settles with the receipt now, or crashes first (the sweep ends it).
            if self.rng.gen_bool(0.8) {
                let node = self.nodes[i].key.node_id();
                let ok = self
                    .cp
                    .settle_hold(&hold.id, price, &node, &id, now)
                    .await
                    .unwrap();
                assert!(ok, "a fresh hold settles");
                self.settled_prices += price;
                self.holds.pop();
            }
        }
        let n = &self.nodes[i];
        let upload = (!n.outbox.is_empty()).then(|| {
            let rs: Vec<SignedReceipt> = n.outbox.values().take(64).cloned().collect();
            ReceiptUpload::sign(&n.key, rs, t).unwrap()
        });
        let poll = JobPoll::sign(&n.key, n.last_job_seq, 0, t).unwrap();
        let reports: Vec<JobResultReport> = n.unreported.clone();
        self.send(now, i, Msg::Heartbeat(hb), faulty);
        if let Some(u) = upload {
            self.send(now, i, Msg::Upload(u), faulty);
        }
        self.send(now, i, Msg::Poll(poll), faulty);
        for r in reports {
            self.send(now, i, Msg::Result(r), faulty);
        }
    }

    /// The control plane handles one delivered message; its answer comes back to the node
    /// (or is lost, when `faulty`).
    async fn deliver(&mut self, now: u64, i: usize, m: Msg, faulty: bool) {
        if faulty && self.rng.gen_bool(self.faults.replay) {
            self.captured.push((i, m.clone()));
        }
        let answer_lost = faulty
            && (self.nodes[i].partitioned_until > now || self.rng.gen_bool(self.faults.drop));
        match m {
            Msg::Heartbeat(h) => {
                let seq = h.heartbeat.body().sequence;
                let r = self.cp.heartbeat(&h, now).await;
                if i == 0 {
                    assert!(
                        r.is_err(),
                        "a heartbeat from a node whose clock is 6 minutes off was accepted"
                    );
                }
                self.heartbeat_answer(i, seq, r.is_ok(), "delivered");
                self.trace.log(now, &format!("hb {i} {seq} {}", r.is_ok()));
            }
            Msg::Upload(u) => {
                let r = self.cp.upload_receipts(&u, now).await;
                if i == 0 {
                    // Receipt uploads carry no freshness check beyond the signature.
                }
                match r {
                    Ok(ack) => {
                        self.trace
                            .log(now, &format!("up {i} {} {}", ack.stored, ack.duplicates));
                        if !answer_lost {
                            for r in &u.receipts {
                                self.nodes[i].outbox.remove(&r.receipt_id().0);
                            }
                        }
                    }
                    Err(e) => self
                        .trace
                        .log(now, &format!("up {i} refused {}", e.parts().0)),
                }
            }
            Msg::Poll(p) => {
                let r = self.cp.poll(&p, now).await;
                self.trace.log(
                    now,
                    &format!(
                        "poll {i} after {} {:?}",
                        p.after_sequence,
                        r.as_ref()
                            .map(|a| a.jobs.iter().map(|j| j.body().sequence).collect::<Vec<_>>())
                            .ok()
                    ),
                );
                if let (Ok(a), false) = (r, answer_lost) {
                    for j in a.jobs {
                        self.run_job(now, i, &j);
                    }
                }
            }
            Msg::Result(rep) => {
                let id = rep.job_id.0;
                let r = self.cp.job_result(&rep, now).await;
                self.trace.log(now, &format!("res {i} {:?}", r.as_ref().map(|a| a.stored).ok()));
                if r.is_ok() && !answer_lost {
                    self.nodes[i].unreported.retain(|r| r.job_id.0 != id);
                }
            }
        }
    }

    /// Accepted heartbeat sequences of a node only ever increase: a replayed, duplicated or
    /// reordered one is refused.
    fn heartbeat_answer(&mut self, i: usize, seq: u64, accepted: bool, how: &str) {
        if accepted {
            let n = &mut self.nodes[i];
            assert!(
                seq > n.max_hb_accepted,
                "a {how} heartbeat of node {i} with sequence {seq} was accepted after sequence {}",
                n.max_hb_accepted
            );
            n.max_hb_accepted = seq;
        }
    }

    /// The node's job check (b3iq-core's `open`, its seen set); a job that passes runs.
    fn run_job(&mut self, now: u64, i: usize, j: &SignedJob) {
        let n = &mut self.nodes[i];
        let t = n.clock(now);
        match j.open(&n.trust, &n.key.node_id(), t, &mut n.seen) {
            Ok(v) => {
                let id = v.job().job_id.0;
                assert!(
                    self.queued.contains(&hex::encode(id)),
                    "node {i} ran a job the operator never queued"
                );
                assert!(
                    !n.ran.contains(&id),
                    "node {i} ran job {} twice",
                    hex::encode(id)
                );
                assert!(
                    t <= v.job().expires_at_ms + SKEW_MS,
                    "node {i} ran an expired job"
                );
                n.ran.push(id);
                n.last_job_seq = n.last_job_seq.max(v.job().sequence);
                let rep = JobResultReport::sign(
                    &n.key,
                    v.job().job_id,
                    JobOutcome::Succeeded,
                    None,
                    JobResultData::None {},
                    t,
                )
                .unwrap();
                n.unreported.push(rep);
                self.trace
                    .log(now, &format!("ran {i} {}", v.job().sequence));
            }
            Err(e) => {
                // A job seen before moves the poll past it too.
                n.last_job_seq = n.last_job_seq.max(j.body().sequence);
                self.trace
                    .log(now, &format!("refused-job {i} {}", e.code()));
            }
        }
    }

    /// The adversary: replays a captured message, re-signs a captured heartbeat with its own
    /// key, or pushes a job signed by its own key to a node.
    async fn adversary(&mut self, now: u64) {
        match self.rng.gen_range(0..3) {
            0 if !self.captured.is_empty() => {
                let k = self.rng.gen_range(0..self.captured.len());
                let (i, m) = self.captured[k].clone();
                if let Msg::Heartbeat(h) = &m {
                    // Refused unless the control plane never accepted that sequence or a later
                    // one (a held-back heartbeat of the fast-clock node may become fresh).
                    let r = self.cp.heartbeat(h, now).await;
                    self.heartbeat_answer(i, h.heartbeat.body().sequence, r.is_ok(), "replayed");
                    self.trace.log(now, &format!("replay-hb {i} {}", r.is_ok()));
                } else {
                    self.deliver(now, i, m, false).await;
                }
            }
            1 if !self.captured.is_empty() => {
                let k = self.rng.gen_range(0..self.captured.len());
                if let (i, Msg::Heartbeat(h)) = self.captured[k].clone() {
                    let mut body = h.heartbeat.body().clone();
                    body.sequence += 1_000_000;
                    let sig = self.adversary.sign_raw(&h.heartbeat.signing_message());
                    // Signed by its own key, under its own key or under the victim's.
                    for signer in [self.adversary.public(), self.nodes[i].key.public()] {
                        let forged = HeartbeatRequest {
                            heartbeat: Signed::from_parts(body.clone(), signer, sig).unwrap(),
                        };
                        let r = self.cp.heartbeat(&forged, now).await;
                        assert!(
                            r.is_err(),
                            "a heartbeat re-signed by another key was accepted"
                        );
                    }
                    self.trace.log(now, &format!("resign-hb {i}"));
                }
            }
            _ => {
                let i = self.rng.gen_range(0..self.nodes.len());
                let n = &self.nodes[i];
                let t = n.clock(now);
                let job = self
                    .adversary
                    .sign_object(Job {
                        job_id: b3iq_core::job::JobId(self.rng.gen()),
                        audience: n.key.node_id(),
                        issuer: self.adversary.public(),
                        issued_at_ms: t,
                        expires_at_ms: t + 60_000,
                        sequence: n.last_job_seq + 1,
                        kind: JobKind::RestartRuntime {},
                    })
                    .unwrap();
                // run_job asserts the job was queued: an adversary's job must be refused first.
                self.run_job(now, i, &job);
            }
        }
    }

    async fn crash_control_plane(&mut self, now: u64) {
        self.cp = plane(&self.dir.path().join("control.db"), self.job_key);
        self.trace.log(now, "crash");
    }

    async fn run(&mut self) {
        let mut now = START;
        let end = START + RUN_MS;
        let heal_end = end + HEAL_MS;
        let mut next_tick: Vec<u64> = (0..self.nodes.len())
            .map(|_| START + self.rng.gen_range(0..5_000))
            .collect();
        while now < heal_end {
            let faulty = now < end;
            // Deliver what is due.
            while let Some((&(at, o), _)) = self.net.first_key_value() {
                if at > now {
                    break;
                }
                let (i, m) = self.net.remove(&(at, o)).unwrap();
                self.deliver(now, i, m, faulty).await;
            }
            for (i, tick) in next_tick.iter_mut().enumerate() {
                if *tick <= now {
                    self.node_tick(now, i, faulty).await;
                    *tick = now + 5_000;
                }
            }
            if faulty {
                if self.rng.gen_bool(self.faults.partition) {
                    let i = self.rng.gen_range(0..self.nodes.len());
                    self.nodes[i].partitioned_until = now + self.rng.gen_range(1_000..60_000);
                    self.trace.log(now, &format!("partition {i}"));
                }
                if self.rng.gen_bool(self.faults.crash) {
                    self.crash_control_plane(now).await;
                }
                if self.rng.gen_bool(self.faults.replay) {
                    self.adversary(now).await;
                }
                // The operator queues a job now and then.
                if self.rng.gen_bool(0.05) {
                    let i = self.rng.gen_range(1..self.nodes.len());
                    let node = self.nodes[i].key.node_id();
                    let ttl = self.rng.gen_range(30_000..600_000);
                    if let Ok(j) = self
                        .cp
                        .queue_job(&self.op, &node, JobKind::RestartRuntime {}, Some(ttl), now)
                        .await
                    {
                        self.queued.insert(j.job_id.clone());
                        self.trace.log(now, &format!("queued {i}"));
                    }
                }
            } else {
                for n in &mut self.nodes {
                    n.partitioned_until = 0;
                }
            }
            now += 250;
        }
        // Drain what is still in flight, without faults.
        while let Some(((_, _), (i, m))) = self.net.pop_first() {
            self.deliver(heal_end, i, m, false).await;
        }
    }

    async fn check(&mut self) {
        let now = START + RUN_MS + HEAL_MS;
        // Every receipt written is stored, once (node 0 too: uploads carry no clock check).
        let mut total = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            assert!(
                n.outbox.is_empty(),
                "node {i} still has {} receipts unacknowledged after the network healed",
                n.outbox.len()
            );
            let stored = self
                .cp
                .store()
                .receipt_count(&n.key.node_id())
                .await
                .unwrap();
            assert_eq!(
                stored,
                n.written.len() as u64,
                "node {i}: receipts stored once each"
            );
            total += stored;
        }
        self.trace.log(now, &format!("receipts {total}"));
        // Jobs: every result the nodes reported after healing is recorded.
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            assert!(
                n.unreported.is_empty(),
                "node {i} has unreported job results after healing"
            );
            let views = self.cp.jobs(&self.org, &n.key.node_id()).await.unwrap();
            for id in &n.ran {
                let v = views
                    .iter()
                    .find(|v| v.job_id == hex::encode(id))
                    .expect("a job the node ran is known");
                assert_eq!(
                    v.state.as_str(),
                    "succeeded",
                    "job {} of node {i}",
                    hex::encode(id)
                );
            }
        }
        // Credits: holds abandoned by the gateway are released by the sweep; the rest settled.
        self.cp
            .expire_holds(0, now + b3iq_control::gateway::credits::HOLD_MAX_AGE_MS)
            .await
            .unwrap();
        let bal = self.cp.credit_balance(&self.org).await.unwrap();
        assert_eq!(bal.held, 0, "every hold settled or released: {bal:?}");
        assert_eq!(
            bal.available,
            1_000_000_000 - self.settled_prices,
            "{bal:?}"
        );
        let mut earned = 0;
        for n in &self.nodes {
            earned += self.cp.node_earnings(&n.key.node_id()).await.unwrap();
        }
        assert_eq!(
            earned, self.settled_prices,
            "the nodes earned exactly what was charged"
        );
        let lc = self.cp.ledger_check().await.unwrap();
        assert!(lc.ok(), "the ledger sums to zero: {lc:?}");
        self.trace.log(
            now,
            &format!("credits {} {}", self.settled_prices, self.holds.len()),
        );
    }
}

/// Runs one seed; returns its trace hash.
fn run_seed(seed: u64) -> [u8; 32] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new(seed).await;
        w.run().await;
        w.check().await;
        w.trace.hash()
    })
}

fn run_checked(seed: u64) -> [u8; 32] {
    match std::panic::catch_unwind(|| run_seed(seed)) {
        Ok(h) => h,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "simulation seed {seed} failed: {msg}\nreplay it with: B3IQ_SIM_SEED={seed} cargo test -p b3iq-control --test sim -- --nocapture"
            );
        }
    }
}

#[test]
fn seeded_runs_keep_every_invariant() {
    let seeds: Vec<u64> = match (
        std::env::var("B3IQ_SIM_SEED").ok(),
        std::env::var("B3IQ_SIM_SEEDS").ok(),
    ) {
        (Some(s), _) => vec![s.parse().expect("B3IQ_SIM_SEED is a number")],
        (None, Some(n)) => (0..n.parse().expect("B3IQ_SIM_SEEDS is a number")).collect(),
        (None, None) => (0..SEEDS_IN_CI).collect(),
    };
    let t0 = std::time::Instant::now();
    // Seeds are independent (each its own runtime, store and RNG): one worker per core.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(seeds.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&s) = seeds.get(k) else { break };
                run_checked(s);
            });
        }
    });
    println!(
        "simulation: {} seeds passed in {:.1} s",
        seeds.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    for seed in [1, 7, 42] {
        assert_eq!(
            run_checked(seed),
            run_checked(seed),
            "seed {seed} is not deterministic"
        );
    }
    assert_ne!(
        run_checked(1),
        run_checked(2),
        "different seeds, different runs"
    );
}
