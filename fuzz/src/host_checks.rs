//! Checks for the b3iq-host fuzz targets (feature `host`), shared with
//! `b3iq-host/tests/fuzz_corpus.rs`, which replays `fuzz/corpus/<target>/` in `cargo test`.
//! Each takes any bytes; a panic (or a failed assertion) is a bug.

use b3iq_host::http::openai::validate_request_body;
use b3iq_host::http::{host_matches, same_origin, HeaderMap, HeaderName, HeaderValue, Scheme};
use b3iq_host::support::{read_bundle, MAX_BUNDLE_TEXT};
use b3iq_host::HostError;

/// A fuzz check: any bytes in, a panic on a bug.
pub type Check = fn(&[u8]);

/// Every target: (corpus directory, check).
pub const TARGETS: &[(&str, Check)] = &[
    ("host_header", host_header),
    ("same_origin", same_origin_check),
    ("request_body", request_body),
    ("support_bundle", support_bundle),
    ("update_metadata", update_metadata),
];

/// The `Host` allowlist (DNS-rebinding guard). First line: the header; further lines: the
/// configured LAN names. With no LAN names, only loopback names may pass.
pub fn host_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or("");
    let extra: Vec<String> = lines.map(str::to_owned).collect();
    if host_matches(host, &[]) {
        let name = match host.strip_prefix('[') {
            Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or("")),
            None => host
                .split(':')
                .next()
                .unwrap_or("")
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        };
        assert!(
            ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str()),
            "{host:?} passed the allowlist without LAN names"
        );
    }
    if host_matches(host, &extra) {
        assert!(
            !host
                .chars()
                .any(|c| c.is_whitespace() || "/@?#\\".contains(c))
                || !extra.is_empty()
        );
    }
}

/// The CSRF check. Input: `name: value` lines become request headers (invalid ones skipped).
/// Whenever it passes with an `Origin`, the origin must be this exact host.
pub fn same_origin_check(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    for scheme in [Scheme::Http, Scheme::Https] {
        if same_origin(&headers, scheme).is_ok() {
            if let Some(origin) = headers.get("origin") {
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                let origin = origin.to_str().unwrap_or("");
                assert!(!host.is_empty() && origin == format!("{}://{host}", scheme.as_str()));
            }
            if let Some(site) = headers.get("sec-fetch-site") {
                assert!(site == "same-origin" || site == "none");
            }
        }
    }
}

/// `/v1/responses` (first byte 3 mod 4), `/v1/embeddings` (5 mod 8), else
/// `/v1/chat/completions` (first byte even) or `/v1/completions` (odd) bodies. No model is
/// served here, so every body ends in a typed client error, never an internal one.
pub fn request_body(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let checked = match first % 8 {
        3 | 7 => b3iq_host::http::responses::validate_responses_body(body),
        5 => b3iq_host::http::embeddings::validate_embeddings_body(body),
        _ => validate_request_body(first % 2 == 0, body),
    };
    match checked {
        Ok(()) => {}
        Err(HostError::Internal(e)) => panic!("internal error on a request body: {e}"),
        Err(e) => assert!(e.status().is_client_error(), "{e} is not a 4xx"),
    }
}

/// Support bundles read back (`b3iqd support-bundle --list`): any bytes give the files or an
/// error, within the size cap (no gzip bomb gets through).
pub fn support_bundle(data: &[u8]) {
    if let Ok(files) = read_bundle(data) {
        let total: usize = files.iter().map(|(_, t)| t.len()).sum();
        assert!(total as u64 <= MAX_BUNDLE_TEXT);
    }
}

/// Update metadata and versions from a release repository (`b3iq_host::update`): any bytes give a
/// root version or 0, any string a version or `None`, without panicking.
pub fn update_metadata(data: &[u8]) {
    let _ = b3iq_host::update::root_version(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(v) = b3iq_host::update::parse_version(s) {
            assert_eq!(v.as_str(), s);
        }
    }
}
