//! OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`
//! (`/v1/responses` and `/v1/embeddings` are in their own modules).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_openai::response::{CHAT_COMPLETION, CHAT_COMPLETION_CHUNK, TEXT_COMPLETION};
use b3iq_openai::{
    self as wire, sse, AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionRequest,
    ChatDelta, ChatLogprobs, ChatTokenLogprob, CommonParams, CompletionRequest, FunctionCall,
    FunctionCallDelta, PromptInput, TextChoice, TextLogprobs, ToolCall, ToolCallDelta, TopLogprob,
};
use b3iq_runtime::runtime::{
    ChatMessage, FinishReason, Prompt, ResponseFormat, Role, SamplingParams, TokenLogprob,
    MAX_LOGIT_BIAS, MAX_TOP_LOGPROBS,
};
use b3iq_runtime::tools::{self, ParsedToolCall, ToolCallFilter, ToolChoice, ToolFunction};

use super::{bearer, JsonBody, RawBody};
use crate::context::{NodeState, ServedModel};
use crate::error::{HostError, Result};
use crate::inference::{self, Caller, Inference, InferenceEvent, InferenceRequest};
use crate::network::{self, TunnelContext};
use crate::owner::auth;

/// Largest accepted `max_tokens`. A request without one generates until the model stops or the
/// context window is full, at most [`inference::MAX_GENERATED_TOKENS`] (as OpenAI, llama-server,
/// Ollama and vLLM do); one whose prompt plus `max_tokens` exceeds the window gets 400
/// `context_length_exceeded`.
pub const MAX_MAX_TOKENS: u32 = 4096;

/// Most choices one request may ask for (`n`), decoded together in the batch.
pub const MAX_N: u32 = 8;

/// `system_fingerprint` of every answer: this build.
const FINGERPRINT: &str = concat!("b3iq-", env!("CARGO_PKG_VERSION"));

/// Authenticate a `/v1` caller: 503 before claim, then a key with the inference scope.
fn authenticate(st: &NodeState, headers: &HeaderMap) -> Result<Caller> {
    if !st.claimed()? {
        return Err(HostError::NotClaimed);
    }
    let tok = bearer(headers).ok_or(HostError::MissingCredentials)?;
    Ok(Caller::LocalKey(
        auth::authenticate_key(&st.db, tok, auth::SCOPE_INFERENCE, st.now())?.id,
    ))
}

/// The caller of an inference request: on the gateway's tunnel (the request carries the
/// tunnel's context, which only the tunnel inserts) its ticket alone, never a local key;
/// otherwise a local key.
pub(super) fn caller(st: &Arc<NodeState>, req: &Request) -> Result<Caller> {
    match req.extensions().get::<TunnelContext>() {
        Some(t) => {
            let h = req
                .headers()
                .get(b3iq_protocol::gateway::TICKET_HEADER)
                .and_then(|v| v.to_str().ok());
            network::admit(st, t, h).map(Caller::Network).inspect_err(|e| tracing::info!(code = e.code(), reason = %e, "network mode: a tunnelled request was refused"))
        }
        None => authenticate(st, req.headers()),
    }
}

/// A network answer's receipt (and, for an attested request, its opening) in headers, which
/// the gateway takes out.
pub(super) fn network_headers(
    resp: &mut Response,
    receipt: &[u8],
    opened: Option<&b3iq_protocol::verification::OpenedGeneration>,
) {
    if let Ok(v) = HeaderValue::from_str(&hex::encode(receipt)) {
        resp.headers_mut()
            .insert(b3iq_protocol::gateway::RECEIPT_HEADER, v);
    }
    if let Some(v) = opened.and_then(|o| HeaderValue::from_str(&o.to_hex()).ok()) {
        resp.headers_mut()
            .insert(b3iq_protocol::verification::ATTESTATION_HEADER, v);
    }
}

/// A streamed network answer's opening (for an attested request) and receipt as SSE comments
/// before `[DONE]`, which the gateway takes out.
pub(super) fn network_sse(
    pending: &mut std::collections::VecDeque<Bytes>,
    f: &crate::inference::Finished,
) {
    if let Some(o) = &f.opened {
        pending.push_back(Bytes::from(format!(
            "{}{}\n\n",
            b3iq_protocol::verification::ATTESTATION_SSE_PREFIX,
            o.to_hex()
        )));
    }
    pending.push_back(Bytes::from(format!(
        "{}{}\n\n",
        b3iq_protocol::gateway::RECEIPT_SSE_PREFIX,
        hex::encode(&f.receipt)
    )));
}

/// A network request must ask for the model its ticket is for.
pub(super) fn check_ticket_model(caller: &Caller, model: &str) -> Result<()> {
    match caller {
        Caller::Network(g) if g.ticket.model_id != model => Err(HostError::InvalidTicket(format!(
            "the ticket is for model {}, the request asks for {model:?}",
            g.ticket.model_id
        ))),
        _ => Ok(()),
    }
}

/// `GET /v1/models`: the served models and the installed ones a request would load (on the
/// tunnel: those offered to the network).
pub async fn models(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let created = st.now();
    let ids: Vec<String> = if req.extensions().get::<TunnelContext>().is_some() {
        network::tunnel_models(&st, &network::policy(&st)?)
            .into_iter()
            .map(|m| m.model_id)
            .collect()
    } else {
        authenticate(&st, req.headers())?;
        st.available_models()?
    };
    let data = ids
        .iter()
        .map(|id| wire::Model::new(id, created, "b3iq"))
        .collect();
    Ok(axum::Json(wire::ModelList::new(data)).into_response())
}

/// `GET /v1/models/{id}` (the official clients' `models.retrieve`): the model object, or 404
/// `model_not_found`.
pub async fn model_get(
    State(st): State<Arc<NodeState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Result<Response> {
    let created = st.now();
    let found = if req.extensions().get::<TunnelContext>().is_some() {
        network::tunnel_models(&st, &network::policy(&st)?)
            .into_iter()
            .any(|m| m.model_id == id)
    } else {
        authenticate(&st, req.headers())?;
        st.available_models()?.contains(&id)
    };
    if !found {
        return Err(HostError::ModelNotFound(id.chars().take(128).collect()));
    }
    Ok(axum::Json(wire::Model::new(&id, created, "b3iq")).into_response())
}

pub(super) fn bad(msg: impl Into<String>) -> HostError {
    HostError::InvalidParameter(msg.into())
}

/// Parsed, validated common parameters.
pub(super) struct Params {
    pub(super) model: ServedModel,
    pub(super) sampling: SamplingParams,
    pub(super) max_tokens: Option<u32>,
    pub(super) stop: Vec<String>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    pub(super) response_format: ResponseFormat,
    pub(super) n: u32,
    /// Token log probabilities asked for (chat `logprobs` + `top_logprobs`, completions
    /// `logprobs`): alternatives per token. Set by the route ([`parse_logprobs`]).
    pub(super) logprobs: Option<u8>,
    /// Tool calling (chat only; [`parse_tools`]).
    pub(super) tools: Option<ToolsRequest>,
}

/// Most functions one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// Tool calling as one chat request asks for it: the functions (from `tools`, or the legacy
/// `functions`) and the choice (`tool_choice`, or the legacy `function_call`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ToolsRequest {
    pub(super) tools: Vec<ToolFunction>,
    pub(super) choice: ToolChoice,
    /// The request used `functions`: answer with `message.function_call` and
    /// `finish_reason: "function_call"`.
    pub(super) legacy: bool,
}

