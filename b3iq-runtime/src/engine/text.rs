//! The text side of a sequence: token bytes to UTF-8-safe deltas, stop sequences, and which
//! sampled tokens back the delivered text.

use super::decoder::TokenId;

/// Splits a byte buffer into the longest valid UTF-8 prefix (returned) and keeps an incomplete
/// trailing character in `buf`. Invalid bytes become U+FFFD.
pub fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&buf[..valid]).unwrap_or_default());
                match e.error_len() {
                    None => {
                        // Incomplete character at the end: keep it for the next token.
                        buf.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        buf.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

/// Holds back text that may be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for these stop sequences.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }
    /// Feeds text; returns (text safe to emit, whether a stop sequence was hit).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        self.pending.push_str(text);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop sequence.
        let mut keep_from = self.pending.len();
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep_from = i;
                break;
            }
        }
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        (out, false)
    }
    /// Text still held back (emitted when generation ends without a stop).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// What one token did to the text of its sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextStep {
    /// Text to deliver now; empty while an incomplete character or a possible stop prefix is
    /// held back.
    pub delta: String,
    /// A stop sequence matched: generation ends and nothing from the match on is delivered.
    pub stopped: bool,
}

/// The text of one sequence: joins token bytes into whole UTF-8 characters, holds back what
/// could start a stop sequence, and keeps the sampled token ids with the byte offset where
/// each one's text starts, so the tokens backing the delivered text are known at the end.
#[derive(Debug, Default)]
pub struct TextStage {
    utf8: Vec<u8>,
    stop: StopMatcher,
    tokens: Vec<TokenId>,
    /// For each token, the length of the decoded text before it (bytes).
    starts: Vec<usize>,
    /// Decoded text so far (bytes): what the stop matcher has seen.
    decoded: usize,
    /// Delivered text so far (bytes): a prefix of the decoded text.
    delivered: usize,
    stopped: bool,
}

