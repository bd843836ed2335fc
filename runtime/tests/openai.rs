//! The OpenAI-compatible chat provider against a local server speaking the wire protocol
//! (a test double at the protocol level: real HTTP, real SSE, on loopback).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use voxide_runtime::ai::openai::{
    ChatEvent, ChatRequest, ChatTimeouts, Message, Provider, ProviderError, SPEECH_RATE, Secret,
    Tool,
};

/// Reads one request; returns its head and body.
async fn read_request(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
        }
        assert!(n > 0, "the client closed before a whole request");
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

fn delta(text: &str) -> String {
    format!("data: {}\n\n", serde_json::json!({"choices": [{"delta": {"content": text}}]}))
}

/// A server that runs `script` on the one connection it accepts; returns its base URL.
async fn server<F, Fut>(script: F) -> String
where
    F: FnOnce(TcpStream, String, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (head, body) = read_request(&mut stream).await;
        script(stream, head, body).await;
    });
    format!("http://{addr}/v1")
}

fn provider(base: String) -> Provider {
    let mut p = Provider::new(base, Some(Secret::new("sk-test-123")));
    p.timeouts =
        ChatTimeouts { answer: Duration::from_millis(800), idle: Duration::from_millis(800) };
    p
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::System("Be brief.".into()), Message::User("Hi".into())],
        tools: vec![Tool {
            name: "book".into(),
            description: "Book a slot".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"day": {"type": "string"}}}),
        }],
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn deltas_arrive_while_the_answer_is_still_streaming_then_a_tool_call_then_done() {
    let release = Arc::new(Notify::new());
    let (seen_tx, seen) = oneshot::channel();
    let go = release.clone();
    let base = server(move |mut s, head, body| async move {
        let _ = seen_tx.send((head, body));
        s.write_all(SSE_HEAD).await.unwrap();
        s.write_all(delta("Hello").as_bytes()).await.unwrap();
        // The rest only once the client has shown the first delta.
        go.notified().await;
        let call = serde_json::json!({"choices": [{"delta": {"tool_calls": [{"index": 0,
            "id": "call_9", "function": {"name": "book", "arguments": "{\"day\":\"mon\"}"}}]},
            "finish_reason": "tool_calls"}]});
        s.write_all(format!("{}data: {call}\n\n", delta(" there")).as_bytes()).await.unwrap();
        s.write_all(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n").await.unwrap();
    })
    .await;
    let mut completion = provider(base).complete("small-model", &request()).await.unwrap();
    assert_eq!(completion.next().await.unwrap().unwrap(), ChatEvent::TextDelta("Hello".into()));
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(e) = completion.next().await {
        rest.push(e.unwrap());
    }
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert_eq!(rest[0], ChatEvent::TextDelta(" there".into()));
    assert!(matches!(&rest[1], ChatEvent::ToolCall { id, name, arguments }
        if id == "call_9" && name == "book" && arguments["day"] == "mon"));
    assert!(matches!(&rest[2], ChatEvent::Done { usage: Some(u), .. } if u.completion_tokens == 4));
    // What went on the wire: the key as a bearer token, a streamed request with the tools.
    let (head, body) = seen.await.unwrap();
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    assert!(head.to_ascii_lowercase().contains("authorization: bearer sk-test-123"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["model"].as_str(), body["stream"].as_bool()),
        (Some("small-model"), Some(true))
    );
    assert_eq!(body["messages"][1], serde_json::json!({"role": "user", "content": "Hi"}));
    assert_eq!(body["tools"][0]["function"]["name"], "book");
}

#[tokio::test]
async fn errors_timeouts_and_cut_streams_are_typed() {
    let base = server(|mut s, _, _| async move {
        let body = r#"{"error":{"message":"model overloaded"}}"#;
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
    })
    .await;
    let err = provider(base).complete("small-model", &request()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Http { status: 500, body } if body.contains("overloaded")),
        "{err}"
    );

    // Accepts and never answers.
    let base = server(|s, _, _| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    })
    .await;
    let err = provider(base).complete("small-model", &request()).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout("waiting for the response"));

    // Answers, says a word, then goes quiet; another cuts the stream before [DONE].
    for (cut, expected) in [
        (false, ProviderError::Timeout("between two pieces of the stream")),
        (true, ProviderError::Truncated),
    ] {
        let base = server(move |mut s, _, _| async move {
            s.write_all(SSE_HEAD).await.unwrap();
            s.write_all(delta("Hel").as_bytes()).await.unwrap();
            if !cut {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
        .await;
        let mut completion = provider(base).complete("small-model", &request()).await.unwrap();
        assert_eq!(completion.next().await.unwrap().unwrap(), ChatEvent::TextDelta("Hel".into()));
        assert_eq!(completion.next().await.unwrap().unwrap_err(), expected);
        assert!(completion.next().await.is_none());
    }

    // Malformed SSE: a frame that is not JSON.
    let base = server(|mut s, _, _| async move {
        s.write_all(SSE_HEAD).await.unwrap();
        s.write_all(b"data: {\"choices\": [\n\n").await.unwrap();
    })
    .await;
    let mut completion = provider(base).complete("small-model", &request()).await.unwrap();
    assert!(matches!(completion.next().await.unwrap(), Err(ProviderError::Malformed(_))));

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = provider(format!("http://{closed}/v1"))
        .complete("small-model", &request())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable(_)), "{err}");
    // The key never shows in what is printed.
    assert_eq!(format!("{:?}", Secret::new("sk-live-secret")), "Secret(…)");
}