impl ToolsRequest {
    /// Whether the tools are shown to the model and its output read for calls.
    pub(super) fn active(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// Whether a call is forced by a grammar (`required` or a named function).
    pub(super) fn forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// The names a call may use.
    pub(super) fn names(&self) -> Vec<&str> {
        match &self.choice {
            ToolChoice::Function(n) => vec![n.as_str()],
            _ => self.tools.iter().map(|t| t.name.as_str()).collect(),
        }
    }

    /// The functions a forced call may name.
    fn allowed(&self) -> Vec<ToolFunction> {
        let names = self.names();
        self.tools
            .iter()
            .filter(|t| names.contains(&t.name.as_str()))
            .cloned()
            .collect()
    }

    /// Reads the calls out of a choice's whole text: `(content, calls)`.
    pub(super) fn parse(&self, text: &str) -> (String, Vec<ParsedToolCall>) {
        tools::parse_tool_calls(text, &self.names(), self.forced())
    }
}

/// `tools` / `functions` and `tool_choice` / `function_call` of a chat request. `Ok(None)` when
/// no function is offered and the choice is `none` or `auto` (or absent).
///
/// # Errors
/// 400 for a tool that is not a function, a bad or duplicate name, parameters that are not a
/// JSON Schema object, both `tools` and `functions`, more than [`MAX_TOOLS`], a `tool_choice`
/// that is not `none` / `auto` / `required` / a named function, a named function that is not
/// offered, or a required call without tools.
pub(super) fn parse_tools(c: &CommonParams) -> Result<Option<ToolsRequest>> {
    let tools = c
        .tools()
        .map_err(|e| bad(format!("`tools` must be a list of function tools: {e}")))?;
    let functions = c
        .functions()
        .map_err(|e| bad(format!("`functions` must be a list of functions: {e}")))?;
    if !tools.is_empty() && !functions.is_empty() {
        return Err(bad("send `tools` or the legacy `functions`, not both"));
    }
    let legacy = tools.is_empty() && !functions.is_empty();
    let defs = if legacy {
        functions
    } else {
        tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.kind == "function" {
                    Ok(t.function)
                } else {
                    Err(bad(format!(
                        "tools[{i}].type {:?} is not supported; only function tools are served",
                        t.kind.chars().take(40).collect::<String>()
                    )))
                }
            })
            .collect::<Result<Vec<_>>>()?
    };
    if defs.len() > MAX_TOOLS {
        return Err(bad(format!(
            "at most {MAX_TOOLS} tools may be offered, got {}",
            defs.len()
        )));
    }
    let mut funcs: Vec<ToolFunction> = Vec::with_capacity(defs.len());
    for (i, d) in defs.into_iter().enumerate() {
        let ok = !d.name.is_empty()
            && d.name.len() <= 64
            && d.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !ok {
            return Err(bad(format!(
                "tools[{i}].function.name must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -, got {:?}",
                d.name.chars().take(80).collect::<String>()
            )));
        }
        if funcs.iter().any(|f| f.name == d.name) {
            return Err(bad(format!("two tools are named {:?}", d.name)));
        }
        let parameters = match d.parameters {
            None | Some(serde_json::Value::Null) => serde_json::json!({"type": "object"}),
            Some(p) if p.is_object() => p,
            Some(_) => {
                return Err(bad(format!(
                    "tools[{i}].function.parameters must be a JSON Schema object"
                )))
            }
        };
        funcs.push(ToolFunction {
            name: d.name,
            description: d.description,
            parameters,
        });
    }
    let raw = ["tool_choice", "function_call"]
        .iter()
        .find_map(|f| c.extra.get(*f).filter(|v| !v.is_null()).map(|v| (*f, v)));
    let choice = match raw {
        None => ToolChoice::Auto,
        Some((_, serde_json::Value::String(s))) if s == "none" => ToolChoice::None,
        Some((_, serde_json::Value::String(s))) if s == "auto" => ToolChoice::Auto,
        Some(("tool_choice", serde_json::Value::String(s))) if s == "required" => {
            ToolChoice::Required
        }
        Some((field, serde_json::Value::Object(o))) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| {
                    bad(format!(
                        "`{field}` as an object must name a function: {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ))
                })?;
            ToolChoice::Function(name.to_string())
        }
        Some((field, _)) => {
            return Err(bad(format!(
                "`{field}` must be \"none\", \"auto\", \"required\" or a named function"
            )))
        }
    };
    if funcs.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(bad(
                "`tool_choice` asks for a tool call but the request offers no `tools`",
            )),
        };
    }
    if let ToolChoice::Function(n) = &choice {
        if !funcs.iter().any(|f| &f.name == n) {
            return Err(bad(format!(
                "`tool_choice` names function {:?}, which is not among the offered tools",
                n.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(Some(ToolsRequest {
        tools: funcs,
        choice,
        legacy,
    }))
}

/// `logprobs` / `top_logprobs`: on chat, `logprobs: true` with `top_logprobs` 0 to
/// [`MAX_TOP_LOGPROBS`] (`top_logprobs` needs `logprobs: true`, as OpenAI requires); on
/// completions, the legacy integer `logprobs` (0 to [`MAX_TOP_LOGPROBS`]; OpenAI allows 5).
/// Returns the alternatives per token, `None` for no log probabilities.
///
/// # Errors
/// 400 for values of the wrong type or out of range.
pub(super) fn parse_logprobs(c: &CommonParams, chat: bool) -> Result<Option<u8>> {
    use serde_json::Value;
    let lp = c.extra.get("logprobs").filter(|v| !v.is_null());
    let top = c.extra.get("top_logprobs").filter(|v| !v.is_null());
    let range = |field: &str, v: &Value| -> Result<u8> {
        v.as_u64()
            .filter(|&k| k <= u64::from(MAX_TOP_LOGPROBS))
            .map(|k| k as u8)
            .ok_or_else(|| {
                bad(format!(
                    "{field} must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {v}"
                ))
            })
    };
    if chat {
        let on = match lp {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(v) => {
                return Err(bad(format!(
                    "logprobs must be true or false on chat completions (top_logprobs sets how many alternatives), got {v}"
                )))
            }
        };
        let k = top.map(|v| range("top_logprobs", v)).transpose()?;
        return match (on, k) {
            (false, Some(k)) if k > 0 => Err(bad("top_logprobs requires logprobs: true")),
            (false, _) => Ok(None),
            (true, k) => Ok(Some(k.unwrap_or(0))),
        };
    }
    if top.is_some() {
        return Err(bad(
            "top_logprobs is a chat completions field; on completions send logprobs: <alternatives>",
        ));
    }
    match lp {
        None | Some(Value::Bool(false)) => Ok(None),
        Some(v) => range("logprobs", v).map(Some),
    }
}

/// `logit_bias`: an object of token id (a decimal string) -> bias in [-100, 100], at most
/// [`MAX_LOGIT_BIAS`] entries. Ids outside the model's vocabulary are refused when the sampler
/// is built (400 too).
fn parse_logit_bias(c: &CommonParams) -> Result<Vec<(u32, f32)>> {
    let Some(v) = c.extra.get("logit_bias").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let o = v
        .as_object()
        .ok_or_else(|| bad("logit_bias must be an object of token id -> bias"))?;
    if o.len() > MAX_LOGIT_BIAS {
        return Err(bad(format!(
            "logit_bias may hold at most {MAX_LOGIT_BIAS} entries, got {}",
            o.len()
        )));
    }
    o.iter()
        .map(|(k, b)| {
            let id: u32 = k.trim().parse().map_err(|_| {
                bad(format!(
                    "logit_bias keys must be token ids (non-negative integers), got {:?}",
                    k.chars().take(40).collect::<String>()
                ))
            })?;
            let b = b
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    bad(format!(
                        "logit_bias[{id}] must be a number between -100 and 100, got {b}"
                    ))
                })?;
            Ok((id, b as f32))
        })
        .collect()
}

pub(super) fn parse_common(st: &NodeState, c: &CommonParams) -> Result<Params> {
    parse_common_with(c, &|id| st.served_model(id))
}

/// Validate the parameters, then resolve the model (last, so every parameter error is found
/// without a node; the fuzz target relies on this).
pub(super) fn parse_common_with(
    c: &CommonParams,
    resolve: &dyn Fn(&str) -> Option<ServedModel>,
) -> Result<Params> {
    let model_id = c
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| HostError::field("model", "`model` is required; GET /v1/models lists them"))?;
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => None,
        Some(n) if (1..=MAX_MAX_TOKENS as i64).contains(&n) => Some(n as u32),
        Some(n) => {
            let param = if c.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
            return Err(HostError::field(param, format!(
                "{param} must be between 1 and {MAX_MAX_TOKENS}, got {n} (leave it out to generate until the model stops or the context is full)"
            )))
        }
    };
    let mut sampling = SamplingParams::default();
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(HostError::field("temperature", format!("temperature must be between 0 and 2, got {t}")));
        }
        sampling.temperature = t as f32;
    }
    if let Some(p) = c.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(HostError::field("top_p", format!("top_p must be in (0, 1], got {p}")));
        }
        sampling.top_p = p as f32;
    }
    for (name, v, slot) in [
        (
            "presence_penalty",
            c.presence_penalty,
            &mut sampling.presence_penalty,
        ),
        (
            "frequency_penalty",
            c.frequency_penalty,
            &mut sampling.frequency_penalty,
        ),
    ] {
        if let Some(v) = v {
            if !(-2.0..=2.0).contains(&v) {
                return Err(HostError::field(name, format!("{name} must be between -2 and 2, got {v}")));
            }
            *slot = v as f32;
        }
    }
    sampling.seed = c.seed;
    sampling.logit_bias = parse_logit_bias(c)?;
    vendor_sampling(c, &mut sampling)?;
    audit_fields(c)?;
    let n = match c.n {
        None => 1,
        Some(n) if (1..=MAX_N as i64).contains(&n) => n as u32,
        Some(n) => return Err(HostError::field("n", format!("n must be between 1 and {MAX_N}, got {n}"))),
    };
    let stop = c.stop.clone().map(wire::Stop::into_vec).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(HostError::field(
            "stop",
            "stop must be a non-empty string or up to 4 non-empty strings",
        ));
    }
    let stream = c.stream.unwrap_or(false);
    if c.stream_options.is_some() && !stream {
        return Err(HostError::field(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let include_usage = c.include_usage();
    let response_format = response_format(c)?;
    let model = resolve(model_id)
        .ok_or_else(|| HostError::ModelNotFound(model_id.chars().take(128).collect()))?;
    Ok(Params {
        model,
        sampling,
        max_tokens,
        stop,
        stream,
        include_usage,
        response_format,
        n,
        logprobs: None,
        tools: None,
    })
}

/// `response_format`: `text`, `json_object` (any JSON object, by the runtime's JSON grammar) or
/// `json_schema` (the schema compiled to a grammar by llama.cpp); any other type is a 400.
fn response_format(c: &CommonParams) -> Result<ResponseFormat> {
    let Some(v) = c.extra.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let js = v.get("json_schema").ok_or_else(|| {
                bad("response_format.json_schema is required when type is json_schema")
            })?;
            let schema = js
                .get("schema")
                .cloned()
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad("response_format.json_schema.schema must be a JSON Schema object")
                })?;
            let name = js.get("name").and_then(|n| n.as_str()).map(str::to_string);
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        other => Err(bad(format!(
            "response_format.type {:?} is not supported; use text, json_object or json_schema",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Vendor sampling extensions llama-server and vLLM take: `top_k` (>= 0), `min_p` (0 to 1),
/// `repetition_penalty` / `repeat_penalty` (> 0).
fn vendor_sampling(c: &CommonParams, s: &mut SamplingParams) -> Result<()> {
    let num = |name: &str| -> Result<Option<f64>> {
        match c.extra.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| HostError::field(name.to_string(), format!("`{name}` must be a number"))),
        }
    };
    if let Some(k) = num("top_k")? {
        if !(k >= 0.0 && k.fract() == 0.0 && k <= i32::MAX as f64) {
            return Err(HostError::field("top_k", format!("top_k must be a whole number >= 0, got {k}")));
        }
        s.top_k = k as i32;
    }
    if let Some(p) = num("min_p")? {
        if !(0.0..=1.0).contains(&p) {
            return Err(HostError::field("min_p", format!("min_p must be between 0 and 1, got {p}")));
        }
        s.min_p = p as f32;
    }
    for name in ["repetition_penalty", "repeat_penalty"] {
        if let Some(r) = num(name)? {
            if !(r > 0.0 && r <= 10.0) {
                return Err(HostError::field(name, format!("{name} must be in (0, 10], got {r}")));
            }
            s.repeat_penalty = r as f32;
        }
    }
    Ok(())
}

/// The OpenAI request fields that would change the answer but are not served: refused with a
/// 400 that names the field (never silently ignored). Fields that do not change the answer
/// (`user`, `metadata`, `store`, `service_tier`, `prediction`, `parallel_tool_calls`) are
/// accepted; `tools`, `logprobs` and `logit_bias` are served ([`parse_tools`],
/// [`parse_logprobs`], [`parse_logit_bias`]). docs/api.md lists every field.
fn audit_fields(c: &CommonParams) -> Result<()> {
    let refuse = |field: &str, why: &str| {
        Err(bad(format!(
            "`{field}` is not supported by this server: {why}"
        )))
    };
    let set = |name: &str| c.extra.get(name).filter(|v| !v.is_null());
    if set("echo").is_some_and(|v| v.as_bool() != Some(false)) {
        return refuse("echo", "the prompt is not echoed; leave echo out or false");
    }
    if set("best_of").is_some_and(|v| v.as_u64() != Some(1)) {
        return refuse("best_of", "only best_of = 1 is served");
    }
    if set("suffix").is_some_and(|v| v.as_str() != Some("")) {
        return refuse("suffix", "insertion (suffix) is not served");
    }
    if set("audio").is_some()
        || set("modalities").is_some_and(|v| {
            v.as_array()
                .is_none_or(|a| a.iter().any(|m| m.as_str() != Some("text")))
        })
    {
        return refuse(
            if set("audio").is_some() {
                "audio"
            } else {
                "modalities"
            },
            "only text output is served",
        );
    }
    if set("web_search_options").is_some() {
        return refuse("web_search_options", "web search is not served");
    }
    Ok(())
}

/// The conversation as the model reads it (see [`b3iq_runtime::tools`] for the format): an
/// assistant message's `tool_calls` (or legacy `function_call`) rendered after its text as
/// `<tool_call>` blocks; `tool` (and legacy `function`) messages as a user turn of
/// `<tool_response>` blocks (consecutive results share one turn); with active `tools`, the
/// tool list appended to the first system message (or a system message added in front).
///
/// # Errors
/// 400 for a missing or empty list, an unknown role, non-text content, or malformed
/// `tool_calls`.
pub(super) fn parse_chat(
    msgs: Option<Vec<wire::ChatMessage>>,
    tools: Option<&ToolsRequest>,
) -> Result<Vec<ChatMessage>> {
    let msgs = msgs.ok_or_else(|| HostError::field("messages", "`messages` is required"))?;
    if msgs.is_empty() {
        return Err(HostError::field("messages", "`messages` must not be empty"));
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(msgs.len() + 1);
    let mut after_tool = false;
    for (i, m) in msgs.into_iter().enumerate() {
        let calls = m
            .tool_calls()
            .map_err(|e| HostError::field(format!("messages[{i}].tool_calls"), format!("messages[{i}].tool_calls: {e}")))?;
        let fcall = m
            .function_call()
            .map_err(|e| HostError::field(format!("messages[{i}].function_call"), format!("messages[{i}].function_call: {e}")))?;
        let role = m.role.clone();
        let content = match m.content {
            None => String::new(),
            Some(c) => c.into_text().map_err(|p| {
                HostError::field(format!("messages[{i}].content"), format!(
                    "messages[{i}]: content part type {:?} is not supported (only text)",
                    p.kind
                ))
            })?,
        };
        let is_tool = matches!(role.as_str(), "tool" | "function");
        match role.as_str() {
            "system" | "developer" => out.push(ChatMessage::new(Role::System, content)),
            "user" => out.push(ChatMessage::new(Role::User, content)),
            "assistant" => {
                let mut pairs: Vec<(String, String)> = calls
                    .into_iter()
                    .map(|c| (c.function.name, c.function.arguments))
                    .collect();
                pairs.extend(fcall.map(|f| (f.name, f.arguments)));
                if pairs.iter().any(|(n, _)| n.is_empty()) {
                    return Err(HostError::field(format!("messages[{i}].tool_calls"), format!(
                        "messages[{i}]: every tool call needs function.name"
                    )));
                }
                let text = if pairs.is_empty() {
                    content
                } else {
                    tools::render_tool_calls(
                        &content,
                        pairs.iter().map(|(n, a)| (n.as_str(), a.as_str())),
                    )
                };
                out.push(ChatMessage::new(Role::Assistant, text));
            }
            "tool" | "function" => {
                let r = tools::render_tool_response(&content);
                match out.last_mut() {
                    Some(last) if after_tool => {
                        last.content.push('\n');
                        last.content.push_str(&r);
                    }
                    _ => out.push(ChatMessage::new(Role::User, r)),
                }
            }
            other => {
                return Err(HostError::field(format!("messages[{i}].role"), format!(
                    "messages[{i}].role {other:?} is not one of system, developer, user, assistant, tool"
                )))
            }
        }
        after_tool = is_tool;
    }
    if let Some(t) = tools.filter(|t| t.active()) {
        let block = tools::tools_system_prompt(&t.tools);
        match out.first_mut() {
            Some(first) if first.role == Role::System => {
                if !first.content.is_empty() {
                    first.content.push_str("\n\n");
                }
                first.content.push_str(&block);
            }
            _ => out.insert(0, ChatMessage::new(Role::System, block)),
        }
    }
    Ok(out)
}

/// Which endpoint is being served (response shapes differ).
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Chat,
    Text,
}

/// One SSE event carrying `value` as JSON.
fn event<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(sse::encode_json(value))
}

/// One stream chunk: the header with `choices`; with `include_usage` on, `"usage": null` as
/// OpenAI sends in every chunk before the usage chunk.
fn chunk_event<C: serde::Serialize>(
    head: &wire::Completion<()>,
    choices: Vec<C>,
    include_usage: bool,
) -> Bytes {
    let c = head.with_choices(choices);
    if !include_usage {
        return event(&c);
    }
    match serde_json::to_value(&c) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.entry("usage").or_insert(serde_json::Value::Null);
            event(&m)
        }
        _ => event(&c),
    }
}

