//! `POST /v1/responses`: OpenAI's Responses API, stateless (docs/api.md, "Responses").
//!
//! The request is translated into the chat route's parameters (the same validation, field audit,
//! context rule and receipt path): `input` (a string, or an array of messages whose `content` is
//! a string or `input_text` / `output_text` parts) after `instructions` (a system message);
//! `max_output_tokens`, `temperature`, `top_p`, `text.format` (`json_object` / `json_schema`) and
//! `stream`. Nothing is stored: `previous_response_id` is refused with 400, `store` is accepted
//! and has no effect. The answer is one `message` output item with one `output_text` part;
//! streamed as the typed events the official clients read (`response.created`, ...,
//! `response.output_text.delta`, ..., `response.completed`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_openai::{sse, CommonParams};
use b3iq_runtime::runtime::{FinishReason, Prompt};
use serde_json::{json, Map, Value};

use super::openai::{bad, caller, check_ticket_model, parse_common, parse_json, parse_messages};
use super::RawBody;
use crate::context::NodeState;
use crate::error::{HostError, Result};
use crate::inference::{self, Caller, InferenceEvent, InferenceRequest};

/// The chat parameters and messages a Responses request stands for.
fn translate(body: Map<String, Value>) -> Result<(CommonParams, Vec<b3iq_openai::ChatMessage>)> {
    let mut c = Map::new();
    let mut messages: Vec<Value> = Vec::new();
    for (k, v) in body {
        match k.as_str() {
            "model" | "temperature" | "top_p" | "stream" | "seed" | "top_k" | "min_p" | "tools" | "tool_choice" | "user" | "metadata"
            | "parallel_tool_calls" | "top_logprobs" => {
                c.insert(k, v);
            }
            "max_output_tokens" => {
                c.insert("max_tokens".into(), v);
            }
            "instructions" => match v {
                Value::Null => {}
                Value::String(s) => messages.insert(0, json!({"role": "system", "content": s})),
                _ => return Err(bad("`instructions` must be a string")),
            },
            "input" => match v {
                Value::String(s) => messages.push(json!({"role": "user", "content": s})),
                Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        messages.push(input_item(i, item)?);
                    }
                }
                _ => return Err(bad("`input` must be a string or an array of messages")),
            },
            "text" => {
                if let Some(f) = v.get("format").filter(|f| !f.is_null()) {
                    let kind = f.get("type").and_then(Value::as_str).unwrap_or("");
                    let rf = match kind {
                        "json_schema" => json!({"type": "json_schema", "json_schema": {
                            "name": f.get("name").cloned().unwrap_or(Value::Null),
                            "schema": f.get("schema").cloned().unwrap_or(Value::Null),
                            "strict": f.get("strict").cloned().unwrap_or(Value::Null)}}),
                        _ => json!({"type": kind}),
                    };
                    c.insert("response_format".into(), rf);
                }
            }
            "previous_response_id" if !v.is_null() => {
                return Err(bad("`previous_response_id` is not supported: this server stores no responses; send the whole conversation in `input`"))
            }
            "background" if v == Value::Bool(true) => return Err(bad("`background` responses are not supported; this server is stateless")),
            _ => {}
        }
    }
    if messages.is_empty() {
        return Err(bad("`input` is required"));
    }
    if c.get("tools").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(bad("`tools` is not served on /v1/responses yet; use /v1/chat/completions for tool calling"));
    }
    if c.get("top_logprobs").is_some_and(|v| !v.is_null() && v.as_u64() != Some(0)) {
        return Err(bad("`top_logprobs` is not served on /v1/responses yet; use /v1/chat/completions with logprobs"));
    }
    let c: CommonParams = serde_json::from_value(Value::Object(c))
        .map_err(|e| HostError::InvalidJson(e.to_string()))?;
    let messages = serde_json::from_value(Value::Array(messages))
        .map_err(|e| HostError::InvalidJson(e.to_string()))?;
    Ok((c, messages))
}

