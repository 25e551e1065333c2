//! The one receipted-inference path: admit -> generate -> meter -> sign and store the receipt.
//!
//! Every request that produces tokens for someone goes through [`start`]: the OpenAI routes
//! (`/v1/chat/completions`, `/v1/completions`), the wizard's playground, the `run_benchmark` job
//! and, next, the gateway tunnel. Embeddings (`/v1/embeddings`) go through [`embed`], which
//! meters and receipts them the same way (prompt tokens only). Front doors only translate their wire format into an
//! [`InferenceRequest`] and [`InferenceEvent`]s back into theirs; admission, metering, pricing,
//! the receipt and its durability are decided here once.
//!
//! The receipt is durable (committed with `synchronous=FULL`) before [`InferenceEvent::Done`] is
//! handed out, so a front door can never complete a response whose receipt is missing.

pub mod receipts;

use std::sync::Arc;
use std::time::Instant;

use b3iq_core::receipt::RequestId;
use b3iq_runtime::runtime::{
    Completion, EmbedInput, EmbedRequest, Embeddings, FinishReason, GenerateRequest,
    GenerationEvent, GenerationStream, Prompt, ResponseFormat, SamplingParams, Timings, TokenIds,
    TokenLogprob, Usage,
};
use b3iq_runtime::RuntimeError;

use crate::context::{unix_now_ms, NodeState, ServedModel};
use crate::error::{HostError, Result};

/// Who asked for (and is charged for) a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A local API key, by id (`key_...`).
    LocalKey(String),
    /// The owner, from the wizard (the playground) or the node itself (the benchmark job).
    Owner,
    /// The network, through the gateway's tunnel, with its verified ticket (the request id and
    /// price of the receipt) and its place in the network share.
    Network(Arc<crate::network::NetworkGrant>),
}

impl Caller {
    /// The id usage and receipts are filed under: the key id, `owner` or `network`.
    pub fn key_id(&self) -> &str {
        match self {
            Caller::LocalKey(id) => id,
            Caller::Owner => "owner",
            Caller::Network(_) => crate::store::receipts::NETWORK_KEY_ID,
        }
    }

    /// The ticket's price schedule for a network request (`None`: the local price).
    pub fn network_price(&self) -> Option<b3iq_core::metering::PriceSchedule> {
        match self {
            Caller::Network(g) => Some(g.ticket.price),
            _ => None,
        }
    }
}

/// One request to the inference path.
#[derive(Debug, Clone)]
pub struct InferenceRequest {
    /// Who pays.
    pub caller: Caller,
    /// The served model.
    pub model: ServedModel,
    /// Chat messages or a raw prompt.
    pub prompt: Prompt,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Most tokens to generate (validated by the front door, at least 1). `Some(n)`: the prompt
    /// plus `n` must fit the model's context window, else [`start`] answers 400
    /// `context_length_exceeded`. `None`: until the model stops or the context is full, at most
    /// [`MAX_GENERATED_TOKENS`].
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Structured output constraint.
    pub response_format: ResponseFormat,
    /// Token log probabilities with this many alternatives per token (`None`: none); see
    /// [`GenerateRequest::logprobs`].
    pub logprobs: Option<u8>,
}

impl InferenceRequest {
    /// A request with default sampling, no stop sequences and free-form output.
    pub fn new(
        caller: Caller,
        model: ServedModel,
        prompt: Prompt,
        max_tokens: u32,
    ) -> InferenceRequest {
        InferenceRequest {
            caller,
            model,
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: Some(max_tokens),
            stop: Vec::new(),
            response_format: ResponseFormat::default(),
            logprobs: None,
        }
    }
}

/// What an admitted request yields.
#[derive(Debug, Clone, PartialEq)]
pub enum InferenceEvent {
    /// New text (whole UTF-8 characters, never part of a stop sequence) and, when the request
    /// asked for them, the log probabilities of the tokens it completes.
    Delta(String, Vec<TokenLogprob>),
    /// The end: its receipt is already durable.
    Done(Finished),
}

/// The end of a request, with its receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Timings from the runtime.
    pub timings: Timings,
    /// The stored receipt's id (hex).
    pub receipt_id: String,
    /// The signed receipt (b3iq-core encoding), for a network caller's answer.
    pub receipt: Vec<u8>,
    /// Time to the first token, ms (the whole duration when no token came).
    pub ttft_ms: u64,
    /// Wall time from admission to the receipt, ms.
    pub duration_ms: u64,
    /// A verifiable network request's opening (its signed attestation and token ids), for the
    /// gateway only (see [`attest`]).
    pub opened: Option<Box<b3iq_protocol::verification::OpenedGeneration>>,
}