fn wire_usage(u: &b3iq_runtime::runtime::Usage) -> wire::Usage {
    wire::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        prompt_tokens_details: None,
    }
    .with_cached_tokens(u.cached_prompt_tokens)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    // The key is checked before the body is read: a stranger's 2 MiB body gets 401, not 413.
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let JsonBody(b) = parse_json::<ChatCompletionRequest>(&body)?;
    let _loaded = model_on_demand(&st, &caller, b.params.model.as_deref()).await?;
    let mut p = parse_common(&st, &b.params)?;
    check_ticket_model(&caller, &p.model.id)?;
    chat_extras(&mut p, &b.params)?;
    let messages = parse_chat(b.messages, p.tools.as_ref())?;
    let prompt = Prompt::Chat(messages);
    run(st, caller, p, prompt, Flavor::Chat).await
}

/// For a local caller naming a model that is installed but not loaded: loads it (unloading
/// the least recently used idle model when the budget is reached; `context::loaded`) and holds
/// it until the returned use drops at the handler's end (a started generation holds its own).
/// Network tickets name served models only, so a network caller loads nothing.
///
/// # Errors
/// As `NodeState::load_model` (503 `model_memory_budget` when the models in use leave no room).
pub(super) async fn model_on_demand(
    st: &NodeState,
    caller: &Caller,
    model: Option<&str>,
) -> Result<Option<crate::context::loaded::ModelUse>> {
    let Some(id) = model.filter(|_| !matches!(caller, Caller::Network(_))) else {
        return Ok(None);
    };
    Ok(st
        .model_on_demand(id)
        .await?
        .map(|m| st.model_uses.begin(&m.id)))
}

