//! The OpenAI surface's faults from issue 17, each input kept with the right value asserted,
//! against a real node with the real default model (B3IQ_TEST_MODEL, llama.cpp) over HTTP.

use std::time::Duration;

use b3iq_host::LocalNode;
use serde_json::{json, Value};

/// Context window per sequence of the test node (small, so "until the context is full" is quick).
const CTX: u64 = 384;

struct Node {
    _dir: tempfile::TempDir,
    node: LocalNode,
    key: String,
    model: String,
    c: reqwest::Client,
}

async fn node(extra_config: Value) -> Node {
    let model = std::env::var("B3IQ_TEST_MODEL")
        .expect("B3IQ_TEST_MODEL must point at the default model (scripts/fetch-model)");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = json!({"context_tokens": CTX, "parallel": 2});
    for (k, v) in extra_config.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let node = LocalNode::builder()
        .home(dir.path())
        .listen("127.0.0.1:0")
        .model(model)
        .start()
        .await
        .unwrap();
    node.claim("owner", "correct horse battery staple")
        .await
        .unwrap();
    let (_, key) = node.create_key("t", &["inference"]).unwrap();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let models: Value = c
        .get(format!("{}/v1/models", node.base_url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = models["data"][0]["id"].as_str().unwrap().to_string();
    Node {
        _dir: dir,
        node,
        key,
        model,
        c,
    }
}

impl Node {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.node.base_url())
    }
    async fn post(&self, p: &str, body: Value) -> (u16, Value) {
        let r = self
            .c
            .post(self.url(p))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// Fault 4: no `max_tokens` -> generation goes on until the model stops or the window is full,
/// not 256 tokens. Fault 6: prompt + max_tokens over the window -> 400 context_length_exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_cut_and_context_overflow_is_400() {
    let n = node(json!({})).await;
    let prompt: String = (1..=15).map(|i| format!("{i}, ")).collect();
    let (s, v) = n
        .post(
            "/v1/completions",
            json!({"model": n.model, "prompt": prompt, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let u = &v["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    let reason = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(
        c > 256,
        "cut at {c} tokens ({reason}): no max_tokens must not mean 256"
    );
    if reason == "length" {
        assert_eq!(
            p + c,
            CTX,
            "length without max_tokens means the window is full"
        );
    }

    // The prompt fits, prompt + max_tokens does not: 400, not a silent cut.
    let (s, v) = n
        .post(
            "/v1/completions",
            json!({"model": n.model, "prompt": prompt, "max_tokens": 500}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("384"),
        "{v}"
    );
    // One that fits is served.
    let (s, v) = n
        .post(
            "/v1/completions",
            json!({"model": n.model, "prompt": prompt, "max_tokens": 8}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8);
    n.node.shutdown().await;
}

/// Fault 1: response_format json_object / json_schema through the runtime's JSON grammar;
/// unknown types 400; fields that would change the answer are honoured or refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_format_and_field_audit() {
    let n = node(json!({})).await;
    let msgs = json!([{"role": "user", "content": "Give me a colour and its hex code as JSON."}]);
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 120, "temperature": 0, "response_format": {"type": "json_object"}})).await;
    assert_eq!(s, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {e}: {text}"));
        assert!(parsed.is_object(), "{text}");
    } else {
        assert!(text.trim_start().starts_with('{'), "{text}");
    }
    let schema = json!({"type": "object", "properties": {"colour": {"type": "string"}, "hex": {"type": "string"}}, "required": ["colour", "hex"], "additionalProperties": false});
    let rf = json!({"type": "json_schema", "json_schema": {"name": "colour", "strict": true, "schema": schema}});
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 200, "temperature": 0, "response_format": rf})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let parsed: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        parsed["colour"].is_string() && parsed["hex"].is_string(),
        "{parsed}"
    );
    assert_eq!(parsed.as_object().unwrap().len(), 2, "{parsed}");

    for (field, body) in [
        (
            "response_format",
            json!({"response_format": {"type": "yaml"}}),
        ),
        // Served fields with bad values: a 400 that names the field.
        (
            "tools",
            json!({"tools": [{"type": "retrieval", "function": {"name": "get_weather"}}]}),
        ),
        ("tool_choice", json!({"tool_choice": "required"})),
        ("top_logprobs", json!({"logprobs": true, "top_logprobs": 21})),
        ("top_logprobs", json!({"top_logprobs": 2})),
        ("logit_bias", json!({"logit_bias": {"50256": -100}})),
        ("logit_bias", json!({"logit_bias": {"1": 101}})),
        (
            "stream_options",
            json!({"stream_options": {"include_usage": true}}),
        ),
    ] {
        let mut b = json!({"model": n.model, "messages": msgs, "max_tokens": 4});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (s, v) = n.post("/v1/chat/completions", b).await;
        assert_eq!(s, 400, "{field}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }
    // `user` does not change the answer: accepted.
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 2, "user": "u1", "parallel_tool_calls": true})).await;
    assert_eq!(s, 200, "{v}");
    n.node.shutdown().await;
}

