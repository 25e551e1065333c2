//! Tool (function) calling over models whose chat template knows nothing of tools: the
//! generic format B3IQ renders tools and tool-call history in, the grammar that forces a call,
//! and the parser that reads calls back out of generated text.
//!
//! llama.cpp's template engine as llama-cpp-2 exposes it (`llama_chat_apply_template`) matches
//! known template families and renders `role` + `content` only; it cannot render tools. So
//! tools travel as text, in the convention of the Hermes and Qwen 2.5 templates (which many
//! small instruct models were tuned on):
//!
//! - the tool list is a block appended to the system prompt ([`tools_system_prompt`]): the
//!   functions as JSON lines between `<tools>` and `</tools>`, and the instruction to answer a
//!   call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
//! - an assistant turn that called tools is its text followed by one such block per call
//!   ([`render_tool_calls`]);
//! - a tool result is a `user` turn holding `<tool_response>...</tool_response>`
//!   ([`render_tool_response`]; consecutive results share one turn).
//!
//! The rendered messages then go through the model's own chat template like any chat.
//!
//! When a call is required ([`ToolChoice::Required`]) or named ([`ToolChoice::Function`]) the
//! output is constrained by [`tool_call_grammar`]: exactly one `<tool_call>` block whose JSON
//! is `{"name": <one of the allowed names>, "arguments": <that function's parameters schema>}`
//! (llama.cpp's json-schema-to-grammar), so the answer always parses. With
//! [`ToolChoice::Auto`] the model writes freely and [`parse_tool_calls`] reads any blocks it
//! wrote; [`ToolCallFilter`] holds them back from a text stream.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::RuntimeError;

/// Opens a tool call in generated text.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
/// Closes a tool call.
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// One callable function (OpenAI's `tools[].function`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolFunction {
    /// The name the model calls it by.
    pub name: String,
    /// What it does (shown to the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object (`{"type": "object"}` when the caller gave none).
    #[serde(default = "any_object")]
    pub parameters: Value,
}

fn any_object() -> Value {
    json!({"type": "object"})
}

/// Which calls the model may or must make (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "name")]
pub enum ToolChoice {
    /// No call: the tools are not shown and nothing is parsed.
    None,
    /// The model decides; calls it writes are parsed.
    #[default]
    Auto,
    /// Exactly one call to any of the tools (grammar-constrained).
    Required,
    /// Exactly one call to this function (grammar-constrained).
    Function(String),
}

/// A call read from generated text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedToolCall {
    /// The function's name.
    pub name: String,
    /// The arguments as compact JSON text (an object).
    pub arguments: String,
}

/// The block appended to the system prompt: the tool list and how to call one (the Hermes /
/// Qwen 2.5 wording).
pub fn tools_system_prompt(tools: &[ToolFunction]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        // Written by hand for a stable, readable key order (name, description, parameters).
        s.push_str("\n{\"type\":\"function\",\"function\":{\"name\":");
        s.push_str(&json!(t.name).to_string());
        if let Some(d) = &t.description {
            s.push_str(",\"description\":");
            s.push_str(&json!(d).to_string());
        }
        s.push_str(",\"parameters\":");
        s.push_str(&t.parameters.to_string());
        s.push_str("}}");
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// An assistant turn that called tools: its text (if any), then one block per call.
/// `arguments` is the JSON text the call carried; text that is not JSON is kept as a string.
pub fn render_tool_calls<'a>(
    content: &str,
    calls: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut s = content.to_string();
    for (name, arguments) in calls {
        let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!(arguments));
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(TOOL_CALL_OPEN);
        s.push('\n');
        s.push_str(&call_json(name, &args));
        s.push('\n');
        s.push_str(TOOL_CALL_CLOSE);
    }
    s
}

/// `{"name": ..., "arguments": ...}` with `name` first (the order the prompt shows and the
/// grammar forces; serde_json would sort the keys).
fn call_json(name: &str, arguments: &Value) -> String {
    format!(
        "{{\"name\": {}, \"arguments\": {}}}",
        json!(name),
        arguments
    )
}