/// The chat-only parameters: log probabilities and tools (a forced call becomes the output
/// grammar, which cannot be combined with a JSON `response_format`).
fn chat_extras(p: &mut Params, c: &CommonParams) -> Result<()> {
    p.logprobs = parse_logprobs(c, true)?;
    apply_tools(p, c)
}

/// Parses the tools of a chat (or Responses) request into `p`; a forced call becomes the output
/// grammar (400 beside a JSON `response_format`).
pub(super) fn apply_tools(p: &mut Params, c: &CommonParams) -> Result<()> {
    p.tools = parse_tools(c)?;
    if let Some(t) = p.tools.as_ref().filter(|t| t.active() && t.forced()) {
        if p.response_format != ResponseFormat::Text {
            return Err(bad(
                "a required or named tool_choice cannot be combined with a JSON response_format",
            ));
        }
        p.response_format = ResponseFormat::ToolCall { tools: t.allowed() };
    }
    Ok(())
}

/// `POST /v1/completions`.
pub async fn completions(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let JsonBody(b) = parse_json::<CompletionRequest>(&body)?;
    let _loaded = model_on_demand(&st, &caller, b.params.model.as_deref()).await?;
    let mut p = parse_common(&st, &b.params)?;
    check_ticket_model(&caller, &p.model.id)?;
    text_extras(&mut p, &b.params)?;
    let text = match b.prompt {
        None => return Err(HostError::field("prompt", "`prompt` is required")),
        Some(PromptInput::One(s)) => s,
        Some(PromptInput::Many(mut v)) if v.len() == 1 => v.remove(0),
        Some(PromptInput::Many(_)) => {
            return Err(bad(
                "`prompt` must be a string or an array of exactly one string",
            ))
        }
    };
    if text.is_empty() {
        return Err(HostError::field("prompt", "`prompt` must not be empty"));
    }
    run(st, caller, p, Prompt::Text(text), Flavor::Text).await
}

