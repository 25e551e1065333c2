//! The network helpers of tests/network.rs and tests/explorer.rs: a control plane with its
//! gateway on loopback (SQLite store, self-signed TLS) and real `b3iqd` nodes enrolled and
//! switched to network mode.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use b3iq_control::gateway::Gateway;
use b3iq_control::{ControlHome, ControlPlane, ControlSettings};
use serde_json::{json, Value};

use super::Daemon;

pub struct Net {
    pub cp: Arc<ControlPlane>,
    pub gw: Arc<Gateway>,
    pub url: String,
    pub ca: std::path::PathBuf,
    pub org: String,
    pub _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn network(dir: &Path) -> Net {
    with_org(replica(dir, false).await).await
}

/// `net` with a new organisation, "acme", in `net.org`.
pub async fn with_org(net: Net) -> Net {
    let org = net
        .cp
        .create_org("acme", b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    Net { org: org.id, ..net }
}

/// A control plane with its gateway over the home `dir` (replicas share one home: its keys,
/// certificate and store). With `relay`, the gateway records its tunnels for other replicas.
pub async fn replica(dir: &Path, relay: bool) -> Net {
    serve_control(dir, |home, settings, cp, url| {
        gateway(home, cp, |cfg| {
            if relay {
                cfg.replica_url = Some(url.to_string());
                let cert = home.tls(settings).unwrap().info.cert_path;
                cfg.replica_ca_pem = Some(std::fs::read_to_string(cert).unwrap());
            }
        })
    })
    .await
}

/// The home's gateway (ticket key, price) with a longer queue wait than the default 10 s, since
/// 16 concurrent requests share three one-request shares on a 2-core machine; `configure`
/// changes the rest.
pub fn gateway(
    home: &ControlHome,
    cp: Arc<ControlPlane>,
    configure: impl FnOnce(&mut b3iq_control::gateway::GatewayConfig),
) -> Arc<Gateway> {
    let mut cfg = b3iq_control::gateway::GatewayConfig::new();
    cfg.queue_wait = Duration::from_secs(120);
    configure(&mut cfg);
    Gateway::new(cp, home.ticket_key().unwrap(), cfg)
}

/// A control plane over the home `dir` (its `control.json` written with 1 s heartbeats when
/// absent) serving HTTPS on a loopback port with the gateway `make_gateway` builds (given the
/// home, its settings, the control plane and the URL it will serve at).
pub async fn serve_control(
    dir: &Path,
    make_gateway: impl FnOnce(&ControlHome, &ControlSettings, Arc<ControlPlane>, &str) -> Arc<Gateway>,
) -> Net {
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join("control.json").exists() {
        std::fs::write(dir.join("control.json"), r#"{"heartbeat_interval_s": 1}"#).unwrap();
    }
    let home = ControlHome::locate(Some(dir.to_path_buf())).unwrap();
    let (settings, cp) = home.open().await.unwrap();
    let tls = home.tls(&settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let gw = make_gateway(&home, &settings, cp.clone(), &url);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (cp2, gw2) = (cp.clone(), gw.clone());
    tokio::spawn(async move {
        b3iq_control::home::serve_with(listener, cp2, Some(gw2), &tls, rx).await
    });
    Net {
        cp,
        gw,
        url,
        ca: dir.join("tls/self-signed.crt.pem"),
        org: String::new(),
        _stop: tx,
    }
}

pub fn b3iqd(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(super::bin())
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

/// A node: started with two slots, claimed, enrolled, with `policy`, switched to network mode.
pub struct Node {
    pub d: Daemon,
    pub cookie: String,
    pub id: String,
}

pub async fn node(net: &Net, dir: &Path, name: &str, policy: Value) -> Node {
    node_with(net, dir, name, policy, json!({"parallel": 2})).await
}

/// As [`node`], with `config` (fields of `config.json`).
pub async fn node_with(net: &Net, dir: &Path, name: &str, policy: Value, config: Value) -> Node {
    let home = dir.join(name);
    super::write_config(&home, config);
    let d = Daemon::start(&home);
    let c = super::client();
    let cookie = super::claim(&d, &c).await;
    let (_, tok) = net
        .cp
        .create_enrollment_token(&net.org, 600_000, b3iq_host::context::unix_now_ms())
        .await
        .unwrap();
    let tok_file = dir.join(format!("{name}.token"));
    std::fs::write(&tok_file, format!("{tok}\n")).unwrap();
    let (ok, _, err) = b3iqd(
        &home,
        &[
            "enroll",
            "--control",
            &net.url,
            "--token-file",
            tok_file.to_str().unwrap(),
            "--ca-file",
            net.ca.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let r = c
        .put(d.url("/api/network"))
        .header("cookie", &cookie)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = c
        .post(d.url("/api/mode"))
        .header("cookie", &cookie)
        .json(&json!({"mode": "network"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (ok, out, err) = b3iqd(&home, &["status"]);
    assert!(ok, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["mode"], "network");
    Node {
        d,
        cookie,
        id: st["node_id"].as_str().unwrap().to_string(),
    }
}

pub fn policy(max_concurrent: u32) -> Value {
    json!({"max_concurrent": max_concurrent, "price_floor": {"prompt_per_1m_tokens": 1000, "completion_per_1m_tokens": 1000, "per_request": 0}})
}

pub async fn wait_tunnels(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.tunnels().all().len() != n {
        assert!(
            Instant::now() < deadline,
            "{} tunnels, expected {n}",
            gw.tunnels().all().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn gw_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

