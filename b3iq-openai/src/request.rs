//! Request bodies of `POST /v1/chat/completions` and `POST /v1/completions`, typed for a server
//! that must accept what real clients send.
//!
//! Leniency, on purpose (see docs/openai.md for why a client library's types do not fit):
//!
//! - Every field is optional at the type level, `model`, `messages` and `prompt` included, so a
//!   missing one is the server's clear 400 ("`model` is required"), not a serde message.
//! - `role` is free text, so an unknown role is the server's own message, not a parse failure.
//! - `content` is a string, `null`, absent, or an array of parts (any `type`; text parts may
//!   lack `text`). Parts and messages keep their other fields in `extra`.
//! - Integers a server range-checks (`max_tokens`, `n`) are `i64`, so `-1` reaches the range
//!   check and gets its message; `seed` takes any 64-bit integer, signed or not.
//! - Fields not typed here (`response_format`, `tools`, `logit_bias`, `user`, vendor
//!   extensions such as `top_k`, `min_p`, `repetition_penalty`, `cache_prompt`) stay as JSON in
//!   [`CommonParams::extra`]: a server ignores them unless it asks, and serialising the request
//!   writes them back unchanged (what a proxy needs).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::OpenAiError;

/// The fields `/v1/chat/completions` and `/v1/completions` share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommonParams {
    /// The model id (`GET /v1/models` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Most tokens to generate (deprecated by OpenAI for chat in favour of
    /// `max_completion_tokens`, still what most clients send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Most tokens to generate (newer name; wins over `max_tokens` when both are sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature (OpenAI's range: 0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (OpenAI's range: (0, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed. Any 64-bit integer: a negative one is kept as its two's-complement `u64`
    /// (what `-1 as u64` gives), so every signed and unsigned seed a client sends is accepted.
    #[serde(
        default,
        deserialize_with = "seed",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<u64>,
    /// Stop sequences: one string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Presence penalty (OpenAI's range: -2 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty (OpenAI's range: -2 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CommonParams {
    /// `stream_options.include_usage`, `false` when absent.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The `response_format` field, parsed on demand; `Ok(None)` when absent or `null`.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when it is present but not a known response format.
    pub fn response_format(&self) -> Result<Option<ResponseFormat>, OpenAiError> {
        match self.extra.get("response_format") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => ResponseFormat::deserialize(v)
                .map(Some)
                .map_err(|e| OpenAiError::json("response_format", e)),
        }
    }

    /// Sets (or, with `None`, removes) the `response_format` field.
    pub fn set_response_format(&mut self, format: Option<&ResponseFormat>) {
        match format.map(serde_json::to_value) {
            Some(Ok(v)) => {
                self.extra.insert("response_format".into(), v);
            }
            _ => {
                self.extra.remove("response_format");
            }
        }
    }

    /// The `tools` field, parsed on demand; empty when absent or `null`.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when it is present but not a list of tools.
    pub fn tools(&self) -> Result<Vec<Tool>, OpenAiError> {
        self.typed_list("tools")
    }

    /// The legacy `functions` field (a list of function definitions); empty when absent.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when it is present but not a list of functions.
    pub fn functions(&self) -> Result<Vec<FunctionDefinition>, OpenAiError> {
        self.typed_list("functions")
    }

    fn typed_list<T: serde::de::DeserializeOwned>(&self, field: &'static str) -> Result<Vec<T>, OpenAiError> {
        match self.extra.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => Vec::<T>::deserialize(v).map_err(|e| OpenAiError::json(field, e)),
        }
    }

    /// An untyped extension field as a number (`top_k`, `min_p`, `repetition_penalty`, ...);
    /// `None` when absent or not a number.
    pub fn extension_f64(&self, name: &str) -> Option<f64> {
        self.extra.get(name).and_then(Value::as_f64)
    }

    /// An untyped extension field as an integer; `None` when absent or not an integer.
    pub fn extension_i64(&self, name: &str) -> Option<i64> {
        self.extra.get(name).and_then(Value::as_i64)
    }
}