/// The completions-only parameters: legacy `logprobs`; tools are a chat feature.
fn text_extras(p: &mut Params, c: &CommonParams) -> Result<()> {
    p.logprobs = parse_logprobs(c, false)?;
    for field in ["tools", "functions"] {
        if c.extra.get(field).and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty()) {
            return Err(bad(format!(
                "`{field}` is served on /v1/chat/completions, not on /v1/completions"
            )));
        }
    }
    Ok(())
}

/// Parse and validate a `/v1/chat/completions` or `/v1/completions` body from outside bytes
/// without a running node (no model is served, so a valid body ends in `ModelNotFound`). For the
/// fuzz target: it must return a typed error for any input, never panic.
pub fn validate_request_body(chat: bool, body: &[u8]) -> Result<()> {
    let none = |_: &str| None;
    if chat {
        let JsonBody(b) = parse_json::<ChatCompletionRequest>(body)?;
        parse_logprobs(&b.params, true)?;
        let tools = parse_tools(&b.params)?;
        parse_chat(b.messages, tools.as_ref())?;
        parse_common_with(&b.params, &none).map(|_| ())
    } else {
        let JsonBody(b) = parse_json::<CompletionRequest>(body)?;
        if b.prompt.is_none() {
            return Err(HostError::field("prompt", "`prompt` is required"));
        }
        parse_logprobs(&b.params, false)?;
        parse_common_with(&b.params, &none).map(|_| ())
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<JsonBody<T>> {
    if body.is_empty() {
        return Err(HostError::InvalidJson(
            "the body is empty; send a JSON object".into(),
        ));
    }
    HostError::from_json_body(body).map(JsonBody)
}

async fn run(
    st: Arc<NodeState>,
    caller: Caller,
    p: Params,
    prompt: Prompt,
    flavor: Flavor,
) -> Result<Response> {
    // A network answer carries the node's signed receipt for the gateway to settle with; its
    // ticket names one request, so one choice.
    let network = matches!(caller, Caller::Network(_));
    if network && p.n > 1 {
        return Err(bad(
            "n > 1 is not served to network requests (one ticket, one generation)",
        ));
    }
    // `n` choices: `n` sequences decoded together in the batch, each with its own receipt; with
    // a seed, choice i uses seed + i (so the choices differ and each is reproducible).
    let mut infs = Vec::with_capacity(p.n as usize);
    for i in 0..p.n {
        let mut sampling = p.sampling.clone();
        sampling.seed = p.sampling.seed.map(|s| s.wrapping_add(u64::from(i)));
        let req = InferenceRequest {
            caller: caller.clone(),
            model: p.model.clone(),
            prompt: prompt.clone(),
            sampling,
            max_tokens: p.max_tokens,
            stop: p.stop.clone(),
            response_format: p.response_format.clone(),
            logprobs: p.logprobs,
        };
        infs.push(inference::start(&st, req).await?);
    }
    let created = infs[0].created();
    let id = match flavor {
        Flavor::Chat => format!("chatcmpl-{}", infs[0].request_id().to_hex()),
        Flavor::Text => format!("cmpl-{}", infs[0].request_id().to_hex()),
    };
    let object = match (flavor, p.stream) {
        (Flavor::Chat, false) => CHAT_COMPLETION,
        (Flavor::Chat, true) => CHAT_COMPLETION_CHUNK,
        (Flavor::Text, _) => TEXT_COMPLETION,
    };
    // Every answer and chunk repeats this header (id, object, created, model, fingerprint).
    let head = wire::Completion::<()>::new(id, object, created, p.model.id.clone())
        .with_fingerprint(FINGERPRINT);
    // Tools shown to the model: its output is read for calls.
    let tools = p.tools.clone().filter(ToolsRequest::active);

    if !p.stream {
        let done = futures_util::future::join_all(infs.into_iter().map(Inference::collect)).await;
        let done = done.into_iter().collect::<Result<Vec<_>>>()?;
        let mut usage = wire::Usage::default();
        for d in &done {
            add_usage(&mut usage, &d.finished.usage);
        }
        let receipt_id = done[0].finished.receipt_id.clone();
        let receipt = done[0].finished.receipt.clone();
        let opened = done[0].finished.opened.clone();
        let mut resp = match flavor {
            Flavor::Chat => {
                let choices = done
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let (message, finish) =
                            chat_answer(d.text, d.finished.finish_reason, tools.as_ref());
                        ChatChoice {
                            index: i as u32,
                            message,
                            logprobs: p.logprobs.map(|_| chat_logprobs(&d.logprobs)),
                            finish_reason: Some(finish),
                        }
                    })
                    .collect();
                axum::Json(
                    head.with_choices(choices)
                        .with_usage(usage)
                        .with_receipt(receipt_id),
                )
                .into_response()
            }
            Flavor::Text => {
                let choices = done
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| TextChoice {
                        index: i as u32,
                        logprobs: p.logprobs.map(|_| text_logprobs(&d.logprobs, &mut 0)),
                        ..TextChoice::finished(d.text, d.finished.finish_reason.as_str())
                    })
                    .collect();
                axum::Json(
                    head.with_choices(choices)
                        .with_usage(usage)
                        .with_receipt(receipt_id),
                )
                .into_response()
            }
        };
        if network {
            network_headers(&mut resp, &receipt, opened.as_deref());
        }
        return Ok(resp);
    }

    // Streaming: the choices' event streams merged, each event tagged with its choice index.
    // Dropping the body (client gone) drops every generation stream, which cancels them.
    type Tagged = (u32, Result<InferenceEvent>);
    let merged = futures_util::stream::select_all(infs.into_iter().enumerate().map(|(i, inf)| {
        Box::pin(futures_util::stream::unfold(
            Some(inf),
            move |inf| async move {
                let mut inf = inf?;
                match inf.next().await {
                    None => Some((
                        (
                            i as u32,
                            Err(HostError::Internal(
                                "generation ended without a final event".into(),
                            )),
                        ),
                        None,
                    )),
                    Some(Ok(InferenceEvent::Done(f))) => {
                        Some(((i as u32, Ok(InferenceEvent::Done(f))), None))
                    }
                    Some(Err(e)) => Some(((i as u32, Err(e)), None)),
                    Some(Ok(ev)) => Some(((i as u32, Ok(ev)), Some(inf))),
                }
            },
        ))
    }));
    /// Per choice: the tool-call filter (tools active) and the character offset of the next
    /// token's text (legacy `text_offset`).
    struct Choice {
        filter: Option<ToolCallFilter>,
        offset: u32,
    }
    struct S {
        events: Option<
            futures_util::stream::SelectAll<
                std::pin::Pin<Box<dyn futures_util::Stream<Item = Tagged> + Send>>,
            >,
        >,
        head: wire::Completion<()>,
        flavor: Flavor,
        include_usage: bool,
        network: bool,
        left: u32,
        usage: wire::Usage,
        pending: std::collections::VecDeque<Bytes>,
        logprobs: bool,
        tools: Option<ToolsRequest>,
        choices: Vec<Choice>,
    }
    impl S {
        fn chat(&mut self, choice: ChatChunkChoice) {
            let c = chunk_event(&self.head, vec![choice], self.include_usage);
            self.pending.push_back(c);
        }
    }
    let events = futures_util::stream::SelectAll::from_iter(
        merged
            .into_iter()
            .map(|s| -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Tagged> + Send>> { s }),
    );
    let mut init = S {
        events: Some(events),
        head,
        flavor,
        include_usage: p.include_usage,
        network,
        left: p.n,
        usage: wire::Usage::default(),
        pending: Default::default(),
        logprobs: p.logprobs.is_some(),
        choices: (0..p.n)
            .map(|_| Choice {
                filter: tools.as_ref().map(|_| ToolCallFilter::default()),
                offset: 0,
            })
            .collect(),
        tools,
    };
    if flavor == Flavor::Chat {
        for i in 0..p.n {
            init.chat(ChatChunkChoice {
                index: i,
                ..ChatChunkChoice::role("assistant")
            });
        }
    }
    let body_stream = futures_util::stream::unfold(init, |mut s| async move {
        use futures_util::StreamExt;
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            let events = s.events.as_mut()?;
            match events.next().await {
                None => {
                    s.events = None;
                    let e = HostError::Internal("generation ended without a final event".into());
                    return Some((Ok(event(&e.body())), s));
                }
                Some((_, Err(e))) => {
                    // A runtime failure mid-stream, or the receipt could not be stored: an error
                    // event and no [DONE] (the response did not complete).
                    s.events = None;
                    tracing::warn!(error = %e, "stream failed after it started");
                    return Some((Ok(event(&e.body())), s));
                }
                Some((i, Ok(InferenceEvent::Delta(text, lps)))) => {
                    let ch = &mut s.choices[i as usize];
                    match s.flavor {
                        Flavor::Chat => {
                            let text = match ch.filter.as_mut() {
                                Some(f) => f.push(&text),
                                None => text,
                            };
                            if text.is_empty() && lps.is_empty() {
                                continue;
                            }
                            let logprobs = s.logprobs.then(|| chat_logprobs(&lps));
                            s.chat(ChatChunkChoice {
                                index: i,
                                logprobs,
                                ..ChatChunkChoice::content(text)
                            });
                        }
                        Flavor::Text => {
                            let logprobs =
                                s.logprobs.then(|| text_logprobs(&lps, &mut ch.offset));
                            let c = chunk_event(
                                &s.head,
                                vec![TextChoice {
                                    index: i,
                                    logprobs,
                                    ..TextChoice::partial(text)
                                }],
                                s.include_usage,
                            );
                            s.pending.push_back(c);
                        }
                    }
                }
                Some((i, Ok(InferenceEvent::Done(f)))) => {
                    // This choice's receipt is durable: its finish chunk; after the last choice,
                    // usage (all choices) and [DONE].
                    match s.flavor {
                        Flavor::Chat => {
                            let mut finish = f.finish_reason.as_str().to_string();
                            let held = s.choices[i as usize].filter.take();
                            if let (Some(mut filter), Some(t)) = (held, s.tools.clone()) {
                                let (mut rest, mut calls) = filter.finish(&t.names());
                                if calls.is_empty() && t.forced() {
                                    (rest, calls) = t.parse(&rest);
                                }
                                if !rest.is_empty() {
                                    s.chat(ChatChunkChoice {
                                        index: i,
                                        ..ChatChunkChoice::content(rest)
                                    });
                                }
                                if !calls.is_empty() {
                                    for d in tool_call_deltas(&calls, t.legacy) {
                                        s.chat(ChatChunkChoice {
                                            index: i,
                                            ..ChatChunkChoice::with_delta(d, None)
                                        });
                                    }
                                    finish = finish_for_calls(t.legacy).into();
                                }
                            }
                            s.chat(ChatChunkChoice {
                                index: i,
                                ..ChatChunkChoice::finish(finish)
                            });
                        }
                        Flavor::Text => {
                            let c = chunk_event(
                                &s.head,
                                vec![TextChoice {
                                    index: i,
                                    ..TextChoice::finished("", f.finish_reason.as_str())
                                }],
                                s.include_usage,
                            );
                            s.pending.push_back(c);
                        }
                    }
                    add_usage(&mut s.usage, &f.usage);
                    s.left -= 1;
                    if s.left > 0 {
                        continue;
                    }
                    s.events = None;
                    if s.include_usage {
                        s.pending.push_back(event(
                            &s.head
                                .with_choices(Vec::<ChatChunkChoice>::new())
                                .with_usage(s.usage),
                        ));
                    }
                    if s.network {
                        // SSE comments (clients ignore them); the gateway takes them out.
                        network_sse(&mut s.pending, &f);
                    }
                    s.pending.push_back(Bytes::from_static(sse::DONE_EVENT));
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

/// `finish_reason` of an answer that called tools.
fn finish_for_calls(legacy: bool) -> &'static str {
    if legacy {
        "function_call"
    } else {
        "tool_calls"
    }
}

/// A new tool call id, `call_` and 24 random hex digits.
pub(super) fn call_id() -> String {
    let mut b = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("call_{}", hex::encode(b))
}

/// The message and `finish_reason` of a whole chat answer: with tools shown and calls in the
/// text, `content` is the text around them (`null` when none) and `tool_calls` (or, legacy,
/// `function_call`: the first call) carries them, finished `tool_calls` (`function_call`).
fn chat_answer(
    text: String,
    finish: FinishReason,
    tools: Option<&ToolsRequest>,
) -> (AssistantMessage, String) {
    let mut msg = ChatChoice::assistant(String::new(), "").message;
    if let Some(t) = tools {
        let (content, calls) = t.parse(&text);
        if !calls.is_empty() {
            msg.content = Some(content).filter(|c| !c.is_empty());
            if t.legacy {
                msg.function_call = calls.into_iter().next().map(|c| FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                });
            } else {
                msg.tool_calls = Some(
                    calls
                        .into_iter()
                        .map(|c| ToolCall {
                            id: call_id(),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: c.name,
                                arguments: c.arguments,
                            },
                        })
                        .collect(),
                );
            }
            return (msg, finish_for_calls(t.legacy).into());
        }
    }
    msg.content = Some(text);
    (msg, finish.as_str().into())
}

/// The stream deltas of parsed calls, as OpenAI streams them: per call, one delta with its
/// `index`, `id`, `type` and `function.name` (empty arguments), then one with the arguments.
/// Legacy: the first call as `function_call` deltas.
fn tool_call_deltas(calls: &[ParsedToolCall], legacy: bool) -> Vec<ChatDelta> {
    if legacy {
        let Some(c) = calls.first() else {
            return Vec::new();
        };
        return vec![
            ChatDelta {
                function_call: Some(FunctionCallDelta {
                    name: Some(c.name.clone()),
                    arguments: Some(String::new()),
                }),
                ..ChatDelta::default()
            },
            ChatDelta {
                function_call: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(c.arguments.clone()),
                }),
                ..ChatDelta::default()
            },
        ];
    }
    let mut out = Vec::with_capacity(calls.len() * 2);
    for (i, c) in calls.iter().enumerate() {
        out.push(ChatDelta {
            tool_calls: Some(vec![ToolCallDelta {
                index: i as u32,
                id: Some(call_id()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some(c.name.clone()),
                    arguments: Some(String::new()),
                }),
            }]),
            ..ChatDelta::default()
        });
        out.push(ChatDelta {
            tool_calls: Some(vec![ToolCallDelta {
                index: i as u32,
                function: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(c.arguments.clone()),
                }),
                ..ToolCallDelta::default()
            }]),
            ..ChatDelta::default()
        });
    }
    out
}