/// Fault 6: with include_usage on, every chunk before the usage chunk has `"usage": null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_carry_null_usage() {
    let n = node(json!({})).await;
    // Greedy: a sampled answer can end after one token, and the test needs 5.
    let body = json!({"model": n.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let r =
        n.c.post(n.url("/v1/chat/completions"))
            .bearer_auth(&n.key)
            .json(&body)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 3, "{text}");
    let (last, before) = chunks.split_last().unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 5, "{last}");
    for c in before {
        assert!(
            c.as_object().unwrap().contains_key("usage") && c["usage"].is_null(),
            "{c}"
        );
    }
    n.node.shutdown().await;
}

/// Faults 2, 3 and 5's 404s: every status >= 400 carries the error object (405 with `Allow`,
/// 404 naming the route), the CORS policy, and `GET /v1/models/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_headers_and_cors() {
    let n = node(json!({"cors_origins": ["https://app.example.com"]})).await;
    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
    ] {
        let r =
            n.c.request(method.parse().unwrap(), n.url(path))
                .bearer_auth(&n.key)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let a = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(a.contains(allow), "{method} {path}: Allow {a}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    let r =
        n.c.post(n.url("/v1/nothing"))
            .bearer_auth(&n.key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("POST /v1/nothing") && m.contains("/v1/chat/completions"),
        "{m}"
    );

    // A body that is not JSON: still the error object.
    let r =
        n.c.post(n.url("/v1/chat/completions"))
            .bearer_auth(&n.key)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());

    // GET /v1/models/{id}.
    let r =
        n.c.get(n.url(&format!("/v1/models/{}", n.model)))
            .bearer_auth(&n.key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], n.model.as_str());
    let r =
        n.c.get(n.url("/v1/models/nope"))
            .bearer_auth(&n.key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );

    // CORS: a loopback page and a configured origin get a preflight and the answer's header.
    let preflight = |origin: &str, path: &str| {
        n.c.request(reqwest::Method::OPTIONS, n.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    for origin in ["http://localhost:3000", "https://app.example.com"] {
        let r = preflight(origin, "/v1/chat/completions").await.unwrap();
        assert_eq!(r.status(), 204, "{origin}");
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
        assert!(r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization"));
        let r =
            n.c.get(n.url("/v1/models"))
                .bearer_auth(&n.key)
                .header("origin", origin)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
    }
    // Another origin, or any origin on a cookie route: 403 with the error object, no grant.
    for (origin, path) in [
        ("https://evil.example.com", "/v1/chat/completions"),
        ("http://localhost:3000", "/api/keys"),
    ] {
        let r = preflight(origin, path).await.unwrap();
        assert_eq!(r.status(), 403, "{origin} {path}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "cors_origin_not_allowed"
        );
    }
    let r =
        n.c.get(n.url("/v1/models"))
            .bearer_auth(&n.key)
            .header("origin", "https://evil.example.com")
            .send()
            .await
            .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    n.node.shutdown().await;
}

/// Fault 5: `POST /v1/responses {"model", "input": "Say hello.", "max_output_tokens": 16}` is
/// served (stateless), whole and streamed; unknown routes 404 naming the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api() {
    let n = node(json!({})).await;
    let (s, v) = n.post("/v1/responses", json!({"model": n.model, "input": "Say hello.", "max_output_tokens": 16, "temperature": 0})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert!(
        v["status"] == "completed" || v["status"] == "incomplete",
        "{v}"
    );
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert!(!v["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .is_empty());
    let out = v["usage"]["output_tokens"].as_u64().unwrap();
    assert!((1..=16).contains(&out), "{v}");
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["input_tokens"].as_u64().unwrap() + out
    );
    // Instructions become a system message: more input tokens.
    let (_, w) = n.post("/v1/responses", json!({"model": n.model, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}], "instructions": "Answer in French.", "max_output_tokens": 4})).await;
    assert!(
        w["usage"]["input_tokens"].as_u64().unwrap() > v["usage"]["input_tokens"].as_u64().unwrap(),
        "{w}"
    );
    // Stateless: previous_response_id is refused by name.
    let (s, e) = n
        .post(
            "/v1/responses",
            json!({"model": n.model, "input": "x", "previous_response_id": "resp_1"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("previous_response_id"));
    // Streamed: typed events ending in response.completed (or .incomplete) with usage.
    let r = n.c.post(n.url("/v1/responses")).bearer_auth(&n.key).json(&json!({"model": n.model, "input": "Say hello.", "max_output_tokens": 8, "stream": true})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert!(kinds.contains(&"response.output_text.delta"));
    let last = events.last().unwrap();
    assert!(
        last["type"] == "response.completed" || last["type"] == "response.incomplete",
        "{last}"
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        deltas.as_str()
    );
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e["sequence_number"] == i as u64));
    n.node.shutdown().await;
}

/// Fault 1 (`n`): up to 8 choices decoded together in the batch, whole and streamed; 9 is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices() {
    let n = node(json!({})).await;
    let msgs = json!([{"role": "user", "content": "Name a fruit."}]);
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 6, "n": 3, "seed": 7, "temperature": 1.0})).await;
    assert_eq!(s, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i as u64);
        assert!(!c["message"]["content"].as_str().unwrap().is_empty());
    }
    let per_choice: u64 = v["usage"]["prompt_tokens"].as_u64().unwrap() / 3;
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        per_choice * 3,
        "the prompt is metered once per choice"
    );
    // The same seed gives the same choices again.
    let (_, w) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 6, "n": 3, "seed": 7, "temperature": 1.0})).await;
    assert_eq!(v["choices"], w["choices"]);

    let r = n.c.post(n.url("/v1/completions")).bearer_auth(&n.key).json(&json!({"model": n.model, "prompt": "Once upon", "max_tokens": 4, "n": 2, "stream": true, "stream_options": {"include_usage": true}})).send().await.unwrap();
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let finishes: Vec<u64> = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .is_some_and(|ch| !ch["finish_reason"].is_null())
        })
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    let mut sorted = finishes.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1], "{text}");
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        8,
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));

    let (s, e) = n
        .post(
            "/v1/chat/completions",
            json!({"model": n.model, "messages": msgs, "n": 9}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("n must be"),
        "{e}"
    );
    n.node.shutdown().await;
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// Issue 17, fault 1: tools reach the prompt, a required or named call is forced by a grammar
/// and answered as `message.tool_calls` (also streamed as tool-call deltas, and in the legacy
/// `functions` shape), and tool-call history is rendered into the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls() {
    let n = node(json!({})).await;
    let msgs = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let (s, plain) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 4, "temperature": 0})).await;
    assert_eq!(s, 200, "{plain}");
    for choice in [json!("required"), json!({"type": "function", "function": {"name": "get_weather"}})] {
        let body = json!({"model": n.model, "messages": msgs, "max_tokens": 100, "temperature": 0, "tools": weather_tools(), "tool_choice": choice});
        let (s, v) = n.post("/v1/chat/completions", body).await;
        assert_eq!(s, 200, "{v}");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{v}");
        assert!(c["message"]["content"].is_null(), "{v}");
        let call = &c["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{v}");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string(), "{args}");
        assert!(v["usage"]["prompt_tokens"].as_u64() > plain["usage"]["prompt_tokens"].as_u64(), "the tools reach the prompt: {v}");
    }
    // Legacy `functions` + `function_call`.
    let f = weather_tools()[0]["function"].clone();
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 100, "temperature": 0,
        "functions": [f], "function_call": {"name": "get_weather"}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "function_call", "{v}");
    assert_eq!(v["choices"][0]["message"]["function_call"]["name"], "get_weather", "{v}");
    // Streamed: a delta with id, type and name, then the arguments; finish `tool_calls`.
    let body = json!({"model": n.model, "messages": msgs, "max_tokens": 100, "temperature": 0, "tools": weather_tools(), "tool_choice": "required", "stream": true});
    let text = n.c.post(n.url("/v1/chat/completions")).bearer_auth(&n.key).json(&body).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(deltas.len(), 2, "{text}");
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_") && deltas[0]["function"]["name"] == "get_weather", "{text}");
    let args: Value = serde_json::from_str(deltas[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{text}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls", "{text}");
    // History: the call and its result are rendered (more prompt tokens than without the call).
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
    let history = |with_call: bool| {
        let mut a = json!({"role": "assistant", "content": null});
        if with_call {
            a["tool_calls"] = json!([call]);
        }
        json!([{"role": "user", "content": "What is the weather in Paris?"}, a, {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}])
    };
    let mut counts = Vec::new();
    for with_call in [true, false] {
        let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": history(with_call), "max_tokens": 2, "temperature": 0, "tools": weather_tools()})).await;
        assert_eq!(s, 200, "{v}");
        counts.push(v["usage"]["prompt_tokens"].as_u64().unwrap());
    }
    assert!(counts[0] > counts[1], "{counts:?}");
    // tool_choice naming a function that is not offered; tools on completions.
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = n.post("/v1/completions", json!({"model": n.model, "prompt": "x", "tools": weather_tools()})).await;
    assert_eq!(s, 400, "{v}");
    n.node.shutdown().await;
}

/// Issue 17, fault 1: `logprobs` on chat (OpenAI's chat shape) and on completions (the legacy
/// shape), whole and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_shapes() {
    let n = node(json!({})).await;
    let msgs = json!([{"role": "user", "content": "Name a colour."}]);
    let (s, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 2})).await;
    assert_eq!(s, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap(), "{v}");
    let mut joined = String::new();
    for e in content {
        assert!(e["logprob"].as_f64().unwrap() <= 0.0, "{e}");
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{e}");
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64(), "{e}");
        let bytes: Vec<u8> = e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        assert_eq!(String::from_utf8_lossy(&bytes), e["token"].as_str().unwrap());
        joined.push_str(e["token"].as_str().unwrap());
    }
    assert_eq!(joined, v["choices"][0]["message"]["content"].as_str().unwrap());
    // Without the field: `null`.
    let (_, v) = n.post("/v1/chat/completions", json!({"model": n.model, "messages": msgs, "max_tokens": 2})).await;
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    // Completions, legacy shape.
    let (s, v) = n.post("/v1/completions", json!({"model": n.model, "prompt": "The sky is", "max_tokens": 5, "temperature": 0, "logprobs": 2})).await;
    assert_eq!(s, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap(), "{v}");
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());
    assert!(lp["token_logprobs"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap() <= 0.0), "{v}");
    assert!(lp["top_logprobs"].as_array().unwrap().iter().all(|t| (1..=2).contains(&t.as_object().unwrap().len())), "{v}");
    let offsets: Vec<u64> = lp["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    // Streamed chat: each chunk carries its tokens' entries; they add up to completion_tokens.
    let body = json!({"model": n.model, "messages": msgs, "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 1, "stream": true, "stream_options": {"include_usage": true}});
    let text = n.c.post(n.url("/v1/chat/completions")).bearer_auth(&n.key).json(&body).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let entries: usize = chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array()).map(Vec::len).sum();
    let usage = chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(entries as u64, usage, "{text}");
    n.node.shutdown().await;
}

/// Issue 17, fault 5 with tools: `/v1/responses` takes function tools in its flat shape and
/// answers a call as a `function_call` output item (streamed as its argument events), and takes
/// `function_call` / `function_call_output` input items as history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_function_calls() {
    let n = node(json!({})).await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let body = json!({"model": n.model, "input": "What is the weather in Paris?", "tools": tools, "tool_choice": "required", "temperature": 0, "max_output_tokens": 100});
    let (s, v) = n.post("/v1/responses", body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    let call = v["output"].as_array().unwrap().iter().find(|o| o["type"] == "function_call").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(call["name"], "get_weather");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"), "{v}");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    // Streamed.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let text = n.c.post(n.url("/v1/responses")).bearer_auth(&n.key).json(&sb).send().await.unwrap().text().await.unwrap();
    let events: Vec<Value> = text.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).map(|d| serde_json::from_str(d).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"response.function_call_arguments.done"), "{kinds:?}");
    assert!(!kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"][0]["type"], "function_call", "{last}");
    assert!(events.iter().enumerate().all(|(i, e)| e["sequence_number"] == i as u64));
    // History items reach the prompt.
    let history = json!([{"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}]);
    let (s, with) = n.post("/v1/responses", json!({"model": n.model, "input": history, "tools": tools, "max_output_tokens": 8, "temperature": 0})).await;
    assert_eq!(s, 200, "{with}");
    let (_, without) = n.post("/v1/responses", json!({"model": n.model, "input": [history[0], history[2]], "tools": tools, "max_output_tokens": 8, "temperature": 0})).await;
    assert!(with["usage"]["input_tokens"].as_u64() > without["usage"]["input_tokens"].as_u64(), "{with} {without}");
    // Log probabilities on the output text (whole and per delta).
    let (s, v) = n.post("/v1/responses", json!({"model": n.model, "input": "Say hello.", "max_output_tokens": 6, "temperature": 0, "top_logprobs": 2})).await;
    assert_eq!(s, 200, "{v}");
    let lps = v["output"][0]["content"][0]["logprobs"].as_array().unwrap();
    assert_eq!(lps.len() as u64, v["usage"]["output_tokens"].as_u64().unwrap(), "{v}");
    assert!(lps.iter().all(|e| e["logprob"].as_f64().unwrap() <= 0.0 && e["top_logprobs"].as_array().unwrap().len() == 2), "{v}");
    let (s, e) = n.post("/v1/responses", json!({"model": n.model, "input": "x", "top_logprobs": 21})).await;
    assert_eq!(s, 400, "{e}");
    // Non-function tools are refused by name.
    let (s, e) = n.post("/v1/responses", json!({"model": n.model, "input": "x", "tools": [{"type": "web_search"}]})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("tools"), "{e}");
    n.node.shutdown().await;
}
