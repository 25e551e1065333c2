//! Real payloads through the crate: request bodies the official clients sent, stream bodies of
//! llama.cpp's server, vLLM and OpenAI, and the shapes B3IQ's host writes.

use std::path::PathBuf;

use b3iq_openai::response::{CHAT_COMPLETION, CHAT_COMPLETION_CHUNK, TEXT_COMPLETION};
use b3iq_openai::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// JSON equality where a missing key equals `null` and numbers compare as f64 (the types
/// write `0.0` for a `0` they read as a float, and drop `null` content).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| {
                same_json(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        _ => a == b,
    }
}

struct Recorded {
    client: String,
    path: String,
    body: Value,
}

fn recorded_requests() -> Vec<Recorded> {
    let text = String::from_utf8(fixture("client_requests.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Recorded {
                client: v["client"].as_str().unwrap().to_string(),
                path: v["path"].as_str().unwrap().to_string(),
                body: v["body"].clone(),
            }
        })
        .collect()
}

#[test]
fn every_recorded_client_request_parses_and_round_trips() {
    let all = recorded_requests();
    assert!(
        all.iter().any(|r| r.client.starts_with("openai-python")),
        "python recordings present"
    );
    assert!(
        all.iter().any(|r| r.client.starts_with("openai-node")),
        "node recordings present"
    );
    let (mut chat, mut text, mut emb) = (0, 0, 0);
    for r in &all {
        let bytes = serde_json::to_vec(&r.body).unwrap();
        let back = match r.path.as_str() {
            "/v1/chat/completions" => {
                chat += 1;
                let req = ChatCompletionRequest::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", r.client));
                assert_eq!(req.params.model.as_deref(), Some("smollm2"));
                for m in req.messages.clone().expect("messages") {
                    assert!(
                        ["system", "developer", "user", "assistant"].contains(&m.role.as_str()),
                        "{}",
                        m.role
                    );
                    if let Some(c) = m.content {
                        c.into_text().expect("text content");
                    }
                }
                serde_json::to_value(&req).unwrap()
            }
            "/v1/completions" => {
                text += 1;
                let req = CompletionRequest::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", r.client));
                assert!(req.prompt.is_some());
                serde_json::to_value(&req).unwrap()
            }
            "/v1/embeddings" => {
                emb += 1;
                let req = EmbeddingRequest::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", r.client));
                assert!(req.input.is_some());
                assert!(matches!(
                    req.encoding_format.as_deref(),
                    Some("base64") | Some("float")
                ));
                serde_json::to_value(&req).unwrap()
            }
            p => panic!("unexpected path {p}"),
        };
        assert!(
            same_json(&back, &r.body),
            "{} {}: {back} != {}",
            r.client,
            r.path,
            r.body
        );
    }
    assert!(chat >= 4 && text >= 3 && emb >= 2, "{chat} {text} {emb}");
}

