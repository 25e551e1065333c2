//! The local node against hostile callers on loopback (issue "Local node hardening"): each test
//! replays one attack on the real daemon and asserts the bound that must hold. Loops are bounded
//! and every client stays on loopback (127.0.0.0/8, where each address is its own source).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A client whose connections come from `127.0.0.N`.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn login(c: &reqwest::Client, d: &Daemon, user: &str, password: &str) -> reqwest::Response {
    c.post(d.url("/api/session/login")).json(&json!({"username": user, "password": password})).send().await.unwrap()
}

/// Fault 1: 24 wrong passwords at once for the real owner from one source. The count and the
/// check are one step before any hash, so exactly the allowed guesses reach the password check
/// and the rest get 429 with Retry-After; the lock is per source, so the owner signs in from
/// another address (fault 9), and `b3iqd owner reset-password` clears every lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_get_at_most_the_allowed_guesses_and_lock_only_their_source() {
    let home = tempdir("hardening-login");
    let d = Daemon::start(&home);
    let c = client();
    claim(&d, &c).await;

    let attacker = client_from(9);
    let tries = (0..24).map(|i| {
        let (a, d) = (attacker.clone(), &d);
        async move { login(&a, d, "owner", &format!("wrong password {i}")).await }
    });
    let responses = futures_util::future::join_all(tries).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    // At most BACKOFF_AFTER_FAILURES (3) guesses reach the password check (fewer when the hash
    // bound turns one away as `sign_in_busy`); every other attempt is a 429.
    assert!((1..=3).contains(&checked), "{checked} guesses were checked: {statuses:?}");
    assert_eq!(checked + refused.len(), 24, "{statuses:?}");
    for r in &refused {
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=300).contains(&retry), "Retry-After {retry}");
    }
    // The lock grows with each further failure (1 s after the third, then 2 s, ...): one more
    // wrong guess (checked if the 1 s lock already passed), then even the right password is
    // refused from this source...
    let again = login(&attacker, &d, "owner", "one more wrong guess").await.status();
    assert!(again == 401 || again == 429, "{again}");
    assert_eq!(login(&attacker, &d, "owner", PASSWORD).await.status(), 429);
    // ...while the owner on another address signs in.
    assert_eq!(login(&client_from(1), &d, "owner", PASSWORD).await.status(), 200);

    // The on-machine recovery: a new password from stdin, sessions ended, locks cleared.
    let out = std::process::Command::new(bin())
        .args(["owner", "reset-password"])
        .env("B3IQ_HOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"a new password after recovery\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("recovery"), "the password is never echoed");
    // Nothing on stdin: a clear refusal, nothing changed.
    let empty = std::process::Command::new(bin()).args(["owner", "reset-password"]).env("B3IQ_HOME", &home).stdin(std::process::Stdio::null()).output().unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password read from stdin"), "{}", String::from_utf8_lossy(&empty.stderr));
    assert_eq!(login(&attacker, &d, "owner", "a new password after recovery").await.status(), 200, "locks cleared");
    assert_eq!(login(&client_from(1), &d, "owner", PASSWORD).await.status(), 401, "old password gone");
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let n: i64 = db.query_row("SELECT COUNT(*) FROM audit_events WHERE action = 'owner.reset_password'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "the recovery is audited");
    let typed: i64 = db.query_row("SELECT COUNT(*) FROM audit_events WHERE target LIKE '%wrong password%' OR detail LIKE '%wrong password%'", [], |r| r.get(0)).unwrap();
    assert_eq!(typed, 0, "no typed input in the audit log");
}

