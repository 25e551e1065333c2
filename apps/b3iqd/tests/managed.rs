//! Managed mode end to end: a real control plane (the b3iq-control library serving HTTPS with a
//! self-signed certificate on loopback, SQLite store) and the real `b3iqd` daemon with the
//! default model. The node enrolls with `b3iqd enroll` (token file, pinned CA), heartbeats
//! arrive signed and in order, a suspension is refused at once and visible on the node, the
//! sequence survives a restart, managed mode opens no listener, and `b3iqd unenroll` goes back
//! to local mode. Refusals through the CLI: a reused token, an unpinned certificate, a plain
//! http URL, a revoked node.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use b3iq_control::store::NodeStatus;
use b3iq_control::{ControlHome, ControlPlane};
use b3iq_core::job::JobKind;
use b3iq_core::NodeId;
use common::{tempdir, Daemon};
use serde_json::Value;

struct Control {
    cp: Arc<ControlPlane>,
    url: String,
    ca: std::path::PathBuf,
    org: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn control(dir: &Path) -> Control {
    control_with(dir, r#"{"heartbeat_interval_s": 1}"#).await
}

async fn control_with(dir: &Path, settings: &str) -> Control {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("control.json"), settings).unwrap();
    let home = ControlHome::locate(Some(dir.to_path_buf())).unwrap();
    let (settings, cp) = home.open().await.unwrap();
    let tls = home.tls(&settings).unwrap();
    let org = cp
        .create_org("acme", b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cp2 = cp.clone();
    tokio::spawn(async move { b3iq_control::home::serve(listener, cp2, &tls, rx).await });
    Control {
        cp,
        url,
        ca: dir.join("tls/self-signed.crt.pem"),
        org: org.id,
        _stop: tx,
    }
}

impl Control {
    async fn token(&self, dir: &Path, name: &str) -> std::path::PathBuf {
        let (_, tok) = self
            .cp
            .create_enrollment_token(&self.org, 600_000, b3iq_host::context::unix_now_ms())
            .await
            .unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("{tok}\n")).unwrap();
        p
    }

    async fn operator(&self) -> b3iq_control::store::Operator {
        if self
            .cp
            .store()
            .operator_by_username("alice")
            .await
            .unwrap()
            .is_none()
        {
            self.cp
                .create_operator(
                    &self.org,
                    "alice",
                    "a long operator password",
                    b3iq_host::context::unix_now_ms(),
                )
                .await
                .unwrap();
        }
        self.cp
            .store()
            .operator_by_username("alice")
            .await
            .unwrap()
            .unwrap()
    }

    async fn job(&self, id: &NodeId, job_id: &str) -> b3iq_control::plane::JobView {
        self.cp
            .jobs(&self.org, id)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.job_id == job_id)
            .unwrap()
    }