/// A whole completion with its receipt ([`Inference::collect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// All text.
    pub text: String,
    /// Log probabilities of the delivered tokens (empty unless the request asked for them).
    pub logprobs: Vec<TokenLogprob>,
    /// The end.
    pub finished: Finished,
}

/// An admitted request in flight. Dropping it cancels the generation (the runtime frees the
/// sequence); if text was already produced (a client that went away mid-stream), a receipt for
/// the tokens produced is still written, with outcome `cancelled`, and usage counts them: in
/// network mode those tokens are money.
pub struct Inference {
    /// Keeps the model loaded until the generation ends (`context::loaded`).
    _model_use: crate::context::loaded::ModelUse,
    st: Arc<NodeState>,
    stream: Option<GenerationStream>,
    req: InferenceRequest,
    request_id: RequestId,
    started_ms: u64,
    t0: Instant,
    ttft_ms: Option<u64>,
    text: String,
}

impl std::fmt::Debug for Inference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inference")
            .field("request_id", &self.request_id.to_hex())
            .finish_non_exhaustive()
    }
}

/// The ceiling on generated tokens of a request that names no `max_tokens` (the runtime also
/// stops when the context window is full, which comes first with the default 2048-token window).
pub const MAX_GENERATED_TOKENS: u32 = 4096;

/// Map a runtime error to the host error a client sees (status and code).
pub fn map_runtime(e: RuntimeError) -> HostError {
    match e {
        RuntimeError::QueueFull { retry_after_ms } => {
            HostError::QueueFull(retry_after_ms.div_ceil(1000).max(1))
        }
        RuntimeError::ModelNotFound { model } => HostError::ModelNotFound(model),
        RuntimeError::KvCacheFull => HostError::KvCacheFull,
        RuntimeError::InvalidRequest(m) => HostError::InvalidParameter(m),
        e @ RuntimeError::ContextOverflow { .. } => HostError::ContextLengthExceeded(format!(
            "{e} (this node's window per sequence is config.json `context_tokens`)"
        )),
        e => HostError::Runtime(e),
    }
}

/// The node's attestation of a finished network request, opened for the gateway: only a
/// ticketed request on the llama.cpp backend, with free-form text (no grammar), no
/// `logit_bias`, at least one completion token and the runtime's fingerprints
/// (`config.json` `fingerprints`). `None` otherwise: the gateway counts the request as not
/// verifiable. Signed with the node key; the receipt names its object hash.
pub fn attest(
    st: &NodeState,
    req: &InferenceRequest,
    request_id: RequestId,
    ids: &TokenIds,
) -> Option<b3iq_protocol::verification::OpenedGeneration> {
    if !matches!(req.caller, Caller::Network(_))
        || req.model.info.backend != b3iq_runtime::runtime::BackendKind::LlamaCpp
        || ids.completion.is_empty()
        || ids.fingerprints.is_empty()
    {
        return None;
    }
    let threads = if st.config.threads > 0 {
        st.config.threads
    } else {
        b3iq_runtime::llama::LlamaConfig::default().threads
    };
    let a = b3iq_runtime::attest::build_attestation(
        st.node_id,
        request_id,
        ids,
        &req.sampling,
        &req.response_format,
        b3iq_runtime::attest::llama_runtime_fingerprint(threads),
        b3iq_core::fingerprint::Profile::CPU_SAME_ISA_V1,
        b3iq_core::Hash32(rand::random()),
    )
    .map_err(|e| tracing::debug!(error = %e, "network request not attested"))
    .ok()?;
    let signed = b3iq_core::Signed::sign(a, &st.key)
        .map_err(|e| tracing::warn!(error = %e, "could not sign an attestation"))
        .ok()?;
    Some(b3iq_protocol::verification::OpenedGeneration {
        attestation: signed,
        prompt: ids.prompt.clone(),
        completion: ids.completion.clone(),
    })
}

