//! Reliability and load: kill -9 during streams then restart; bounded loopback load.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_streams_then_restart_keeps_exactly_one_receipt_per_completed_response() {
    let home = tempdir("kill9");
    let mut d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let model = model_id(&d, &c, &key).await;

    // Some responses that complete.
    let mut completed: Vec<String> = Vec::new();
    for i in 0..3 {
        let v: Value = c
            .post(d.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": format!("hello {i}")}], "max_tokens": 4}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        completed.push(v["b3iq_receipt_id"].as_str().unwrap().to_string());
    }
    // Long streams that are cut by kill -9 after their first chunks.
    let mut streams = Vec::new();
    for i in 0..4 {
        let r = c
            .post(d.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": format!("Tell a long story number {i}")}], "max_tokens": 400, "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r.bytes_stream());
    }
    for s in streams.iter_mut() {
        let first = s.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
    }
    d.kill9();
    // Drain what the streams got: none may have completed with [DONE].
    let mut done_streams = 0;
    for mut s in streams {
        let mut body = Vec::new();
        while let Some(Ok(b)) = s.next().await {
            body.extend_from_slice(&b);
        }
        if String::from_utf8_lossy(&body).contains("[DONE]") {
            done_streams += 1;
        }
    }

    // Integrity after the crash.
    let conn = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    drop(conn);

    // Restart on the same home: claimed, same identity, serving.
    let mut d2 = Daemon::start(&home);
    assert!(d2.setup_token.is_none(), "a claimed node prints no setup URL");
    let v: Value = c.get(d2.url("/v1/models")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["id"], model.as_str());
    let v: Value = c
        .post(d2.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "after restart"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    completed.push(v["b3iq_receipt_id"].as_str().unwrap().to_string());
    d2.stop();

    let conn = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let rows: Vec<(String, String, Vec<u8>)> = conn
        .prepare("SELECT id, request_id, signed FROM receipts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for c in &completed {
        assert_eq!(ids.iter().filter(|i| **i == c.as_str()).count(), 1, "completed response {c} must have exactly one receipt");
    }
    let req_ids: HashSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(req_ids.len(), rows.len(), "no duplicated request ids");
    // Only completed responses have receipts (streams cut by the crash have none, unless one
    // finished with [DONE] before the kill).
    assert_eq!(rows.len(), completed.len() + done_streams);
    // Every stored receipt verifies offline.
    let out = std::process::Command::new(bin()).args(["receipts", "export"]).env("B3IQ_HOME", &home).output().unwrap();
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rep = b3iq_host::ops::verify_export(&export, None).unwrap();
    assert_eq!(rep.valid, rows.len());
    assert!(rep.invalid.is_empty());
    let usage: i64 = conn.query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0)).unwrap();
    assert_eq!(usage as usize, rows.len(), "usage rows and receipts are written together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_load_at_concurrency_16_has_no_5xx_and_only_429_with_retry_after() {
    let home = tempdir("load");
    // A small queue so the load really fills it.
    write_config(&home, json!({"parallel": 4, "max_queue": 4}));
    let mut d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let model = model_id(&d, &c, &key).await;
    let rss_before = d.rss_kb();

    let total = 240usize;
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..total {
        let (c, url, key, model, sem) = (c.clone(), d.url("/v1/chat/completions"), key.clone(), model.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let stream = i % 2 == 0;
            let r = c
                .post(url)
                .bearer_auth(&key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": format!("n{i}")}], "max_tokens": 3, "stream": stream}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body = r.text().await.unwrap();
            (status, retry, body, stream)
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let (status, retry, body, stream) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                if stream {
                    assert!(body.contains("data: [DONE]"), "{body}");
                }
            }
            429 => {
                limited += 1;
                let secs: u64 = retry.expect("429 carries Retry-After").parse().unwrap();
                assert!(secs >= 1);
                let e: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(e["error"]["code"], "queue_full");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok + limited, total);
    assert!(ok > 0);
    let rss_after = d.rss_kb();
    eprintln!("load: {ok} ok, {limited} x 429; RSS {rss_before} kB -> {rss_after} kB");
    assert!(rss_after < rss_before + 200 * 1024, "memory grew from {rss_before} kB to {rss_after} kB");

    // Exactly one receipt per 200.
    let v: Value = c.get(d.url("/metrics")).header("cookie", &cookie).send().await.unwrap().text().await.map(|t| json!(t)).unwrap();
    let text = v.as_str().unwrap();
    assert!(text.contains(&format!("b3iq_receipts_stored {ok}")), "{text}");
    d.stop();
}
