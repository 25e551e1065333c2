//! `POST /v1/embeddings` (docs/api.md, "Embeddings"): OpenAI's request and answer over
//! [`inference::embed`], which computes, meters and receipts.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use b3iq_openai::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
use b3iq_runtime::runtime::{EmbedInput, MAX_EMBED_INPUTS};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde_json::{Map, Value};

use super::openai::{caller, check_ticket_model, parse_json};
use super::{JsonBody, RawBody};
use crate::context::{NodeState, ServedModel};
use crate::error::{HostError, Result};
use crate::inference;

/// A parsed, validated embeddings request.
pub(super) struct EmbedParams {
    pub(super) model: ServedModel,
    pub(super) inputs: Vec<EmbedInput>,
    /// `encoding_format: "base64"`: each vector as base64 of its little-endian `f32` bytes.
    pub(super) base64: bool,
}

/// A field's name, its JSON type test, and the type as the error names it.
type FieldCheck = (&'static str, fn(&Value) -> bool, &'static str);

/// The body as the wire type; a field of the wrong JSON type is a 400 naming it (`param`).
fn parse_body(body: &[u8]) -> Result<EmbeddingRequest> {
    let JsonBody(map) = parse_json::<Map<String, Value>>(body)?;
    let present = |name: &str| map.get(name).filter(|v| !v.is_null());
    if let Some(v) = present("input") {
        if serde_json::from_value::<EmbeddingInput>(v.clone()).is_err() {
            return Err(HostError::field(
                "input",
                "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids",
            ));
        }
    }
    let checks: [FieldCheck; 4] = [
        ("model", Value::is_string, "a string"),
        (
            "encoding_format",
            Value::is_string,
            "\"float\" or \"base64\"",
        ),
        ("dimensions", Value::is_i64, "an integer"),
        ("user", Value::is_string, "a string"),
    ];
    for (name, ok, what) in checks {
        if present(name).is_some_and(|v| !ok(v)) {
            return Err(HostError::field(name, format!("{name} must be {what}")));
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| HostError::InvalidJson(e.to_string()))
}

/// Token ids from the wire (`i64`) as the runtime's (`u32`); the vocabulary is checked there.
fn token_ids(i: usize, ids: Vec<i64>) -> Result<EmbedInput> {
    ids.into_iter()
        .map(|t| {
            u32::try_from(t).map_err(|_| {
                HostError::field(
                    "input",
                    format!("input[{i}] holds token id {t}; token ids are >= 0"),
                )
            })
        })
        .collect::<Result<Vec<u32>>>()
        .map(EmbedInput::Tokens)
}

/// `input` as the runtime's inputs: present, 1 to [`MAX_EMBED_INPUTS`] items, none empty.
fn inputs(input: Option<EmbeddingInput>) -> Result<Vec<EmbedInput>> {
    let inputs = match input {
        None => return Err(HostError::field("input", "`input` is required")),
        Some(EmbeddingInput::Text(s)) => vec![EmbedInput::Text(s)],
        Some(EmbeddingInput::Texts(v)) => v.into_iter().map(EmbedInput::Text).collect(),
        Some(EmbeddingInput::Tokens(t)) => vec![token_ids(0, t)?],
        Some(EmbeddingInput::TokenBatches(v)) => v
            .into_iter()
            .enumerate()
            .map(|(i, t)| token_ids(i, t))
            .collect::<Result<_>>()?,
    };
    if inputs.is_empty() {
        return Err(HostError::field("input", "input must not be empty"));
    }
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(HostError::field(
            "input",
            format!(
                "input may hold at most {MAX_EMBED_INPUTS} items, got {}",
                inputs.len()
            ),
        ));
    }
    for (i, x) in inputs.iter().enumerate() {
        let empty = match x {
            EmbedInput::Text(s) => s.is_empty(),
            EmbedInput::Tokens(t) => t.is_empty(),
        };
        if empty {
            return Err(HostError::field(
                "input",
                format!("input[{i}] is empty; every input needs at least one token"),
            ));
        }
    }
    Ok(inputs)
}

/// Validate every field, then resolve the model (last, so every field error is found without a
/// node; the fuzz target relies on this), then check `dimensions` against it.
pub(super) fn parse_embeddings(
    body: &[u8],
    resolve: &dyn Fn(&str) -> Option<ServedModel>,
) -> Result<EmbedParams> {
    let r = parse_body(body)?;
    let model_id = r.model.filter(|m| !m.is_empty()).ok_or_else(|| {
        HostError::field("model", "`model` is required; GET /v1/models lists them")
    })?;
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(HostError::field(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
            ))
        }
    };
    let inputs = inputs(r.input)?;
    let model = resolve(&model_id)
        .ok_or_else(|| HostError::ModelNotFound(model_id.chars().take(128).collect()))?;
    if let Some(d) = r.dimensions {
        let n = model.info.embedding_length;
        if n == 0 || d != i64::from(n) {
            return Err(HostError::field(
                "dimensions",
                format!(
                    "dimensions {d} is not supported: {} gives vectors of {n} dimensions and cannot shorten them; omit dimensions",
                    model.id
                ),
            ));
        }
    }
    Ok(EmbedParams {
        model,
        inputs,
        base64,
    })
}