/// A log probability as JSON writes it: the f32's shortest decimal (not its f64 widening), and
/// OpenAI's `-9999.0` for an impossible token.
fn wire_logprob(l: f32) -> f64 {
    if l.is_finite() {
        l.to_string().parse().unwrap_or(f64::from(l))
    } else {
        -9999.0
    }
}

/// Chat's `logprobs`: one `content` entry per token.
pub(super) fn chat_logprobs(entries: &[TokenLogprob]) -> ChatLogprobs {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    ChatLogprobs {
        content: Some(
            entries
                .iter()
                .map(|e| ChatTokenLogprob {
                    token: text(&e.sampled.bytes),
                    logprob: wire_logprob(e.sampled.logprob),
                    bytes: Some(e.sampled.bytes.clone()),
                    top_logprobs: e
                        .top
                        .iter()
                        .map(|t| TopLogprob {
                            token: text(&t.bytes),
                            logprob: wire_logprob(t.logprob),
                            bytes: Some(t.bytes.clone()),
                        })
                        .collect(),
                })
                .collect(),
        ),
    }
}

/// Completions' legacy `logprobs`: parallel lists; `text_offset` counts characters of the
/// tokens' text from the start of the completion (`offset` carries it across chunks). Two
/// alternatives with the same text keep the likelier one's value.
fn text_logprobs(entries: &[TokenLogprob], offset: &mut u32) -> TextLogprobs {
    let mut out = TextLogprobs::default();
    for e in entries {
        let token = String::from_utf8_lossy(&e.sampled.bytes).into_owned();
        let mut top = serde_json::Map::new();
        for t in &e.top {
            top.entry(String::from_utf8_lossy(&t.bytes).into_owned())
                .or_insert(serde_json::json!(wire_logprob(t.logprob)));
        }
        out.text_offset.push(*offset);
        *offset += token.chars().count() as u32;
        out.tokens.push(token);
        out.token_logprobs.push(Some(wire_logprob(e.sampled.logprob)));
        out.top_logprobs.push(Some(top));
    }
    out
}