#[tokio::test]
async fn dropping_a_completion_closes_the_connection() {
    let closed = Arc::new(AtomicBool::new(false));
    let (done_tx, done) = oneshot::channel();
    let flag = closed.clone();
    let base = server(move |mut s, _, _| async move {
        s.write_all(SSE_HEAD).await.unwrap();
        // Keep talking until the client is gone.
        for _ in 0..200 {
            if s.write_all(delta("more ").as_bytes()).await.is_err() {
                flag.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = done_tx.send(());
    })
    .await;
    let mut completion = provider(base).complete("small-model", &request()).await.unwrap();
    assert!(completion.next().await.unwrap().is_ok());
    drop(completion);
    tokio::time::timeout(Duration::from_secs(4), done).await.unwrap().unwrap();
    assert!(closed.load(Ordering::SeqCst), "the server kept writing to a dropped completion");
}

/// A server answering one request with `status` and a whole `body` of `content_type`.
async fn answering(
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
) -> (String, oneshot::Receiver<(String, String)>) {
    let (seen_tx, seen) = oneshot::channel();
    let base = server(move |mut s, head, req| async move {
        let _ = seen_tx.send((head, req));
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
    })
    .await;
    (base, seen)
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_and_a_short_answer_is_an_error() {
    // Out of order on the wire: `index` says which text each vector is for.
    let answer = serde_json::json!({"data": [
        {"index": 1, "embedding": [0.5, -1.0]}, {"index": 0, "embedding": [1.0, 0.25]}]});
    let (base, seen) =
        answering("200 OK", "application/json", answer.to_string().into_bytes()).await;
    let texts = vec!["opening hours".to_owned(), "prices".to_owned()];
    let vectors = provider(base).embed("embed-small", &texts).await.unwrap();
    assert_eq!(vectors, vec![vec![1.0, 0.25], vec![0.5, -1.0]]);
    let (head, body) = seen.await.unwrap();
    assert!(head.starts_with("POST /v1/embeddings "), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["input"][1], "prices");
    let short = serde_json::json!({"data": [{"index": 0, "embedding": [1.0]}]});
    let (base, _) = answering("200 OK", "application/json", short.to_string().into_bytes()).await;
    let err = provider(base).embed("embed-small", &texts).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Malformed(m) if m.contains("2 texts sent, 1 embeddings")),
        "{err}"
    );
}

#[tokio::test]
async fn a_transcription_uploads_the_wav_as_multipart_and_returns_its_text() {
    let (base, seen) =
        answering("200 OK", "application/json", br#"{"text":"book me for monday"}"#.to_vec()).await;
    let wav = b"RIFF....WAVEfmt fake".to_vec();
    let text = provider(base).transcribe("whisper-1", wav, Some("en")).await.unwrap();
    assert_eq!(text, "book me for monday");
    let (head, body) = seen.await.unwrap();
    assert!(head.starts_with("POST /v1/audio/transcriptions "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: multipart/form-data; boundary="),
        "{head}"
    );
    for part in [
        "name=\"file\"; filename=\"audio.wav\"",
        "RIFF....WAVEfmt fake",
        "whisper-1",
        "name=\"language\"",
    ] {
        assert!(body.contains(part), "{part} missing from the upload:\n{body}");
    }
    let (base, _) = answering("200 OK", "application/json", br#"{"txt":"?"}"#.to_vec()).await;
    let err = provider(base).transcribe("whisper-1", vec![1, 2], None).await.unwrap_err();
    assert!(matches!(&err, ProviderError::Malformed(m) if m.contains("no text")), "{err}");
}

#[tokio::test]
async fn speech_streams_pcm_samples_even_when_a_sample_straddles_two_pieces() {
    let samples: Vec<i16> = (0..2400).map(|i| ((i * 37) % 20_000 - 10_000) as i16).collect();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let (seen_tx, seen) = oneshot::channel();
    let base = server(move |mut s, head, body| async move {
        let _ = seen_tx.send((head, body));
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        // Odd-sized pieces, flushed apart.
        for piece in bytes.chunks(333) {
            s.write_all(piece).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let mut speech = provider(base).speak("tts-1", "alloy", "Hello there").await.unwrap();
    let mut heard = Vec::new();
    while let Some(chunk) = speech.next().await {
        heard.extend(chunk.unwrap());
    }
    assert_eq!(heard, samples, "{SPEECH_RATE} Hz PCM, sample for sample");
    let (_, body) = seen.await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["voice"].as_str(), body["response_format"].as_str()),
        (Some("alloy"), Some("pcm"))
    );
}
