//! `POST /v1/responses`: OpenAI's Responses API, stateless (docs/api.md, "Responses").
//!
//! The request is translated into the chat route's parameters (the same validation, field audit,
//! context rule and receipt path): `input` (a string, or an array of messages whose `content` is
//! a string or `input_text` / `output_text` parts) after `instructions` (a system message);
//! `max_output_tokens`, `temperature`, `top_p`, `text.format` (`json_object` / `json_schema`),
//! `tools` (function tools, as chat: the same prompt format, forced-call grammar and parser) with
//! `tool_choice`, and `stream`. `function_call` and `function_call_output` input items are the
//! tool-call history. `top_logprobs` (or `include: ["message.output_text.logprobs"]`) fills the
//! `output_text` part's `logprobs` (and each text delta's). Nothing is stored: `previous_response_id` is refused with 400, `store` is
//! accepted and has no effect. The answer is a `message` output item with one `output_text`
//! part and, when the model called tools, one `function_call` item per call; streamed as the
//! typed events the official clients read (`response.created`, ...,
//! `response.output_text.delta`, ..., `response.function_call_arguments.delta`, ...,
//! `response.completed`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_openai::{sse, CommonParams};
use b3iq_runtime::runtime::{FinishReason, Prompt};
use serde_json::{json, Map, Value};

use super::openai::{
    apply_tools, bad, call_id, caller, chat_logprobs, check_ticket_model, parse_chat, parse_common, parse_json,
    ToolsRequest,
};
use b3iq_runtime::runtime::{TokenLogprob, MAX_TOP_LOGPROBS};
use b3iq_runtime::tools::{ParsedToolCall, ToolCallFilter};
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
            "model" | "temperature" | "top_p" | "stream" | "seed" | "top_k" | "min_p" | "tool_choice" | "user" | "metadata"
            | "parallel_tool_calls" | "top_logprobs" | "include" => {
                c.insert(k, v);
            }
            "tools" => {
                c.insert(k, chat_tools(v)?);
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
    let c: CommonParams = serde_json::from_value(Value::Object(c))
        .map_err(|e| HostError::InvalidJson(e.to_string()))?;
    let messages = serde_json::from_value(Value::Array(messages))
        .map_err(|e| HostError::InvalidJson(e.to_string()))?;
    Ok((c, messages))
}

/// Responses tools (`{"type": "function", "name", "description", "parameters", "strict"}`) in
/// the chat shape (`{"type": "function", "function": {...}}`); other tool types (web search,
/// file search, ...) are 400.
fn chat_tools(v: Value) -> Result<Value> {
    let Value::Array(items) = v else {
        return if v.is_null() { Ok(v) } else { Err(bad("`tools` must be a list of function tools")) };
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "function" {
                return Err(bad(format!(
                    "tools[{i}].type {:?} is not supported; only function tools are served",
                    kind.chars().take(40).collect::<String>()
                )));
            }
            let mut f = Map::new();
            for k in ["name", "description", "parameters", "strict"] {
                if let Some(x) = t.get(k).filter(|x| !x.is_null()) {
                    f.insert(k.into(), x.clone());
                }
            }
            Ok(json!({"type": "function", "function": f}))
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

/// Parse and validate a `/v1/responses` body from outside bytes without a running node (no
/// model is served, so a valid body ends in `ModelNotFound`). For the fuzz target `request_body`:
/// a typed error for any input, never a panic.
pub fn validate_responses_body(body: &[u8]) -> Result<()> {
    let super::JsonBody(b) = parse_json::<Map<String, Value>>(body)?;
    let (c, messages) = translate(b)?;
    let tools = super::openai::parse_tools(&c)?;
    responses_logprobs(&c)?;
    parse_chat(Some(messages), tools.as_ref())?;
    super::openai::parse_common_with(&c, &|_| None).map(|_| ())
}

/// One `input` item as a chat message: `{"role", "content"}` (with or without `"type":
/// "message"`), `content` a string or parts of type `input_text`, `output_text` or `text`.
fn input_item(i: usize, item: Value) -> Result<Value> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::to_string);
    match kind {
        "message" => {}
        "function_call" => {
            let (Some(name), Some(call_id)) = (text("name"), text("call_id")) else {
                return Err(bad(format!("input[{i}]: a function_call item needs name and call_id")));
            };
            let arguments = text("arguments").unwrap_or_else(|| "{}".into());
            return Ok(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}));
        }
        "function_call_output" => {
            let call_id = text("call_id")
                .ok_or_else(|| bad(format!("input[{i}]: a function_call_output item needs call_id")))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
                _ => return Err(bad(format!("input[{i}].output must be a string"))),
            };
            return Ok(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        other => {
            return Err(bad(format!(
                "input[{i}].type {other:?} is not supported (message, function_call and function_call_output are)"
            )))
        }
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

/// A `message` output item with one `output_text` part.
fn message_item(msg_id: &str, text: &str, done: bool, logprobs: &[TokenLogprob]) -> Value {
    json!({"type": "message", "id": msg_id, "status": if done { "completed" } else { "in_progress" }, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprob_list(logprobs)}]})
}