/// Fault 2: 64 sign-ins at once with unknown user names, each from its own loopback address (so
/// no per-source lock helps), and forged setup tokens against a claimed node. Password hashes are
/// bounded process-wide, so the daemon's RSS stays within 100 MB of idle; a claim on a claimed
/// node is refused before any hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_strangers_cannot_make_the_node_hash_without_bound() {
    let home = tempdir("hardening-burst");
    let d = Daemon::start(&home);
    let c = client();
    claim(&d, &c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = d.rss_kb();
    assert!(idle_kb > 0);

    let mut peak_kb = idle_kb;
    for round in 0..2u8 {
        let tries = (0..64u8).map(|i| {
            let c = client_from(10 + i);
            let d = &d;
            async move { login(&c, d, &format!("stranger{round}_{i}"), "not the password at all").await.status().as_u16() }
        });
        let sampler = async {
            let mut peak = 0;
            for _ in 0..40 {
                peak = peak.max(d.rss_kb());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            peak
        };
        let (statuses, peak) = tokio::join!(futures_util::future::join_all(tries), sampler);
        peak_kb = peak_kb.max(peak).max(d.rss_kb());
        assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
        assert!(statuses.contains(&429), "the hash bound refused some: {statuses:?}");
    }
    // Forged, well-formed setup tokens on a claimed node: 409 before any hash.
    let forged: Vec<_> = (0..16)
        .map(|_| {
            let body = json!({"setup_token": b3iq_host::creds::new_setup_token(), "username": "intruder", "password": "correct horse battery staple"});
            let (c, d) = (c.clone(), &d);
            async move { c.post(d.url("/api/setup/claim")).json(&body).send().await.unwrap().status().as_u16() }
        })
        .collect();
    let statuses = futures_util::future::join_all(forged).await;
    assert!(statuses.iter().all(|s| *s == 409), "{statuses:?}");
    peak_kb = peak_kb.max(d.rss_kb());
    let grew_mb = peak_kb.saturating_sub(idle_kb) / 1024;
    assert!(grew_mb < 100, "RSS grew {grew_mb} MB under the burst (idle {} MB, peak {} MB)", idle_kb / 1024, peak_kb / 1024);
    // The owner still signs in afterwards.
    assert_eq!(login(&client_from(1), &d, "owner", PASSWORD).await.status(), 200);
    let v: Value = c.get(d.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ok");
}

/// A raw TCP connection to the daemon.
async fn raw(d: &Daemon) -> tokio::net::TcpStream {
    let addr = d.base.trim_start_matches("http://").to_string();
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Seconds until the server closes `s` (reads until EOF or error), at most `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Fault 3: connections that are silent, dribble a header byte at a time, idle on keep-alive or
/// stall their body are closed on the configured timeouts; a key is checked before a body is
/// read; SIGTERM with a half-sent request open still stops the daemon within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_silent_connections_are_closed_and_shutdown_has_a_deadline() {
    use tokio::io::AsyncWriteExt;
    let home = tempdir("hardening-timeouts");
    write_config(&home, json!({"header_timeout_s": 2, "body_timeout_s": 2, "shutdown_grace_s": 2}));
    let mut d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let limit = Duration::from_secs(8);

    // Silent.
    let mut silent = raw(&d).await;
    let t = closed_within(&mut silent, limit).await.expect("a silent connection is closed");
    assert!(t >= Duration::from_millis(1500), "closed after {t:?}, before the 2 s header timeout");
    // One header byte every 500 ms: never a whole head within 2 s.
    let mut slow = raw(&d).await;
    let dribble = async {
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    };
    assert!(tokio::time::timeout(limit, dribble).await.unwrap_or(false), "a header sent a byte at a time is cut off");
    // Idle keep-alive after a complete request.
    let mut idle = raw(&d).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut idle, limit).await.is_some(), "an idle keep-alive connection is closed");
    // A stalled body: 408 from the body timeout.
    let mut stalled = raw(&d).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"model\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while let Ok(n) = stalled.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(limit, read).await.expect("the server answers a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A 2 MiB body without a key: 401 (the key is checked before the body is read), not 413.
    let big = vec![b'x'; 2 << 20];
    let r = c.post(d.url("/v1/chat/completions")).header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // SIGTERM with a half-sent request open: the daemon still exits, within grace + margin.
    let mut half = raw(&d).await;
    half.write_all(b"POST /api/session/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{").await.unwrap();
    let t0 = std::time::Instant::now();
    d.stop();
    assert!(d.child.try_wait().unwrap().is_some(), "b3iqd is still running after SIGTERM");
    assert!(t0.elapsed() < Duration::from_secs(10), "stopping took {:?}", t0.elapsed());
}

/// Fault 4: a client that reads part of a stream and goes away still gets a durable receipt for
/// the tokens produced, marked cancelled, and usage counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_cut_by_the_client_is_receipted_and_counted() {
    use futures_util::StreamExt;
    let home = tempdir("hardening-cancel");
    let d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (key_id, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let model = model_id(&d, &c, &key).await;
    let r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "stream": true, "max_tokens": 400, "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut chunks = 0;
    let mut seen = String::new();
    while let Some(b) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&b.unwrap()));
        chunks = seen.matches("data: ").count();
        if chunks >= 20 {
            break;
        }
    }
    assert!(chunks >= 20, "the stream delivered {chunks} chunks");
    assert!(!seen.contains("[DONE]"), "the answer was cut before its end");
    drop(body);

    // The receipt lands shortly after the server notices the closed socket.
    let mut receipts = Vec::new();
    for _ in 0..100 {
        let v: Value = c.get(d.url("/api/receipts")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
        receipts = v["receipts"].as_array().cloned().unwrap_or_default();
        if !receipts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receipts.len(), 1, "one receipt for the cut stream");
    let rc = &receipts[0];
    assert_eq!(rc["outcome"], "cancelled");
    assert_eq!(rc["key_id"], key_id.as_str());
    assert_eq!(rc["valid"], true);
    let completion = rc["completion_tokens"].as_u64().unwrap();
    assert!((10..400).contains(&completion), "completion_tokens {completion} for ~20 delivered chunks");
    let usage: Value = c.get(d.url("/api/usage")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    let counted: u64 = usage["by_key"].as_array().unwrap().iter().filter(|k| k["key_id"] == key_id.as_str()).map(|k| k["completion_tokens"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, completion, "usage counts the cancelled tokens: {usage}");
}

/// Faults 5 and 6: parallel owner jobs get distinct sequences; jobs left queued or running by a
/// killed daemon are failed as interrupted at the next start, never left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_jobs_get_distinct_sequences_and_a_kill_does_not_leave_jobs_running() {
    let home = tempdir("hardening-jobs");
    let mut d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let submit = |kind: &'static str| {
        let (c, d, cookie) = (c.clone(), &d, cookie.clone());
        async move { c.post(d.url("/api/jobs")).header("cookie", cookie).json(&json!({"kind": kind})).send().await.unwrap().status().as_u16() }
    };
    let statuses = futures_util::future::join_all((0..8).map(|_| submit("support_bundle"))).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    {
        let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
        let (n, distinct): (i64, i64) = db.query_row("SELECT COUNT(*), COUNT(DISTINCT sequence) FROM job_seen", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, distinct), (8, 8));
    }
    // Two benchmarks: one runs, the other waits for the job lock; kill -9 while they do.
    assert_eq!(submit("run_benchmark").await, 202);
    assert_eq!(submit("run_benchmark").await, 202);
    d.kill9();
    let unfinished: i64 = {
        let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
        let benchmarks: i64 = db.query_row("SELECT COUNT(*) FROM jobs WHERE kind = 'run_benchmark' AND state IN ('queued','running')", [], |r| r.get(0)).unwrap();
        assert!(benchmarks >= 1, "a benchmark was still queued or running at the kill");
        db.query_row("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')", [], |r| r.get(0)).unwrap()
    };
    let d = Daemon::start(&home);
    let cookie = claim_or_login(&d, &c).await;
    let v: Value = c.get(d.url("/api/jobs")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    assert!(jobs.iter().all(|j| j["state"] != "running" && j["state"] != "queued"), "{v}");
    let interrupted = jobs.iter().filter(|j| j["state"] == "failed" && j["error"].as_str().unwrap_or("").starts_with("interrupted")).count();
    assert_eq!(interrupted as i64, unfinished);
}

async fn claim_or_login(d: &Daemon, c: &reqwest::Client) -> String {
    let r = c.post(d.url("/api/session/login")).json(&json!({"username": "owner", "password": PASSWORD})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

/// Faults 8, 10, 11, 12, 13 (Host names, key lifetimes, HTTP/2, the address shown, CSRF scheme
/// and JSON content type).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_lifetimes_http2_address_and_content_rules() {
    let home = tempdir("hardening-small");
    let d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    // 8: b3iq.local is not advertised, so it is refused.
    assert_eq!(c.get(d.url("/healthz")).header("host", "b3iq.local").send().await.unwrap().status(), 403);
    // 10: a lifetime that would overflow is a 400 naming the range; no key is made.
    let r = c.post(d.url("/api/keys")).header("cookie", &cookie).json(&json!({"name": "x", "expires_in_s": u64::MAX})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("315360000"), "{e}");
    let v: Value = c.get(d.url("/api/keys")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert!(v["keys"].as_array().unwrap().is_empty());
    // 11: HTTP/2 with prior knowledge is checked on its :authority and served.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));
    // 12: `b3iqd status` reports the address actually bound (serve --listen 127.0.0.1:0).
    let out = std::process::Command::new(bin()).arg("status").env("B3IQ_HOME", &home).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["listen"].as_str().unwrap(), d.base.trim_start_matches("http://"));
    assert_eq!(status["running"], true);
    // 13: an https:// Origin is not this plain-HTTP server; JSON bodies need the JSON type.
    let origin = d.base.replace("http://", "https://");
    let r = c.post(d.url("/api/keys")).header("cookie", &cookie).header("origin", origin).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.post(d.url("/api/keys")).header("cookie", &cookie).header("content-type", "text/plain").body(r#"{"name":"x"}"#).send().await.unwrap();
    assert_eq!(r.status(), 415);
    // 7: 300 bad claims and a password typed into the user field: a bounded, aggregated audit
    // log that holds no typed input.
    let audit_rows = || rusqlite::Connection::open(home.join("state.db")).unwrap().query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get::<_, i64>(0)).unwrap();
    let before = audit_rows();
    for _ in 0..300 {
        let body = json!({"setup_token": "b3iq_setup_garbage", "username": "x", "password": "correct horse battery staple"});
        assert_eq!(c.post(d.url("/api/setup/claim")).json(&body).send().await.unwrap().status(), 401);
    }
    let r = login(&client_from(3), &d, "MySecretPassw0rd!", "oops").await;
    assert_eq!(r.status(), 401);
    let added = audit_rows() - before;
    assert!(added <= 3, "300 bad claims and one bad sign-in added {added} audit rows");
    let v: Value = c.get(d.url("/api/audit")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert!(!v.to_string().contains("MySecretPassw0rd"), "typed input reached the audit log: {v}");
    // 13: sign out everywhere ends this session and every other.
    let other = claim_or_login(&d, &client_from(4)).await;
    let r = c.post(d.url("/api/session/logout-all")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ended: Value = r.json().await.unwrap();
    assert!(ended["sessions_ended"].as_u64().unwrap() >= 2, "{ended}");
    for ck in [&cookie, &other] {
        assert_eq!(c.get(d.url("/api/session")).header("cookie", ck.as_str()).send().await.unwrap().status(), 401);
    }
}

/// The `Set-Cookie` of a response as `name=value`, if any.
fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers().get("set-cookie").map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
}

/// "Also": TLS for LAN binds. A self-signed certificate made at first start and kept across
/// restarts, its SHA-256 fingerprint reported where clients can pin it (and equal to what the
/// handshake presents), `__Host-` + `Secure` cookies, the CSRF check on the `https` origin,
/// HTTP/2 by ALPN, a plain-HTTP request answered with a pointer to https. Fault 13's session
/// rotation rides along (`session_rotate_s: 1`): a fresh secret after the rotation age, the old
/// one kept for the grace, sign-out ending the whole chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_pins_a_persistent_certificate_with_host_cookies_and_sessions_rotate() {
    let home = tempdir("hardening-tls");
    write_config(&home, json!({"tls": "self-signed", "session_rotate_s": 1}));
    let mut d = Daemon::start(&home);
    assert!(d.base.starts_with("https://127.0.0.1:"), "{}", d.base);
    let pem = std::fs::read(home.join("tls/self-signed.crt.pem")).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // The fingerprint the node reports is the certificate the handshake presents, and the one
    // `b3iqd serve` printed.
    let r = c.get(d.url("/api/setup/status")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    let presented = r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate()).unwrap().to_vec();
    let v: Value = r.json().await.unwrap();
    let fp = v["transport"]["tls"]["fingerprint_sha256"].as_str().unwrap().to_string();
    assert_eq!(fp, b3iq_host::context::tls::fingerprint_sha256(&presented));
    assert_eq!((v["transport"]["scheme"].as_str(), v["transport"]["tls"]["mode"].as_str()), (Some("https"), Some("self-signed")));
    assert!(d.stdout.lock().unwrap().contains(&fp), "serve prints the fingerprint");
    let out = std::process::Command::new(bin()).arg("status").env("B3IQ_HOME", &home).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["tls"]["fingerprint_sha256"].as_str(), Some(fp.as_str()));

    // Plain HTTP on the TLS port: a 400 naming the node's own https URL (never the Host sent),
    // with the security headers of every other response; not a dead socket.
    let port = d.base.rsplit(':').next().unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp)).await.unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("https_required") && resp.contains(&format!("https://127.0.0.1:{port}/")), "{resp}");
    assert!(!resp.contains("evil.example"), "the unchecked Host is echoed: {resp}");
    let lower = resp.to_ascii_lowercase();
    for h in ["x-content-type-options: nosniff", "referrer-policy: no-referrer", "x-frame-options: deny"] {
        assert!(lower.contains(h), "{h} missing: {resp}");
    }

    // Claim over TLS: the cookie is `__Host-` and `Secure`.
    let tok = d.setup_token.clone().unwrap();
    let r = c.post(d.url("/api/setup/claim")).json(&json!({"setup_token": tok, "username": "owner", "password": PASSWORD})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let raw = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(raw.starts_with("__Host-b3iq_session=") && raw.contains("; Secure") && raw.contains("Path=/") && !raw.contains("Domain"), "{raw}");
    let cookie = set_cookie(&r).unwrap();
    let session_end = r.json::<Value>().await.unwrap()["expires_at"].as_u64().unwrap();
    // The plain-HTTP cookie name is not this server's.
    let plain = cookie.replacen("__Host-b3iq_session", "b3iq_session", 1);
    assert_eq!(c.get(d.url("/api/session")).header("cookie", &plain).send().await.unwrap().status(), 401);
    // CSRF: over TLS the origin is https://host; http://host is another origin.
    let host = d.base.trim_start_matches("https://").to_string();
    let login = |origin: String| c.post(d.url("/api/session/login")).header("origin", origin).json(&json!({"username": "owner", "password": PASSWORD})).send();
    assert_eq!(login(format!("http://{host}")).await.unwrap().status(), 403);
    assert_eq!(login(format!("https://{host}")).await.unwrap().status(), 200);

    // Rotation: once the secret is a second old, the next request gets a new one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(d.url("/api/session")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rotated = set_cookie(&r).expect("a rotated cookie");
    assert!(rotated.starts_with("__Host-b3iq_session=") && rotated != cookie, "{rotated}");
    // The old secret still works within the grace and is not rotated a second time; it reports
    // the session's end, not the grace's (which has its own field).
    let r = c.get(d.url("/api/session")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!((r.status().as_u16(), set_cookie(&r)), (200, None));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_at"].as_u64(), Some(session_end), "{v}");
    let grace = v["grace_expires_at"].as_u64().unwrap_or_else(|| panic!("no grace end: {v}"));
    assert!(grace < session_end, "{v}");
    let v: Value = c.get(d.url("/api/session")).header("cookie", &rotated).send().await.unwrap().json().await.unwrap();
    assert_eq!((v["expires_at"].as_u64(), &v["grace_expires_at"]), (Some(session_end), &Value::Null), "{v}");
    // Sign-out with the new secret ends the old one too.
    let mut newest = rotated.clone();
    let r = c.post(d.url("/api/session/logout")).header("cookie", &rotated).send().await.unwrap();
    assert_eq!(r.status(), 204);
    if let Some(c2) = set_cookie(&r) {
        newest = c2;
    }
    for ck in [&cookie, &rotated, &newest] {
        assert_eq!(c.get(d.url("/api/session")).header("cookie", ck.as_str()).send().await.unwrap().status(), 401, "{ck}");
    }

    // Logs written to a pipe (a file, journald) carry no ANSI colour codes.
    assert!(!d.logs().contains('\u{1b}'), "escape codes in a log that is not a terminal");
    assert!(d.logs().contains("serving over TLS"));
    // Stopped, `b3iqd status` still shows the fingerprint of the certificate on disk.
    d.stop();
    let out = std::process::Command::new(bin()).arg("status").env("B3IQ_HOME", &home).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], false);
    assert_eq!((status["tls"]["mode"].as_str(), status["tls"]["fingerprint_sha256"].as_str()), (Some("self-signed"), Some(fp.as_str())), "{status}");
    // A restart serves the same certificate: pinned clients keep working.
    let mut d2 = Daemon::start(&home);
    let r = c.get(d2.url("/api/setup/status")).send().await.unwrap();
    let again = r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate()).unwrap().to_vec();
    assert_eq!(b3iq_host::context::tls::fingerprint_sha256(&again), fp);
    assert!(!d2.stdout.lock().unwrap().contains("NEW self-signed certificate"), "same names, same certificate");
    d2.stop();

    // A new name makes a new certificate: `serve` says so on stdout with both fingerprints, and
    // the previous certificate and key (0600) are kept.
    write_config(&home, json!({"tls": "self-signed", "session_rotate_s": 1, "allowed_hosts": ["box.lan"]}));
    let mut d3 = Daemon::start(&home);
    let c3 = reqwest::Client::builder().danger_accept_invalid_certs(true).tls_info(true).build().unwrap();
    let r = c3.get(d3.url("/healthz")).send().await.unwrap();
    let new_fp = b3iq_host::context::tls::fingerprint_sha256(r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|t| t.peer_certificate()).unwrap());
    assert_ne!(new_fp, fp);
    let printed = d3.stdout.lock().unwrap().clone();
    let line = printed.lines().find(|l| l.contains("NEW self-signed certificate")).unwrap_or_else(|| panic!("not announced on stdout: {printed}"));
    assert!(line.contains(&fp) && line.contains(&new_fp) && line.contains("self-signed.crt.pem.previous"), "{line}");
    assert_eq!(std::fs::read(home.join("tls/self-signed.crt.pem.previous")).unwrap(), pem, "the previous certificate is kept");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("tls/self-signed.key.pem.previous")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    d3.stop();

    // The previous key with the new certificate: refused in words, naming both files.
    let (cert, key) = (home.join("tls/self-signed.crt.pem"), home.join("tls/self-signed.key.pem.previous"));
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-model", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("B3IQ_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("private key") && err.contains("does not match the certificate"), "{err}");
    assert!(err.contains(&cert.display().to_string()) && err.contains(&key.display().to_string()) && !err.contains("KeyMismatch"), "{err}");
}

/// `--tls provided` without the files names the flags that give them and the config.json keys.
#[test]
fn tls_provided_without_files_names_the_flags_and_the_config_keys() {
    let home = tempdir("hardening-tls-provided");
    let out = std::process::Command::new(bin()).args(["serve", "--listen", "127.0.0.1:0", "--no-model", "--tls", "provided"]).env("B3IQ_HOME", &home).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["--tls-cert", "--tls-key", "\"tls_cert\"", "\"tls_key\"", "config.json"] {
        assert!(err.contains(part), "{part} missing: {err}");
    }
}