    /// Waits until the node's report of a job arrives.
    async fn wait_job(&self, id: &NodeId, job_id: &str) -> b3iq_control::plane::JobView {
        // A benchmark on a loaded 2-core machine has taken over a minute.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let j = self.job(id, job_id).await;
            if j.finished_at_ms.is_some() {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "no result for job {job_id}: {j:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn last_sequence(&self, id: &NodeId) -> Option<u64> {
        let n = self
            .cp
            .node(&self.org, id, b3iq_host::context::unix_now_ms())
            .await
            .ok()?;
        n.node.last_heartbeat.map(|h| h.sequence)
    }

    /// Waits until the node's stored heartbeat sequence passes `after`.
    async fn wait_heartbeat_after(&self, id: &NodeId, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(s) = self.last_sequence(id).await.filter(|s| *s > after) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no heartbeat after sequence {after} within 30 s");
    }
}

async fn wait_node_job(d: &Daemon, c: &reqwest::Client, cookie: &str, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .get(d.url(&format!("/api/jobs/{id}")))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["state"] == state || v["job"]["state"] == state {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {state} on the node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b3iqd(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .env("B3IQ_HOME", home)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn status(home: &Path) -> Value {
    let (ok, out, err) = b3iqd(home, &["status"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Listening TCP sockets of `pid` as (local address hex, port), from /proc.
fn listening_sockets(pid: u32) -> Vec<(String, u16)> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if let Some(i) = t
                .to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let c: Vec<&str> = line.split_whitespace().collect();
            // st 0A = LISTEN; column 9 is the inode.
            if c.len() > 9 && c[3] == "0A" && inodes.contains(c[9]) {
                let (addr, port) = c[1].split_once(':').unwrap();
                out.push((addr.to_string(), u16::from_str_radix(port, 16).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_enrolls_sends_signed_heartbeats_is_suspended_and_leaves() {
    let dir = tempdir("managed");
    let ctl = control(&dir.join("control")).await;
    let home = dir.join("node");
    let mut d = Daemon::start(&home);
    let listening_before = listening_sockets(d.child.id());
    assert_eq!(listening_before.len(), 1, "{listening_before:?}");

    // Refusals that never reach the control plane's store.
    let tok = ctl.token(&dir, "t1").await;
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url.replace("https", "http"),
            "--token-file",
            tok.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("https://"), "{err}");
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("--ca-file"),
        "an unpinned self-signed certificate is refused: {err}"
    );
    assert!(status(&home)["managed"].is_null());

    // A payout address set before enrolling: recorded, not sent (there is no control plane yet).
    let payout = "0x00000000000000000000000000000000000000aa";
    let (ok, out, err) = b3iqd(&home, &["wallet", "set-address", payout]);
    assert!(ok, "{err}");
    assert!(out.contains("\"sent_to_control_plane\": false"), "{out}");

    // Enroll while the daemon runs; the daemon picks it up.
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok.to_str().unwrap(),
            "--ca-file",
            ctl.ca.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("enrolled") && err.contains(ctl.cp.config().audience.as_str()),
        "{err}"
    );
    let st = status(&home);
    let id = NodeId::parse(st["node_id"].as_str().unwrap()).unwrap();
    assert_eq!(st["mode"], "managed");
    assert_eq!(st["managed"]["audience"], ctl.cp.config().audience.as_str());
    assert_eq!(
        st["managed"]["job_key"],
        ctl.cp.job_public_key().await.unwrap().to_hex()
    );
    let s1 = ctl.wait_heartbeat_after(&id, 0).await;
    let s2 = ctl.wait_heartbeat_after(&id, s1).await;
    assert!(s2 > s1);
    // The address set before enrolling went out with the heartbeats.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ctl
        .cp
        .store()
        .payout_addresses()
        .await
        .unwrap()
        .contains(&(id, payout.to_string()))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the payout address set before enrolling never reached the control plane"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = ctl
        .cp
        .node(&ctl.org, &id, b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    assert_eq!(view.presence, "online");
    let body = &view.node.last_heartbeat.as_ref().unwrap().body;
    assert_eq!(body["mode"], "managed");
    assert_eq!(body["health"], "healthy");
    assert_eq!(
        body["model_inventory"].as_array().unwrap().len(),
        1,
        "the default model's digest: {body}"
    );
    assert_eq!(
        status(&home)["managed"]["last_heartbeat"]["outcome"],
        "accepted"
    );
    // No listener for managed mode: the same single loopback socket as before.
    assert_eq!(listening_sockets(d.child.id()), listening_before);
    assert!(
        listening_before.iter().all(|(a, _)| a == "0100007F"),
        "loopback only: {listening_before:?}"
    );

    // The token is spent: another node cannot use it (offline CLI, no daemon there).
    let other = dir.join("other");
    let (ok, _, err) = b3iqd(
        &other,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok.to_str().unwrap(),
            "--ca-file",
            ctl.ca.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("already used"), "{err}");
    // Enrolling twice is refused on the node itself.
    let tok2 = ctl.token(&dir, "t2").await;
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok2.to_str().unwrap(),
            "--ca-file",
            ctl.ca.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("already enrolled"), "{err}");

    // Remote jobs: a low-risk benchmark runs at once; a support bundle (medium risk) waits for
    // the owner's approval; a mode change (high risk) is rejected by the owner. Each outcome
    // reaches the control plane signed, once; the owner sees every remote job in the audit log.
    let c = common::client();
    let cookie = common::claim(&d, &c).await;
    let op = ctl.operator().await;
    let now = b3iq_host::context::unix_now_ms();
    let bench = ctl
        .cp
        .queue_job(
            &op,
            &id,
            JobKind::RunBenchmark {
                suite: "quick".into(),
            },
            None,
            now,
        )
        .await
        .unwrap();
    let done = ctl.wait_job(&id, &bench.job_id).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let r = done.result.unwrap();
    assert_eq!(r["type"], "benchmark");
    assert!(
        r["generated_tokens_per_s_milli"].as_u64().unwrap() > 0,
        "{r}"
    );

    // A load_model job is low risk too: it runs without the owner. Naming the served model,
    // it loads nothing and unloads nothing; the node's job record says so.
    let models: Value = c
        .get(d.url("/api/models"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served_id = models["loaded"].as_str().unwrap().to_string();
    let load = ctl
        .cp
        .queue_job(
            &op,
            &id,
            JobKind::LoadModel {
                model: served_id.clone(),
            },
            None,
            now,
        )
        .await
        .unwrap();
    let done = ctl.wait_job(&id, &load.job_id).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let j: Value = c
        .get(d.url(&format!("/api/jobs/job_{}", load.job_id)))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (j["kind"].as_str(), j["issuer"].as_str()),
        (Some("load_model"), Some("remote")),
        "{j}"
    );
    assert_eq!(j["result"]["loaded"], served_id.as_str(), "{j}");
    assert_eq!(j["result"]["already_loaded"], true, "{j}");
    assert_eq!(j["result"]["unloaded"], serde_json::json!([]), "{j}");

    let bundle = ctl
        .cp
        .queue_job(&op, &id, JobKind::BuildSupportBundle {}, None, now)
        .await
        .unwrap();
    let node_job = format!("job_{}", bundle.job_id);
    wait_node_job(&d, &c, &cookie, &node_job, "awaiting_approval").await;
    assert_eq!(
        ctl.job(&id, &bundle.job_id).await.state,
        "delivered",
        "not run before the owner approves"
    );
    let r = c
        .post(d.url(&format!("/api/jobs/{node_job}/approve")))
        .header("cookie", &cookie)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let done = ctl.wait_job(&id, &bundle.job_id).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let r = done.result.unwrap();
    assert_eq!(r["type"], "support_bundle");
    let bytes = hex_decode(r["bundle"].as_str().unwrap());
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip archive");
    assert_eq!(
        r["sha256"],
        format!(
            "sha256:{}",
            b3iq_core::digest::Sha256Digest::of(&bytes).to_hex()
        )
    );
    // The node removes its copy once the control plane's answer arrives (just after the
    // control plane stored the result, so wait for it).
    let copy = home.join("support").join(format!("{node_job}.tar.gz"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while copy.exists() {
        assert!(
            Instant::now() < deadline,
            "the node's copy is removed once delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let change = ctl
        .cp
        .queue_job(
            &op,
            &id,
            JobKind::ChangeMode {
                mode: b3iq_core::mode::OperatingMode::Local,
            },
            None,
            now,
        )
        .await
        .unwrap();
    let change_job = format!("job_{}", change.job_id);
    wait_node_job(&d, &c, &cookie, &change_job, "awaiting_approval").await;
    let r = c
        .post(d.url(&format!("/api/jobs/{change_job}/reject")))
        .header("cookie", &cookie)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = ctl.wait_job(&id, &change.job_id).await;
    assert_eq!(
        (done.state.as_str(), done.code.as_deref()),
        ("rejected_by_owner", Some("rejected_by_owner"))
    );
    assert_eq!(
        status(&home)["mode"],
        "managed",
        "a rejected mode change changes nothing"
    );
    let r = c
        .post(d.url(&format!("/api/jobs/{change_job}/approve")))
        .header("cookie", &cookie)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a decided job cannot be approved");
    let audit: serde_json::Value = c
        .get(d.url("/api/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<String> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    for a in [
        "job.accept",
        "job.await_approval",
        "job.approve",
        "job.reject_by_owner",
        "job.report",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from the audit log: {actions:?}"
        );
    }

    // Job-key rotation: a new key on the control plane, and a rotate_issuer_key job signed by
    // the key the node pins. The node pins the new key when it accepts the job and reports it;
    // later jobs, signed with the new key, run; a job signed with the old key is refused.
    let old_key =
        b3iq_core::NodeKey::from_key_file(&std::fs::read(dir.join("control/job-key")).unwrap())
            .unwrap();
    assert_eq!(old_key.public(), ctl.cp.job_public_key().await.unwrap());
    let rot = ctl
        .cp
        .rotate_job_key(b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    assert_eq!(rot.queued, 1);
    let done = ctl.wait_job(&id, &rot.nodes[0].job_id).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(done.result.unwrap()["issuer"], rot.job_key.to_hex());
    assert_eq!(status(&home)["managed"]["job_key"], rot.job_key.to_hex());
    assert_eq!(
        ctl.cp.store().node(&id).await.unwrap().unwrap().job_key,
        Some(rot.job_key)
    );
    let now = b3iq_host::context::unix_now_ms();
    // Accepted under the new key: the node records it and starts it (the benchmark itself can
    // take a minute on a loaded machine; its outcome is not the point here).
    let bench2 = ctl
        .cp
        .queue_job(
            &op,
            &id,
            JobKind::RunBenchmark {
                suite: "quick".into(),
            },
            None,
            now,
        )
        .await
        .unwrap();
    let node_job = format!("job_{}", bench2.job_id);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c
            .get(d.url(&format!("/api/jobs/{node_job}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            let state = v["state"]
                .as_str()
                .or(v["job"]["state"].as_str())
                .unwrap_or("")
                .to_string();
            if ["queued", "running", "succeeded"].contains(&state.as_str()) {
                break;
            }
            panic!("the job signed with the new key was not accepted: {v}");
        }
        assert!(
            Instant::now() < deadline,
            "the job signed with the new key never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Someone holding the rotated-out key (and the store) cannot reach the node any more.
    let org = ctl.org.clone();
    let forged = ctl
        .cp
        .store()
        .queue_job(Box::new(move |sequence| {
            let job = b3iq_core::job::Job {
                job_id: b3iq_core::job::JobId([7; 16]),
                audience: id,
                issuer: old_key.public(),
                issued_at_ms: now,
                expires_at_ms: now + 600_000,
                sequence,
                kind: JobKind::RunBenchmark {
                    suite: "quick".into(),
                },
            };
            let signed = old_key.sign_object(job).unwrap();
            Ok(b3iq_control::store::JobRow {
                job_id: [7; 16],
                node_id: id,
                org_id: org,
                sequence,
                kind: "run_benchmark".into(),
                envelope: signed.encode(),
                created_by: "attacker".into(),
                created_at_ms: now,
                expires_at_ms: now + 600_000,
                delivered_at_ms: None,
                outcome: None,
                code: None,
                result: None,
                finished_at_ms: None,
            })
        }))
        .await
        .unwrap();
    let done = ctl
        .wait_job(
            &id,
            &forged
                .job_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )
        .await;
    assert_eq!(
        (done.state.as_str(), done.code.as_deref()),
        ("refused", Some("untrusted_issuer")),
        "{done:?}"
    );

    // Suspension: refused at once, with the reason, on the node's status.
    ctl.cp
        .set_node_status(&ctl.org, &id, NodeStatus::Suspended, "maintenance window")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lh = &status(&home)["managed"]["last_heartbeat"];
        if lh["outcome"] == "refused" {
            assert_eq!(lh["code"], "node_suspended");
            assert!(
                lh["error"].as_str().unwrap().contains("maintenance window"),
                "{lh}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the suspension never showed on the node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frozen = ctl.last_sequence(&id).await.unwrap();
    ctl.cp
        .set_node_status(&ctl.org, &id, NodeStatus::Active, "")
        .await
        .unwrap();
    let s3 = ctl.wait_heartbeat_after(&id, frozen).await;

    // The sequence is durable: after a restart the node continues above it.
    d.stop();
    let d2 = Daemon::start(&home);
    let s4 = ctl.wait_heartbeat_after(&id, s3).await;
    assert!(s4 > s3);
    assert!(!d2.logs().contains("stale_sequence"), "{}", d2.logs());

    // Unenroll: local mode, trust root gone, heartbeats stop.
    let (ok, _, err) = b3iqd(&home, &["unenroll"]);
    assert!(ok && err.contains("back to local mode"), "{err}");
    let st = status(&home);
    assert_eq!(st["mode"], "local");
    assert!(st["managed"].is_null());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = ctl.last_sequence(&id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ctl.last_sequence(&id).await.unwrap(),
        last,
        "no heartbeats after unenroll"
    );
    let (ok, _, err) = b3iqd(&home, &["unenroll"]);
    assert!(ok && err.contains("not enrolled"), "{err}");

    // A revoked node cannot enroll again.
    ctl.cp
        .set_node_status(&ctl.org, &id, NodeStatus::Revoked, "decommissioned")
        .await
        .unwrap();
    let tok3 = ctl.token(&dir, "t3").await;
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok3.to_str().unwrap(),
            "--ca-file",
            ctl.ca.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("revoked") && err.contains("decommissioned"),
        "{err}"
    );
    assert_eq!(status(&home)["mode"], "local");
    let audit = rusqlite::Connection::open(home.join("state.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM audit_events WHERE action IN ('managed.enroll', 'managed.unenroll')", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(audit, 2, "enroll and unenroll are audited");
    drop(d2);
}

/// The `b3iq-control` binary, built beside `b3iqd` by a workspace `cargo test`.
fn control_bin() -> std::path::PathBuf {
    let p = Path::new(common::bin()).with_file_name("b3iq-control");
    assert!(p.exists(), "{} is missing: build it with `cargo build -p b3iq-control-daemon` (a workspace `cargo test` does)", p.display());
    p
}

fn ctl(home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut c = Command::new(control_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "b3iq-control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

/// `b3iq-control serve` on `listen`; returns the process and its URL.
fn serve_control(home: &Path, listen: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(control_bin())
        .arg("--home")
        .arg(home)
        .args(["serve", "--listen", listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(i) = l.find("serving https://") {
                return (
                    child,
                    l[i + "serving ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("b3iq-control serve did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_requests_on_three_nodes_reach_the_control_plane_as_forty_receipts_across_a_kill_9() {
    let dir = tempfile_dir("receipts");
    let cph = dir.join("control");
    std::fs::create_dir_all(&cph).unwrap();
    std::fs::write(cph.join("control.json"), r#"{"heartbeat_interval_s": 1}"#).unwrap();
    ctl(&cph, &["admin", "create-org", "acme"], None);
    let (mut cp, url) = serve_control(&cph, "127.0.0.1:0");
    let listen = url.trim_start_matches("https://").to_string();
    let ca = cph.join("tls/self-signed.crt.pem");

    // Three real nodes with the default model, enrolled with their own tokens.
    let c = common::client();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let home = dir.join(format!("node{i}"));
        let d = Daemon::start(&home);
        let cookie = common::claim(&d, &c).await;
        let (_, key) = common::create_key(&d, &c, &cookie, &["inference"]).await;
        let model = common::model_id(&d, &c, &key).await;
        let tok = dir.join(format!("token{i}"));
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
            None,
        );
        let (ok, _, err) = b3iqd(
            &home,
            &[
                "enroll",
                "--control",
                &url,
                "--token-file",
                tok.to_str().unwrap(),
                "--ca-file",
                ca.to_str().unwrap(),
            ],
        );
        assert!(ok, "{err}");
        let id = status(&home)["node_id"].as_str().unwrap().to_string();
        nodes.push((d, home, key, model, id));
    }
    let chat = |n: usize| {
        let (d, _, key, model, _) = &nodes[n % 3];
        let req = c
            .post(d.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    // 20 requests, kill -9 the control plane, 20 more while it is down, then restart it on the
    // same address: the nodes' outboxes deliver everything, each receipt once.
    for n in 0..20 {
        chat(n).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cp.kill().unwrap();
    cp.wait().unwrap();
    for n in 20..40 {
        chat(n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cp2, _) = serve_control(&cph, &listen);
    let _cp2 = KillOnDrop(cp2);
    let deadline = Instant::now() + Duration::from_secs(90);
    let counts = loop {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|(_, _, _, _, id)| {
                serde_json::from_str::<Value>(&ctl(
                    &cph,
                    &["admin", "usage", "--org", "acme", id],
                    None,
                ))
                .unwrap()["receipts"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        if counts.iter().sum::<u64>() >= 40 || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(counts, [14, 13, 13], "every receipt arrived, each once");
    // The usage rows count each receipt once too, and the nodes have nothing left to send.
    for (i, (_, home, _, _, id)) in nodes.iter().enumerate() {
        let u: Value =
            serde_json::from_str(&ctl(&cph, &["admin", "usage", "--org", "acme", id], None))
                .unwrap();
        let requests: u64 = u["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(requests, counts[i]);
        let pending: i64 = rusqlite::Connection::open(home.join("state.db"))
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM receipts WHERE uploaded_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pending, 0);
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    tempdir(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_enrollment_renews_itself_and_the_node_stays_online() {
    let dir = tempdir("renew");
    let ctl = control_with(
        &dir.join("control"),
        r#"{"heartbeat_interval_s": 1, "enrollment_ttl_s": 6}"#,
    )
    .await;
    let home = dir.join("node");
    let _d = Daemon::start(&home);
    let tok = ctl.token(&dir, "t").await;
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &ctl.url,
            "--token-file",
            tok.to_str().unwrap(),
            "--ca-file",
            ctl.ca.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let first = status(&home)["managed"]["expires_at_ms"].as_u64().unwrap();
    let id = NodeId::parse(status(&home)["node_id"].as_str().unwrap()).unwrap();
    // Well past the first 6-second term: renewed (headlessly, no token), still online.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let st = status(&home);
    let now_exp = st["managed"]["expires_at_ms"].as_u64().unwrap();
    assert!(now_exp > first + 3_000, "renewed: {first} -> {now_exp}");
    assert_eq!(
        st["managed"]["last_heartbeat"]["outcome"], "accepted",
        "{st}"
    );
    let view = ctl
        .cp
        .node(&ctl.org, &id, b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    // Presence is "offline" once a heartbeat is 3 intervals (3 s here) late, which a loaded
    // CI machine can cause for a moment; an unrenewed node would read "expired" for good.
    assert_ne!(view.presence, "expired");
    let mut presence = view.presence;
    for _ in 0..50 {
        if presence == "online" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        presence = ctl.cp.node(&ctl.org, &id, b3iq_host::context::unix_now_ms()).await.unwrap().presence;
    }
    assert_eq!(presence, "online");
    // The node keeps renewing (every ~4 s with a 6 s term), so the control plane may already
    // hold the next term: its expiry is the node's, or one renewal later, never earlier.
    assert!(
        view.node.expires_at_ms >= now_exp && view.node.expires_at_ms <= now_exp + 6_000 + 5_000,
        "{} vs {now_exp}",
        view.node.expires_at_ms
    );
    let renewals: i64 = rusqlite::Connection::open(home.join("state.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'managed.renew'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(renewals >= 2, "audited renewals: {renewals}");
}