/// Log probabilities as the Responses API writes them (`[{"token", "logprob", "bytes",
/// "top_logprobs"}]`, the chat entries' shape).
fn logprob_list(entries: &[TokenLogprob]) -> Value {
    serde_json::to_value(chat_logprobs(entries).content.unwrap_or_default()).unwrap_or(json!([]))
}

/// `top_logprobs` (0..20) or `include: ["message.output_text.logprobs"]` (then 0 alternatives):
/// the alternatives per token, `None` for no log probabilities.
fn responses_logprobs(c: &CommonParams) -> Result<Option<u8>> {
    let included = c.extra.get("include").and_then(Value::as_array).is_some_and(|a| {
        a.iter()
            .any(|v| v.as_str() == Some("message.output_text.logprobs"))
    });
    match c.extra.get("top_logprobs").filter(|v| !v.is_null()) {
        None => Ok(included.then_some(0)),
        Some(v) => v
            .as_u64()
            .filter(|&k| k <= u64::from(MAX_TOP_LOGPROBS))
            .map(|k| Some(k as u8))
            .ok_or_else(|| {
                bad(format!(
                    "top_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {v}"
                ))
            }),
    }
}

/// A `function_call` output item (`id` `fc_...`, `call_id` `call_...`: what a
/// `function_call_output` input item names).
fn call_item(call: &ParsedToolCall, call_id: &str, done: bool) -> Value {
    let fc = format!("fc_{}", call_id.trim_start_matches("call_"));
    json!({"type": "function_call", "id": fc, "call_id": call_id, "name": call.name,
           "arguments": if done { call.arguments.as_str() } else { "" },
           "status": if done { "completed" } else { "in_progress" }})
}

/// What a request's tools look like in the response object (`tools`, `tool_choice`).
fn tools_echo(tools: Option<&ToolsRequest>) -> (Value, Value) {
    let Some(t) = tools else {
        return (json!([]), json!("none"));
    };
    let list = t
        .tools
        .iter()
        .map(|f| json!({"type": "function", "name": f.name, "description": f.description, "parameters": f.parameters, "strict": null}))
        .collect();
    let choice = match &t.choice {
        b3iq_runtime::tools::ToolChoice::None => json!("none"),
        b3iq_runtime::tools::ToolChoice::Auto => json!("auto"),
        b3iq_runtime::tools::ToolChoice::Required => json!("required"),
        b3iq_runtime::tools::ToolChoice::Function(n) => json!({"type": "function", "name": n}),
    };
    (Value::Array(list), choice)
}

