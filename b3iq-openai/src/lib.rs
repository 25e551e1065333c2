//! # b3iq-openai
//!
//! The OpenAI wire format as B3IQ speaks it, in one place: the host's `/v1` server, the
//! runtime's upstream client (vLLM, llama.cpp's server, ...), its test server and the gateway
//! all use these types, so a field added or a leniency learned from a real client lands once.
//!
//! * [`request`]: chat and text completion request bodies, lenient as a server must be (every
//!   field optional, free-text roles, content as string, `null` or parts, unknown fields kept).
//! * [`response`]: completions and stream chunks (one envelope, [`Completion`], over three
//!   choice types), usage, the model list, and [`StreamItem`] to read one stream event.
//! * [`embeddings`]: `/v1/embeddings` request and answer.
//! * [`error_body`]: `{"error": {"message", "type", "code", "param"}}`, written the OpenAI way
//!   and read in every shape servers send.
//! * [`sse`]: server-sent events: encode chunks and `[DONE]`, and [`SseParser`], an
//!   incremental, bounded parser of `text/event-stream` bodies.
//! * [`error`]: [`OpenAiError`], which implements [`b3iq_core::ClassifiedError`].
//!
//! Serde and serde_json only: no async runtime, no HTTP. Why these are our own types rather
//! than async-openai's `*-types` features is in `docs/openai.md`. No cargo features.
//!
//! ```
//! use b3iq_openai::{ChatCompletionChunk, ChatChunkChoice, ChatCompletionRequest, SseParser, StreamItem, sse};
//!
//! // A server reads what a client sent ...
//! let req = ChatCompletionRequest::from_slice(
//!     br#"{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"hi"}]}],"top_k":40}"#,
//! ).unwrap();
//! assert_eq!(req.params.extension_i64("top_k"), Some(40));
//!
//! // ... streams chunks ...
//! let head = ChatCompletionChunk::new("chatcmpl-1", b3iq_openai::response::CHAT_COMPLETION_CHUNK, 1, "m");
//! let mut body = sse::encode_json(&head.with_choices(vec![ChatChunkChoice::content("Hello")]));
//! body.extend_from_slice(sse::DONE_EVENT);
//!
//! // ... and a client reads them back.
//! let mut parser = SseParser::default();
//! let events = parser.feed(&body).unwrap();
//! let StreamItem::Chunk(chunk) = StreamItem::<ChatCompletionChunk>::parse(&events[0].data).unwrap() else { panic!() };
//! assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("Hello"));
//! assert!(events[1].is_done());
//! ```

pub mod embeddings;
pub mod error;
pub mod error_body;
pub mod request;
pub mod response;
pub mod sse;

pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
pub use error::OpenAiError;
pub use error_body::{ErrorBody, ErrorCode, ErrorDetail};
pub use request::{
    ChatCompletionRequest, ChatMessage, CommonParams, CompletionRequest, ContentPart,
    FunctionDefinition, JsonSchemaFormat, MessageContent, PromptInput, ResponseFormat, Stop,
    StreamOptions, Tool,
};
pub use response::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    ChatLogprobs, ChatTokenLogprob, Completion, FunctionCall, FunctionCallDelta, Model, ModelList,
    StreamItem, TextChoice, TextCompletion, TextLogprobs, ToolCall, ToolCallDelta, TopLogprob,
    PromptTokensDetails, Usage,
};
pub use sse::{SseEvent, SseParser};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