/// Parse and validate a `/v1/responses` body from outside bytes without a running node (no
/// model is served, so a valid body ends in `ModelNotFound`). For the fuzz target `request_body`:
/// a typed error for any input, never a panic.
pub fn validate_responses_body(body: &[u8]) -> Result<()> {
    let super::JsonBody(b) = parse_json::<Map<String, Value>>(body)?;
    let (c, messages) = translate(b)?;
    parse_messages(Some(messages))?;
    super::openai::parse_common_with(&c, &|_| None).map(|_| ())
}

/// One `input` item as a chat message: `{"role", "content"}` (with or without `"type":
/// "message"`), `content` a string or parts of type `input_text`, `output_text` or `text`.
fn input_item(i: usize, item: Value) -> Result<Value> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    if kind != "message" {
        return Err(bad(format!("input[{i}].type {kind:?} is not supported (only messages; tool calling is not served yet)")));
    }
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("input[{i}].role is required")))?;
    let content = match item.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        s.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    other => {
                        return Err(bad(format!(
                            "input[{i}].content[{j}]: part type {:?} is not supported (only text)",
                            other.unwrap_or("")
                        )))
                    }
                }
            }
            s
        }
        _ => {
            return Err(bad(format!(
                "input[{i}].content must be a string or an array of text parts"
            )))
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// The response object (`status` `in_progress` while streaming, then `completed` or
/// `incomplete` with `incomplete_details.reason: "max_output_tokens"`).
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    msg_id: &str,
    text: Option<&str>,
    end: Option<(FinishReason, &inference::Finished)>,
) -> Value {
    let status = match end {
        None => "in_progress",
        Some((FinishReason::Length, _)) => "incomplete",
        Some(_) => "completed",
    };
    let output = match text {
        Some(t) => {
            json!([{"type": "message", "id": msg_id, "status": if status == "in_progress" { "in_progress" } else { "completed" }, "role": "assistant",
                          "content": [{"type": "output_text", "text": t, "annotations": []}]}])
        }
        None => json!([]),
    };
    let usage = end.map(|(_, f)| json!({"input_tokens": f.usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": f.usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": f.usage.total_tokens}));
    let mut v = json!({
        "id": id, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "usage": usage, "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "parallel_tool_calls": false, "tool_choice": "none", "tools": [], "metadata": {},
    });
    if let Some((_, f)) = end {
        v["b3iq_receipt_id"] = json!(f.receipt_id);
    }
    v
}