/// Admit a request and start generating: the node must be serving a runtime, the request must
/// be valid for it, and the runtime's queue must have room.
///
/// # Errors
/// `ModelNotLoaded` (503) without a runtime; `InvalidParameter` for a request the runtime refuses;
/// `QueueFull` (429) when the queue is full; `ModelNotFound`.
pub async fn start(st: &Arc<NodeState>, mut req: InferenceRequest) -> Result<Inference> {
    let rt = st.runtime()?;
    // A network request samples with its ticket's key (replayable by a verifier; the node
    // cannot choose it).
    if let Caller::Network(g) = &req.caller {
        req.sampling.seed_key = Some(g.ticket.seed_key);
    }
    let greq = GenerateRequest {
        model: req.model.id.clone(),
        prompt: req.prompt.clone(),
        sampling: req.sampling.clone(),
        max_tokens: Some(req.max_tokens.unwrap_or(MAX_GENERATED_TOKENS)),
        stop: req.stop.clone(),
        response_format: req.response_format.clone(),
        logprobs: req.logprobs,
    };
    greq.validate().map_err(map_runtime)?;
    let started_ms = unix_now_ms();
    let t0 = Instant::now();
    let stream = rt.generate(greq).await.map_err(map_runtime)?;
    // An explicit max_tokens must fit beside the prompt (OpenAI's and vLLM's 400); dropping the
    // stream cancels the queued sequence.
    let ctx = req.model.info.context_length;
    if let (Some(m), true) = (req.max_tokens, ctx > 0) {
        let prompt = stream.prompt_tokens();
        if u64::from(prompt) + u64::from(m) > u64::from(ctx) {
            return Err(HostError::ContextLengthExceeded(format!(
                "this node's context window is {ctx} tokens per sequence (config.json `context_tokens`); the prompt has {prompt} and max_tokens asks for {m} more ({} in all); lower max_tokens to at most {}, leave it out, or shorten the prompt",
                u64::from(prompt) + u64::from(m),
                ctx.saturating_sub(prompt)
            )));
        }
    }
    let request_id = match &req.caller {
        Caller::Network(g) => g.ticket.request_id,
        _ => receipts::new_request_id(),
    };
    Ok(Inference {
        _model_use: st.model_uses.begin(&req.model.id),
        st: st.clone(),
        stream: Some(stream),
        req,
        request_id,
        started_ms,
        t0,
        ttft_ms: None,
        text: String::new(),
    })
}

impl Inference {
    /// The request id (random, 16 bytes; also in the OpenAI response id).
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// Unix seconds when the request was admitted (the OpenAI `created`).
    pub fn created(&self) -> u64 {
        self.started_ms / 1000
    }

    /// The model serving it.
    pub fn model(&self) -> &ServedModel {
        &self.req.model
    }

    /// The next event; `None` after [`InferenceEvent::Done`] or an error.
    ///
    /// # Errors
    /// The runtime's error mid-generation, or the receipt's if it could not be stored (then no
    /// `Done` is ever yielded: the response must not complete).
    pub async fn next(&mut self) -> Option<Result<InferenceEvent>> {
        let stream = self.stream.as_mut()?;
        match stream.next_event().await {
            None => {
                self.stream = None;
                Some(Err(HostError::Internal(
                    "generation ended without a final event".into(),
                )))
            }
            Some(Err(e)) => {
                self.stream = None;
                Some(Err(map_runtime(e)))
            }
            Some(Ok(GenerationEvent::Delta { text, logprobs })) => {
                if self.ttft_ms.is_none() {
                    let el = self.t0.elapsed();
                    self.st.metrics.ttft.observe(el.as_secs_f64());
                    self.ttft_ms = Some(el.as_millis() as u64);
                }
                self.text.push_str(&text);
                Some(Ok(InferenceEvent::Delta(text, logprobs)))
            }
            Some(Ok(GenerationEvent::Done {
                finish_reason,
                usage,
                timings,
                token_ids,
            })) => {
                self.stream = None;
                Some(
                    self.finish(finish_reason, usage, timings, token_ids)
                        .await
                        .map(InferenceEvent::Done),
                )
            }
        }
    }

    /// Meter, sign and store the receipt (on the blocking pool), then report.
    async fn finish(
        &mut self,
        finish_reason: FinishReason,
        usage: Usage,
        timings: Timings,
        token_ids: Option<b3iq_runtime::runtime::TokenIds>,
    ) -> Result<Finished> {
        let tps = timings.generation_tokens_per_second(&usage);
        if tps > 0.0 {
            self.st.metrics.tokens_per_second.observe(tps);
        }
        let duration_ms = self.t0.elapsed().as_millis() as u64;
        let ttft_ms = self.ttft_ms.unwrap_or(duration_ms);
        let opened = token_ids
            .as_ref()
            .and_then(|ids| attest(&self.st, &self.req, self.request_id, ids));
        let done = receipts::Served {
            request_id: self.request_id,
            key_id: self.req.caller.key_id().to_string(),
            network_price: self.req.caller.network_price(),
            model: self.req.model.clone(),
            prompt: self.req.prompt.clone(),
            output: std::mem::take(&mut self.text),
            token_ids,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            started_at_ms: self.started_ms,
            ttft_ms,
            duration_ms,
            cancelled: false,
            attestation: opened.as_ref().map(|o| o.attestation.clone()),
        };
        let st = self.st.clone();
        let (receipt_id, receipt) =
            tokio::task::spawn_blocking(move || receipts::record(&st, &done))
                .await
                .map_err(|e| HostError::Internal(format!("receipt task: {e}")))??;
        self.st.metrics.tokens(
            &self.req.model.id,
            usage.prompt_tokens as u64,
            usage.completion_tokens as u64,
        );
        Ok(Finished {
            finish_reason,
            usage,
            timings,
            receipt_id,
            receipt,
            ttft_ms,
            duration_ms,
            opened: opened.map(Box::new),
        })
    }

