//! AI providers behind the voice pipelines (issue 14), starting with the wire protocols.
//!
//! - [`openai`]: OpenAI-compatible chat completions streamed over Server-Sent Events — the
//!   SSE framing and the assembly of text deltas and `tool_calls` fragments into whole tool
//!   calls, with a typed error for each way a provider's stream can be wrong. Pure: bytes in,
//!   events out, so a test feeds it what a misbehaving server sends.
//!
//! Any OpenAI-compatible server speaks this (vLLM, Ollama, llama.cpp's server).

pub mod openai;