/// Adds one choice's metered tokens to the answer's usage (each choice is its own metered,
/// receipted generation, so the prompt counts once per choice).
fn add_usage(total: &mut wire::Usage, u: &b3iq_runtime::runtime::Usage) {
    total.add(&wire_usage(u));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_refuse_bad_roles() {
        let m: Vec<wire::ChatMessage> = serde_json::from_str(r#"[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]"#).unwrap();
        let out = parse_chat(Some(m), None).unwrap();
        assert_eq!(out[1].content, "ab");
        assert_eq!(out[2].content, "");
        let m: Vec<wire::ChatMessage> =
            serde_json::from_str(r#"[{"role":"wizard","content":"x"}]"#).unwrap();
        assert!(parse_chat(Some(m), None)
            .unwrap_err()
            .to_string()
            .contains("wizard"));
        assert!(parse_chat(Some(vec![]), None).is_err());
        assert!(parse_chat(None, None).is_err());
        let m: Vec<wire::ChatMessage> =
            serde_json::from_str(r#"[{"role":"user","content":[{"type":"image_url"}]}]"#).unwrap();
        assert!(parse_chat(Some(m), None).is_err());
    }

    fn params(v: serde_json::Value) -> CommonParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tools_choices_and_history_are_parsed_and_rendered() {
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
        let t = parse_tools(&params(serde_json::json!({"tools": tools, "tool_choice": "required"})))
            .unwrap()
            .unwrap();
        assert!(t.active() && t.forced() && !t.legacy);
        let t = parse_tools(&params(serde_json::json!({"functions": [{"name": "f"}], "function_call": {"name": "f"}})))
            .unwrap()
            .unwrap();
        assert!(t.legacy && t.choice == ToolChoice::Function("f".into()));
        assert_eq!(t.tools[0].parameters, serde_json::json!({"type": "object"}));
        assert!(parse_tools(&params(serde_json::json!({"tool_choice": "auto"}))).unwrap().is_none());
        for bad_body in [
            serde_json::json!({"tool_choice": "required"}),
            serde_json::json!({"tools": tools, "tool_choice": "sometimes"}),
            serde_json::json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "x"}}}),
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            serde_json::json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]}),
            serde_json::json!({"tools": tools, "functions": [{"name": "f"}]}),
            serde_json::json!({"tools": "nope"}),
        ] {
            assert!(matches!(parse_tools(&params(bad_body.clone())), Err(HostError::InvalidParameter(_))), "{bad_body}");
        }
        let t = parse_tools(&params(serde_json::json!({"tools": tools}))).unwrap();
        let m: Vec<wire::ChatMessage> = serde_json::from_str(r#"[{"role":"user","content":"w?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"sunny"},{"role":"tool","tool_call_id":"call_2","content":"windy"}]"#).unwrap();
        let out = parse_chat(Some(m), t.as_ref()).unwrap();
        assert_eq!(out[0].role, Role::System);
        assert!(out[0].content.contains("<tools>") && out[0].content.contains("get_weather"));
        assert!(out[2].content.contains("<tool_call>") && out[2].content.contains("Paris"), "{:?}", out[2]);
        assert_eq!(out.len(), 4, "consecutive tool results share one turn: {out:?}");
        assert!(out[3].content.contains("sunny") && out[3].content.contains("windy"));
    }

    #[test]
    fn logprobs_and_logit_bias_are_range_checked() {
        let c = |v| params(v);
        assert_eq!(parse_logprobs(&c(serde_json::json!({"logprobs": true, "top_logprobs": 2})), true).unwrap(), Some(2));
        assert_eq!(parse_logprobs(&c(serde_json::json!({"logprobs": true})), true).unwrap(), Some(0));
        assert_eq!(parse_logprobs(&c(serde_json::json!({})), true).unwrap(), None);
        assert_eq!(parse_logprobs(&c(serde_json::json!({"logprobs": 3})), false).unwrap(), Some(3));
        for (v, chat) in [
            (serde_json::json!({"logprobs": 2}), true),
            (serde_json::json!({"top_logprobs": 1}), true),
            (serde_json::json!({"logprobs": true, "top_logprobs": 21}), true),
            (serde_json::json!({"logprobs": 21}), false),
            (serde_json::json!({"logprobs": 1, "top_logprobs": 1}), false),
        ] {
            assert!(parse_logprobs(&c(v.clone()), chat).is_err(), "{v}");
        }
        assert_eq!(parse_logit_bias(&c(serde_json::json!({"logit_bias": {"7": -100, "9": 5.5}}))).unwrap(), vec![(7, -100.0), (9, 5.5)]);
        for v in [
            serde_json::json!({"logit_bias": {"x": 1}}),
            serde_json::json!({"logit_bias": {"1": 100.5}}),
            serde_json::json!({"logit_bias": [1]}),
        ] {
            assert!(parse_logit_bias(&c(v.clone())).is_err(), "{v}");
        }
    }

    #[test]
    fn request_bodies_get_typed_errors() {
        assert!(matches!(
            validate_request_body(true, b""),
            Err(HostError::InvalidJson(_))
        ));
        assert!(matches!(
            validate_request_body(true, b"[1,2"),
            Err(HostError::InvalidJson(_))
        ));
        let ok = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":["x"]}"#;
        assert!(matches!(
            validate_request_body(true, ok),
            Err(HostError::ModelNotFound(_))
        ));
        // Each refusal names its field in `param` (OpenAI's error body), in JSON's words.
        let param = |chat: bool, body: &[u8]| -> (String, String) {
            match validate_request_body(chat, body) {
                Err(e @ HostError::InvalidField { .. }) => {
                    let b = e.body();
                    (b["error"]["param"].as_str().unwrap().to_string(), b["error"]["message"].as_str().unwrap().to_string())
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        };
        let hi = r#""messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(param(true, format!(r#"{{"model":"m",{hi},"max_tokens":0}}"#).as_bytes()).0, "max_tokens");
        assert_eq!(param(true, format!(r#"{{"model":"m",{hi},"max_completion_tokens":5000}}"#).as_bytes()).0, "max_completion_tokens");
        assert_eq!(param(true, format!(r#"{{"model":"m",{hi},"n":9}}"#).as_bytes()).0, "n");
        assert_eq!(param(false, br#"{"model":"m","prompt":"x","stop":["a","b","c","d","e"]}"#).0, "stop");
        assert_eq!(param(false, br#"{"model":"m"}"#).0, "prompt");
        assert_eq!(param(true, br#"{"model":"m"}"#).0, "messages");
        assert_eq!(param(true, br#"{"model":"m","messages":[]}"#).0, "messages");
        assert_eq!(param(true, format!(r#"{{{hi}}}"#).as_bytes()).0, "model");
        assert_eq!(param(true, format!(r#"{{"model":"m",{hi},"temperature":3}}"#).as_bytes()).0, "temperature");
        let (p, m) = param(true, format!(r#"{{"model":"m",{hi},"max_tokens":"abc"}}"#).as_bytes());
        assert_eq!(p, "max_tokens");
        assert!(m.contains("an integer") && !m.contains("i64"), "{m}");
        let (p, m) = param(true, format!(r#"{{"model":"m",{hi},"stream":"yes"}}"#).as_bytes());
        assert_eq!(p, "stream");
        assert!(m.contains("true or false"), "{m}");
        let (p, m) = param(true, br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":5}]}"#);
        assert!(p.starts_with("messages[1]"), "{p}");
        assert!(m.contains("a string or an array of content parts") && !m.contains("MessageContent"), "{m}");
        let (p, _) = param(true, br#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#);
        assert_eq!(p, "messages[0].role");
        match validate_request_body(true, b"[1,2]") {
            Err(e) => {
                let m = e.body()["error"]["message"].as_str().unwrap().to_string();
                assert!(m.contains("a JSON object") && !m.contains("ChatCompletionRequest"), "{m}");
            }
            Ok(()) => panic!("an array is not a request"),
        }
    }

    #[test]
    fn queue_full_maps_to_429_with_whole_seconds() {
        use b3iq_runtime::RuntimeError;
        use inference::map_runtime;
        let e = map_runtime(RuntimeError::QueueFull {
            retry_after_ms: 1500,
        });
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(matches!(e, HostError::QueueFull(2)));
        let e = map_runtime(RuntimeError::QueueFull { retry_after_ms: 0 });
        assert!(matches!(e, HostError::QueueFull(1)));
        let r = HostError::QueueFull(2).into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "2");
    }

    #[test]
    fn a_full_kv_cache_maps_to_503_with_a_message_that_says_what_to_do() {
        use b3iq_runtime::RuntimeError;
        use inference::map_runtime;
        let e = map_runtime(RuntimeError::KvCacheFull);
        assert!(matches!(e, HostError::KvCacheFull));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "kv_cache_full");
        assert_eq!(
            b3iq_core::ClassifiedError::category(&e),
            b3iq_core::ErrorCategory::State
        );
        let body = e.body();
        assert_eq!(body["error"]["type"], "service_unavailable");
        assert_eq!(body["error"]["code"], "kv_cache_full");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("KV cache is full") && msg.contains("retry"), "{msg}");
        let r = e.into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }
}
