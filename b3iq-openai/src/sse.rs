//! Server-sent events as OpenAI-compatible servers use them: encode one `data:` event per chunk
//! and the final `data: [DONE]`, and parse a `text/event-stream` body incrementally.
//!
//! Encoding writes `data: <payload>\n\n` (a payload with line breaks becomes several `data:`
//! lines of one event, as the SSE format requires). [`SseParser`] takes bytes as they arrive
//! (a line may be split across reads at any byte, even inside a UTF-8 character or between the
//! `\r` and `\n` of a CRLF) and returns each complete event:
//!
//! ```
//! use b3iq_openai::sse::{self, SseParser};
//!
//! let mut body = sse::encode_data("{\"a\":1}").into_bytes();
//! body.extend_from_slice(sse::DONE_EVENT);
//! let (head, tail) = body.split_at(7);
//! let mut p = SseParser::default();
//! let mut events = p.feed(head).unwrap();
//! events.extend(p.feed(tail).unwrap());
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert!(events[1].is_done());
//! ```

use serde::Serialize;

use crate::error::OpenAiError;

/// The payload of the event that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

/// The whole event that ends an OpenAI stream: `data: [DONE]` and the blank line.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// What [`encode_json`] sends in the (practically impossible) case that a value cannot be
/// serialised: an OpenAI error event, so the client sees a failure rather than a cut stream.
pub const SERIALIZE_FAILED_EVENT: &[u8] =
    b"data: {\"error\":{\"message\":\"the server could not serialise a stream event\",\"type\":\"server_error\",\"code\":\"serialize_failed\",\"param\":null}}\n\n";

/// The `Content-Type` of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// One event with `data` as its payload. Each line of `data` (split at `\r\n`, `\n` or `\r`)
/// becomes one `data:` line, so the parser gives back `data` with its line breaks as `\n`.
pub fn encode_data(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 8);
    for line in lines(data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One event whose payload is `value` as compact JSON: `data: {...}\n\n`. JSON text has no raw
/// line breaks, so this is always a single `data:` line.
///
/// Serialising this crate's types and `serde_json::Value` cannot fail; for a value whose
/// `Serialize` does fail (a map with non-string keys, a custom impl returning an error) the
/// event is [`SERIALIZE_FAILED_EVENT`] instead, so a stream never breaks off silently.
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => {
            out.extend_from_slice(b"\n\n");
            out
        }
        Err(_) => SERIALIZE_FAILED_EVENT.to_vec(),
    }
}

/// Splits at `\r\n`, `\n` or `\r`; an empty string is one empty line.
fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had a non-empty one (OpenAI chat and completion streams
    /// never send it; other APIs name their events with it).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (one leading space after `data:` removed).
    pub data: String,
}

impl SseEvent {
    /// Whether this is the `[DONE]` event that ends an OpenAI stream (surrounding whitespace
    /// ignored).
    pub fn is_done(&self) -> bool {
        self.data.trim() == DONE
    }
}

/// Incremental parser of a `text/event-stream` body (the WHATWG event-stream format): feed it
/// bytes as they arrive, get back the events they complete.
///
/// - Lines end in `\n`, `\r\n` or `\r`; a break split across two reads is handled.
/// - Lines starting with `:` are comments (keep-alives) and ignored, as are the `id:` and
///   `retry:` fields and unknown fields. A leading UTF-8 byte-order mark is skipped.
/// - One non-standard field is read: llama.cpp's server sends a failure inside a stream as
///   `error: {...}`; it becomes an event named `error` with that data.
/// - Several `data:` lines in one event are joined with `\n`; an event is dispatched at the
///   blank line that ends it, and only if it had a `data:` line.
/// - Bytes are decoded as UTF-8 per complete line, invalid sequences replaced by U+FFFD (as the
///   format specifies), so a character split across reads is decoded whole.
/// - Memory is bounded: a line longer than the limit, or an event whose data grows past it,
///   is an error ([`OpenAiError::SseLineTooLong`], [`OpenAiError::SseEventTooLarge`]). After an
///   error the parser keeps returning it; drop the stream.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// Bytes of the current line that arrived without its line break yet.
    pending: Vec<u8>,
    /// The last byte seen was a `\r` ending a line: a `\n` first in the next read belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a byte-order mark may start the first one).
    first_line: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    limit: usize,
    failed: Option<OpenAiError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(Self::DEFAULT_LIMIT)
    }
}

impl SseParser {
    /// The default limit, in bytes, on one line and on the data of one event: 8 MiB.
    pub const DEFAULT_LIMIT: usize = 8 << 20;

