//! OpenAI-compatible chat completions streaming (`"stream": true`): SSE frames
//! ([`SseDecoder`]) and the chunks they carry ([`ChatStream`]).
//!
//! A streamed answer arrives as `data: {json}` frames, each a `chat.completion.chunk` whose
//! `choices[0].delta` holds a piece of text (`content`) or fragments of tool calls
//! (`tool_calls[i]`, identified by `index`: the first fragment has the `id` and the function
//! `name`, later ones append to `arguments`). `finish_reason` ends the choice; a last chunk
//! may carry `usage` (with `stream_options.include_usage`); `data: [DONE]` ends the stream.
//!
//! [`ChatStream`] turns that into [`ChatEvent`]s: each text delta as it comes, each tool call
//! once and whole — its arguments checked to be JSON — and `Done` with the usage. Everything a
//! provider can get wrong is a [`ProviderError`] (a frame that is not JSON, arguments that are
//! not, a fragment for a call that never started, a stream cut before its end), never a panic.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest SSE line accepted: a provider sending more without a newline is broken.
pub const MAX_LINE: usize = 1 << 20;

/// One SSE event: its `event:` name (if any) and its `data:` lines joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into SSE events (the WHATWG framing: lines end in LF, CRLF or CR,
/// a blank line dispatches, `:` starts a comment, `field: value` with one optional space).
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting this one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes as they arrive; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut out = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8(line)
                        .map_err(|_| ProviderError::Malformed("an SSE line is not UTF-8".into()))?;
                    if let Some(event) = self.line_done(&line) {
                        out.push(event);
                    }
                }
                _ if self.line.len() >= MAX_LINE => {
                    return Err(ProviderError::Malformed(format!(
                        "an SSE line longer than {MAX_LINE} bytes"
                    )));
                }
                _ => self.line.push(b),
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent { event: self.event.take(), data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry and unknown fields mean nothing to a completion
        }
        None
    }
}

/// What a streamed completion says, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A piece of the answer's text.
    TextDelta(String),
    /// A whole tool call: its arguments are valid JSON.
    ToolCall { id: String, name: String, arguments: serde_json::Value },
    /// The stream ended; `finish_reason` of the choice (`stop`, `tool_calls`, `length`…).
    Done { finish_reason: Option<String>, usage: Option<Usage> },
}

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// How a provider's stream was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error("tool call {id} ({name}): its arguments are not JSON: {error}")]
    BadToolArguments { id: String, name: String, error: String },
    #[error("the provider reported an error: {0}")]
    Provider(String),
    #[error("the stream ended before [DONE]")]
    Truncated,
    #[error("the provider answered {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the provider did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
}

/// Assembles a completion's chunks into [`ChatEvent`]s.
#[derive(Debug, Default)]
pub struct ChatStream {
    /// Tool calls being assembled, by their `index`.
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: u64,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

impl ChatStream {
    /// The events one SSE event completes (nothing after `Done`).
    pub fn push(&mut self, event: &SseEvent) -> Result<Vec<ChatEvent>, ProviderError> {
        if self.done {
            return Ok(Vec::new());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            return self.finish();
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            ProviderError::Malformed(format!("a chunk is not JSON ({e}): {}", clip(data)))
        })?;
        if let Some(error) = chunk.error {
            let message =
                error["message"].as_str().map_or_else(|| error.to_string(), str::to_owned);
            return Err(ProviderError::Provider(message));
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let mut out = Vec::new();
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(ChatEvent::TextDelta(text));
            }
            for d in choice.delta.tool_calls {
                let starts = d.id.is_some();
                let call = match self.calls.get_mut(&d.index) {
                    Some(call) => call,
                    None if starts => self.calls.entry(d.index).or_default(),
                    None => {
                        return Err(ProviderError::Malformed(format!(
                            "a fragment of tool call {} that never started",
                            d.index
                        )));
                    }
                };
                if let Some(id) = d.id {
                    call.id = id;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name {
                        call.name.push_str(&name);
                    }
                    if let Some(args) = f.arguments {
                        call.arguments.push_str(&args);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
                // The calls are whole once their choice finished.
                out.extend(self.take_calls()?);
            }
        }
        Ok(out)
    }

    /// The stream's bytes ended: an error unless `[DONE]` came.
    pub fn end(&self) -> Result<(), ProviderError> {
        if self.done { Ok(()) } else { Err(ProviderError::Truncated) }
    }

    fn finish(&mut self) -> Result<Vec<ChatEvent>, ProviderError> {
        let mut out = self.take_calls()?;
        self.done = true;
        out.push(ChatEvent::Done { finish_reason: self.finish_reason.take(), usage: self.usage });
        Ok(out)
    }

