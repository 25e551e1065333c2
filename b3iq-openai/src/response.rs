//! Answers: completions and their stream chunks, usage, the model list, and [`StreamItem`] for
//! reading one event of a stream.
//!
//! One envelope, [`Completion`], carries every completion object; its choice type says which:
//!
//! | alias | `object` | choice |
//! |---|---|---|
//! | [`ChatCompletion`] | `chat.completion` | [`ChatChoice`] (`message`) |
//! | [`ChatCompletionChunk`] | `chat.completion.chunk` | [`ChatChunkChoice`] (`delta`) |
//! | [`TextCompletion`] | `text_completion` (answers and chunks alike) | [`TextChoice`] (`text`) |
//!
//! Serialised in OpenAI's field order; `logprobs` and `finish_reason` are always written
//! (`null` when absent), `usage`, `system_fingerprint` and `b3iq_receipt_id` only when set.
//! Parsing is lenient for the client side: every field has a default, `finish_reason` is any
//! string (vLLM sends `abort`), unknown fields (llama.cpp's `timings`, vLLM's `stop_reason`)
//! are ignored.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::OpenAiError;
use crate::error_body::{ErrorBody, ErrorDetail};
use crate::sse::{SseEvent, DONE};

/// `object` of a non-streamed chat completion.
pub const CHAT_COMPLETION: &str = "chat.completion";
/// `object` of a chat completion chunk.
pub const CHAT_COMPLETION_CHUNK: &str = "chat.completion.chunk";
/// `object` of a text completion and of its chunks.
pub const TEXT_COMPLETION: &str = "text_completion";

/// A completion object: a whole answer or one stream chunk (see the module table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion<C> {
    /// `chatcmpl-...` or `cmpl-...`; the same in every chunk of a stream.
    #[serde(default)]
    pub id: String,
    /// [`CHAT_COMPLETION`], [`CHAT_COMPLETION_CHUNK`] or [`TEXT_COMPLETION`].
    #[serde(default)]
    pub object: String,
    /// Unix seconds when the request started.
    #[serde(default)]
    pub created: u64,
    /// The model id.
    #[serde(default)]
    pub model: String,
    /// The serving build (B3IQ: `b3iq-<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices; empty in the usage chunk of a stream.
    #[serde(default = "Vec::new")]
    pub choices: Vec<C>,
    /// Token counts: in every whole answer; in a stream, in the last chunk when the request
    /// asked for `stream_options.include_usage` (some servers also put it in the finish chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// B3IQ: the id of the signed usage receipt of this request (whole answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b3iq_receipt_id: Option<String>,
}

/// A non-streamed chat completion.
pub type ChatCompletion = Completion<ChatChoice>;
/// One chunk of a streamed chat completion.
pub type ChatCompletionChunk = Completion<ChatChunkChoice>;
/// A text completion, whole or one chunk of a stream.
pub type TextCompletion = Completion<TextChoice>;

impl<C> Completion<C> {
    /// An envelope with no choices, usage, fingerprint or receipt yet.
    pub fn new(
        id: impl Into<String>,
        object: &str,
        created: u64,
        model: impl Into<String>,
    ) -> Self {
        Completion {
            id: id.into(),
            object: object.to_string(),
            created,
            model: model.into(),
            system_fingerprint: None,
            choices: Vec::new(),
            usage: None,
            b3iq_receipt_id: None,
        }
    }

    /// Sets `system_fingerprint`.
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.system_fingerprint = Some(fingerprint.into());
        self
    }

    /// Sets `usage`.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets `b3iq_receipt_id`.
    pub fn with_receipt(mut self, receipt_id: impl Into<String>) -> Self {
        self.b3iq_receipt_id = Some(receipt_id.into());
        self
    }

    /// A copy of the header (id, object, created, model, fingerprint) with `choices` and no
    /// usage or receipt: how each chunk of a stream is made from the stream's header.
    pub fn with_choices<D>(&self, choices: Vec<D>) -> Completion<D> {
        Completion {
            id: self.id.clone(),
            object: self.object.clone(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage: None,
            b3iq_receipt_id: None,
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u32,
    /// The sum.
    #[serde(default)]
    pub total_tokens: u32,
    /// Breakdown of `prompt_tokens` (`cached_tokens`); absent when the server does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// OpenAI's `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prompt cache (KV cells kept from an earlier request), not
    /// computed again; part of `prompt_tokens`.
    #[serde(default)]
    pub cached_tokens: u32,
}

impl Usage {
    /// Counts with `total_tokens` as their (saturating) sum and no details.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
        }
    }

    /// The same counts saying `cached_tokens` of the prompt came from the prompt cache.
    pub fn with_cached_tokens(mut self, cached_tokens: u32) -> Self {
        self.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens });
        self
    }

    /// Adds `other`'s counts (saturating), details included (absent on both: absent).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.prompt_tokens_details = match (self.prompt_tokens_details, other.prompt_tokens_details) {
            (None, None) => None,
            (a, b) => Some(PromptTokensDetails {
                cached_tokens: a
                    .unwrap_or_default()
                    .cached_tokens
                    .saturating_add(b.unwrap_or_default().cached_tokens),
            }),
        };
    }
}