#[test]
fn recorded_python_chat_request_reads_as_the_host_needs() {
    let all = recorded_requests();
    let streamed = all
        .iter()
        .find(|r| {
            r.client.starts_with("openai-python")
                && r.path == "/v1/chat/completions"
                && r.body["stream"] == true
        })
        .unwrap();
    let req =
        ChatCompletionRequest::from_slice(&serde_json::to_vec(&streamed.body).unwrap()).unwrap();
    let p = &req.params;
    assert_eq!(p.stream, Some(true));
    assert!(p.include_usage());
    assert_eq!(p.max_completion_tokens, Some(8));
    assert_eq!(p.n, Some(1));
    assert_eq!(p.presence_penalty, Some(0.5));
    assert_eq!(p.frequency_penalty, Some(0.25));
    assert_eq!(p.top_p, Some(0.9));
    assert_eq!(p.stop.clone().unwrap().into_vec(), vec!["\n".to_string()]);
    let msgs = req.messages.unwrap();
    assert_eq!(
        msgs[0].content.clone().unwrap().into_text().unwrap(),
        "Say hi",
        "text parts are joined"
    );

    // `extra_body` fields and `response_format` stay in `extra` and can be read on demand.
    let ext = all.iter().find(|r| r.body.get("top_k").is_some()).unwrap();
    let req = ChatCompletionRequest::from_slice(&serde_json::to_vec(&ext.body).unwrap()).unwrap();
    assert_eq!(req.params.extension_i64("top_k"), Some(40));
    assert_eq!(req.params.extension_f64("min_p"), Some(0.05));
    assert_eq!(
        req.params.response_format().unwrap(),
        Some(ResponseFormat::JsonObject)
    );
    assert_eq!(
        req.params.stop.clone().unwrap().into_vec(),
        vec!["END".to_string()]
    );
    let msgs = req.messages.unwrap();
    assert_eq!(msgs[2].role, "assistant");
    assert!(msgs[2].content.is_none(), "null content reads as absent");

    let seeded = all.iter().find(|r| r.body["seed"] == 7).unwrap();
    let req =
        ChatCompletionRequest::from_slice(&serde_json::to_vec(&seeded.body).unwrap()).unwrap();
    assert_eq!(req.params.seed, Some(7));
    assert_eq!(req.params.temperature, Some(0.0));
    assert_eq!(req.messages.unwrap()[0].role, "developer");
}

