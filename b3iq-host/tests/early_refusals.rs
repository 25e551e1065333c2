//! A refusal sent before the request body is read (401 without a session, 403 for a Host outside
//! the allowlist) reaches HTTP/2 clients as a status, not as a broken stream.
//!
//! hyper's HTTP/2 server ends a stream whose request body it did not read with
//! RST_STREAM(NO_ERROR) after the response (RFC 9113 §8.1). curl 7.88 (Debian 12) then reports
//! "HTTP/2 framing layer" about half the time instead of the status; the node reads a small body
//! (up to 64 KiB, at most 1 s) before it answers, so the stream ends cleanly. These tests post a
//! body to endpoints that refuse early, over TLS with HTTP/2 chosen by ALPN, many times each:
//! with reqwest, with curl, and with the `h2` crate, which shows the reset itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use b3iq_host::LocalNode;

const TRIES: usize = 50;

async fn tls_node() -> (tempfile::TempDir, LocalNode, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::builder().home(dir.path()).listen("127.0.0.1:0").no_model().tls("self-signed").start().await.unwrap();
    let cert = dir.path().join("tls/self-signed.crt.pem");
    assert!(node.base_url().starts_with("https://"), "{}", node.base_url());
    (dir, node, cert)
}

/// reqwest (hyper's HTTP/2 client) over ALPN h2: a session route without a session (401) and an
/// inference route before the node is claimed (503), each with a JSON body, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_reach_an_http2_client_with_their_status() {
    let (_dir, node, cert) = tls_node().await;
    let pem = std::fs::read(&cert).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let body = serde_json::json!({"name": "laptop", "padding": "x".repeat(4000)}).to_string();
    for (path, status, code) in [("/api/keys", 401, "session_required"), ("/v1/chat/completions", 503, "not_claimed")] {
        for i in 0..TRIES {
            let r = c
                .post(format!("{}{path}", node.base_url()))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} try {i}: {e:?}"));
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), status, "{path} try {i}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{path} try {i}");
        }
    }
    node.shutdown().await;
}

/// curl, the client that showed the fault (7.88 with nghttp2 reports a framing-layer error on a
/// reset stream): every POST without a session prints 401 over HTTP/2, and a Host outside the
/// allowlist prints 403. Skipped, saying so, where curl or its HTTP/2 support is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_sees_every_early_refusal() {
    let version = std::process::Command::new("curl").arg("--version").output();
    let Ok(version) = version.map(|o| String::from_utf8_lossy(&o.stdout).to_string()) else {
        eprintln!("skipped: curl is not installed");
        return;
    };
    if !version.contains("HTTP2") {
        eprintln!("skipped: this curl has no HTTP/2 support: {}", version.lines().next().unwrap_or(""));
        return;
    }
    let (_dir, node, cert) = tls_node().await;
    let url = format!("{}/api/keys", node.base_url());
    let curl = move |extra: &'static [&'static str]| {
        let (url, cert) = (url.clone(), cert.clone());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--http2", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
                .arg("--cacert")
                .arg(&cert)
                .args(["-H", "content-type: application/json", "--data", r#"{"name": "laptop", "scopes": ["inference"]}"#])
                .args(extra)
                .arg(&url)
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
        })
    };
    for i in 0..TRIES {
        let (out, err) = curl(&[]).await.unwrap();
        assert_eq!(out, "401 2", "try {i}: {err}");
    }
    for i in 0..TRIES / 5 {
        let (out, err) = curl(&["-H", "host: evil.example"]).await.unwrap();
        assert_eq!(out, "403 2", "try {i}: {err}");
    }
    node.shutdown().await;
}

/// The 403 for a Host outside the allowlist names a URL of this node in the scheme it serves
/// (`https://` on a TLS node, where it used to say `http://127.0.0.1:PORT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_not_allowed_names_the_https_url_on_a_tls_node() {
    let (_dir, node, cert) = tls_node().await;
    let pem = std::fs::read(&cert).unwrap();
    let c = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).http1_only().build().unwrap();
    let r = c.get(format!("{}/healthz", node.base_url())).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "host_not_allowed");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains(&format!("use https://127.0.0.1:{} ", node.local_addr().port())), "{m}");
    assert!(!m.contains("http://"), "{m}");
    node.shutdown().await;
}

/// An HTTP/2 connection over TLS (ALPN h2) to `node`, trusting its self-signed certificate.
async fn h2_connect(node: &LocalNode, cert: &std::path::Path) -> h2::client::SendRequest<bytes::Bytes> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The protocol fault itself, seen with the `h2` crate: a POST whose body follows its headers a
/// moment later (as it does from curl) gets its 401, and the stream ends without a reset. Without
/// the fix the node answers on the headers and resets the stream with RST_STREAM(NO_ERROR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_ends_the_http2_stream_without_a_reset() {
    let (_dir, node, cert) = tls_node().await;
    let client = h2_connect(&node, &cert).await;
    let body = br#"{"name": "laptop", "scopes": ["inference"]}"#;
    for i in 0..TRIES / 5 {
        let mut client = client.clone().ready().await.unwrap();
        let req = axum::http::Request::post(format!("https://127.0.0.1:{}/api/keys", node.local_addr().port()))
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(req, false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Without the fix the stream may already be reset; then sending fails or is dropped.
        let _ = send.send_data(bytes::Bytes::from_static(body), true);
        let response = response.await.unwrap_or_else(|e| panic!("try {i}: {e}"));
        assert_eq!(response.status(), 401, "try {i}");
        let mut recv = response.into_body();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("try {i}: the response body broke: {e}"));
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        // A reset follows the response's last frame at once when there is one.
        let reset = tokio::time::timeout(Duration::from_millis(200), std::future::poll_fn(|cx| send.poll_reset(cx))).await;
        assert!(!matches!(reset, Ok(Ok(_))), "try {i}: the stream was reset after the response: {reset:?}");
    }
    node.shutdown().await;
}
