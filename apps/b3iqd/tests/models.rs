//! Several models served at once (issue 17, item 9): `b3iqd model import` two requantized
//! copies of the default model next to it, then the real daemon loads each on demand, stays
//! within its memory budget by unloading the least recently used idle model, never unloads a
//! model that is serving (503 `model_memory_budget` instead), and the owner loads and unloads
//! through `/api/models/load` and `/unload` (409 `model_busy` while in use).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use b3iq_runtime::quantize::{quantize_model, QuantType};
use common::{claim, client, create_key, tempdir, write_config, Daemon};
use serde_json::{json, Value};

/// A requantized copy of the default model, made once and cached beside it (the same files
/// b3iq-runtime's verification tests make).
fn model_copy(ty: QuantType) -> PathBuf {
    let src = common::model_path();
    let dst = src.parent().unwrap().join(format!("SmolLM2-135M-Instruct.{ty:?}.gguf"));
    if !dst.exists() {
        let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
        quantize_model(&src, &tmp, ty, 2).expect("quantize");
        std::fs::rename(&tmp, &dst).unwrap();
    }
    dst
}

fn b3iqd(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin()).args(args).env("B3IQ_HOME", home).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn served(d: &Daemon, c: &reqwest::Client, cookie: &str) -> Vec<String> {
    let v: Value = c.get(d.url("/api/models")).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
    let mut ids: Vec<String> = v["served"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn chat(d: &Daemon, c: &reqwest::Client, key: &str, model: &str) -> reqwest::Response {
    c.post(d.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap()
}

/// A streaming request that has produced its first chunk (its model is in use until it ends).
async fn busy(d: &Daemon, c: &reqwest::Client, key: &str, model: &str) -> reqwest::Response {
    let mut r = c
        .post(d.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
                      "max_tokens": 400, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    r
}

/// `in_flight` of each served model.
async fn in_flight(d: &Daemon, c: &reqwest::Client, cookie: &str) -> Vec<(String, u64)> {
    let v: Value = c.get(d.url("/api/models")).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
    v["served"].as_array().unwrap().iter().map(|m| (m["id"].as_str().unwrap().to_string(), m["in_flight"].as_u64().unwrap())).collect()
}

async fn owner_post(d: &Daemon, c: &reqwest::Client, cookie: &str, path: &str, model: &str) -> (u16, Value) {
    let r = c.post(d.url(path)).header("cookie", cookie).json(&json!({"model": model})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_models_load_on_demand_within_the_budget_and_the_least_recently_used_idle_one_gives_way() {
    let (q8, q4_0) = (model_copy(QuantType::Q8_0), model_copy(QuantType::Q4_0));
    let home = tempdir("models").join("home");
    // One 512-token slot per model: KV 30 layers x 512 cells x 192 x 2 x 2 B = 11.25 MiB, so
    // the estimates are about 106 (Q4_1), 144 (Q8_0) and 98 MiB (Q4_0): two fit in 300 MiB,
    // three do not.
    write_config(&home, json!({"parallel": 1, "context_tokens": 512, "max_loaded_models": 3, "model_memory_mb": 300}));
    let d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let default = common::model_id(&d, &c, &key).await;

    for f in [&q8, &q4_0] {
        let (ok, out, err) = b3iqd(&home, &["model", "import", f.to_str().unwrap()]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["path"].as_str().map(|p| Path::new(p).exists()), Some(true));
    }
    let (q8_id, q4_0_id) = ("smollm2-135m-instruct.q8_0", "smollm2-135m-instruct.q4_0");
    let (ok, out, _) = b3iqd(&home, &["model", "list"]);
    assert!(ok && out.contains(q8_id) && out.contains(q4_0_id), "{out}");

    // /v1/models lists what a request may name: the served model and both imports.
    let v: Value = c.get(d.url("/v1/models")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let mut listed: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed[0], default, "the loaded model first");
    listed[1..].sort();
    assert_eq!(listed[1..], [q4_0_id, q8_id]);
    assert_eq!(served(&d, &c, &cookie).await, [default.as_str()]);

    // A request loads its model beside the default (144 + 106 MiB fit).
    let r = chat(&d, &c, &key, q8_id).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], q8_id);
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|s| !s.is_empty()));
    let mut both = vec![default.clone(), q8_id.to_string()];
    both.sort();
    assert_eq!(served(&d, &c, &cookie).await, both);

    // The third does not fit: the least recently used idle model (the default, never used) gives way.
    assert_eq!(chat(&d, &c, &key, q4_0_id).await.status(), 200);
    assert_eq!(served(&d, &c, &cookie).await, [q4_0_id, q8_id]);
    assert!(d.logs().contains("unloading the least recently used idle model"));

    // Both loaded models serving: nothing may give way, so the default is refused, not loaded.
    let s1 = busy(&d, &c, &key, q8_id).await;
    let s2 = busy(&d, &c, &key, q4_0_id).await;
    let r = chat(&d, &c, &key, &default).await;
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_memory_budget", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains(q8_id) && msg.contains(q4_0_id) && msg.contains("300 MiB"), "{msg}");
    let (status, e) = owner_post(&d, &c, &cookie, "/api/models/unload", q8_id).await;
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("model_busy")), "{e}");
    assert_eq!(served(&d, &c, &cookie).await, [q4_0_id, q8_id]);

    // A client that goes away ends its use (the generation is cancelled): the Q8_0 model is
    // now the only idle one and gives way.
    assert!(in_flight(&d, &c, &cookie).await.iter().all(|(_, n)| *n == 1));
    drop(s1);
    for _ in 0..100 {
        if in_flight(&d, &c, &cookie).await.contains(&(q8_id.to_string(), 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(in_flight(&d, &c, &cookie).await.contains(&(q4_0_id.to_string(), 1)), "the Q4_0 stream still runs");
    let (status, v) = owner_post(&d, &c, &cookie, "/api/models/load", &default).await;
    assert_eq!(status, 200, "{v}");
    let mut now = vec![default.clone(), q4_0_id.to_string()];
    now.sort();
    assert_eq!(served(&d, &c, &cookie).await, now);
    drop(s2);
    let mut status = 0;
    for _ in 0..100 {
        status = owner_post(&d, &c, &cookie, "/api/models/unload", q4_0_id).await.0;
        if status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unloading keeps the model installed: the next request loads it again.
    assert_eq!(status, 200);
    assert_eq!(served(&d, &c, &cookie).await, [default.as_str()]);
    assert_eq!(chat(&d, &c, &key, q4_0_id).await.status(), 200);
    let (status, e) = owner_post(&d, &c, &cookie, "/api/models/load", "no-such-model").await;
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("model_not_found")));
    assert_eq!(chat(&d, &c, &key, "no-such-model").await.status(), 404);
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let count = |action: &str, outcome: &str| -> i64 {
        db.query_row("SELECT COUNT(*) FROM audit_events WHERE action = ?1 AND outcome = ?2", [action, outcome], |r| r.get(0)).unwrap()
    };
    assert_eq!(count("model.import", "ok"), 2);
    assert_eq!((count("model.load", "ok"), count("model.load", "refused")), (1, 1));
    assert_eq!(count("model.unload", "ok"), 1);
    assert!(count("model.unload", "refused") >= 1);

    // The CLI names an imported model by its served id too (a fresh user's report: `rm` and
    // `inspect` took only catalog profile ids).
    let (ok, out, err) = b3iqd(&home, &["model", "inspect", q8_id]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["quantization"], "Q8_0");
    let (ok, _, err) = b3iqd(&home, &["model", "rm", q8_id]);
    assert!(ok, "{err}");
    let (_, out, _) = b3iqd(&home, &["model", "list"]);
    assert!(!out.contains(q8_id) && out.contains(q4_0_id), "{out}");
    let (ok, _, err) = b3iqd(&home, &["model", "rm", "no-such-model"]);
    assert!(!ok && !err.is_empty());
}

/// Submits an owner job through `POST /api/jobs` and waits until it ends.
async fn job(d: &Daemon, c: &reqwest::Client, cookie: &str, body: Value) -> (u16, Value) {
    let r = c.post(d.url("/api/jobs")).header("cookie", cookie).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    if status != 202 {
        return (status, v);
    }
    let id = v["job"]["id"].as_str().unwrap().to_string();
    for _ in 0..300 {
        let j: Value = c.get(d.url(&format!("/api/jobs/{id}"))).header("cookie", cookie).send().await.unwrap().json().await.unwrap();
        if !["queued", "running"].contains(&j["state"].as_str().unwrap()) {
            return (status, j);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_model_job_switches_the_served_model_and_never_unloads_one_in_use() {
    let q8 = model_copy(QuantType::Q8_0);
    let home = tempdir("load-job").join("home");
    write_config(&home, json!({"parallel": 1, "context_tokens": 512, "max_loaded_models": 1}));
    let d = Daemon::start(&home);
    let c = client();
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let default = common::model_id(&d, &c, &key).await;
    let (ok, _, err) = b3iqd(&home, &["model", "import", q8.to_str().unwrap()]);
    assert!(ok, "{err}");
    let q8_id = "smollm2-135m-instruct.q8_0";

    // One place: loading the Q8_0 copy unloads the idle default, and the result says so.
    let (status, j) = job(&d, &c, &cookie, json!({"kind": "load_model", "model": q8_id})).await;
    assert_eq!((status, j["state"].as_str()), (202, Some("succeeded")), "{j}");
    assert_eq!(j["kind"], "load_model");
    assert_eq!(j["result"]["loaded"], q8_id, "{j}");
    assert_eq!(j["result"]["unloaded"], json!([default]), "{j}");
    assert_eq!(j["result"]["already_loaded"], false);
    assert_eq!(served(&d, &c, &cookie).await, [q8_id]);
    let r = chat(&d, &c, &key, q8_id).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["model"], q8_id);

    // Loading the served model again is a no-op that unloads nothing.
    let (_, j) = job(&d, &c, &cookie, json!({"kind": "load_model", "model": q8_id})).await;
    assert_eq!((j["state"].as_str(), j["result"]["already_loaded"].as_bool()), (Some("succeeded"), Some(true)), "{j}");
    assert_eq!(j["result"]["unloaded"], json!([]));

    // While the Q8_0 model serves a request, the job fails and leaves it loaded.
    let s = busy(&d, &c, &key, q8_id).await;
    let (_, j) = job(&d, &c, &cookie, json!({"kind": "load_model", "model": default})).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["error"].as_str().is_some_and(|e| e.contains(q8_id) && e.contains("max_loaded_models")), "{j}");
    assert_eq!(served(&d, &c, &cookie).await, [q8_id]);
    drop(s);

    // Refused at submission: a model that is not installed, a missing or malformed id.
    let (status, e) = job(&d, &c, &cookie, json!({"kind": "load_model", "model": "no-such-model"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("model_not_found")), "{e}");
    let (status, e) = job(&d, &c, &cookie, json!({"kind": "load_model"})).await;
    assert_eq!((status, e["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{e}");
    let (status, _) = job(&d, &c, &cookie, json!({"kind": "load_model", "model": "../etc/passwd"})).await;
    assert_eq!(status, 400);

    // Once the stream has ended, the job brings the default back in place of the Q8_0 copy.
    let mut j = Value::Null;
    for _ in 0..50 {
        j = job(&d, &c, &cookie, json!({"kind": "load_model", "model": default})).await.1;
        if j["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(j["result"]["unloaded"], json!([q8_id]), "{j}");
    assert_eq!(served(&d, &c, &cookie).await, [default.as_str()]);
}

/// The loaded-model ids of a `b3iqd model ps|load|unload` answer, sorted.
fn cli_loaded(out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut ids: Vec<String> = v["loaded"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// `b3iqd model ps|load|unload` talk to the daemon serving the home (plain HTTP, then over its
/// self-signed TLS), as its owner, with a one-minute session that ends with the command; with
/// no daemon or no owner they say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_loads_and_unloads_models_in_the_running_daemon() {
    let q8 = model_copy(QuantType::Q8_0);
    let home = tempdir("models-cli").join("home");
    write_config(&home, json!({"parallel": 1, "context_tokens": 512, "max_loaded_models": 2}));
    let mut d = Daemon::start(&home);
    let c = client();
    let (ok, _, err) = b3iqd(&home, &["model", "ps"]);
    assert!(!ok && err.contains("not claimed"), "before the claim: {err}");
    let cookie = claim(&d, &c).await;
    let (_, key) = create_key(&d, &c, &cookie, &["inference"]).await;
    let default = common::model_id(&d, &c, &key).await;
    let (ok, _, err) = b3iqd(&home, &["model", "import", q8.to_str().unwrap()]);
    assert!(ok, "{err}");
    let q8_id = "smollm2-135m-instruct.q8_0";
    // Requantizing the Q4_1 default to Q8_0 warns that no precision comes back (a fresh
    // user's report); the copy is the same file as the one imported above.
    let (ok, out, err) = b3iqd(&home, &["model", "import", common::model_path().to_str().unwrap(), "--quantize", "q8_0"]);
    assert!(ok && err.contains("warning") && err.contains("no more precision"), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], q8_id);

    let (ok, out, err) = b3iqd(&home, &["model", "ps"]);
    assert!(ok, "{err}");
    assert_eq!(cli_loaded(&out), [default.as_str()]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["max_loaded_models"], 2);
    let (ok, out, err) = b3iqd(&home, &["model", "load", q8_id]);
    assert!(ok, "{err}");
    let mut both = vec![default.clone(), q8_id.to_string()];
    both.sort();
    assert_eq!(cli_loaded(&out), both);
    assert_eq!(served(&d, &c, &cookie).await, both, "the daemon itself serves both");
    let (ok, out, err) = b3iqd(&home, &["model", "unload", q8_id]);
    assert!(ok, "{err}");
    assert_eq!(cli_loaded(&out), [default.as_str()]);
    // Refusals carry the daemon's message and code, and a nonzero exit.
    let (ok, _, err) = b3iqd(&home, &["model", "load", "no-such-model"]);
    assert!(!ok && err.contains("model_not_found") && err.contains("404"), "{err}");

    // Each command's session ended with it: only the test's own cookie session is left, and
    // each command's session is in the audit log.
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    let sessions: i64 = db.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(sessions, 1);
    let machine: i64 = db
        .query_row("SELECT COUNT(*) FROM audit_events WHERE action = 'session.machine'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(machine, 4, "ps, load, unload, the refused load");
    drop(db);

    d.stop();
    let (ok, _, err) = b3iqd(&home, &["model", "ps"]);
    assert!(!ok && err.contains("no b3iqd is serving"), "{err}");

    // Over TLS: the command trusts the daemon's own certificate.
    let mut d = Daemon::start_with(&home, &["--tls", "self-signed"]);
    assert!(d.url("").starts_with("https://"), "{}", d.url(""));
    let (ok, out, err) = b3iqd(&home, &["model", "load", q8_id]);
    assert!(ok, "{err}");
    assert_eq!(cli_loaded(&out), both);
    d.stop();

    // `serve --model` takes an installed model's id too (a fresh user's report: only catalog
    // profiles and paths were accepted).
    let _d = Daemon::start_exe(Path::new(common::bin()), &home, &["--listen", "127.0.0.1:0", "--model", q8_id]);
    let (ok, out, err) = b3iqd(&home, &["model", "ps"]);
    assert!(ok, "{err}");
    assert_eq!(cli_loaded(&out), [q8_id]);
}