    fn take_calls(&mut self) -> Result<Vec<ChatEvent>, ProviderError> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|c| {
                // No arguments at all means an empty object, as providers send for no-arg tools.
                let text = if c.arguments.trim().is_empty() { "{}" } else { c.arguments.as_str() };
                match serde_json::from_str(text) {
                    Ok(arguments) => Ok(ChatEvent::ToolCall { id: c.id, name: c.name, arguments }),
                    Err(e) => Err(ProviderError::BadToolArguments {
                        id: c.id,
                        name: c.name,
                        error: e.to_string(),
                    }),
                }
            })
            .collect()
    }
}

/// The next piece of a streamed body (`None` at its end), within `idle`.
async fn next_piece(
    response: &mut reqwest::Response,
    idle: std::time::Duration,
    stage: &'static str,
) -> Result<Option<impl AsRef<[u8]> + use<>>, ProviderError> {
    match tokio::time::timeout(idle, response.chunk()).await {
        Err(_) => Err(ProviderError::Timeout(stage)),
        Ok(Err(e)) => Err(ProviderError::Unreachable(e.without_url().to_string())),
        Ok(Ok(piece)) => Ok(piece),
    }
}

fn clip(s: &str) -> String {
    let end = s.char_indices().nth(120).map_or(s.len(), |(i, _)| i);
    if end < s.len() { format!("{}…", &s[..end]) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in chunks of `step` bytes; every event, or the first error.
    fn run(wire: &str, step: usize) -> Result<Vec<ChatEvent>, ProviderError> {
        let (mut sse, mut chat, mut out) =
            (SseDecoder::default(), ChatStream::default(), Vec::new());
        for piece in wire.as_bytes().chunks(step) {
            for event in sse.push(piece)? {
                out.extend(chat.push(&event)?);
            }
        }
        chat.end()?;
        Ok(out)
    }

    const ANSWER: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\", caller\"},\"finish_reason\":null}]}\r\r",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn text_deltas_arrive_in_order_whatever_the_chunking_and_line_endings() {
        let expected = vec![
            ChatEvent::TextDelta("Hello".into()),
            ChatEvent::TextDelta(", caller".into()),
            ChatEvent::Done {
                finish_reason: Some("stop".into()),
                usage: Some(Usage { prompt_tokens: 12, completion_tokens: 3 }),
            },
        ];
        for step in [1, 2, 7, 64, ANSWER.len()] {
            assert_eq!(run(ANSWER, step).unwrap(), expected, "chunks of {step}");
        }
    }

    #[test]
    fn tool_call_fragments_make_each_call_once_and_whole() {
        let wire = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"book\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"day\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"transfer\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"mon\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let events = run(wire, 5).unwrap();
        assert_eq!(
            events,
            vec![
                ChatEvent::ToolCall {
                    id: "call_1".into(),
                    name: "book".into(),
                    arguments: serde_json::json!({"day": "mon"})
                },
                ChatEvent::ToolCall {
                    id: "call_2".into(),
                    name: "transfer".into(),
                    arguments: serde_json::json!({})
                },
                ChatEvent::Done { finish_reason: Some("tool_calls".into()), usage: None },
            ]
        );
    }

    #[test]
    fn every_way_a_stream_can_be_wrong_is_a_typed_error() {
        let bad_args = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"book\",\"arguments\":\"{day: mon\"}}]}}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert!(
            matches!(run(bad_args, 9), Err(ProviderError::BadToolArguments { ref name, .. }) if name == "book")
        );
        let not_json = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]\n\n";
        assert!(
            matches!(run(not_json, 4), Err(ProviderError::Malformed(m)) if m.contains("not JSON"))
        );
        let orphan = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
        assert!(
            matches!(run(orphan, 100), Err(ProviderError::Malformed(m)) if m.contains("never started"))
        );
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        assert_eq!(run(cut, 3), Err(ProviderError::Truncated));
        let error = "data: {\"error\":{\"message\":\"rate limited\",\"type\":\"requests\"}}\n\n";
        assert_eq!(run(error, 8), Err(ProviderError::Provider("rate limited".into())));
        let endless = "x".repeat(MAX_LINE + 1);
        assert!(
            matches!(run(&endless, 4096), Err(ProviderError::Malformed(m)) if m.contains("longer than"))
        );
        let not_utf8 = SseDecoder::default().push(b"data: \xff\xfe\n\n");
        assert!(matches!(not_utf8, Err(ProviderError::Malformed(m)) if m.contains("UTF-8")));
    }

    #[test]
    fn sse_framing_joins_data_lines_keeps_event_names_and_ignores_comments_and_ids() {
        let mut sse = SseDecoder::default();
        let events =
            sse.push(b"id: 7\nevent: delta\ndata: one\ndata:two\nretry: 10\n\n: c\n\n").unwrap();
        assert_eq!(events, vec![SseEvent { event: Some("delta".into()), data: "one\ntwo".into() }]);
        // Nothing is dispatched before its blank line.
        assert!(sse.push(b"data: half").unwrap().is_empty());
        assert_eq!(sse.push(b"\n\n").unwrap()[0].data, "half");
    }
}