impl TextStage {
    /// The text stage of a request with these stop sequences.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stop: StopMatcher::new(stops),
            ..Self::default()
        }
    }

    /// Feeds one sampled token (not an end-of-generation token) and its bytes.
    pub fn push(&mut self, token: TokenId, piece: &[u8]) -> TextStep {
        self.tokens.push(token);
        self.starts.push(self.decoded);
        if self.stopped {
            return TextStep {
                delta: String::new(),
                stopped: true,
            };
        }
        self.utf8.extend_from_slice(piece);
        let text = take_utf8(&mut self.utf8);
        if text.is_empty() {
            return TextStep::default();
        }
        self.decoded += text.len();
        let (delta, stopped) = self.stop.push(&text);
        self.delivered += delta.len();
        if stopped {
            self.stopped = true;
            self.utf8.clear();
        }
        TextStep { delta, stopped }
    }

    /// Ends the text: returns what was held back (an incomplete character at the end becomes
    /// U+FFFD; a stop sequence found in it still cuts it). Empty after a stop.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let mut tail = String::new();
        if !self.utf8.is_empty() {
            let mut rest = take_utf8(&mut self.utf8);
            if !self.utf8.is_empty() {
                rest.push('\u{FFFD}');
                self.utf8.clear();
            }
            self.decoded += rest.len();
            let (delta, hit) = self.stop.push(&rest);
            tail.push_str(&delta);
            self.stopped = hit;
        }
        if !self.stopped {
            tail.push_str(&self.stop.flush());
        }
        self.delivered += tail.len();
        tail
    }

    /// Bytes of text delivered so far.
    pub fn delivered_len(&self) -> usize {
        self.delivered
    }

    /// Every token fed so far, delivered or not.
    pub fn sampled_tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// The sampled tokens whose text was delivered: the shortest prefix of the sampled tokens
    /// whose text covers every delivered byte. Without a stop sequence that is every token fed.
    /// When a stop sequence cut the text, a token whose text straddles the cut is included
    /// (the ids then detokenize to the delivered text followed by the rest of that token, which
    /// begins with the stop sequence or its start), and tokens wholly inside or after the match
    /// are not.
    pub fn delivered_tokens(&self) -> &[TokenId] {
        let n = self.starts.partition_point(|&s| s < self.delivered);
        &self.tokens[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_waits_for_the_rest_of_a_character() {
        let mut b = vec![b'a', 0xE2, 0x82];
        assert_eq!(take_utf8(&mut b), "a");
        assert_eq!(b, vec![0xE2, 0x82]);
        b.push(0xAC);
        assert_eq!(take_utf8(&mut b), "€");
        assert!(b.is_empty());
        let mut bad = vec![b'x', 0xFF, b'y'];
        assert_eq!(take_utf8(&mut bad), "x\u{FFFD}y");
    }

    #[test]
    fn stop_matcher_holds_back_a_possible_prefix() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), ("abc ".to_string(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("X"), ("ENX".to_string(), false));
        assert_eq!(m.push("..EN"), ("..".to_string(), false));
        assert_eq!(m.push("D tail"), (String::new(), true));
        let mut open = StopMatcher::new(vec!["END".into()]);
        assert_eq!(open.push("E"), (String::new(), false));
        assert_eq!(open.flush(), "E");
    }

    #[test]
    fn a_character_split_over_tokens_is_delivered_once_whole_with_both_tokens() {
        let mut t = TextStage::new(Vec::new());
        assert_eq!(
            t.push(1, b"a"),
            TextStep {
                delta: "a".into(),
                stopped: false
            }
        );
        assert_eq!(t.push(2, &[0xE2, 0x82]), TextStep::default());
        assert_eq!(
            t.push(3, &[0xAC]),
            TextStep {
                delta: "€".into(),
                stopped: false
            }
        );
        assert_eq!(t.finish(), "");
        assert_eq!(t.delivered_tokens(), &[1, 2, 3]);
        assert_eq!(t.delivered_len(), "a€".len());
    }

    #[test]
    fn a_stop_inside_a_token_keeps_that_token_and_drops_the_rest() {
        let mut t = TextStage::new(vec!["</".into()]);
        assert_eq!(t.push(10, b"ab").delta, "ab");
        // "c<" : "c" delivered, "<" held back (could start "</").
        assert_eq!(t.push(11, b"c<").delta, "c");
        // "/x" completes the stop: nothing more is delivered.
        assert_eq!(
            t.push(12, b"/x"),
            TextStep {
                delta: String::new(),
                stopped: true
            }
        );
        assert_eq!(
            t.push(13, b"more"),
            TextStep {
                delta: String::new(),
                stopped: true
            }
        );
        assert_eq!(t.finish(), "");
        assert_eq!(t.delivered_len(), 3);
        // Token 11 holds delivered text ("c") and the first byte of the stop: it is included.
        assert_eq!(t.delivered_tokens(), &[10, 11]);
        assert_eq!(t.sampled_tokens(), &[10, 11, 12, 13]);
    }

    #[test]
    fn a_stop_on_a_token_boundary_excludes_the_stop_tokens() {
        let mut t = TextStage::new(vec!["STOP".into()]);
        t.push(1, b"one ");
        t.push(2, b"ST");
        let s = t.push(3, b"OP");
        assert!(s.stopped);
        assert_eq!(t.delivered_len(), 4);
        assert_eq!(t.delivered_tokens(), &[1]);
        let mut at_start = TextStage::new(vec!["STOP".into()]);
        assert!(at_start.push(7, b"STOP").stopped);
        assert!(at_start.delivered_tokens().is_empty());
    }

    #[test]
    fn an_incomplete_character_at_the_end_is_flushed_as_a_replacement_with_its_token() {
        let mut t = TextStage::new(vec!["zz".into()]);
        t.push(1, b"hi z");
        t.push(2, &[0xF0, 0x9F]);
        // "z" was held back as a possible stop prefix; the broken character becomes U+FFFD.
        assert_eq!(t.finish(), "z\u{FFFD}");
        assert_eq!(t.delivered_tokens(), &[1, 2]);
    }
}
