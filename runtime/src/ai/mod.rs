//! AI providers behind the voice pipelines (issue 14), starting with the wire protocols.
//!
//! - [`kb`]: a knowledge base's text side — documents chunked along their headings and
//!   paragraphs, ranked by BM25 for a question (pure, in memory; no stemming yet).
//! - [`openai`]: OpenAI-compatible servers. Chat completions streamed over Server-Sent
//!   Events — the SSE framing and the assembly of text deltas and `tool_calls` fragments into
//!   whole tool calls are pure (bytes in, events out, so a test feeds them what a misbehaving
//!   server sends) — and the [`openai::Provider`] client: completions, embeddings,
//!   transcriptions and streamed speech, with a typed error for each way a provider fails.
//!
//! Any OpenAI-compatible server speaks this (vLLM, Ollama, llama.cpp's server).

pub mod kb;
pub mod openai;