/// A message of the conversation, as the chat completions API takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System(String),
    User(String),
    /// What the model said before: text, and the tool calls it made.
    Assistant {
        content: String,
        tool_calls: Vec<(String, String, serde_json::Value)>,
    },
    /// A tool call's result, for the call with that id.
    Tool {
        id: String,
        content: String,
    },
}

impl Message {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Message::System(c) => json!({"role": "system", "content": c}),
            Message::User(c) => json!({"role": "user", "content": c}),
            Message::Assistant { content, tool_calls } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": content})
            }
            Message::Assistant { content, tool_calls } => json!({
                "role": "assistant",
                "content": content,
                "tool_calls": tool_calls.iter().map(|(id, name, args)| json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()},
                })).collect::<Vec<_>>(),
            }),
            Message::Tool { id, content } => {
                json!({"role": "tool", "tool_call_id": id, "content": content})
            }
        }
    }
}

/// A tool the model may call: its JSON Schema parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One completion request.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// A credential: never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How long each stage of a completion may take.
#[derive(Debug, Clone, Copy)]
pub struct ChatTimeouts {
    /// Until the response's status line and headers.
    pub answer: std::time::Duration,
    /// Between two pieces of the stream (the first one included).
    pub idle: std::time::Duration,
}

impl Default for ChatTimeouts {
    fn default() -> Self {
        ChatTimeouts {
            answer: std::time::Duration::from_secs(10),
            idle: std::time::Duration::from_secs(20),
        }
    }
}

/// An OpenAI-compatible server (`{base}/chat/completions`, `/embeddings`,
/// `/audio/transcriptions`, `/audio/speech`): OpenAI, vLLM, Ollama, llama.cpp's server.
#[derive(Debug, Clone)]
pub struct Provider {
    http: reqwest::Client,
    /// Up to and including the version: `https://api.openai.com/v1`.
    pub base_url: String,
    pub key: Option<Secret>,
    pub timeouts: ChatTimeouts,
}

/// A completion in progress: its events as they stream. Dropping it cancels the request (the
/// connection is closed).
#[derive(Debug)]
pub struct Completion {
    events: tokio::sync::mpsc::Receiver<Result<ChatEvent, ProviderError>>,
}

impl Completion {
    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<ChatEvent, ProviderError>> {
        self.events.recv().await
    }
}

/// Speech being synthesised: 16-bit mono PCM at [`SPEECH_RATE`] as it streams. Dropping it
/// cancels the request.
#[derive(Debug)]
pub struct Speech {
    chunks: tokio::sync::mpsc::Receiver<Result<Vec<i16>, ProviderError>>,
}

/// The sample rate of `audio/speech`'s `pcm` format.
pub const SPEECH_RATE: u32 = 24_000;

impl Speech {
    /// The next samples; `None` once the audio is complete.
    pub async fn next(&mut self) -> Option<Result<Vec<i16>, ProviderError>> {
        self.chunks.recv().await
    }
}

impl Provider {
    pub fn new(base_url: impl Into<String>, key: Option<Secret>) -> Self {
        Provider {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            key,
            timeouts: ChatTimeouts::default(),
        }
    }