/// The response object (`status` `in_progress` while streaming, then `completed` or
/// `incomplete` with `incomplete_details.reason: "max_output_tokens"`). A response whose model
/// called tools is `completed`.
fn response_object(
    head: &Head,
    output: Vec<Value>,
    end: Option<(FinishReason, &inference::Finished)>,
    called: bool,
) -> Value {
    let status = match end {
        None => "in_progress",
        Some((FinishReason::Length, _)) if !called => "incomplete",
        Some(_) => "completed",
    };
    let usage = end.map(|(_, f)| json!({"input_tokens": f.usage.prompt_tokens, "input_tokens_details": {"cached_tokens": f.usage.cached_prompt_tokens},
        "output_tokens": f.usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": f.usage.total_tokens}));
    let mut v = json!({
        "id": head.id, "object": "response", "created_at": head.created, "status": status, "model": head.model,
        "output": output, "usage": usage, "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "parallel_tool_calls": false, "tool_choice": head.tool_choice, "tools": head.tools, "metadata": {},
    });
    if let Some((_, f)) = end {
        v["b3iq_receipt_id"] = json!(f.receipt_id);
    }
    v
}

/// What every response object of one request repeats.
struct Head {
    id: String,
    msg_id: String,
    model: String,
    created: u64,
    tools: Value,
    tool_choice: Value,
}

/// The calls of a whole answer (with tools shown): `(content, calls)`; without tools, the text.
fn split_calls(tools: Option<&ToolsRequest>, text: String) -> (String, Vec<ParsedToolCall>) {
    match tools {
        Some(t) => {
            let (content, calls) = t.parse(&text);
            if calls.is_empty() {
                (text, calls)
            } else {
                (content, calls)
            }
        }
        None => (text, Vec::new()),
    }
}

/// `POST /v1/responses`.
pub async fn responses(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let super::JsonBody(b) = parse_json::<Map<String, Value>>(&body)?;
    let (c, messages) = translate(b)?;
    let _loaded = super::openai::model_on_demand(&st, &caller, c.model.as_deref()).await?;
    let mut p = parse_common(&st, &c)?;
    check_ticket_model(&caller, &p.model.id)?;
    apply_tools(&mut p, &c)?;
    let logprobs = responses_logprobs(&c)?;
    let tools = p.tools.clone().filter(ToolsRequest::active);
    let messages = parse_chat(Some(messages), p.tools.as_ref())?;
    let network = matches!(caller, Caller::Network(_));
    let ireq = InferenceRequest {
        caller,
        model: p.model.clone(),
        prompt: Prompt::Chat(messages),
        sampling: p.sampling,
        max_tokens: p.max_tokens,
        stop: p.stop,
        response_format: p.response_format,
        logprobs,
    };
    let mut inf = inference::start(&st, ireq).await?;
    let hex = inf.request_id().to_hex();
    let (echo_tools, echo_choice) = tools_echo(p.tools.as_ref());
    let head = Head {
        id: format!("resp_{hex}"),
        msg_id: format!("msg_{hex}"),
        model: p.model.id.clone(),
        created: inf.created(),
        tools: echo_tools,
        tool_choice: echo_choice,
    };
    if !p.stream {
        let mut text = String::new();
        let mut lps = Vec::new();
        while let Some(ev) = inf.next().await {
            match ev? {
                InferenceEvent::Delta(t, l) => {
                    text.push_str(&t);
                    lps.extend(l);
                }
                InferenceEvent::Done(f) => {
                    let (content, calls) = split_calls(tools.as_ref(), text);
                    let mut output = Vec::new();
                    if calls.is_empty() || !content.is_empty() {
                        output.push(message_item(&head.msg_id, &content, true, &lps));
                    }
                    for c in &calls {
                        output.push(call_item(c, &call_id(), true));
                    }
                    let v = response_object(
                        &head,
                        output,
                        Some((f.finish_reason, &f)),
                        !calls.is_empty(),
                    );
                    let mut resp = axum::Json(v).into_response();
                    if network {
                        super::openai::network_headers(&mut resp, &f.receipt, f.opened.as_deref());
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
        head: Head,
        seq: u64,
        text: String,
        network: bool,
        pending: std::collections::VecDeque<Bytes>,
        /// With tools shown: holds back what may be a call; the message item then opens with
        /// its first text (without tools it opens at once, as before).
        filter: Option<ToolCallFilter>,
        tools: Option<ToolsRequest>,
        msg_open: bool,
        /// Log probabilities of the text so far, of which the first `lps_sent` went out.
        lps: Vec<TokenLogprob>,
        lps_sent: usize,
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
        fn open_message(&mut self) {
            if self.msg_open {
                return;
            }
            self.msg_open = true;
            let item = json!({"type": "message", "id": self.head.msg_id, "status": "in_progress", "role": "assistant", "content": []});
            self.push("response.output_item.added", json!({"output_index": 0, "item": item}));
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            let msg_id = self.head.msg_id.clone();
            self.push(
                "response.content_part.added",
                json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part}),
            );
        }
        fn text_delta(&mut self, t: String) {
            if t.is_empty() {
                return;
            }
            self.open_message();
            self.text.push_str(&t);
            let lps = logprob_list(&self.lps[self.lps_sent..]);
            self.lps_sent = self.lps.len();
            let ev = json!({"item_id": self.head.msg_id, "output_index": 0, "content_index": 0, "delta": t, "logprobs": lps});
            self.push("response.output_text.delta", ev);
        }
        /// Closes the message item (if open) and emits the calls; returns the output items.
        fn finish_output(&mut self, calls: &[ParsedToolCall]) -> Vec<Value> {
            let mut output = Vec::new();
            if calls.is_empty() {
                self.open_message();
            }
            if self.msg_open {
                let text = std::mem::take(&mut self.text);
                let msg_id = self.head.msg_id.clone();
                let lps = logprob_list(&self.lps);
                self.push("response.output_text.done", json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": lps}));
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.push("response.content_part.done", json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part}));
                let item = message_item(&msg_id, &text, true, &self.lps);
                self.push("response.output_item.done", json!({"output_index": 0, "item": item.clone()}));
                output.push(item);
            }
            for c in calls {
                let index = output.len();
                let id = call_id();
                let item = call_item(c, &id, false);
                let item_id = item["id"].clone();
                self.push("response.output_item.added", json!({"output_index": index, "item": item}));
                self.push("response.function_call_arguments.delta", json!({"item_id": item_id, "output_index": index, "delta": c.arguments}));
                self.push("response.function_call_arguments.done", json!({"item_id": item_id, "output_index": index, "arguments": c.arguments}));
                let done = call_item(c, &id, true);
                self.push("response.output_item.done", json!({"output_index": index, "item": done.clone()}));
                output.push(done);
            }
            output
        }
    }
    let mut s = S {
        inf: Some(inf),
        head,
        seq: 0,
        text: String::new(),
        network,
        pending: Default::default(),
        filter: tools.as_ref().map(|_| ToolCallFilter::default()),
        tools,
        msg_open: false,
        lps: Vec::new(),
        lps_sent: 0,
    };
    let r0 = response_object(&s.head, Vec::new(), None, false);
    s.push("response.created", json!({"response": r0.clone()}));
    s.push("response.in_progress", json!({"response": r0}));
    if s.filter.is_none() {
        s.open_message();
    }
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
                Some(Ok(InferenceEvent::Delta(t, l))) => {
                    s.lps.extend(l);
                    let t = match s.filter.as_mut() {
                        Some(f) => f.push(&t),
                        None => t,
                    };
                    s.text_delta(t);
                }
                Some(Ok(InferenceEvent::Done(f))) => {
                    s.inf = None;
                    let mut calls = Vec::new();
                    if let (Some(mut filter), Some(t)) = (s.filter.take(), s.tools.clone()) {
                        let (mut rest, mut found) = filter.finish(&t.names());
                        if found.is_empty() && t.forced() {
                            (rest, found) = t.parse(&rest);
                        }
                        s.text_delta(rest);
                        calls = found;
                    }
                    let output = s.finish_output(&calls);
                    let done = response_object(
                        &s.head,
                        output,
                        Some((f.finish_reason, &f)),
                        !calls.is_empty(),
                    );
                    let kind = if done["status"] == "incomplete" {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    s.push(kind, json!({"response": done}));
                    if s.network {
                        super::openai::network_sse(&mut s.pending, &f);
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