/// A tool result as the text of a `user` turn.
pub fn render_tool_response(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// The JSON Schema of one call: `{"name": <const>, "arguments": <parameters>}`, both required,
/// nothing else.
/// Written as text: llama.cpp's converter keeps the properties in document order, and `name`
/// must come first (serde_json would sort it after `arguments`).
fn call_schema(t: &ToolFunction) -> String {
    let params = if t.parameters.is_object() {
        t.parameters.clone()
    } else {
        any_object()
    };
    format!(
        "{{\"type\":\"object\",\"properties\":{{\"name\":{{\"const\":{}}},\"arguments\":{}}},\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}}",
        json!(t.name),
        params
    )
}

/// The GBNF grammar of one forced call: `<tool_call>\n{json}\n</tool_call>` where the JSON is a
/// call of one of `tools` (all of them for [`ToolChoice::Required`], the named one for
/// [`ToolChoice::Function`]); `None` for `auto` and `none`.
///
/// # Errors
/// [`RuntimeError::InvalidRequest`] when the choice names a function that is not in `tools`,
/// `tools` is empty, or a parameters schema cannot be compiled by llama.cpp's
/// json-schema-to-grammar.
pub fn tool_call_grammar(
    tools: &[ToolFunction],
    choice: &ToolChoice,
) -> Result<Option<String>, RuntimeError> {
    let allowed: Vec<&ToolFunction> = match choice {
        ToolChoice::None | ToolChoice::Auto => return Ok(None),
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
    };
    if allowed.is_empty() {
        return Err(RuntimeError::InvalidRequest(match choice {
            ToolChoice::Function(n) => {
                format!("tool_choice names function {n:?}, which is not in tools")
            }
            _ => "tool_choice \"required\" needs at least one tool".into(),
        }));
    }
    let schema = match allowed.as_slice() {
        [one] => call_schema(one),
        many => format!(
            "{{\"anyOf\":[{}]}}",
            many.iter()
                .map(|t| call_schema(t))
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let gbnf = llama_cpp_2::json_schema_to_grammar(&schema).map_err(|e| {
        RuntimeError::InvalidRequest(format!(
            "a tool's parameters schema cannot be used to constrain the call: {e}"
        ))
    })?;
    // The converter names its start rule `root`; it becomes the call's JSON under our root.
    let mut out = String::from("root ::= \"<tool_call>\\n\" tool-call-json \"\\n</tool_call>\"\n");
    for line in gbnf.lines() {
        match line.strip_prefix("root ::=") {
            Some(rest) => {
                out.push_str("tool-call-json ::=");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(Some(out))
}

/// Reads tool calls out of generated text: every `<tool_call>` block (the closing tag may be
/// missing at the very end) whose content is a JSON object with a string `name` among `known`
/// and an object `arguments` (absent: `{}`; a JSON string holding an object is accepted too).
/// Returns the text outside the recognised blocks, trimmed, and the calls in order. A block
/// that does not parse stays in the text. With `bare_json` (a grammar-forced call whose tags a
/// template rendered as special tokens), text with no block that is itself such an object is
/// one call.
pub fn parse_tool_calls(
    text: &str,
    known: &[&str],
    bare_json: bool,
) -> (String, Vec<ParsedToolCall>) {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(TOOL_CALL_OPEN) {
        let after = &rest[at + TOOL_CALL_OPEN.len()..];
        let (inner, next, closed) = match after.find(TOOL_CALL_CLOSE) {
            Some(end) => (&after[..end], &after[end + TOOL_CALL_CLOSE.len()..], true),
            None => (after, "", false),
        };
        match parse_call(inner, known) {
            Some(c) => {
                content.push_str(&rest[..at]);
                calls.push(c);
            }
            None => {
                let keep = if closed {
                    &rest[..rest.len() - next.len()]
                } else {
                    rest
                };
                content.push_str(keep);
            }
        }
        rest = next;
    }
    content.push_str(rest);
    if calls.is_empty() && bare_json {
        if let Some(c) = parse_call(text, known) {
            return (String::new(), vec![c]);
        }
    }
    (content.trim().to_string(), calls)
}

fn parse_call(inner: &str, known: &[&str]) -> Option<ParsedToolCall> {
    let v: Value = serde_json::from_str(inner.trim()).ok()?;
    let name = v.get("name")?.as_str()?;
    if !known.contains(&name) {
        return None;
    }
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)?,
        Some(a) if a.is_object() => a.clone(),
        Some(_) => return None,
    };
    Some(ParsedToolCall {
        name: name.to_string(),
        arguments: args.to_string(),
    })
}

/// Splits a text stream into what can be shown as content now and what may be a tool call:
/// everything from a `<tool_call>` tag on (or from a trailing prefix of one) is held back until
/// the end, where [`ToolCallFilter::finish`] parses it. What is not a call comes back as
/// content then.
#[derive(Debug, Default)]
pub struct ToolCallFilter {
    held: String,
    calling: bool,
}

impl ToolCallFilter {
    /// Feeds a delta; returns the part that is certainly content.
    pub fn push(&mut self, delta: &str) -> String {
        if self.calling {
            self.held.push_str(delta);
            return String::new();
        }
        self.held.push_str(delta);
        if let Some(at) = self.held.find(TOOL_CALL_OPEN) {
            self.calling = true;
            let out = self.held[..at].to_string();
            self.held.drain(..at);
            return out;
        }
        // Hold back the longest suffix that could start the tag.
        let mut keep_from = self.held.len();
        for (i, _) in self.held.char_indices() {
            if TOOL_CALL_OPEN.starts_with(&self.held[i..]) {
                keep_from = i;
                break;
            }
        }
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        out
    }

    /// Ends the stream: the content still held back that is not a call, and the calls.
    pub fn finish(&mut self, known: &[&str]) -> (String, Vec<ParsedToolCall>) {
        let held = std::mem::take(&mut self.held);
        if !self.calling {
            return (held, Vec::new());
        }
        let (content, calls) = parse_tool_calls(&held, known, false);
        if calls.is_empty() {
            (held, calls)
        } else {
            (content, calls)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolFunction {
        ToolFunction {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    #[test]
    fn the_system_block_lists_every_tool_as_json() {
        let s = tools_system_prompt(&[weather()]);
        assert!(
            s.contains("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"")
        );
        assert!(s.contains("</tools>") && s.contains("<tool_call>"));
    }

    #[test]
    fn calls_render_and_parse_back() {
        let text = render_tool_calls("Let me check.", [("get_weather", r#"{"city":"Paris"}"#)]);
        assert_eq!(text, "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>");
        let (content, calls) = parse_tool_calls(&text, &["get_weather"], false);
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            vec![ParsedToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }]
        );
    }

    #[test]
    fn unknown_names_and_bad_json_stay_text() {
        let t = "<tool_call>{\"name\":\"rm\",\"arguments\":{}}</tool_call> and <tool_call>{oops";
        let (content, calls) = parse_tool_calls(t, &["get_weather"], false);
        assert!(calls.is_empty());
        assert_eq!(content, t);
        // Arguments as a JSON string, no closing tag at the end.
        let t =
            "<tool_call>{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}";
        let (content, calls) = parse_tool_calls(t, &["get_weather"], false);
        assert_eq!(
            (content.as_str(), calls[0].arguments.as_str()),
            ("", r#"{"city":"Oslo"}"#)
        );
        let (_, calls) = parse_tool_calls(
            r#"{"name":"get_weather","arguments":{}}"#,
            &["get_weather"],
            true,
        );
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn the_filter_holds_back_calls_and_returns_false_alarms() {
        let mut f = ToolCallFilter::default();
        assert_eq!(f.push("Hi <tool"), "Hi ");
        assert_eq!(f.push("_call>{\"name\":\"get_weather\","), "");
        assert_eq!(f.push("\"arguments\":{}}</tool_call>"), "");
        let (content, calls) = f.finish(&["get_weather"]);
        assert_eq!((content.as_str(), calls.len()), ("", 1));
        let mut f = ToolCallFilter::default();
        assert_eq!(f.push("a <b"), "a <b");
        assert_eq!(f.push(" <t"), " ");
        assert_eq!(f.push("able>"), "<table>");
        let mut f = ToolCallFilter::default();
        f.push("<tool_call>not json");
        assert_eq!(
            f.finish(&["x"]),
            ("<tool_call>not json".to_string(), vec![])
        );
    }

    #[test]
    fn a_forced_call_grammar_wraps_the_schema_grammar() {
        let g = tool_call_grammar(&[weather()], &ToolChoice::Required)
            .unwrap()
            .unwrap();
        assert!(
            g.starts_with("root ::= \"<tool_call>\\n\" tool-call-json \"\\n</tool_call>\"\n"),
            "{g}"
        );
        assert!(g.contains("tool-call-json ::="), "{g}");
        // `name` comes before `arguments` in the forced JSON.
        let line = g
            .lines()
            .find(|l| l.starts_with("tool-call-json ::="))
            .unwrap();
        assert!(
            line.find("name").unwrap() < line.find("arguments").unwrap(),
            "{g}"
        );
        assert_eq!(g.matches("root ::=").count(), 1, "{g}");
        assert!(tool_call_grammar(&[weather()], &ToolChoice::Auto)
            .unwrap()
            .is_none());
        assert!(tool_call_grammar(&[weather()], &ToolChoice::Function("nope".into())).is_err());
        assert!(tool_call_grammar(&[], &ToolChoice::Required).is_err());
    }
}