    /// Sends `request` (to `path` under the base URL): the response once it answered 2xx.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let request = match &self.key {
            Some(Secret(key)) => request.bearer_auth(key),
            None => request,
        };
        let response = match tokio::time::timeout(self.timeouts.answer, request.send()).await {
            Err(_) => return Err(ProviderError::Timeout("waiting for the response")),
            Ok(Err(e)) => return Err(ProviderError::Unreachable(e.without_url().to_string())),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(self.timeouts.idle, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(ProviderError::Http { status: status.as_u16(), body: clip(&body) })
    }

    fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    /// A whole JSON answer, read within the idle timeout.
    async fn json_answer(
        &self,
        response: reqwest::Response,
    ) -> Result<serde_json::Value, ProviderError> {
        let text = tokio::time::timeout(self.timeouts.idle, response.text())
            .await
            .map_err(|_| ProviderError::Timeout("reading the response"))?
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            ProviderError::Malformed(format!("the answer is not JSON ({e}): {}", clip(&text)))
        })
    }

    /// One vector per text (`/embeddings`), in the order given.
    pub async fn embed(
        &self,
        model: &str,
        input: &[String],
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let body = serde_json::json!({"model": model, "input": input});
        let answer =
            self.json_answer(self.send(self.post_json("/embeddings", &body)).await?).await?;
        let data = answer["data"].as_array().ok_or_else(|| {
            ProviderError::Malformed(format!(
                "no data in the embeddings answer: {}",
                clip(&answer.to_string())
            ))
        })?;
        let mut out = vec![Vec::new(); input.len()];
        for (n, item) in data.iter().enumerate() {
            let index = item["index"].as_u64().map_or(n, |i| i as usize);
            let vector: Option<Vec<f32>> = item["embedding"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect());
            match (out.get_mut(index), vector) {
                (Some(slot), Some(v)) if !v.is_empty() => *slot = v,
                _ => {
                    return Err(ProviderError::Malformed(format!(
                        "embedding {index} is missing or empty"
                    )));
                }
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err(ProviderError::Malformed(format!(
                "{} texts sent, {} embeddings received",
                input.len(),
                data.len()
            )));
        }
        Ok(out)
    }

    /// The text of a WAV recording (`/audio/transcriptions`).
    pub async fn transcribe(
        &self,
        model: &str,
        wav: Vec<u8>,
        language: Option<&str>,
    ) -> Result<String, ProviderError> {
        let file = reqwest::multipart::Part::bytes(wav)
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", model.to_owned())
            .text("response_format", "json");
        if let Some(language) = language {
            form = form.text("language", language.to_owned());
        }
        let request =
            self.http.post(format!("{}/audio/transcriptions", self.base_url)).multipart(form);
        let answer = self.json_answer(self.send(request).await?).await?;
        answer["text"].as_str().map(str::to_owned).ok_or_else(|| {
            ProviderError::Malformed(format!(
                "no text in the transcription: {}",
                clip(&answer.to_string())
            ))
        })
    }

    /// `text` spoken (`/audio/speech`, `pcm`): the samples stream as the server renders them.
    pub async fn speak(
        &self,
        model: &str,
        voice: &str,
        text: &str,
    ) -> Result<Speech, ProviderError> {
        let body = serde_json::json!({"model": model, "voice": voice, "input": text, "response_format": "pcm"});
        let mut response = self.send(self.post_json("/audio/speech", &body)).await?;
        let (tx, chunks) = tokio::sync::mpsc::channel(32);
        let idle = self.timeouts.idle;
        tokio::spawn(async move {
            // A sample may straddle two pieces: its first byte waits for the next.
            let mut odd: Option<u8> = None;
            loop {
                let samples = match next_piece(
                    &mut response,
                    idle,
                    "between two pieces of the audio",
                )
                .await
                {
                    Err(e) => Err(e),
                    Ok(None) => return,
                    Ok(Some(bytes)) => {
                        let mut all = Vec::with_capacity(bytes.as_ref().len() + 1);
                        all.extend(odd.take());
                        all.extend_from_slice(bytes.as_ref());
                        if all.len() % 2 == 1 {
                            odd = all.pop();
                        }
                        Ok(all.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
                    }
                };
                let failed = samples.is_err();
                if tx.send(samples).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Speech { chunks })
    }

    /// The chat request body for `req`, streamed, usage included.
    pub fn chat_body(model: &str, req: &ChatRequest) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": req.messages.iter().map(Message::to_json).collect::<Vec<_>>(),
        });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    serde_json::json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
        }
        if let Some(t) = req.temperature {
            body["temperature"] = t.into();
        }
        if let Some(n) = req.max_tokens {
            body["max_tokens"] = n.into();
        }
        body
    }

    /// Starts `req` on `model`; the events stream from the returned [`Completion`] as they
    /// arrive.
    pub async fn complete(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        let body = Self::chat_body(model, req);
        let mut response = self.send(self.post_json("/chat/completions", &body)).await?;
        let (tx, events) = tokio::sync::mpsc::channel(64);
        let idle = self.timeouts.idle;
        tokio::spawn(async move {
            let (mut sse, mut chat) = (SseDecoder::default(), ChatStream::default());
            loop {
                let piece =
                    match next_piece(&mut response, idle, "between two pieces of the stream").await
                    {
                        Err(e) => Err(e),
                        Ok(None) => match chat.end() {
                            Ok(()) => return,
                            Err(e) => Err(e),
                        },
                        Ok(Some(bytes)) => sse.push(bytes.as_ref()).and_then(|events| {
                            let mut out = Vec::new();
                            for e in &events {
                                out.extend(chat.push(e)?);
                            }
                            Ok(out)
                        }),
                    };
                match piece {
                    Ok(out) => {
                        for event in out {
                            let done = matches!(event, ChatEvent::Done { .. });
                            // The completion was dropped: stop reading (closes the connection).
                            if tx.send(Ok(event)).await.is_err() || done {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Completion { events })
    }
}