#[test]
fn requests_a_server_must_accept_where_a_client_library_refuses() {
    // Each of these fails to parse with async-openai's request types (docs/openai.md).
    let ok = |b: &str| {
        ChatCompletionRequest::from_slice(b.as_bytes()).unwrap_or_else(|e| panic!("{b}: {e}"))
    };
    let r = ok(r#"{"messages":[{"role":"user"}]}"#);
    assert!(
        r.params.model.is_none(),
        "a missing model is the server's 400, not a parse error"
    );
    assert!(r.messages.unwrap()[0].content.is_none());
    assert!(ok(r#"{"model":"m"}"#).messages.is_none());
    assert_eq!(
        ok(r#"{"messages":[{"role":"wizard","content":"x"}]}"#)
            .messages
            .unwrap()[0]
            .role,
        "wizard"
    );
    let r = ok(r#"{"messages":[{"role":"tool","content":"42"}]}"#);
    assert_eq!(
        r.messages.unwrap()[0]
            .content
            .clone()
            .unwrap()
            .into_text()
            .unwrap(),
        "42"
    );
    let r = ok(
        r#"{"messages":[{"role":"user","content":[{"type":"text"},{"type":"text","text":"b"}]}]}"#,
    );
    assert_eq!(
        r.messages.unwrap()[0]
            .content
            .clone()
            .unwrap()
            .into_text()
            .unwrap(),
        "b"
    );
    let r = ok(r#"{"messages":[{"role":"user","content":null}],"max_tokens":-1,"n":300}"#);
    assert_eq!(
        (r.params.max_tokens, r.params.n),
        (Some(-1), Some(300)),
        "range checks are the server's"
    );
    assert_eq!(
        ok(r#"{"seed":18446744073709551615}"#).params.seed,
        Some(u64::MAX)
    );
    assert_eq!(
        ok(r#"{"seed":-1}"#).params.seed,
        Some(u64::MAX),
        "a negative seed is its two's complement"
    );
    assert_eq!(ok(r#"{"seed":null}"#).params.seed, None);
    let r = ok(
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x"}}]}]}"#,
    );
    let part = r.messages.unwrap()[0]
        .content
        .clone()
        .unwrap()
        .into_text()
        .unwrap_err();
    assert_eq!(part.kind, "image_url");
    assert_eq!(
        part.extra["image_url"]["url"], "data:x",
        "unknown part fields are kept"
    );

    // Still refused: wrong types for typed fields.
    for bad in [
        r#"{"seed":"7"}"#,
        r#"{"max_tokens":5.5}"#,
        r#"{"stop":[1]}"#,
        r#"{"messages":[{"content":"x"}]}"#,
        "[]",
    ] {
        let e = ChatCompletionRequest::from_slice(bad.as_bytes()).unwrap_err();
        assert!(matches!(e, OpenAiError::InvalidJson { .. }), "{bad}: {e}");
    }
    let e = CompletionRequest::from_slice(br#"{"prompt":[1,2,3]}"#).unwrap_err();
    assert!(e.to_string().contains("completion request"), "{e}");
}

#[test]
fn embedding_request_and_answer_shapes() {
    let r = EmbeddingRequest::from_slice(
        br#"{"model":"m","input":[[1,2],[3]],"dimensions":8,"user":"u"}"#,
    )
    .unwrap();
    assert_eq!(
        r.input,
        Some(EmbeddingInput::TokenBatches(vec![vec![1, 2], vec![3]]))
    );
    assert_eq!(r.extra["user"], "u");
    let r = EmbeddingRequest::from_slice(br#"{"input":[5,6]}"#).unwrap();
    assert_eq!(r.input, Some(EmbeddingInput::Tokens(vec![5, 6])));
    // llama.cpp's server answer and OpenAI's base64 form.
    let a: EmbeddingResponse = serde_json::from_str(
        r#"{"model":"m","object":"list","usage":{"prompt_tokens":2,"total_tokens":2},"data":[{"embedding":[0.5,-0.25],"index":0,"object":"embedding"}]}"#,
    )
    .unwrap();
    assert_eq!(
        a.data[0].embedding,
        EmbeddingVector::Float(vec![0.5, -0.25])
    );
    assert_eq!(a.usage.prompt_tokens, 2);
    let b: EmbeddingResponse =
        serde_json::from_str(r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAAPw=="}],"model":"m"}"#).unwrap();
    assert_eq!(
        b.data[0].embedding,
        EmbeddingVector::Base64("AAAAPw==".into())
    );
    // Others' answers carry no receipt; B3IQ's names it, and only then is the key written.
    assert_eq!(b.b3iq_receipt_id, None);
    assert!(!serde_json::to_string(&b).unwrap().contains("b3iq_receipt_id"));
    let mut mine = b.clone();
    mine.b3iq_receipt_id = Some("ab".repeat(32));
    let v = serde_json::to_value(&mine).unwrap();
    assert_eq!(v["b3iq_receipt_id"], "ab".repeat(32));
    assert_eq!(serde_json::from_value::<EmbeddingResponse>(v).unwrap(), mine);
}

/// Everything a client takes from one stream.
#[derive(Debug, Default)]
struct Read {
    text: String,
    role: Option<String>,
    finish: Option<String>,
    usage: Option<Usage>,
    error: Option<ErrorDetail>,
    done: bool,
    chunks: usize,
}

/// Feeds `body` to a parser in pieces of `step` bytes and reads every event as a chat or text
/// stream would.
fn read_stream(body: &[u8], step: usize, chat: bool) -> Read {
    let mut p = SseParser::default();
    let mut events = Vec::new();
    for piece in body.chunks(step.max(1)) {
        events.extend(p.feed(piece).unwrap());
    }
    events.extend(p.finish().unwrap());
    let mut r = Read::default();
    for ev in events {
        if chat {
            match StreamItem::<ChatCompletionChunk>::from_event(&ev).unwrap() {
                StreamItem::Done => r.done = true,
                StreamItem::Error(e) => r.error = Some(e),
                StreamItem::Chunk(c) => {
                    r.chunks += 1;
                    r.usage = c.usage.or(r.usage);
                    for ch in c.choices {
                        r.role = ch.delta.role.or(r.role);
                        r.text.push_str(ch.delta.content.as_deref().unwrap_or(""));
                        r.finish = ch.finish_reason.or(r.finish);
                    }
                }
            }
        } else {
            match StreamItem::<TextCompletion>::from_event(&ev).unwrap() {
                StreamItem::Done => r.done = true,
                StreamItem::Error(e) => r.error = Some(e),
                StreamItem::Chunk(c) => {
                    r.chunks += 1;
                    r.usage = c.usage.or(r.usage);
                    for ch in c.choices {
                        r.text.push_str(&ch.text);
                        r.finish = ch.finish_reason.or(r.finish);
                    }
                }
            }
        }
    }
    r
}

/// The same result whatever the read sizes (1 byte, odd sizes, the whole body).
fn read_every_way(name: &str, chat: bool) -> Read {
    let body = fixture(name);
    let whole = read_stream(&body, body.len(), chat);
    for step in [1, 2, 3, 7, 64, 1000] {
        let r = read_stream(&body, step, chat);
        assert_eq!(
            (&r.text, &r.finish, &r.usage, &r.error, r.done, r.chunks),
            (
                &whole.text,
                &whole.finish,
                &whole.usage,
                &whole.error,
                whole.done,
                whole.chunks
            ),
            "{name} read {step} bytes at a time"
        );
    }
    whole
}

#[test]
fn llama_server_streams() {
    let r = read_every_way("llama_server_chat.sse", true);
    assert_eq!(r.role.as_deref(), Some("assistant"));
    assert_eq!(
        r.text, "Hello! 👋",
        "reasoning_content is not content; the emoji survives 1-byte reads"
    );
    assert_eq!(r.finish.as_deref(), Some("stop"));
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt_tokens: 1085,
            completion_tokens: 247,
            total_tokens: 1332,
            prompt_tokens_details: None,
        })
    );
    assert!(r.done && r.error.is_none());

    let r = read_every_way("llama_server_completion.sse", false);
    assert_eq!(r.text, "The capital");
    assert_eq!(r.finish.as_deref(), Some("length"));
    assert_eq!(r.usage, Some(Usage::new(5, 2)));
    assert!(r.done);

    let r = read_every_way("llama_server_error.sse", true);
    assert_eq!(r.text, "Once");
    let e = r.error.expect("the `error:` line is surfaced");
    assert!(e.message.contains("context size"), "{e:?}");
    assert_eq!(e.code, Some(ErrorCode::Number(500)));
    assert_eq!(e.kind.as_deref(), Some("exceed_context_size_error"));
    assert!(!r.done && r.finish.is_none());
}

#[test]
fn vllm_streams() {
    let r = read_every_way("vllm_chat_usage.sse", true);
    assert_eq!(r.text, "Paris.");
    assert_eq!(r.finish.as_deref(), Some("stop"));
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt_tokens: 24,
            completion_tokens: 2,
            total_tokens: 26,
            prompt_tokens_details: None,
        })
    );
    assert_eq!(r.chunks, 5);
    assert!(r.done);

    let r = read_every_way("vllm_error.sse", true);
    let e = r.error.expect("error event");
    assert!(e.message.contains("maximum context length"), "{e:?}");
    assert_eq!(e.kind.as_deref(), Some("BadRequestError"));
    assert_eq!(e.code, Some(ErrorCode::Number(400)));
    assert!(r.done, "vLLM sends [DONE] after its error event");
}

#[test]
fn openai_stream_with_crlf_and_comments() {
    let r = read_every_way("openai_chat_crlf.sse", true);
    assert_eq!(r.text, "Hi");
    assert_eq!(r.finish.as_deref(), Some("length"));
    assert_eq!(
        r.usage,
        Some(Usage::new(9, 1).with_cached_tokens(0)),
        "usage: null chunks do not erase the final usage"
    );
    assert_eq!(r.chunks, 4);
    assert!(r.done);
}

#[test]
fn finish_reasons_servers_invent_are_kept() {
    let c: ChatCompletionChunk =
        serde_json::from_str(r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"abort"}]}"#)
            .unwrap();
    assert_eq!(c.choices[0].finish_reason.as_deref(), Some("abort"));
    // A chunk without `created`, `id` or `object` (some servers, our old test server).
    let c: ChatCompletionChunk =
        serde_json::from_str(r#"{"model":"m","choices":[{"delta":{"content":"x"}}]}"#).unwrap();
    assert_eq!(c.choices[0].delta.content.as_deref(), Some("x"));
}

/// The exact bytes the host writes for a chat stream, built from the types.
#[test]
fn host_chat_stream_wire_shape() {
    let head =
        ChatCompletionChunk::new("chatcmpl-ab", CHAT_COMPLETION_CHUNK, 1700000000, "smollm2")
            .with_fingerprint("b3iq-0.1.0");
    let mut body = Vec::new();
    body.extend(sse::encode_json(
        &head.with_choices(vec![ChatChunkChoice::role("assistant")]),
    ));
    body.extend(sse::encode_json(
        &head.with_choices(vec![ChatChunkChoice::content("Hi")]),
    ));
    body.extend(sse::encode_json(
        &head.with_choices(vec![ChatChunkChoice::finish("stop")]),
    ));
    body.extend(sse::encode_json(
        &head
            .with_choices(Vec::<ChatChunkChoice>::new())
            .with_usage(Usage::new(3, 1)),
    ));
    body.extend_from_slice(sse::DONE_EVENT);
    let text = String::from_utf8(body.clone()).unwrap();
    let lines: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        lines[0],
        r#"data: {"id":"chatcmpl-ab","object":"chat.completion.chunk","created":1700000000,"model":"smollm2","system_fingerprint":"b3iq-0.1.0","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#
    );
    assert!(lines[1].ends_with(r#""choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}"#), "{}", lines[1]);
    assert!(
        lines[2].ends_with(
            r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#
        ),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].ends_with(
            r#""choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
        ),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "data: [DONE]");
    assert!(
        !text.contains("b3iq_receipt_id"),
        "chunks carry no receipt id"
    );

    let r = read_stream(&body, 5, true);
    assert_eq!(
        (r.text.as_str(), r.finish.as_deref(), r.usage, r.done),
        ("Hi", Some("stop"), Some(Usage::new(3, 1)), true)
    );
}

#[test]
fn host_whole_answers_wire_shape() {
    let mut chat = ChatCompletion::new("chatcmpl-ab", CHAT_COMPLETION, 1700000000, "smollm2")
        .with_fingerprint("b3iq-0.1.0")
        .with_usage(Usage::new(3, 2));
    chat.choices.push(ChatChoice::assistant("Hi!", "stop"));
    chat.b3iq_receipt_id = Some("r-1".into());
    assert_eq!(
        serde_json::to_string(&chat).unwrap(),
        r#"{"id":"chatcmpl-ab","object":"chat.completion","created":1700000000,"model":"smollm2","system_fingerprint":"b3iq-0.1.0","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"b3iq_receipt_id":"r-1"}"#
    );
    let back: ChatCompletion =
        serde_json::from_str(&serde_json::to_string(&chat).unwrap()).unwrap();
    assert_eq!(back, chat);

    let mut text =
        TextCompletion::new("cmpl-ab", TEXT_COMPLETION, 1, "m").with_usage(Usage::new(1, 1));
    text.choices.push(TextChoice::finished("Paris", "length"));
    let v = serde_json::to_value(&text).unwrap();
    assert_eq!(
        v["choices"][0],
        json!({"index": 0, "text": "Paris", "logprobs": null, "finish_reason": "length"})
    );
    assert!(v.get("b3iq_receipt_id").is_none() && v.get("system_fingerprint").is_none());

    let list = ModelList::new(vec![Model::new("smollm2", 5, "b3iq")]);
    assert_eq!(
        serde_json::to_string(&list).unwrap(),
        r#"{"object":"list","data":[{"id":"smollm2","object":"model","created":5,"owned_by":"b3iq"}]}"#
    );
}

#[test]
fn model_lists_of_other_servers() {
    let vllm: ModelList = serde_json::from_str(
        r#"{"object":"list","data":[{"id":"Qwen/Qwen2.5-0.5B-Instruct","object":"model","created":1718000000,"owned_by":"vllm","root":"Qwen/Qwen2.5-0.5B-Instruct","parent":null,"max_model_len":32768,"permission":[]}]}"#,
    )
    .unwrap();
    assert_eq!(vllm.data[0].context_length(), Some(32768));
    let llama: ModelList = serde_json::from_str(
        r#"{"object":"list","data":[{"id":"smollm2.gguf","object":"model","created":1754523863,"owned_by":"llamacpp","meta":{"vocab_type":2,"n_vocab":49152,"n_ctx_train":8192,"n_embd":576,"n_params":134515008,"size":96000000}}]}"#,
    )
    .unwrap();
    assert_eq!(llama.data[0].context_length(), Some(8192));
    assert_eq!(llama.data[0].parameter_count(), Some(134515008));
    assert_eq!(Model::new("x", 0, "b3iq").context_length(), None);
}

#[test]
fn error_bodies_in_every_shape() {
    let ours = ErrorBody::new(
        "model `x` is not served",
        "not_found_error",
        "model_not_found",
    );
    assert_eq!(
        serde_json::to_string(&ours).unwrap(),
        r#"{"error":{"message":"model `x` is not served","type":"not_found_error","code":"model_not_found","param":null}}"#
    );
    let d = ErrorBody::from_slice(&serde_json::to_vec(&ours).unwrap()).unwrap();
    assert_eq!(d, ours.error);
    // OpenAI's own 401.
    let d = ErrorBody::from_slice(
        br#"{"error":{"message":"Incorrect API key provided: sk-x.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
    )
    .unwrap();
    assert_eq!(d.code, Some(ErrorCode::Text("invalid_api_key".into())));
    // llama.cpp's server: numeric code.
    let d = ErrorBody::from_slice(
        br#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
    )
    .unwrap();
    assert_eq!(
        (d.code.unwrap().to_string(), d.message.as_str()),
        ("404".to_string(), "File Not Found")
    );
    // Older vLLM: no wrapper.
    let d = ErrorBody::from_slice(br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#).unwrap();
    assert!(d.message.contains("does not exist"));
    // text-generation-inference.
    let d =
        ErrorBody::from_slice(br#"{"error":"Input validation error","error_type":"validation"}"#)
            .unwrap();
    assert_eq!(d.message, "Input validation error");
    // Not errors.
    assert!(ErrorBody::from_slice(b"Internal Server Error").is_none());
    assert!(ErrorBody::from_slice(br#"{"id":"x","choices":[]}"#).is_none());
    assert!(ErrorBody::from_slice(br#"{"error":null}"#).is_none());
    // Error-event data in every shape.
    assert_eq!(
        ErrorDetail::from_event_data("plain text\n").message,
        "plain text"
    );
    assert_eq!(
        ErrorDetail::from_event_data(r#""quoted""#).message,
        "quoted"
    );
    assert_eq!(
        ErrorDetail::from_event_data(r#"{"error":{"message":"m"}}"#).message,
        "m"
    );
    assert_eq!(
        ErrorDetail::from_event_data(&"x".repeat(2000))
            .message
            .len(),
        500
    );
}

#[test]
fn stream_items_refuse_what_is_not_a_chunk() {
    let e = StreamItem::<ChatCompletionChunk>::parse("{not json").unwrap_err();
    assert!(
        matches!(
            e,
            OpenAiError::InvalidJson {
                what: "a stream chunk",
                ..
            }
        ),
        "{e}"
    );
    let e = StreamItem::<ChatCompletionChunk>::parse(r#"{"choices":"nope"}"#).unwrap_err();
    assert!(
        e.to_string().contains("choices") || e.to_string().contains("sequence"),
        "{e}"
    );
    assert_eq!(
        StreamItem::<ChatCompletionChunk>::parse(" [DONE] ").unwrap(),
        StreamItem::Done
    );
}

#[test]
fn request_serialisation_for_an_upstream() {
    let mut p = CommonParams {
        model: Some("m".into()),
        stream: Some(true),
        seed: Some(u64::MAX),
        ..Default::default()
    };
    p.stream_options = Some(StreamOptions {
        include_usage: true,
        ..Default::default()
    });
    p.extra.insert("top_k".into(), json!(40));
    p.set_response_format(Some(&ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "output".into(),
            schema: json!({"type": "object"}),
            strict: None,
        },
    }));
    let req = ChatCompletionRequest {
        messages: Some(vec![ChatMessage::new("user", "hi")]),
        params: p,
    };
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(
        v,
        json!({"messages": [{"role": "user", "content": "hi"}], "model": "m", "seed": 18446744073709551615u64, "stream": true,
            "stream_options": {"include_usage": true}, "top_k": 40,
            "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}})
    );
    let back = ChatCompletionRequest::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
    assert_eq!(back, req);
    let mut p = back.params;
    p.set_response_format(None);
    assert!(p.response_format().unwrap().is_none());
    p.extra
        .insert("response_format".into(), json!({"type": "grammar"}));
    assert!(
        p.response_format().is_err(),
        "an unknown response format is an error when asked for"
    );
}

/// Issue 17: tool calls and log probabilities, in OpenAI's shapes, read and written.
#[test]
fn tool_calls_and_logprobs_round_trip() {
    // An OpenAI answer with a tool call and chat logprobs.
    let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "logprobs": {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]}]},
            "finish_reason": "tool_calls"}]});
    let c: ChatCompletion = serde_json::from_value(answer.clone()).unwrap();
    let call = &c.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!((call.id.as_str(), call.function.name.as_str()), ("call_1", "get_weather"));
    assert_eq!(c.choices[0].logprobs.as_ref().unwrap().content.as_ref().unwrap()[0].logprob, -0.25);
    assert!(same_json(&serde_json::to_value(&c).unwrap(), &answer));
    // Without tool calls nothing extra is written; `logprobs` stays `null`.
    let plain = serde_json::to_value(ChatChoice::assistant("x", "stop")).unwrap();
    assert_eq!(plain, json!({"index": 0, "message": {"role": "assistant", "content": "x"}, "logprobs": null, "finish_reason": "stop"}));
    // A tool-call delta as OpenAI streams it.
    let d = ChatDelta {
        tool_calls: Some(vec![ToolCallDelta { index: 0, id: Some("call_1".into()), kind: Some("function".into()),
            function: Some(FunctionCallDelta { name: Some("f".into()), arguments: Some(String::new()) }) }]),
        ..ChatDelta::default()
    };
    assert_eq!(serde_json::to_value(&d).unwrap(), json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}));
    // Requests: tools, an assistant message's calls (arguments as an object from a lenient
    // client), the legacy shapes.
    let req = ChatCompletionRequest::from_slice(br#"{"model":"m","messages":[{"role":"assistant","content":null,
        "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":{"a":1}}}]},
        {"role":"assistant","function_call":{"name":"g","arguments":"{}"}}],
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
        "functions":[{"name":"g"}]}"#).unwrap();
    let msgs = req.messages.as_ref().unwrap();
    assert_eq!(msgs[0].tool_calls().unwrap()[0].function.arguments, r#"{"a":1}"#);
    assert_eq!(msgs[1].function_call().unwrap().unwrap().name, "g");
    assert_eq!(req.params.tools().unwrap()[0].function.name, "f");
    assert_eq!(req.params.functions().unwrap()[0].name, "g");
    // Legacy completions logprobs.
    let t: TextCompletion = serde_json::from_value(json!({"id": "c", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": " a", "finish_reason": "length", "logprobs": {"tokens": [" a"], "token_logprobs": [-1.5],
            "top_logprobs": [{" a": -1.5}], "text_offset": [0]}}]})).unwrap();
    assert_eq!(t.choices[0].logprobs.as_ref().unwrap().token_logprobs, vec![Some(-1.5)]);
}
