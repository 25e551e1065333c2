//! Checks for the b3iq-openai fuzz targets, shared with `b3iq-openai/tests/fuzz_corpus.rs`,
//! which replays `fuzz/corpus/<target>/` in `cargo test`. Each takes any bytes; a panic (or a
//! failed assertion) is a bug.

use b3iq_openai::sse::{self, SseEvent, SseParser};
use b3iq_openai::{
    ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, EmbeddingRequest, OpenAiError,
    StreamItem, TextCompletion,
};

/// A fuzz check: any bytes in, a panic on a bug.
pub type Check = fn(&[u8]);

/// Every target: (corpus directory, check).
pub const TARGETS: &[(&str, Check)] =
    &[("sse_parse", sse_parse), ("openai_request", openai_request)];

/// Reads `body` `step` bytes at a time, then ends it.
fn read_all(body: &[u8], step: usize, limit: usize) -> Result<Vec<SseEvent>, OpenAiError> {
    let mut p = SseParser::with_limit(limit);
    let mut events = Vec::new();
    for piece in body.chunks(step.max(1)) {
        events.extend(p.feed(piece)?);
    }
    events.extend(p.finish()?);
    Ok(events)
}

/// The SSE parser. First byte: bit 7 picks a 64-byte limit (else the default), bits 0-5 the
/// read size (1-64 bytes); the rest is the body. Reading it whole or in pieces must give the
/// same events or the same error; every event must read as a stream item without panicking,
/// and a chunk must survive encode + parse unchanged. The body as text, encoded as one event,
/// must parse back to that text.
pub fn sse_parse(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let limit = if ctl & 0x80 != 0 {
        64
    } else {
        SseParser::DEFAULT_LIMIT
    };
    let step = usize::from(ctl & 0x3f) + 1;
    let whole = read_all(body, body.len(), limit);
    let split = read_all(body, step, limit);
    assert_eq!(
        whole, split,
        "reading {step} bytes at a time changed the result"
    );
    for ev in whole.unwrap_or_default() {
        assert!(ev.data.len() <= limit, "event data past the limit");
        if let Ok(StreamItem::Chunk(c)) = StreamItem::<ChatCompletionChunk>::from_event(&ev) {
            chunk_roundtrip(&c);
        }
        if let Ok(StreamItem::Chunk(c)) = StreamItem::<TextCompletion>::from_event(&ev) {
            chunk_roundtrip(&c);
        }
    }
    let text = String::from_utf8_lossy(body);
    let events = SseParser::default()
        .feed(sse::encode_data(&text).as_bytes())
        .expect("own encoding parses");
    assert_eq!(events.len(), 1, "one encoded event parses as one event");
    assert_eq!(
        events[0].data,
        text.replace("\r\n", "\n").replace('\r', "\n")
    );
}

fn chunk_roundtrip<T>(c: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let bytes = sse::encode_json(c);
    let events = SseParser::default()
        .feed(&bytes)
        .expect("own chunk parses as SSE");
    match StreamItem::<T>::parse(&events[0].data).expect("own chunk parses") {
        StreamItem::Chunk(back) => {
            assert_same(&back, c, "chunk changed in an encode + parse round trip")
        }
        other => panic!("own chunk read back as {other:?}"),
    }
}

/// Equal as JSON, except that floats may differ in their last bits: serde_json's default float
/// parser (without its `float_roundtrip` feature) is not correctly rounded, so a float can move
/// by an ulp in a serialise + parse round trip (reproducer:
/// `corpus/openai_request/crash-float-beyond-17-digits`).
fn assert_same<T: serde::Serialize + std::fmt::Debug>(a: &T, b: &T, what: &str) {
    let x = serde_json::to_value(a).expect("serialises");
    let y = serde_json::to_value(b).expect("serialises");
    assert!(same(&x, &y), "{what}: {a:?} != {b:?}");
}

fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-14,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Request bodies: whatever parses as a chat, text completion or embedding request must
/// serialise and parse back to the same value (floats within serde_json's parsing error), and
/// its accessors must not panic.
pub fn openai_request(data: &[u8]) {
    if let Ok(r) = ChatCompletionRequest::from_slice(data) {
        let _ = r.params.include_usage();
        let _ = r.params.response_format();
        for m in r.messages.clone().unwrap_or_default() {
            let _ = m.content.map(|c| c.into_text());
        }
        roundtrip(&r, ChatCompletionRequest::from_slice);
    }
    if let Ok(r) = CompletionRequest::from_slice(data) {
        let _ = r.params.stop.clone().map(|s| s.into_vec());
        roundtrip(&r, CompletionRequest::from_slice);
    }
    if let Ok(r) = EmbeddingRequest::from_slice(data) {
        roundtrip(&r, EmbeddingRequest::from_slice);
    }
}

fn roundtrip<T>(v: &T, parse: fn(&[u8]) -> Result<T, OpenAiError>)
where
    T: serde::Serialize + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(v).expect("a parsed request serialises");
    let back = parse(&bytes).unwrap_or_else(|e| panic!("own output does not parse: {e}"));
    assert_same(&back, v, "request changed in a round trip");
}