/// A choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Position (always 0 with `n = 1`).
    #[serde(default)]
    pub index: u32,
    /// The generated message.
    pub message: AssistantMessage,
    /// Token log probabilities when the request asked for them (`logprobs: true`).
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length`, ... (`null` only while unfinished).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl ChatChoice {
    /// Choice 0: an assistant message with `content`, finished for `finish_reason`.
    pub fn assistant(content: impl Into<String>, finish_reason: impl Into<String>) -> Self {
        ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content: Some(content.into()),
                tool_calls: None,
                function_call: None,
            },
            logprobs: None,
            finish_reason: Some(finish_reason.into()),
        }
    }
}

/// The `message` of a [`ChatChoice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// `assistant`.
    #[serde(default)]
    pub role: String,
    /// The text (`null` when the model only called tools).
    #[serde(default)]
    pub content: Option<String>,
    /// The tool calls the model made (then `finish_reason` is `tool_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The legacy form of one call, answered to requests that sent `functions` (then
    /// `finish_reason` is `function_call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
}

/// One tool call, in an answer's `message.tool_calls` and in an assistant message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `call_...`: what the `tool` message answering it names as `tool_call_id`.
    #[serde(default)]
    pub id: String,
    /// `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// A function call: its name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// The arguments, a JSON object as text (OpenAI's shape; an object sent by a lenient
    /// client is read as its JSON text).
    #[serde(default, deserialize_with = "json_text")]
    pub arguments: String,
}

/// A string as is; any other JSON value as its compact text.
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        v => v.to_string(),
    })
}

/// One tool call's part in a stream chunk's `delta.tool_calls`: the first part of a call has
/// its `id`, `type` and `function.name`; later parts add to `function.arguments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the message this part belongs to (0, 1, ...).
    #[serde(default)]
    pub index: u32,
    /// The call's id, in its first part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in the first part.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The name (first part) and a piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// A piece of a streamed function call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The name, in the first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Text to append to the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// `choices[].logprobs` of a chat answer or chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token of the content (of this chunk, in a stream).
    #[serde(default)]
    pub content: Option<Vec<ChatTokenLogprob>>,
}

/// One generated token's log probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    /// The token's text (lossy UTF-8 of `bytes`).
    #[serde(default)]
    pub token: String,
    /// Natural log of its probability (`<= 0`; OpenAI writes `-9999.0` for "impossible").
    #[serde(default)]
    pub logprob: f64,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    /// The `top_logprobs` most likely tokens at this position, most likely first.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    #[serde(default)]
    pub token: String,
    /// Natural log of its probability.
    #[serde(default)]
    pub logprob: f64,
    /// The token's bytes.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

/// `choices[].logprobs` of a text completion (the legacy shape): parallel lists, one entry per
/// generated token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextLogprobs {
    /// The tokens' text.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Their log probabilities.
    #[serde(default)]
    pub token_logprobs: Vec<Option<f64>>,
    /// Per token, the `logprobs` most likely tokens as text -> log probability.
    #[serde(default)]
    pub top_logprobs: Vec<Option<Map<String, Value>>>,
    /// Per token, the character offset of its text in the completion's text (in this chunk's
    /// request: counted from the start of the whole completion).
    #[serde(default)]
    pub text_offset: Vec<u32>,
}

/// A choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    /// Position (always 0 with `n = 1`).
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: ChatDelta,
    /// Log probabilities of the tokens this chunk adds, when the request asked for them.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    /// `null` until the last chunk of the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl ChatChunkChoice {
    /// The first chunk of a stream: `{"role": role, "content": ""}`.
    pub fn role(role: impl Into<String>) -> Self {
        Self::with_delta(
            ChatDelta {
                role: Some(role.into()),
                content: Some(String::new()),
                ..ChatDelta::default()
            },
            None,
        )
    }

    /// A chunk of generated text: `{"content": text}`.
    pub fn content(text: impl Into<String>) -> Self {
        Self::with_delta(
            ChatDelta {
                content: Some(text.into()),
                ..ChatDelta::default()
            },
            None,
        )
    }

    /// The finishing chunk: an empty delta and the reason.
    pub fn finish(reason: impl Into<String>) -> Self {
        Self::with_delta(ChatDelta::default(), Some(reason.into()))
    }

    /// A chunk with any delta (tool-call parts, ...) and an optional finish reason.
    pub fn with_delta(delta: ChatDelta, finish_reason: Option<String>) -> Self {
        ChatChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }
    }
}