    /// A parser that refuses lines, and event data, longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            has_data: false,
            event: None,
            limit,
            failed: None,
        }
    }

    /// Feeds the next bytes of the body; returns every event they complete, in order.
    ///
    /// # Errors
    /// [`OpenAiError::SseLineTooLong`] or [`OpenAiError::SseEventTooLarge`] when the input breaks
    /// the limit; the same error again for every later call.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, OpenAiError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let part = &bytes[..pos];
            let cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if cr {
                // A `\r` may be the first half of a CRLF, whose `\n` may come in the next read.
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let result = if self.pending.is_empty() {
                self.line(part, &mut events)
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(part);
                let r = self.line(&line, &mut events);
                line.clear();
                self.pending = line;
                r
            };
            if let Err(e) = result {
                return Err(self.fail(e));
            }
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > self.limit {
            return Err(self.fail(OpenAiError::SseLineTooLong { limit: self.limit }));
        }
        Ok(events)
    }

    /// Ends the body: the last event, if the body stopped after its `data:` lines without the
    /// blank line that should end it. (The format says such an event is dropped; servers that
    /// end with `data: [DONE]` and no blank line are common enough that a client keeps it.)
    /// The parser is ready for a new body afterwards.
    ///
    /// # Errors
    /// As [`SseParser::feed`].
    pub fn finish(&mut self) -> Result<Option<SseEvent>, OpenAiError> {
        let mut events = self.feed(b"\n\n")?;
        *self = Self::with_limit(self.limit);
        Ok(events.pop())
    }

    fn fail(&mut self, e: OpenAiError) -> OpenAiError {
        self.failed = Some(e.clone());
        self.pending = Vec::new();
        self.data = String::new();
        e
    }

    /// One complete line, without its line break.
    fn line(&mut self, mut line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), OpenAiError> {
        if line.len() > self.limit {
            return Err(OpenAiError::SseLineTooLong { limit: self.limit });
        }
        if std::mem::take(&mut self.first_line) {
            line = line
                .strip_prefix(b"\xEF\xBB\xBF".as_slice())
                .unwrap_or(line);
        }
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                events.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ".as_slice()).unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => self.push_data(value)?,
            b"event" => {
                self.event =
                    Some(String::from_utf8_lossy(value).into_owned()).filter(|e| !e.is_empty());
            }
            b"error" => {
                // llama.cpp's server reports a failure inside a stream as an `error: {...}` line,
                // which is no SSE field; read it as the data of an event named `error` so the
                // message is not lost.
                self.event = Some("error".into());
                self.push_data(value)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn push_data(&mut self, value: &[u8]) -> Result<(), OpenAiError> {
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(&String::from_utf8_lossy(value));
        self.has_data = true;
        if self.data.len() > self.limit {
            return Err(OpenAiError::SseEventTooLarge { limit: self.limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut SseParser, pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.feed(piece).unwrap());
        }
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            data(&p.feed(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n").unwrap()),
            vec!["{\"a\":1}"]
        );
        let last = p.finish().unwrap().unwrap();
        assert!(last.is_done());
        assert_eq!(p.finish().unwrap(), None, "finish resets the parser");
    }

    #[test]
    fn crlf_split_between_cr_and_lf() {
        let mut p = SseParser::default();
        let evs = feed_all(&mut p, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(
            data(&evs),
            vec!["a\nb"],
            "the LF after a CR in the next read is not a second line break"
        );
        // Lone CRs are line breaks too.
        let evs = feed_all(&mut p, &[b"data: c\r\rdata: d\r", b"\r"]);
        assert_eq!(data(&evs), vec!["c", "d"]);
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let mut p = SseParser::default();
        let evs = p
            .feed(b": ping\nid: 7\nretry: 100\nevent: delta\ndata: first\ndata:second\ndata:  third\nfoo: bar\n\n")
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(
            evs[0].data, "first\nsecond\n third",
            "one space after the colon is removed, not two"
        );
        assert_eq!(evs[0].event.as_deref(), Some("delta"));
        // A field line without a colon; an empty `data:`; an event type does not leak into the next event.
        let evs = p.feed(b"data\n\ndata:\n\nevent: x\n\ndata: y\n\n").unwrap();
        assert_eq!(data(&evs), vec!["", "", "y"]);
        assert!(evs.iter().all(|e| e.event.is_none()), "{evs:?}");
        // Blank lines without data dispatch nothing.
        assert!(p.feed(b"\n\n\r\n: only a comment\n\n").unwrap().is_empty());
    }

    #[test]
    fn byte_order_mark_and_split_utf8() {
        let mut p = SseParser::default();
        let body = "\u{FEFF}data: héllo ✓\n\n".as_bytes();
        let mut evs = Vec::new();
        for b in body {
            evs.extend(p.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            data(&evs),
            vec!["héllo ✓"],
            "BOM dropped; characters split across reads decoded whole"
        );
        // Invalid UTF-8 is replaced, not an error.
        let evs = p.feed(b"data: \xff\xfe ok\n\n").unwrap();
        assert_eq!(evs[0].data, "\u{FFFD}\u{FFFD} ok");
    }

    #[test]
    fn llama_cpp_error_lines_become_error_events() {
        let mut p = SseParser::default();
        let evs = p
            .feed(b"data: {\"x\":1}\n\nerror: {\"code\":500,\"message\":\"boom\"}\n\n")
            .unwrap();
        assert_eq!(evs[0].event, None);
        assert_eq!(evs[1].event.as_deref(), Some("error"));
        assert_eq!(evs[1].data, "{\"code\":500,\"message\":\"boom\"}");
    }

    #[test]
    fn a_line_past_the_limit_is_refused_with_a_clear_error() {
        let mut p = SseParser::with_limit(16);
        assert!(
            p.feed(b"data: 0123456789").unwrap().is_empty(),
            "16 bytes pending is within the limit"
        );
        let e = p.feed(b"a").unwrap_err();
        assert_eq!(e, OpenAiError::SseLineTooLong { limit: 16 });
        assert!(e.to_string().contains("16 bytes"), "{e}");
        assert_eq!(p.feed(b"\n\n").unwrap_err(), e, "the parser stays failed");
        assert_eq!(p.finish().unwrap_err(), e);

        // A complete over-long line in one read, too.
        let mut p = SseParser::with_limit(16);
        assert_eq!(
            p.feed(b"data: 0123456789abcdef\n\n").unwrap_err(),
            OpenAiError::SseLineTooLong { limit: 16 }
        );
        // Comments count: an endless comment line is no way around the bound.
        let mut p = SseParser::with_limit(16);
        assert!(p.feed(b": 01234567890123456789").is_err());
    }

    #[test]
    fn event_data_past_the_limit_is_refused() {
        let mut p = SseParser::with_limit(16);
        let e = p
            .feed(b"data: 0123456\ndata: 0123456\ndata: 0\n")
            .unwrap_err();
        assert_eq!(e, OpenAiError::SseEventTooLarge { limit: 16 });
        // Many small events are fine: the bound is per event.
        let mut p = SseParser::with_limit(16);
        let body = "data: 0123456789\n\n".repeat(100);
        assert_eq!(p.feed(body.as_bytes()).unwrap().len(), 100);
    }

    #[test]
    fn finish_keeps_a_last_event_without_its_blank_line() {
        for (tail, from_feed, from_finish) in [
            (&b"data: [DONE]"[..], 0, true),
            (b"data: [DONE]\n", 0, true),
            (b"data: [DONE]\r", 0, true),
            (b"data: [DONE]\r\n\r\n", 1, false),
            (b"", 0, false),
        ] {
            let mut p = SseParser::default();
            let evs = p.feed(tail).unwrap();
            assert_eq!(evs.len(), from_feed, "{tail:?}");
            let last = p.finish().unwrap();
            assert_eq!(last.is_some(), from_finish, "{tail:?}");
            assert!(
                evs.iter().chain(last.as_ref()).all(SseEvent::is_done),
                "{tail:?}"
            );
        }
    }

    #[test]
    fn encode_round_trips_through_the_parser() {
        assert_eq!(encode_data("x"), "data: x\n\n");
        assert_eq!(encode_data(""), "data: \n\n");
        assert_eq!(
            encode_data("a\r\nb\rc\nd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let mut p = SseParser::default();
        for s in [
            "",
            "x",
            "a\nb",
            "a\r\nb",
            " leading space",
            "trailing\n",
            "\n\n",
            "data: inner",
        ] {
            let evs = p.feed(encode_data(s).as_bytes()).unwrap();
            assert_eq!(evs.len(), 1, "{s:?}");
            assert_eq!(
                evs[0].data,
                s.replace("\r\n", "\n").replace('\r', "\n"),
                "{s:?}"
            );
        }
        assert_eq!(
            encode_json(&serde_json::json!({"a": "b\nc"})),
            b"data: {\"a\":\"b\\nc\"}\n\n"
        );
        assert_eq!(DONE_EVENT, encode_data(DONE).as_bytes());
    }

    #[test]
    fn a_value_that_cannot_be_serialised_becomes_an_error_event() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let bytes = encode_json(&m);
        assert_eq!(bytes, SERIALIZE_FAILED_EVENT);
        let evs = SseParser::default().feed(&bytes).unwrap();
        let v: serde_json::Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(v["error"]["code"], "serialize_failed");
    }
}