    /// Run to the end and collect the text.
    ///
    /// # Errors
    /// As [`Inference::next`].
    pub async fn collect(mut self) -> Result<Completed> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        while let Some(ev) = self.next().await {
            match ev? {
                InferenceEvent::Delta(t, l) => {
                    text.push_str(&t);
                    logprobs.extend(l);
                }
                InferenceEvent::Done(finished) => {
                    return Ok(Completed {
                        text,
                        logprobs,
                        finished,
                    })
                }
            }
        }
        Err(HostError::Internal(
            "generation ended without a final event".into(),
        ))
    }
}

impl Drop for Inference {
    fn drop(&mut self) {
        // Finished (receipt written) or failed before any text: nothing to account for.
        let Some(stream) = self.stream.take() else {
            return;
        };
        drop(stream); // cancels the generation first, so the sequence frees now
        if self.text.is_empty() {
            return;
        }
        let st = self.st.clone();
        let (req, request_id, started_ms) = (self.req.clone(), self.request_id, self.started_ms);
        let text = std::mem::take(&mut self.text);
        let duration_ms = self.t0.elapsed().as_millis() as u64;
        let ttft_ms = self.ttft_ms.unwrap_or(duration_ms);
        let st2 = st.clone();
        let spawned = st.spawn_background(async move {
            let st = st2;
            // The backend reported no usage for a cut stream: count what was produced with the
            // model's own tokenizer (the delivered text, the prompt as sent).
            let (prompt_tokens, completion_tokens) = match st.runtime() {
                Ok(rt) => (
                    rt.count_tokens(&req.model.id, &req.prompt).await.unwrap_or(0),
                    rt.count_tokens(&req.model.id, &Prompt::Text(text.clone())).await.unwrap_or(1).max(1),
                ),
                Err(_) => (0, 1),
            };
            let served = receipts::Served {
                request_id,
                key_id: req.caller.key_id().to_string(),
                network_price: req.caller.network_price(),
                model: req.model.clone(),
                prompt: req.prompt.clone(),
                output: text,
                token_ids: None,
                prompt_tokens,
                completion_tokens,
                started_at_ms: started_ms,
                ttft_ms,
                duration_ms,
                cancelled: true,
                attestation: None,
            };
            let st3 = st.clone();
            match tokio::task::spawn_blocking(move || receipts::record(&st3, &served)).await {
                Ok(Ok((id, _))) => {
                    st.metrics.tokens(&req.model.id, prompt_tokens as u64, completion_tokens as u64);
                    tracing::info!(receipt = %id, completion_tokens, "client went away mid-stream; the tokens produced were receipted (cancelled)");
                }
                Ok(Err(e)) => tracing::error!(error = %e, "could not store the receipt of a cancelled request"),
                Err(e) => tracing::error!(error = %e, "receipt task for a cancelled request failed"),
            }
        });
        if !spawned {
            tracing::error!(request_id = %request_id.to_hex(), "a cancelled request's receipt could not be written: no async runtime");
        }
    }
}

/// Embeddings computed and receipted ([`embed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// The vectors, token ids and token count from the runtime.
    pub embeddings: Embeddings,
    /// The stored receipt's id (hex).
    pub receipt_id: String,
    /// The signed receipt (b3iq-core encoding).
    pub receipt: Vec<u8>,
    /// Wall time from admission to the receipt, ms.
    pub duration_ms: u64,
}

/// Map an embeddings runtime error to the host error a client sees: every input problem names
/// `param: "input"`, a backend without embeddings names `param: "model"`.
fn map_embed_error(e: RuntimeError) -> HostError {
    match e {
        RuntimeError::InvalidRequest(m) => HostError::field("input", m),
        RuntimeError::ContextOverflow { prompt_tokens, context_length } => HostError::field_too_long(
            "input",
            format!("an input has {prompt_tokens} tokens but this model's context window is {context_length}; shorten or split it"),
        ),
        RuntimeError::Unsupported(m) => HostError::field("model", m),
        e => map_runtime(e),
    }
}

