//! End-to-end tests of the real `b3iqd` binary with the default model, over HTTP on loopback.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_claim_keys_chat_stream_receipts_and_security() {
    let home = tempdir("e2e");
    let mut d = Daemon::start(&home);
    let c = client();

    // Setup status before claim; /v1 answers 503; owner routes 401.
    let s: Value = c
        .get(d.url("/api/setup/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["claimed"], false);
    assert!(s["node_id"].as_str().unwrap().starts_with("b3n_"));
    assert!(!s["node_code"].as_str().unwrap().is_empty());
    assert!(s["setup_token_expires_at"].as_u64().is_some());
    let r = c
        .get(d.url("/v1/models"))
        .bearer_auth("b3iq_local_x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "not_claimed");
    assert_eq!(e["error"]["type"], "service_unavailable");
    assert_eq!(
        c.get(d.url("/api/keys")).send().await.unwrap().status(),
        401
    );
    // the setup-token file is 0600
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(home.join("setup-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
        let m = std::fs::metadata(home.join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
    }

    // Wrong token, cross-origin claim: refused. Right token: 201 + cookie attributes.
    let tok = d.setup_token.clone().unwrap();
    // Stdout and stderr are pipes here (as under systemd or with a redirect): the setup token
    // never reaches them; stdout names the token file instead.
    {
        let (out, err) = (
            d.stdout.lock().unwrap().clone(),
            d.stderr.lock().unwrap().clone(),
        );
        assert!(
            !out.contains(&tok) && !err.contains(&tok),
            "the setup token leaked into the daemon's output:\n{out}\n{err}"
        );
        assert!(
            out.contains(&home.join("setup-token").display().to_string()),
            "{out}"
        );
    }
    let r = c
        .post(d.url("/api/setup/claim"))
        .json(&json!({"setup_token": "b3iq_setup_nope", "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(d.url("/api/setup/claim"))
        .header("origin", "http://evil.example")
        .json(&json!({"setup_token": tok, "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(d.url("/api/setup/claim"))
        .json(&json!({"setup_token": tok, "username": "owner", "password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(d.url("/api/setup/claim"))
        .json(&json!({"setup_token": tok, "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let session_secret = cookie.split_once('=').unwrap().1.to_string();
    // single use
    let r = c
        .post(d.url("/api/setup/claim"))
        .json(&json!({"setup_token": tok, "username": "x", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(r.status() == 409 || r.status() == 401, "{}", r.status());
    assert!(!home.join("setup-token").exists());

    // Host header allowlist (DNS rebinding).
    let r = c
        .get(d.url("/api/setup/status"))
        .header("host", "evil.example:7420")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "host_not_allowed");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("use {}", d.base)),
        "{e}"
    );
    // `b3iq.local` is not advertised, so it is not accepted (a LAN mDNS answer could rebind it).
    let r = c
        .get(d.url("/healthz"))
        .header("host", "b3iq.local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(d.url("/healthz"))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // CSRF: cookie-authenticated POST from another origin is refused; same origin works.
    let r = c
        .post(d.url("/api/keys"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(d.url("/api/keys"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let origin = d.base.clone();
    let r = c
        .post(d.url("/api/keys"))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let key = v["secret"].as_str().unwrap().to_string();
    let key_id = v["key"]["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("b3iq_local_"));
    // listed without the secret
    let list = c
        .get(d.url("/api/keys"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains(&key_id) && !list.contains(&key), "{list}");
    let (_, metrics_key) = create_key(&d, &c, &cookie, &["metrics"]).await;

    // /v1/models
    let model = model_id(&d, &c, &key).await;
    assert!(!model.is_empty());

    // Non-streaming chat.
    let r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "SECRET-PROMPT-123 say hi"}], "max_tokens": 8, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!((1..=8).contains(&usage["completion_tokens"].as_u64().unwrap()));
    let receipt_id = v["b3iq_receipt_id"].as_str().unwrap().to_string();
    // the receipt is already stored when the response arrives
    let rc: Value = c
        .get(d.url(&format!("/api/receipts/{receipt_id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rc["valid"], true);
    assert_eq!(rc["key_id"], key_id.as_str());
    assert_eq!(rc["completion_tokens"], usage["completion_tokens"]);

    // Streaming chat with include_usage.
    let r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Count to five"}], "max_tokens": 12, "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let evs = sse_events(&body);
    assert_eq!(evs.last().unwrap(), "[DONE]", "{body}");
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    let fin = &chunks[chunks.len() - 2];
    assert!(fin["choices"][0]["finish_reason"].is_string());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    // Completions, streaming and not.
    let v: Value = c
        .post(d.url("/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "prompt": "The capital of France is", "max_tokens": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    let body = c
        .post(d.url("/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "prompt": "One, two,", "max_tokens": 4, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sse_events(&body).last().unwrap(), "[DONE]");

    // Error cases, OpenAI-shaped.
    let chat = |k: Option<&str>, body: Value| {
        let mut rq = c.post(d.url("/v1/chat/completions")).json(&body);
        if let Some(k) = k {
            rq = rq.bearer_auth(k);
        }
        rq.send()
    };
    let ok_body =
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let r = chat(None, ok_body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = chat(
        Some("b3iq_local_00000000000000000000000000000000aaaaaa"),
        ok_body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let r = chat(Some(&metrics_key), ok_body.clone()).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = chat(
        Some(&key),
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
    let r = chat(
        Some(&key),
        json!({"model": model, "messages": [], "max_tokens": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = chat(
        Some(&key),
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = chat(
        Some(&key),
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_json");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let big = "x".repeat((1 << 20) + 1024);
    let r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Metrics: owner cookie or metrics-scoped key, not an inference-only key.
    let m = c
        .get(d.url("/metrics"))
        .bearer_auth(&metrics_key)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    let m = m.text().await.unwrap();
    assert!(
        m.contains("b3iq_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("b3iq_ttft_seconds_count"));
    assert!(m.contains("b3iq_receipts_stored 4"), "{m}");
    assert_eq!(
        c.get(d.url("/metrics"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // Usage per key and model.
    let u: Value = c
        .get(d.url("/api/usage?bucket=hour"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["by_key"][0]["key_id"], key_id.as_str());
    assert_eq!(u["by_key"][0]["requests"], 4);
    assert_eq!(u["by_model"][0]["model"], model.as_str());

    // Playground (owner) produces a receipt too.
    let p: Value = c
        .post(d.url("/api/playground/chat"))
        .header("cookie", &cookie)
        .json(&json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(p["receipt_id"].is_string(), "{p}");

    // Support grant: diagnostics only, bundle redacted, revocable.
    let g: Value = c
        .post(d.url("/api/support/grants"))
        .header("cookie", &cookie)
        .json(&json!({"ttl_s": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grant = g["secret"].as_str().unwrap().to_string();
    let gid = g["grant"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.get(d.url("/api/keys"))
            .bearer_auth(&grant)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.get(d.url("/v1/models"))
            .bearer_auth(&grant)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(d.url("/api/support/bundle"))
        .bearer_auth(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let bundle = r.bytes().await.unwrap();
    let files = b3iq_host::support::read_bundle(&bundle).unwrap();
    assert!(files.len() >= 6);
    let all: String = files.iter().map(|(n, t)| format!("{n}\n{t}\n")).collect();
    let conn = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let hashes: Vec<String> = conn
        .prepare("SELECT key_hash FROM api_keys UNION ALL SELECT secret_hash FROM support_grants UNION ALL SELECT password_hash FROM users UNION ALL SELECT id_hash FROM sessions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(hashes.len() >= 5);
    for secret in [
        key.as_str(),
        metrics_key.as_str(),
        grant.as_str(),
        tok.as_str(),
        PASSWORD,
        session_secret.as_str(),
        "SECRET-PROMPT-123",
        home.to_str().unwrap(),
    ] {
        assert!(!all.contains(secret), "bundle leaks {secret}");
    }
    for h in &hashes {
        assert!(!all.contains(h.as_str()), "bundle leaks a stored hash");
    }
    assert!(all.contains(&s["node_id"].as_str().unwrap().to_string()));
    let r = c
        .delete(d.url(&format!("/api/support/grants/{gid}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        c.get(d.url("/api/support/bundle"))
            .bearer_auth(&grant)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Jobs: signed, seen-set, audited.
    let j: Value = c
        .post(d.url("/api/jobs"))
        .header("cookie", &cookie)
        .json(&json!({"kind": "support_bundle"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jid = j["job"]["id"].as_str().unwrap().to_string();
    let mut state = String::new();
    for _ in 0..100 {
        let j: Value = c
            .get(d.url(&format!("/api/jobs/{jid}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = j["state"].as_str().unwrap().to_string();
        if state == "succeeded" || state == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "succeeded");
    let r = c
        .post(d.url("/api/jobs"))
        .header("cookie", &cookie)
        .json(&json!({"kind": "shell", "cmd": "rm -rf /"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let seen: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM job_seen WHERE job_id = ?1",
            [jid.trim_start_matches("job_")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seen, 1);
    let audit: Value = c
        .get(d.url("/api/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "node.claim",
        "key.create",
        "support.grant",
        "support.bundle",
        "job.accept",
        "job.execute",
    ] {
        assert!(actions.contains(&a), "missing audit {a}: {actions:?}");
    }

    // Revoke the key: 401 revoked.
    assert_eq!(
        c.delete(d.url(&format!("/api/keys/{key_id}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = chat(Some(&key), ok_body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "revoked_api_key");

    // Login backoff, logout.
    for _ in 0..3 {
        let r = c
            .post(d.url("/api/session/login"))
            .json(&json!({"username": "owner", "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c
        .post(d.url("/api/session/login"))
        .json(&json!({"username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = c
        .post(d.url("/api/session/login"))
        .json(&json!({"username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.post(d.url("/api/session/logout"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(d.url("/api/keys"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Wizard is served with CSP and no-store.
    let r = c.get(d.url("/setup/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = c.get(d.url("/setup/keys")).send().await.unwrap();
    assert_eq!(r.status(), 200, "index fallback for client routes");
    assert_eq!(
        c.get(d.url("/setup/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    d.stop();

    // No secret in any log line of the whole session.
    let logs = d.logs();
    assert!(logs.contains("request"), "debug logs were captured");
    for secret in [
        key.as_str(),
        metrics_key.as_str(),
        grant.as_str(),
        tok.as_str(),
        PASSWORD,
        session_secret.as_str(),
        "SECRET-PROMPT-123",
    ] {
        assert!(!logs.contains(secret), "log leaks a secret: {secret}");
    }
    for h in &hashes {
        assert!(!logs.contains(h.as_str()), "log leaks a stored hash");
    }
    // Stdout was a pipe, so the setup token was never printed (issue 11, point 9: it is printed
    // once only to a terminal); the token file's path was printed instead.
    assert_eq!(d.stdout.lock().unwrap().matches(tok.as_str()).count(), 0);

    // Offline: export and verify receipts with the CLI; a tampered export fails.
    let export = home.join("receipts.json");
    let st = Command::new(bin())
        .args(["receipts", "export", "--out"])
        .arg(&export)
        .env("B3IQ_HOME", &home)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(bin())
        .args(["receipts", "verify"])
        .arg(&export)
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["checked"], 5);
    assert_eq!(rep["valid"], 5);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let s0 = v["receipts"][0]["signed"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &s0[..s0.len() - 2],
        if s0.ends_with("00") { "01" } else { "00" }
    );
    v["receipts"][0]["signed"] = json!(flipped);
    std::fs::write(&export, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = Command::new(bin())
        .args(["receipts", "verify"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn lan_bind_is_refused_before_an_owner_exists() {
    let home = tempdir("lan");
    let out = Command::new(bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--model"])
        .arg(model_path())
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before the node has an owner"), "{err}");
}

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["status", "--help"],
        vec!["hardware", "--help"],
        vec!["bench", "--help"],
        vec!["model", "--help"],
        vec!["model", "pull", "--help"],
        vec!["model", "list", "--help"],
        vec!["model", "rm", "--help"],
        vec!["model", "inspect", "--help"],
        vec!["keys", "--help"],
        vec!["keys", "create", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "revoke", "--help"],
        vec!["receipts", "--help"],
        vec!["receipts", "export", "--help"],
        vec!["receipts", "verify", "--help"],
        vec!["support-bundle", "--help"],
        vec!["setup", "--help"],
        vec!["wallet", "--help"],
        vec!["wallet", "register", "--help"],
        vec!["wallet", "stake", "--help"],
        vec!["wallet", "unbond", "--help"],
        vec!["wallet", "withdraw", "--help"],
        vec!["wallet", "stake-status", "--help"],
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
    }
}

/// Commands on an existing node refuse a home with no node instead of making one there, and
/// `setup --reset` prints the URL the node is reached at (the configured listen and TLS here).
#[test]
fn cli_needs_an_existing_node_and_setup_reset_prints_the_reachable_url() {
    let dir = tempdir("cli-home");
    let missing = dir.join("typo");
    for args in [
        vec!["status"],
        vec!["keys", "list"],
        vec!["wallet", "show"],
        vec!["receipts", "export"],
        vec!["network", "off"],
        vec!["unenroll"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .env("B3IQ_HOME", &missing)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on a missing home");
        assert!(err.contains("no node at"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // A mixed-case payout address with a wrong EIP-55 checksum is refused (one case flipped).
    let home = dir.join("node");
    let reset = |home: &std::path::Path| {
        let out = Command::new(bin())
            .args(["setup", "--reset"])
            .env("B3IQ_HOME", home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(reset(&home).starts_with("http://127.0.0.1:7420/setup/#token=b3iq_setup_"));
    let out = Command::new(bin())
        .args(["wallet", "set-address", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"])
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("EIP-55"), "{err}");
    // Configured for TLS on another address: the URL follows.
    let cfg_path = home.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["listen"] = json!("0.0.0.0:8443");
    cfg["tls"] = json!("self-signed");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let url = reset(&home);
    assert!(url.starts_with("https://127.0.0.1:8443/setup/#token=b3iq_setup_"), "{url}");
}

#[test]
fn cli_keys_setup_reset_and_expiring_token() {
    let home = tempdir("cli");
    // setup --reset with a 1 s lifetime; claim after expiry is refused with a clear message.
    let out = Command::new(bin())
        .args(["setup", "--reset", "--ttl-s", "1"])
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:7420/setup/#token=b3iq_setup_"),
        "{url}"
    );
    let token = url.split("#token=").nth(1).unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let db = b3iq_host::store::Db::open(&home.join("state.db")).unwrap();
    let e = b3iq_host::owner::auth::claim(
        &db,
        &b3iq_host::creds::HashSlots::default(),
        &token,
        "owner",
        PASSWORD,
        b3iq_host::context::unix_now(),
        60,
    )
    .unwrap_err();
    assert_eq!(e.code(), "setup_token_expired");
    assert!(e.to_string().contains("b3iqd setup --reset"));
    drop(db);

    // keys create writes the secret to a 0600 file, never to argv; list never shows it.
    let keyfile = home.join("k.key");
    let out = Command::new(bin())
        .args(["keys", "create", "--name", "ci", "--out"])
        .arg(&keyfile)
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success());
    let secret = std::fs::read_to_string(&keyfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(secret.starts_with("b3iq_local_"));
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let out = Command::new(bin())
        .args(["keys", "list"])
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("\"ci\"") && !list.contains(&secret));
    let id = serde_json::from_str::<Value>(&list).unwrap()["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Command::new(bin())
        .args(["keys", "revoke", &id])
        .env("B3IQ_HOME", &home)
        .status()
        .unwrap()
        .success());
    assert!(!Command::new(bin())
        .args(["keys", "revoke", "key_nope"])
        .env("B3IQ_HOME", &home)
        .status()
        .unwrap()
        .success());
    let out = Command::new(bin())
        .args(["status"])
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["claimed"], false);
    assert_eq!(st["integrity_check"], "ok");
}
