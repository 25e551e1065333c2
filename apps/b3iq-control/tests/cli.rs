//! The `b3iq-control` binary as an operator uses it: admin commands on the home, `serve` over
//! HTTPS with its self-signed certificate, the admin API with a session, a node enrolling with
//! real signed messages, and refusals with clear messages.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::NodeKey;
use serde_json::{json, Value};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_b3iq-control")
}

fn admin(home: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(bin());
    c.arg("--home").arg(home).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(home: &Path) -> (Server, String) {
    let mut child = Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(i) = l.find("serving https://") {
                let url = l[i + "serving ".len()..].split_whitespace().next().unwrap().to_string();
                return (Server(child), url);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("b3iq-control serve did not start");
}

fn client(home: &Path) -> reqwest::Client {
    let pem = std::fs::read(home.join("tls/self-signed.crt.pem")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn operator_flow_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cp");

    let (ok, out, err) = admin(&home, &["admin", "create-org", "acme"], None);
    assert!(ok, "{err}");
    let org: Value = serde_json::from_str(&out).unwrap();
    assert!(org["id"].as_str().unwrap().starts_with("org_"));
    let (ok, _, err) = admin(&home, &["admin", "create-org", "acme"], None);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "create-operator", "--org", "acme", "--username", "alice"], Some("short\n"));
    assert!(!ok && err.contains("password"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "create-operator", "--org", "nope", "--username", "alice"], Some("a long operator password\n"));
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "create-operator", "--org", "acme", "--username", "alice"], Some("a long operator password\n"));
    assert!(ok, "{err}");
    let tok_file = dir.path().join("token.txt");
    let (ok, out, err) = admin(&home, &["admin", "enrollment-token", "--org", "acme", "--out", tok_file.to_str().unwrap()], None);
    assert!(ok && out.is_empty() && err.contains("single use"), "{out} {err}");
    let token = std::fs::read_to_string(&tok_file).unwrap().trim().to_string();
    assert!(token.starts_with("b3iq_enroll_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&tok_file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(home.join("job-key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (ok, out, _) = admin(&home, &["info"], None);
    assert!(ok);
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["tls"]["fingerprint_sha256"].as_str().unwrap().len(), 95);

    let (_server, url) = serve(&home);
    let c = client(&home);
    let v: Value = c.get(format!("{url}/v1/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["audience"], info["audience"]);
    assert_eq!(v["job_key"], info["job_key"]);
    // Plain HTTP on the TLS port is refused.
    let plain = reqwest::get(url.replace("https", "http") + "/healthz").await.unwrap();
    assert_eq!(plain.status(), 400);
    // The daemon serves the public API (no session) and the explorer with a strict CSP; a page
    // path gets the app's index, a missing asset a 404.
    let st: Value = c.get(format!("{url}/v1/public/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!((st["nodes"]["total"].as_u64(), st["epochs"]["epochs"].as_u64()), (Some(0), Some(0)), "{st}");
    for path in ["/explorer/", "/explorer/nodes/b3n_x"] {
        let r = c.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
        assert!(r.text().await.unwrap().contains("<div id=\"root\">"), "{path}");
    }
    assert_eq!(c.get(format!("{url}/explorer/assets/nope.js")).send().await.unwrap().status(), 404);

    // A node enrolls with real signed messages.
    let key = NodeKey::from_seed([4; 32]);
    let ch: Value = c.post(format!("{url}/v1/node/enroll/challenge")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let ch: b3iq_protocol::messages::EnrollmentChallenge = serde_json::from_value(ch).unwrap();
    let proof = key
        .sign_object(EnrollmentProof { node_id: key.node_id(), public_key: key.public(), audience: ch.audience.as_str().into(), nonce: ch.nonce, signed_at_ms: b3iq_host::context::unix_now_ms() })
        .unwrap();
    let req = json!({"challenge_id": ch.challenge_id, "proof": proof});
    let r = c.post(format!("{url}/v1/node/enroll")).json(&req).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    let r = c.post(format!("{url}/v1/node/enroll")).bearer_auth(&token).json(&req).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(format!("{url}/v1/node/enroll")).bearer_auth(&token).json(&req).send().await.unwrap();
    assert_eq!(r.status(), 409, "replayed challenge");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "challenge_used");
    // Unknown fields and oversized bodies are refused.
    let mut extra = req.clone();
    extra["note"] = json!("x");
    let r = c.post(format!("{url}/v1/node/enroll")).bearer_auth(&token).json(&extra).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.post(format!("{url}/v1/node/heartbeat")).header("content-type", "application/json").body(vec![b' '; 100_000]).send().await.unwrap();
    assert_eq!(r.status(), 413);

    // The admin API: sign in, list, suspend.
    let r = c.get(format!("{url}/v1/admin/nodes")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(format!("{url}/v1/admin/session")).json(&json!({"username": "alice", "password": "wrong password!"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let s: Value = c.post(format!("{url}/v1/admin/session")).json(&json!({"username": "alice", "password": "a long operator password"})).send().await.unwrap().json().await.unwrap();
    let session = s["session"].as_str().unwrap();
    let nodes: Value = c.get(format!("{url}/v1/admin/nodes")).bearer_auth(session).send().await.unwrap().json().await.unwrap();
    assert_eq!(nodes["nodes"][0]["node_id"], key.node_id().to_text());
    assert_eq!(nodes["nodes"][0]["presence"], "never_seen");
    let r = c
        .post(format!("{url}/v1/admin/nodes/{}/status", key.node_id().to_text()))
        .bearer_auth(session)
        .json(&json!({"status": "suspended", "reason": "audit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["status"].as_str(), v["presence"].as_str()), (Some("suspended"), Some("suspended")));
    let t: Value = c.post(format!("{url}/v1/admin/enrollment-tokens")).bearer_auth(session).json(&json!({"ttl_s": 60})).send().await.unwrap().json().await.unwrap();
    assert!(t["token"].as_str().unwrap().starts_with("b3iq_enroll_"));
    let r = c.delete(format!("{url}/v1/admin/session")).bearer_auth(session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(format!("{url}/v1/admin/nodes")).bearer_auth(session).send().await.unwrap().status(), 401);

    // The CLI sees the same store.
    let (ok, out, _) = admin(&home, &["admin", "nodes", "--org", "acme"], None);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes"][0]["status"], "suspended");
    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("b3iq_control_enrollments_total{outcome=\"accepted\"} 1"), "{metrics}");

    // Job-key rotation from the CLI while the server runs: the new key file is private, the
    // running server announces it at once, and the key list counts who still pins the old one.
    c.post(format!("{url}/v1/admin/nodes/{}/status", key.node_id().to_text())).bearer_auth(&relogin(&c, &url).await).json(&json!({"status": "active"})).send().await.unwrap();
    let (ok, out, err) = admin(&home, &["admin", "rotate-job-key"], None);
    assert!(ok && err.contains("1 rotate_issuer_key job(s) queued"), "{out} {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let new_key = r["job_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, info["job_key"].as_str().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let f = home.join("job-keys").join(format!("{new_key}.key"));
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let v: Value = c.get(format!("{url}/v1/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["job_key"], new_key.as_str(), "the running server reads the current key from the store");
    let (ok, out, _) = admin(&home, &["admin", "job-keys"], None);
    assert!(ok);
    let keys: Value = serde_json::from_str(&out).unwrap();
    let summary: Vec<(bool, u64, u64)> = keys["job_keys"].as_array().unwrap().iter().map(|k| (k["current"].as_bool().unwrap(), k["pinned_by_lagging_nodes"].as_u64().unwrap(), k["rotating_to"].as_u64().unwrap())).collect();
    assert_eq!(summary, [(false, 1, 0), (true, 0, 1)]);
    let (ok, out, _) = admin(&home, &["admin", "rotate-job-key", "--resend"], None);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["queued"], 1, "the node still pins the old key");
}

/// A fresh operator session.
async fn relogin(c: &reqwest::Client, url: &str) -> String {
    let s: Value = c.post(format!("{url}/v1/admin/session")).json(&json!({"username": "alice", "password": "a long operator password"})).send().await.unwrap().json().await.unwrap();
    s["session"].as_str().unwrap().to_string()
}

#[test]
fn help_teaches() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Quick start") && s.contains("b3iqd enroll"), "{s}");
    let out = Command::new(bin()).args(["admin", "enrollment-token", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example"));
}

#[test]
fn attester_address_makes_the_key_once_and_prints_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // Without chain settings there is nothing to attest for.
    let (ok, _, err) = admin(home, &["attester-address"], None);
    assert!(!ok && err.contains("settlement"), "{err}");
    std::fs::write(
        home.join("control.json"),
        r#"{"settlement": {"rpc_url": "http://127.0.0.1:1", "deployment": {"token": "0x0000000000000000000000000000000000000001", "node_registry": "0x0000000000000000000000000000000000000002", "stake_vault": "0x0000000000000000000000000000000000000003", "settlement": "0x0000000000000000000000000000000000000004", "disputes": "0x0000000000000000000000000000000000000005", "model_registry": "0x0000000000000000000000000000000000000006"}, "settler_key_file": "settler.key", "protocol_account": "0x0000000000000000000000000000000000000007", "verifier_account": "0x0000000000000000000000000000000000000008"}}"#,
    )
    .unwrap();
    let (ok, first, err) = admin(home, &["attester-address"], None);
    assert!(ok, "{err}");
    let key = b3iq_chain::key_file::load_key_file(&home.join("attester.key")).unwrap();
    assert_eq!(first.trim(), b3iq_core::payout::EthAddress(key.address().0 .0).to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(home.join("attester.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (_, again, _) = admin(home, &["attester-address"], None);
    assert_eq!(again, first, "the key is kept, not remade");
    let out = Command::new(bin()).args(["attester-address", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("setAttester"));
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    // `b3iq-control admin ... | head`: the reader goes away; no panic (exit 101), no backtrace.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["admin", "create-org", "acme"])
        .env("B3IQ_CONTROL_HOME", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

async fn login(c: &reqwest::Client, url: &str, user: &str) -> String {
    let s: Value = c.post(format!("{url}/v1/admin/session")).json(&json!({"username": user, "password": "a long operator password"})).send().await.unwrap().json().await.unwrap();
    s["session"].as_str().unwrap().to_string()
}

fn contains_in_db_files(home: &Path, needle: &str) -> bool {
    ["control.db", "control.db-wal"].iter().any(|f| std::fs::read(home.join(f)).map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())).unwrap_or(false))
}

#[tokio::test]
async fn gateway_keys_and_credits_from_the_cli_and_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cp");
    for (org, user) in [("acme", "alice"), ("globex", "bob")] {
        assert!(admin(&home, &["admin", "create-org", org], None).0);
        let (ok, _, err) = admin(&home, &["admin", "create-operator", "--org", org, "--username", user], Some("a long operator password\n"));
        assert!(ok, "{err}");
    }

    // Top-ups: CLI only, each reference once.
    let (ok, out, err) = admin(&home, &["admin", "add-credits", "--org", "acme", "--amount", "25000000", "--reference", "invoice-1"], None);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["available"], 25_000_000);
    let (ok, _, err) = admin(&home, &["admin", "add-credits", "--org", "acme", "--amount", "25000000", "--reference", "invoice-1"], None);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "add-credits", "--org", "acme", "--amount", "0", "--reference", "invoice-2"], None);
    assert!(!ok && err.contains("micro-credits"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "add-credits", "--org", "nope", "--amount", "5", "--reference", "invoice-3"], None);
    assert!(!ok && err.contains("not found"), "{err}");

    // Keys: to a private file, or on stdout once; listed without the token.
    let key_file = dir.path().join("gateway-key.txt");
    let (ok, out, err) = admin(&home, &["admin", "gateway-key", "create", "--org", "acme", "--name", "ci", "--out", key_file.to_str().unwrap()], None);
    assert!(ok && err.contains("shown once"), "{err}");
    let ci: Value = serde_json::from_str(&out).unwrap();
    let ci_id = ci["id"].as_str().unwrap().to_string();
    assert_eq!((ci["rate_per_min"].as_u64(), ci["spend_limit_per_day"].as_u64()), (Some(60), None));
    let token = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    assert!(token.starts_with("b3iq_gateway_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (ok, out, _) = admin(&home, &["admin", "gateway-key", "create", "--org", "acme", "--name", "app", "--rate-per-min", "600", "--spend-limit-per-day", "1000000"], None);
    assert!(ok);
    let token2 = out.trim().to_string();
    assert!(token2.starts_with("b3iq_gateway_") && !out.contains('{'), "only the token on stdout: {out}");
    let (ok, _, err) = admin(&home, &["admin", "gateway-key", "create", "--org", "acme", "--name", "x", "--rate-per-min", "0"], None);
    assert!(!ok && err.contains("rate_per_min"), "{err}");
    let (ok, out, _) = admin(&home, &["admin", "gateway-key", "list", "--org", "acme"], None);
    assert!(ok);
    let keys: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(keys["gateway_keys"].as_array().unwrap().len(), 2);
    assert_eq!(keys["gateway_keys"][1]["spend_limit_per_day"], 1_000_000);
    for t in [&token, &token2] {
        assert!(!out.contains(&t[13..]));
        assert!(!contains_in_db_files(&home, &t[13..]), "a token is in control.db");
    }
    assert!(contains_in_db_files(&home, &ci_id), "the search reads the database");

    // The admin API: an operator sees and changes only its own organisation's keys; there is
    // no top-up route.
    let (_server, url) = serve(&home);
    let c = client(&home);
    let (alice, bob) = (login(&c, &url, "alice").await, login(&c, &url, "bob").await);
    let r = c.post(format!("{url}/v1/admin/gateway-keys")).bearer_auth(&alice).json(&json!({"name": "web", "rate_per_min": 120})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let web: Value = r.json().await.unwrap();
    assert!(web["token"].as_str().unwrap().starts_with("b3iq_gateway_"));
    assert_eq!(web["key"]["rate_per_min"], 120);
    let r = c.post(format!("{url}/v1/admin/gateway-keys")).bearer_auth(&alice).json(&json!({"name": "web", "scope": "all"})).send().await.unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");
    assert_eq!(c.get(format!("{url}/v1/admin/gateway-keys")).send().await.unwrap().status(), 401);
    let mine: Value = c.get(format!("{url}/v1/admin/gateway-keys")).bearer_auth(&alice).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["gateway_keys"].as_array().unwrap().len(), 3);
    let theirs: Value = c.get(format!("{url}/v1/admin/gateway-keys")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert!(theirs["gateway_keys"].as_array().unwrap().is_empty());
    let r = c.delete(format!("{url}/v1/admin/gateway-keys/{ci_id}")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 404, "another organisation's operator cannot revoke it");
    let r = c.delete(format!("{url}/v1/admin/gateway-keys/{ci_id}")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let cr: Value = c.get(format!("{url}/v1/admin/credits")).bearer_auth(&alice).send().await.unwrap().json().await.unwrap();
    assert_eq!((cr["balance"]["available"].as_u64(), cr["balance"]["held"].as_u64()), (Some(25_000_000), Some(0)));
    assert_eq!(cr["ledger"][0]["kind"], "topup");
    assert_eq!(cr["ledger"][0]["reference"], "invoice-1");
    let cb: Value = c.get(format!("{url}/v1/admin/credits")).bearer_auth(&bob).send().await.unwrap().json().await.unwrap();
    assert_eq!((cb["balance"]["available"].as_u64(), cb["ledger"].as_array().map(Vec::len)), (Some(0), Some(0)));
    let r = c.post(format!("{url}/v1/admin/credits")).bearer_auth(&alice).json(&json!({"amount": 1})).send().await.unwrap();
    assert!(!r.status().is_success(), "no top-up over HTTP: {}", r.status());

    // The CLI sees the API's revocation; another organisation cannot revoke from the CLI either.
    let (ok, _, err) = admin(&home, &["admin", "gateway-key", "revoke", "--org", "globex", web["key"]["id"].as_str().unwrap()], None);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = admin(&home, &["admin", "gateway-key", "revoke", "--org", "acme", web["key"]["id"].as_str().unwrap()], None);
    assert!(ok && err.contains("revoked"), "{err}");
    let (_, out, _) = admin(&home, &["admin", "gateway-key", "list", "--org", "acme"], None);
    let keys: Value = serde_json::from_str(&out).unwrap();
    let revoked: Vec<bool> = keys["gateway_keys"].as_array().unwrap().iter().map(|k| !k["revoked_at_ms"].is_null()).collect();
    assert_eq!(revoked, [true, false, true]);
    let (ok, out, _) = admin(&home, &["admin", "credits", "--org", "acme"], None);
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["balance"]["topped_up_total"] == 25_000_000);

    // The ledger check passes, then fails (non-zero exit) once a balance is tampered with.
    let (ok, out, err) = admin(&home, &["admin", "ledger-check"], None);
    assert!(ok && err.contains("consistent"), "{out} {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ok"], true);
    {
        let db = rusqlite::Connection::open(home.join("control.db")).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db.execute("UPDATE ledger_accounts SET balance = balance + 1 WHERE account LIKE 'org:%:available'", []).unwrap();
    }
    let (ok, out, err) = admin(&home, &["admin", "ledger-check"], None);
    assert!(!ok && err.contains("NOT consistent"), "{out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["check"]["mismatches"][0]["stored"].as_i64(), Some(25_000_001));
}

#[test]
fn credit_commands_teach() {
    for args in [&["admin", "add-credits", "--help"][..], &["admin", "gateway-key", "create", "--help"], &["admin", "ledger-check", "--help"]] {
        let out = Command::new(bin()).args(args).output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && s.contains("Example"), "{args:?}: {s}");
    }
}

#[path = "../../../b3iq-chain/tests/chain/common.rs"]
mod chain;

/// `dispute open` checks the evidence before recording anything: garbage and evidence that
/// shows no fault are refused; conflicting receipts are recorded (without `disputes` in
/// control.json: not opened on chain) and listed once, however often they are submitted.
#[test]
fn dispute_commands_check_evidence_before_recording() {
    use b3iq_core::evidence::Evidence;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let key = NodeKey::from_seed([5; 32]);
    let file = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let list = || -> Vec<Value> {
        let (ok, out, err) = admin(&home, &["dispute", "list"], None);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let garbage = file("garbage", b"not evidence".to_vec());
    let (ok, _, err) = admin(&home, &["dispute", "open", "--evidence", &garbage], None);
    assert!(!ok && err.contains("evidence"), "{err}");
    let no_fault = file("no-fault", Evidence::conflicting_receipts(chain::receipt(&key, 1, "m", 1, 5), chain::receipt(&key, 2, "m", 1, 5)).encode());
    let (ok, _, err) = admin(&home, &["dispute", "open", "--evidence", &no_fault], None);
    assert!(!ok && err.contains("no fault"), "{err}");
    assert!(list().is_empty(), "nothing recorded");
    let e = Evidence::conflicting_receipts(chain::receipt(&key, 1, "m", 1, 5), chain::receipt(&key, 1, "m", 1, 6));
    let good = file("conflict", e.encode());
    for _ in 0..2 {
        let (ok, out, err) = admin(&home, &["dispute", "open", "--evidence", &good], None);
        assert!(ok, "{err}");
        assert!(err.contains("not opened on chain"), "{err}");
        let row: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((row["status"].as_str(), row["kind"].as_str()), (Some("pending"), Some("conflicting_receipts")));
        assert_eq!(row["node_id"], key.node_id().to_text());
        assert_eq!(row["evidence_hash"], format!("0x{}", e.hash().to_hex()));
    }
    assert_eq!(list().len(), 1, "one dispute per evidence");
    let out = Command::new(bin()).args(["dispute", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example"));
}

/// `kill -9` of `b3iq-control serve` while it posts an epoch (the post transaction sent, not
/// yet mined: hardhat's automine off), then a restart: the epoch is on chain exactly once
/// (one `EpochPosted` event, one post transaction from the settler) and the restarted control
/// plane records it as posted without sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_posted_when_the_control_plane_is_killed_is_posted_exactly_once() {
    use alloy::providers::Provider;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("control");
    std::fs::create_dir_all(&home).unwrap();
    let hh = chain::HardhatNode::start().await;
    let admin = chain::funded(&hh.url, chain::wallet("admin")).await;
    let (d, _) = admin.deploy(&b3iq_chain::DeployParams::defaults(chain::wallet("attester").address())).await.unwrap();
    let settler_addr = b3iq_chain::key_file::create_key_file(&home.join("settler.key")).unwrap();
    let settler = chain::funded(&hh.url, b3iq_chain::key_file::load_key_file(&home.join("settler.key")).unwrap()).await;
    admin.grant_settler(&d, settler_addr).await.unwrap();
    admin.mint(&d, settler_addr, chain::tokens(1_000)).await.unwrap();
    // The escrow is funded ahead, so the only transaction the control plane sends is the post.
    settler.approve(&d, d.settlement, chain::tokens(1_000)).await.unwrap();
    settler.fund_escrow(&d, chain::tokens(1_000)).await.unwrap();
    std::fs::write(
        home.join("control.json"),
        serde_json::to_vec(&json!({"settlement": {
            "rpc_url": hh.url, "deployment": d, "settler_key_file": "settler.key", "epoch_interval_s": 1,
            "protocol_account": chain::wallet("protocol").address().to_string(), "verifier_account": chain::wallet("verifier").address().to_string(),
        }}))
        .unwrap(),
    )
    .unwrap();

    // A node enrolled with its payout address and 20 uploaded network receipts.
    {
        let (_, cp) = b3iq_control::ControlHome::locate(Some(home.clone())).unwrap().open().await.unwrap();
        let now = b3iq_host::context::unix_now_ms();
        let org = cp.create_org("acme", now).await.unwrap();
        let (_, tok) = cp.create_enrollment_token(&org.id, 60_000, now).await.unwrap();
        let key = NodeKey::from_seed([42; 32]);
        let ch = cp.challenge(now).await.unwrap();
        let proof = key.sign_object(EnrollmentProof { node_id: key.node_id(), public_key: key.public(), audience: ch.audience.as_str().into(), nonce: ch.nonce, signed_at_ms: now }).unwrap();
        cp.enroll(&tok, &b3iq_protocol::messages::EnrollmentRequest { challenge_id: ch.challenge_id, proof }, now).await.unwrap();
        let payout = b3iq_core::payout::EthAddress(chain::wallet("operator").address().0 .0);
        cp.set_payout_address(&b3iq_protocol::payout_api::PayoutAddressRequest::sign(&key, payout, now), now).await.unwrap();
        let receipts: Vec<_> = (1..=20u8).map(|i| chain::receipt(&key, i, "smollm2-135m-instruct-q4_1", now - 10_000 + u64::from(i), 1_000 + u64::from(i))).collect();
        // Each charged to a customer as the gateway does (an epoch pays only charged receipts).
        cp.add_credits(&org.id, 1_000_000, "settle-test", now).await.unwrap();
        let (gk, _) = cp.create_gateway_key(&org.id, "settle-test", 1_000, None, now).await.unwrap();
        for r in &receipts {
            let h = cp.place_hold(&gk, r.body().price_micro_credits, now).await.unwrap();
            assert!(cp.settle_hold(&h.id, r.body().price_micro_credits, &key.node_id(), &r.receipt_id().0, now).await.unwrap());
        }
        let ack = cp.upload_receipts(&b3iq_protocol::messages::ReceiptUpload::sign(&key, receipts, now).unwrap(), now).await.unwrap();
        assert_eq!(ack.stored, 20);
    }

    // Automine off: the post stays pending; kill -9 the control plane while it waits for it.
    let raw = |m: &'static str, p: Value| {
        let s = &settler;
        async move { s.provider().raw_request::<_, Value>(m.into(), p).await.unwrap() }
    };
    raw("evm_setAutomine", json!([false])).await;
    let nonce_before = settler.provider().get_transaction_count(settler_addr).await.unwrap();
    let (mut server, _) = serve(&home);
    let deadline = Instant::now() + Duration::from_secs(60);
    while settler.provider().get_transaction_count(settler_addr).pending().await.unwrap() == nonce_before {
        assert!(Instant::now() < deadline, "the control plane sent no post");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    raw("evm_mine", json!([])).await;
    raw("evm_setAutomine", json!([true])).await;
    assert_ne!(settler.epoch_posted_at(&d, 1).await.unwrap(), 0, "the post sent before the kill is on chain");
    let db = rusqlite::Connection::open(home.join("control.db")).unwrap();
    let (file, posted): (Option<String>, Option<i64>) = db.query_row("SELECT claim_file, posted_at FROM epochs WHERE epoch_id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(file.is_some() && posted.is_none(), "killed after storing the claim file and sending, before recording the post");

    // Restart: the epoch is recorded as posted, and nothing is sent again.
    let (server, _) = serve(&home);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, posted) = loop {
        let r: (Option<String>, Option<i64>) = db.query_row("SELECT tx_hash, posted_at FROM epochs WHERE epoch_id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        if r.1.is_some() {
            break r;
        }
        assert!(Instant::now() < deadline, "the restarted control plane did not record the post");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tx, None, "found on chain, not sent again");
    assert_eq!(posted.unwrap() as u64, settler.epoch_posted_at(&d, 1).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await; // a few more ticks
    drop(server);
    assert_eq!(settler.provider().get_transaction_count(settler_addr).await.unwrap(), nonce_before + 1, "exactly one transaction: the post");
    let logs = settler.provider().get_logs(&alloy::rpc::types::Filter::new().address(d.settlement).from_block(0u64)).await.unwrap();
    let sig = <b3iq_chain::bindings::settlement::Settlement::EpochPosted as alloy::sol_types::SolEvent>::SIGNATURE_HASH;
    let posted_events = logs.iter().filter(|l| l.topics().first() == Some(&sig)).count();
    assert_eq!(posted_events, 1, "one EpochPosted event");
    let n: i64 = db.query_row("SELECT COUNT(*) FROM receipts WHERE epoch_id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 20, "every receipt in the one epoch");
}