/// Compute embedding vectors for `inputs` with `model`, then meter and receipt them like a
/// generation: a v2 receipt on the token-ids basis whose prompt is every input's token ids
/// concatenated in input order and whose completion is empty (0 completion tokens), priced at
/// the prompt rate, stored with its usage row before this returns.
///
/// # Errors
/// `ModelNotLoaded` without a runtime; `InvalidField` (`param` `input` or `model`) for what the
/// runtime refuses; `QueueFull`; `ModelNotFound`; `Db` when the receipt cannot be stored.
pub async fn embed(
    st: &Arc<NodeState>,
    caller: Caller,
    model: ServedModel,
    inputs: Vec<EmbedInput>,
) -> Result<Embedded> {
    let rt = st.runtime()?;
    let _model_use = st.model_uses.begin(&model.id);
    let started_ms = unix_now_ms();
    let t0 = Instant::now();
    let req = EmbedRequest { model: model.id.clone(), inputs };
    let embeddings = rt.embed(req).await.map_err(map_embed_error)?;
    let request_id = match &caller {
        Caller::Network(g) => g.ticket.request_id,
        _ => receipts::new_request_id(),
    };
    let duration_ms = t0.elapsed().as_millis() as u64;
    let prompt_tokens = embeddings.prompt_tokens;
    let served = receipts::Served {
        request_id,
        key_id: caller.key_id().to_string(),
        network_price: caller.network_price(),
        model: model.clone(),
        prompt: Prompt::Text(String::new()),
        output: String::new(),
        token_ids: Some(TokenIds {
            prompt: embeddings.token_ids.concat(),
            completion: Vec::new(),
            fingerprints: Vec::new(),
        }),
        prompt_tokens,
        completion_tokens: 0,
        started_at_ms: started_ms,
        ttft_ms: duration_ms,
        duration_ms,
        cancelled: false,
        attestation: None,
    };
    let st2 = st.clone();
    let (receipt_id, receipt) = tokio::task::spawn_blocking(move || receipts::record(&st2, &served))
        .await
        .map_err(|e| HostError::Internal(format!("receipt task: {e}")))??;
    st.metrics.tokens(&model.id, u64::from(prompt_tokens), 0);
    Ok(Embedded { embeddings, receipt_id, receipt, duration_ms })
}

impl Completed {
    /// As the runtime's [`Completion`] (text, finish reason, usage, timings).
    pub fn completion(&self) -> Completion {
        Completion {
            text: self.text.clone(),
            finish_reason: self.finished.finish_reason,
            usage: self.finished.usage,
            timings: self.finished.timings,
            token_ids: None,
            logprobs: self.logprobs.clone(),
        }
    }
}

/// The quick benchmark (b3iq-runtime's definition and measurement), run as the owner through
/// this path, so its tokens are metered and receipted like any other. The result is
/// b3iq-runtime's `QuickBenchResult` plus the `receipt_id` of the run.
///
/// # Errors
/// As [`start`] and [`Inference::next`].
pub async fn quick_benchmark(
    st: &Arc<NodeState>,
    model: &ServedModel,
) -> Result<serde_json::Value> {
    use b3iq_runtime::bench::QuickBenchmark;
    let greq = QuickBenchmark::request(&model.id);
    let req = InferenceRequest {
        caller: Caller::Owner,
        model: model.clone(),
        prompt: greq.prompt,
        sampling: greq.sampling,
        max_tokens: Some(greq.max_tokens.unwrap_or(QuickBenchmark::MAX_TOKENS)),
        stop: greq.stop,
        response_format: greq.response_format,
        logprobs: None,
    };
    let mut meter = QuickBenchmark::meter(&model.id);
    let mut inf = start(st, req).await?;
    while let Some(ev) = inf.next().await {
        match ev? {
            InferenceEvent::Delta(text, _) => meter.on_event(&GenerationEvent::delta(text)),
            InferenceEvent::Done(f) => {
                meter.on_event(&GenerationEvent::Done {
                    finish_reason: f.finish_reason,
                    usage: f.usage,
                    timings: f.timings,
                    token_ids: None,
                });
                let mut v = serde_json::to_value(meter.finish()?)
                    .map_err(|e| HostError::Internal(e.to_string()))?;
                v["receipt_id"] = serde_json::Value::String(f.receipt_id);
                return Ok(v);
            }
        }
    }
    Err(HostError::Internal("benchmark stream ended early".into()))
}