/// Accepts any JSON integer that fits 64 bits, signed or unsigned (and `null`).
fn seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct SeedVisitor;
    impl<'de> Visitor<'de> for SeedVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer seed")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as u64))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(SeedVisitor)
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// `"stop": "\n"`.
    One(String),
    /// `"stop": ["\n", "END"]`.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and empty `choices`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `response_format` (kept in [`CommonParams::extra`]; see [`CommonParams::response_format`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// The `json_schema` of a [`ResponseFormat::JsonSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// A name for the schema (OpenAI requires one; servers such as llama.cpp's ignore it).
    #[serde(default)]
    pub name: String,
    /// The JSON Schema.
    #[serde(default)]
    pub schema: Value,
    /// Whether the schema must be followed exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// One entry of `tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `function` (the only kind chat completions define).
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

fn function_kind() -> String {
    "function".into()
}

/// A function a model may call (`tools[].function`, or an entry of legacy `functions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// Its name (`a-z`, `A-Z`, `0-9`, `_`, `-`, at most 64 characters, as OpenAI requires).
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether calls must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The conversation (required by every server; `None` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// The shared parameters and every other field.
    #[serde(flatten)]
    pub params: CommonParams,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool`, ... as sent (the server decides
    /// which it takes).
    pub role: String,
    /// The content: absent, `null`, a string or an array of parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// Every other field (`name`, `tool_calls`, `tool_call_id`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// The `tool_calls` of an assistant message; empty when absent or `null`.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when present but not a list of tool calls.
    pub fn tool_calls(&self) -> Result<Vec<crate::response::ToolCall>, OpenAiError> {
        match self.extra.get("tool_calls") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => Vec::deserialize(v).map_err(|e| OpenAiError::json("tool_calls", e)),
        }
    }

    /// The legacy `function_call` of an assistant message; `None` when absent or `null`.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when present but not a function call.
    pub fn function_call(&self) -> Result<Option<crate::response::FunctionCall>, OpenAiError> {
        match self.extra.get("function_call") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::response::FunctionCall::deserialize(v)
                .map(Some)
                .map_err(|e| OpenAiError::json("function_call", e)),
        }
    }

    /// A string field of the message (`tool_call_id`, `name`); `None` when absent or not text.
    pub fn text_field(&self, name: &str) -> Option<&str> {
        self.extra.get(name).and_then(Value::as_str)
    }

    /// A message with text content.
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(text.into())),
            extra: Map::new(),
        }
    }
}

/// The `content` of a [`ChatMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// `"content": "text"`.
    Text(String),
    /// `"content": [{"type": "text", "text": "..."}, ...]`.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text: the string, or the text parts joined (a text part without `text` adds
    /// nothing).
    ///
    /// # Errors
    /// The first part whose `type` is not `text` (an image, audio, a file), for the caller to
    /// name in its message.
    pub fn into_text(self) -> Result<String, ContentPart> {
        match self {
            MessageContent::Text(s) => Ok(s),
            MessageContent::Parts(parts) => {
                let mut s = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(p);
                    }
                    s.push_str(p.text.as_deref().unwrap_or(""));
                }
                Ok(s)
            }
        }
    }
}

/// One part of an array `content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Every other field (`image_url`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string or an array of strings (token-id prompts do not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptInput>,
    /// The shared parameters and every other field.
    #[serde(flatten)]
    pub params: CommonParams,
}

/// The `prompt` of a [`CompletionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// `"prompt": "text"`.
    One(String),
    /// `"prompt": ["text", ...]` (the official Python client sends a one-element array when
    /// given a list).
    Many(Vec<String>),
}

impl ChatCompletionRequest {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when the body is not a JSON object of this shape.
    pub fn from_slice(body: &[u8]) -> Result<Self, OpenAiError> {
        serde_json::from_slice(body).map_err(|e| OpenAiError::json("a chat completion request", e))
    }
}

impl CompletionRequest {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`OpenAiError::InvalidJson`] when the body is not a JSON object of this shape.
    pub fn from_slice(body: &[u8]) -> Result<Self, OpenAiError> {
        serde_json::from_slice(body).map_err(|e| OpenAiError::json("a completion request", e))
    }
}