/// Parse and validate a `/v1/embeddings` body from outside bytes without a running node (no
/// model is served, so a valid body ends in `ModelNotFound`). For the fuzz target
/// `request_body`: a typed error for any input, never a panic.
pub fn validate_embeddings_body(body: &[u8]) -> Result<()> {
    parse_embeddings(body, &|_| None).map(|_| ())
}

/// A vector as OpenAI's `base64` encoding: the little-endian bytes of each `f32`, base64.
pub fn base64_f32_le(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    BASE64_STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    // The key is checked before the body is read, as on every /v1 route.
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let named = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
    let _loaded = super::openai::model_on_demand(&st, &caller, named.as_deref()).await?;
    let p = parse_embeddings(&body, &|id| st.served_model(id))?;
    check_ticket_model(&caller, &p.model.id)?;
    let network = matches!(caller, inference::Caller::Network(_));
    let done = inference::embed(&st, caller, p.model.clone(), p.inputs).await?;
    let receipt = done.receipt;
    let e = done.embeddings;
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| Embedding {
            object: "embedding".into(),
            index: i as u32,
            embedding: if p.base64 {
                EmbeddingVector::Base64(base64_f32_le(&v))
            } else {
                EmbeddingVector::Float(v)
            },
        })
        .collect();
    let answer = EmbeddingResponse {
        object: "list".into(),
        data,
        model: p.model.id,
        usage: EmbeddingUsage {
            prompt_tokens: e.prompt_tokens,
            total_tokens: e.prompt_tokens,
        },
        b3iq_receipt_id: Some(done.receipt_id),
    };
    let mut resp = axum::Json(answer).into_response();
    if network {
        // The gateway settles the request by this receipt (and takes the header out).
        super::openai::network_headers(&mut resp, &receipt, None);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> HostError {
        validate_embeddings_body(body.as_bytes()).unwrap_err()
    }

    fn param(e: &HostError) -> Option<String> {
        e.body()["error"]["param"].as_str().map(str::to_string)
    }

    #[test]
    fn bodies_get_errors_naming_the_field() {
        for (body, want) in [
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":""}"#, "input"),
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":["a",""]}"#, "input"),
            (r#"{"model":"m","input":[[1],[]]}"#, "input"),
            (r#"{"model":"m","input":[-1]}"#, "input"),
            (r#"{"model":"m","input":["a",1]}"#, "input"),
            (r#"{"model":"m","input":{"text":"a"}}"#, "input"),
            (r#"{"input":"a"}"#, "model"),
            (r#"{"model":7,"input":"a"}"#, "model"),
            (
                r#"{"model":"m","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (
                r#"{"model":"m","input":"a","dimensions":"64"}"#,
                "dimensions",
            ),
            (r#"{"model":"m","input":"a","user":5}"#, "user"),
        ] {
            let e = err(body);
            assert_eq!(
                e.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{body}: {e}"
            );
            assert_eq!(param(&e).as_deref(), Some(want), "{body}: {e}");
            assert_eq!(e.code(), "invalid_parameter", "{body}");
        }
        let many = format!(
            r#"{{"model":"m","input":[{}]}}"#,
            vec!["\"x\""; MAX_EMBED_INPUTS + 1].join(",")
        );
        let e = err(&many);
        assert_eq!(param(&e).as_deref(), Some("input"));
        assert!(e.to_string().contains("2048"), "{e}");
        // Valid bodies get as far as the model lookup (no node here).
        for ok in [
            r#"{"model":"m","input":"a"}"#,
            r#"{"model":"m","input":["a","b"],"encoding_format":"base64","user":"u"}"#,
            r#"{"model":"m","input":[1,2,3],"encoding_format":"float","dimensions":576}"#,
            r#"{"model":"m","input":[[1,2],[3]]}"#,
        ] {
            assert!(matches!(err(ok), HostError::ModelNotFound(_)), "{ok}");
        }
        assert!(matches!(err("[1,2"), HostError::InvalidJson(_)));
        assert!(matches!(err("[1,2]"), HostError::InvalidJson(_)));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        // 0.5f32 = 0x3f000000: bytes 00 00 00 3f.
        assert_eq!(base64_f32_le(&[0.5]), "AAAAPw==");
        assert_eq!(
            base64_f32_le(&[1.0, -2.0]),
            BASE64_STANDARD.encode([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
        );
    }
}