/// `POST /v1/responses`.
pub async fn responses(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let super::JsonBody(b) = parse_json::<Map<String, Value>>(&body)?;
    let (c, messages) = translate(b)?;
    let p = parse_common(&st, &c)?;
    check_ticket_model(&caller, &p.model.id)?;
    let messages = parse_messages(Some(messages))?;
    let network = matches!(caller, Caller::Network(_));
    let ireq = InferenceRequest {
        caller,
        model: p.model.clone(),
        prompt: Prompt::Chat(messages),
        sampling: p.sampling,
        max_tokens: p.max_tokens,
        stop: p.stop,
        response_format: p.response_format,
        logprobs: None,
    };
    let mut inf = inference::start(&st, ireq).await?;
    let created = inf.created();
    let hex = inf.request_id().to_hex();
    let (id, msg_id, model) = (
        format!("resp_{hex}"),
        format!("msg_{hex}"),
        p.model.id.clone(),
    );
    if !p.stream {
        let mut text = String::new();
        while let Some(ev) = inf.next().await {
            match ev? {
                InferenceEvent::Delta(t, _) => text.push_str(&t),
                InferenceEvent::Done(f) => {
                    let v = response_object(
                        &id,
                        created,
                        &model,
                        &msg_id,
                        Some(&text),
                        Some((f.finish_reason, &f)),
                    );
                    let mut resp = axum::Json(v).into_response();
                    if network {
                        if let Ok(h) = HeaderValue::from_str(&hex::encode(&f.receipt)) {
                            resp.headers_mut()
                                .insert(b3iq_protocol::gateway::RECEIPT_HEADER, h);
                        }
                    }
                    return Ok(resp);
                }
            }
        }
        return Err(HostError::Internal(
            "generation ended without a final event".into(),
        ));
    }

    struct S {
        inf: Option<inference::Inference>,
        id: String,
        msg_id: String,
        model: String,
        created: u64,
        seq: u64,
        text: String,
        network: bool,
        pending: std::collections::VecDeque<Bytes>,
    }
    impl S {
        fn push(&mut self, kind: &str, mut v: Value) {
            v["type"] = json!(kind);
            v["sequence_number"] = json!(self.seq);
            self.seq += 1;
            let mut e = format!("event: {kind}\n").into_bytes();
            e.extend_from_slice(&sse::encode_json(&v));
            self.pending.push_back(Bytes::from(e));
        }
    }
    let mut s = S {
        inf: Some(inf),
        id,
        msg_id,
        model,
        created,
        seq: 0,
        text: String::new(),
        network,
        pending: Default::default(),
    };
    let r0 = response_object(&s.id, s.created, &s.model, &s.msg_id, None, None);
    s.push("response.created", json!({"response": r0.clone()}));
    s.push("response.in_progress", json!({"response": r0}));
    let item = json!({"type": "message", "id": s.msg_id, "status": "in_progress", "role": "assistant", "content": []});
    s.push(
        "response.output_item.added",
        json!({"output_index": 0, "item": item}),
    );
    let part = json!({"type": "output_text", "text": "", "annotations": []});
    s.push(
        "response.content_part.added",
        json!({"item_id": s.msg_id, "output_index": 0, "content_index": 0, "part": part}),
    );
    let body_stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            let inf = s.inf.as_mut()?;
            match inf.next().await {
                None => {
                    s.inf = None;
                    let e = HostError::Internal("generation ended without a final event".into());
                    s.push(
                        "error",
                        json!({"code": e.code(), "message": e.body()["error"]["message"].clone()}),
                    );
                }
                Some(Err(e)) => {
                    s.inf = None;
                    tracing::warn!(error = %e, "responses stream failed after it started");
                    s.push(
                        "error",
                        json!({"code": e.code(), "message": e.body()["error"]["message"].clone()}),
                    );
                }
                Some(Ok(InferenceEvent::Delta(t, _))) => {
                    s.text.push_str(&t);
                    let ev = json!({"item_id": s.msg_id, "output_index": 0, "content_index": 0, "delta": t, "logprobs": []});
                    s.push("response.output_text.delta", ev);
                }
                Some(Ok(InferenceEvent::Done(f))) => {
                    s.inf = None;
                    let text = std::mem::take(&mut s.text);
                    s.push("response.output_text.done", json!({"item_id": s.msg_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}));
                    let part = json!({"type": "output_text", "text": text, "annotations": []});
                    s.push("response.content_part.done", json!({"item_id": s.msg_id, "output_index": 0, "content_index": 0, "part": part}));
                    let done = response_object(
                        &s.id,
                        s.created,
                        &s.model,
                        &s.msg_id,
                        Some(&text),
                        Some((f.finish_reason, &f)),
                    );
                    s.push(
                        "response.output_item.done",
                        json!({"output_index": 0, "item": done["output"][0].clone()}),
                    );
                    let kind = if f.finish_reason == FinishReason::Length {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    s.push(kind, json!({"response": done}));
                    if s.network {
                        s.pending.push_back(Bytes::from(format!(
                            "{}{}\n\n",
                            b3iq_protocol::gateway::RECEIPT_SSE_PREFIX,
                            hex::encode(&f.receipt)
                        )));
                    }
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body_stream));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sse::CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