/// The `delta` of a [`ChatChunkChoice`]; absent fields are not written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text added by this chunk (llama.cpp's server sends `null` in its role chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Parts of tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Part of a legacy function call (requests that sent `functions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallDelta>,
}

/// A choice of a [`TextCompletion`] (whole answer or chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// Position (always 0 with `n = 1`).
    #[serde(default)]
    pub index: u32,
    /// The text (of this chunk, in a stream).
    #[serde(default)]
    pub text: String,
    /// Log probabilities of the text's tokens, when the request asked for them (`logprobs: k`).
    #[serde(default)]
    pub logprobs: Option<TextLogprobs>,
    /// `null` until the last chunk of the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl TextChoice {
    /// Choice 0 with `text`, unfinished (a stream chunk).
    pub fn partial(text: impl Into<String>) -> Self {
        TextChoice {
            index: 0,
            text: text.into(),
            logprobs: None,
            finish_reason: None,
        }
    }

    /// Choice 0 with `text`, finished for `reason` (a whole answer, or with empty text the
    /// finishing chunk of a stream).
    pub fn finished(text: impl Into<String>, reason: impl Into<String>) -> Self {
        TextChoice {
            index: 0,
            text: text.into(),
            logprobs: None,
            finish_reason: Some(reason.into()),
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// `{"object": "list", "data": models}`.
    pub fn new(models: Vec<Model>) -> Self {
        ModelList {
            object: "list".into(),
            data: models,
        }
    }
}

/// One entry of a [`ModelList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The id to put in requests.
    pub id: String,
    /// `model`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds (servers differ on what they mean by it; 0 when absent).
    #[serde(default)]
    pub created: u64,
    /// The owner (B3IQ: `b3iq`).
    #[serde(default)]
    pub owned_by: String,
    /// Every other field (vLLM's `max_model_len`, llama.cpp's `meta`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Model {
    /// `{"id", "object": "model", "created", "owned_by"}`.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Model {
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: owned_by.into(),
            extra: Map::new(),
        }
    }

    /// The context length in tokens, from vLLM's `max_model_len` or llama.cpp's
    /// `meta.n_ctx_train`; `None` when the server sends neither.
    pub fn context_length(&self) -> Option<u64> {
        self.extra
            .get("max_model_len")
            .or_else(|| self.extra.get("meta").and_then(|m| m.get("n_ctx_train")))
            .and_then(Value::as_u64)
    }

    /// The parameter count, from llama.cpp's `meta.n_params`; `None` when absent.
    pub fn parameter_count(&self) -> Option<u64> {
        self.extra
            .get("meta")
            .and_then(|m| m.get("n_params"))
            .and_then(Value::as_u64)
    }
}

/// What one `data:` payload of an OpenAI stream is.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem<T> {
    /// `[DONE]`: the stream ended normally.
    Done,
    /// An error event (`{"error": ...}` in any shape [`ErrorBody::from_value`] knows): the
    /// server failed after the stream started.
    Error(ErrorDetail),
    /// A chunk.
    Chunk(T),
}

impl<T: DeserializeOwned> StreamItem<T> {
    /// Reads one parsed SSE event: an event named `error` (llama.cpp's `error:` line,
    /// `event: error`) is an error whatever its data; anything else is [`StreamItem::parse`]d.
    ///
    /// # Errors
    /// As [`StreamItem::parse`].
    pub fn from_event(event: &SseEvent) -> Result<Self, OpenAiError> {
        if event.event.as_deref() == Some("error") {
            return Ok(StreamItem::Error(ErrorDetail::from_event_data(&event.data)));
        }
        Self::parse(&event.data)
    }

    /// Reads one event's data: `[DONE]`, an error, or a chunk of type `T`
    /// ([`ChatCompletionChunk`], [`TextCompletion`]).
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when the data is neither `[DONE]` nor JSON of type `T`.
    pub fn parse(data: &str) -> Result<Self, OpenAiError> {
        if data.trim() == DONE {
            return Ok(StreamItem::Done);
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| OpenAiError::json("a stream chunk", e))?;
        if let Some(e) = ErrorBody::from_value(&v) {
            return Ok(StreamItem::Error(e));
        }
        T::deserialize(v)
            .map(StreamItem::Chunk)
            .map_err(|e| OpenAiError::json("a stream chunk", e))
    }
}
