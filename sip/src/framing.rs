//! Framing SIP messages on stream transports (TCP, TLS): RFC 3261 §18.3 requires
//! Content-Length there, so a message ends exactly where its body does.

use crate::message::{self, MAX_MESSAGE, ParseError, Reaction};

/// What the framer produced.
#[derive(Debug)]
pub enum Frame {
    /// One complete message (or a message that failed to parse but was framed correctly, so
    /// the stream stays usable).
    Message(Result<Box<message::Message>, ParseError>),
    /// The stream cannot be framed any more (bad or missing Content-Length, oversized header):
    /// send the reply if any, then close the connection.
    Close(ParseError),
}

/// Accumulates bytes from a stream and cuts them into messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Set once the stream could not be framed: it yields nothing more.
    closed: bool,
}

impl StreamFramer {
    /// Appends bytes read from the connection (ignored once the stream was closed).
    pub fn push(&mut self, data: &[u8]) {
        if !self.closed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.next_bytes().map(|r| match r {
            Ok(bytes) => Frame::Message(message::parse(&bytes).map(Box::new)),
            Err(e) => Frame::Close(e),
        })
    }

    /// The next complete message's raw bytes (unparsed), or the error that ends the stream;
    /// after that error it returns `None` for ever.
    pub fn next_bytes(&mut self) -> Option<Result<Vec<u8>, ParseError>> {
        if self.closed {
            return None;
        }
        let next = self.frame();
        if matches!(next, Some(Err(_))) {
            self.closed = true;
            self.buf = Vec::new();
        }
        next
    }

    fn frame(&mut self) -> Option<Result<Vec<u8>, ParseError>> {
        // CRLF keep-alives between messages (RFC 5626 §4.4.1).
        let skip =
            self.buf.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(self.buf.len());
        self.buf.drain(..skip);
        if self.buf.is_empty() {
            return None;
        }
        let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.buf.len() > MAX_MESSAGE {
                return Some(Err(close_error(&self.buf, "header section too long")));
            }
            return None;
        };
        let body_start = head_end + 4;
        let length = match declared_length(&self.buf[..head_end]) {
            Ok(Some(n)) if n <= MAX_MESSAGE => n,
            Ok(Some(n)) => {
                return Some(Err(close_error(
                    &self.buf[..head_end],
                    &format!("Content-Length {n} is too large"),
                )));
            }
            Ok(None) => {
                return Some(Err(close_error(
                    &self.buf[..head_end],
                    "Content-Length is required on stream transports",
                )));
            }
            Err(reason) => return Some(Err(close_error(&self.buf[..head_end], &reason))),
        };
        if self.buf.len() < body_start + length {
            return None;
        }
        Some(Ok(self.buf.drain(..body_start + length).collect()))
    }
}

/// The Content-Length of a header section: `Ok(None)` if absent, `Err` if malformed or if
/// several disagree.
fn declared_length(head: &[u8]) -> Result<Option<usize>, String> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<usize> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim_end().to_ascii_lowercase();
        if name != "content-length" && name != "l" {
            continue;
        }
        let value = value.trim();
        let n = match value.parse::<usize>() {
            Ok(n) if value.chars().all(|c| c.is_ascii_digit()) => n,
            _ => return Err(format!("invalid Content-Length {value:?}")),
        };
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length headers".into());
        }
        found = Some(n);
    }
    Ok(found)
}

fn close_error(head: &[u8], reason: &str) -> ParseError {
    // Reuse the datagram parser's reply extraction by parsing the head alone; only its
    // reaction and reply headers matter here.
    let is_response = head.starts_with(b"SIP/");
    let mut head_only = head.to_vec();
    head_only.extend_from_slice(b"\r\n\r\n");
    let reply_headers = match message::parse(&head_only) {
        Err(e) => e.reply_headers,
        Ok(m) => m
            .headers
            .into_iter()
            .filter(|h| {
                use message::HeaderName::*;
                matches!(h.name, Via | From | To | CallId | CSeq)
            })
            .collect(),
    };
    ParseError {
        reaction: if is_response { Reaction::Drop } else { Reaction::Reply(400) },
        reason: reason.to_owned(),
        reply_headers,
    }
}
