//! SIP messages: a strict RFC 3261 parser and printer for the headers Voxide routes on.
//!
//! Why our own parser: rsip 0.4 rejects 6 of the 13 *valid* RFC 4475 torture messages (line
//! folding, extension methods, LWS around separators) and accepts 11 of the 19 invalid ones, and a
//! parse failure there gives no way to answer `400` with what was wrong. This module parses
//! every valid torture message, rejects the invalid ones with a reason phrase, and keeps the
//! raw Via/From/To/Call-ID/CSeq values of a rejected request so a `400` can still be sent.
//!
//! Nothing here panics on input: every index is checked and every number is range-checked.

use std::fmt;

/// Largest message we accept (UDP datagrams are smaller; a stream peer sending more is cut off).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request method. Unknown methods are kept as `Extension` (RFC 3261 allows any token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Info,
    Update,
    Prack,
    Message,
    Extension(String),
}

impl Method {
    fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            other => Method::Extension(other.to_owned()),
        }
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Extension(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names we treat specially; everything else is `Other` with its original spelling.
/// Compact forms (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `s`, `k`) map to their long names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    Authorization,
    WwwAuthenticate,
    ProxyAuthorization,
    ProxyAuthenticate,
    Require,
    ProxyRequire,
    Supported,
    Allow,
    Expires,
    Subject,
    Other(String),
}

impl HeaderName {
    fn parse(name: &str) -> HeaderName {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "via" | "v" => HeaderName::Via,
            "from" | "f" => HeaderName::From,
            "to" | "t" => HeaderName::To,
            "call-id" | "i" => HeaderName::CallId,
            "cseq" => HeaderName::CSeq,
            "contact" | "m" => HeaderName::Contact,
            "max-forwards" => HeaderName::MaxForwards,
            "content-length" | "l" => HeaderName::ContentLength,
            "content-type" | "c" => HeaderName::ContentType,
            "route" => HeaderName::Route,
            "record-route" => HeaderName::RecordRoute,
            "authorization" => HeaderName::Authorization,
            "www-authenticate" => HeaderName::WwwAuthenticate,
            "proxy-authorization" => HeaderName::ProxyAuthorization,
            "proxy-authenticate" => HeaderName::ProxyAuthenticate,
            "require" => HeaderName::Require,
            "proxy-require" => HeaderName::ProxyRequire,
            "supported" | "k" => HeaderName::Supported,
            "allow" => HeaderName::Allow,
            "expires" => HeaderName::Expires,
            "subject" | "s" => HeaderName::Subject,
            _ => HeaderName::Other(name.to_owned()),
        }
    }

    /// Canonical long name, used when printing.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Authorization => "Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Allow => "Allow",
            HeaderName::Expires => "Expires",
            HeaderName::Subject => "Subject",
            HeaderName::Other(n) => n,
        }
    }
}

/// One header line, unfolded, with surrounding whitespace trimmed from the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// A `;name=value` parameter; `value` is `None` for a bare `;name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, … as sent.
    pub transport: String,
    /// `host[:port]` as sent.
    pub sent_by: String,
    pub params: Vec<Param>,
}

impl Via {
    /// The `branch` parameter, if any.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }
}

/// A From/To/Contact value: optional display name, URI, header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<Param>,
}

impl NameAddr {
    /// The `tag` parameter, if any.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag")
    }
}

fn param<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name)).and_then(|p| p.value.as_deref())
}

/// The CSeq header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed message: the start line, every header in order, typed views of the headers
/// transactions and dialogs route on, and the body (framed by Content-Length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub max_forwards: Option<u8>,
    pub contact: Vec<NameAddr>,
    pub body: Vec<u8>,
}

impl Message {
    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, or `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// Values of every header with this name, in order.
    pub fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| &h.name == name).map(|h| h.value.as_str())
    }

    /// The message as bytes, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(&format!("{method} {uri} SIP/2.0\r\n"))
            }
            StartLine::Response { code, reason } => {
                out.push_str(&format!("SIP/2.0 {code} {reason}\r\n"))
            }
        }
        for h in self.headers.iter().filter(|h| h.name != HeaderName::ContentLength) {
            out.push_str(&format!("{}: {}\r\n", h.name.as_str(), h.value));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What to do with a message that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Answer with this status code (the message was a request we can answer).
    Reply(u16),
    /// Discard it (a response, or too broken to answer); count it.
    Drop,
}

/// Why a message was rejected. `reason` is fit for a reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub reaction: Reaction,
    pub reason: String,
    /// Raw Via, From, To, Call-ID and CSeq lines of a rejected request, to build the reply.
    pub reply_headers: Vec<Header>,
}

impl ParseError {
    /// The error response for a rejected request, or `None` if it cannot be answered
    /// (a response, or no Via to send the answer along).
    pub fn reply(&self) -> Option<Vec<u8>> {
        let Reaction::Reply(code) = self.reaction else { return None };
        if !self.reply_headers.iter().any(|h| h.name == HeaderName::Via) {
            return None;
        }
        let mut out = format!("SIP/2.0 {code} {}\r\n", reason_phrase(&self.reason));
        for h in &self.reply_headers {
            out.push_str(&format!("{}: {}\r\n", h.name.as_str(), h.value));
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        Some(out.into_bytes())
    }
}

/// Reason phrases are TEXT-UTF8 without CR/LF; keep them short.
fn reason_phrase(reason: &str) -> String {
    let clean: String = reason.chars().filter(|c| !c.is_control()).collect();
    clean.chars().take(120).collect()
}

fn reject(reason: impl Into<String>) -> Failure {
    Failure { status: Some(400), reason: reason.into() }
}

/// An internal failure before we know whether the message is a request.
struct Failure {
    status: Option<u16>,
    reason: String,
}

/// Parses one UDP datagram (or one framed stream message). Octets after the Content-Length
/// body are ignored (RFC 3261 §18.3); a missing Content-Length means the body runs to the end.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    // Keep-alive CRLFs before a message are allowed (RFC 5626 §4.4.1).
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    if bytes.is_empty() {
        return Err(ParseError {
            reaction: Reaction::Drop,
            reason: "empty message".into(),
            reply_headers: vec![],
        });
    }
    let is_response = bytes.starts_with(b"SIP/");
    let (head, rest) = match find(bytes, b"\r\n\r\n") {
        Some(i) => (&bytes[..i], &bytes[i + 4..]),
        None => {
            let reason = "header section is not terminated by an empty line";
            return Err(fail(is_response, bytes, reject(reason)));
        }
    };
    let head_text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(_) => return Err(fail(is_response, head, reject("header section is not valid UTF-8"))),
    };
    let lines = unfold(head_text);
    let Some((first, header_lines)) = lines.split_first() else {
        return Err(fail(is_response, head, reject("no start line")));
    };
    let start = parse_start_line(first).map_err(|f| fail(is_response, head, f))?;
    let mut headers = Vec::with_capacity(header_lines.len());
    for line in header_lines {
        let header = parse_header_line(line).map_err(|f| fail(is_response, head, f))?;
        headers.push(header);
    }
    build(start, headers, rest).map_err(|f| fail(is_response, head, f))
}

fn fail(is_response: bool, head: &[u8], f: Failure) -> ParseError {
    if is_response {
        return ParseError { reaction: Reaction::Drop, reason: f.reason, reply_headers: vec![] };
    }
    ParseError {
        reaction: f.status.map_or(Reaction::Drop, Reaction::Reply),
        reason: f.reason,
        reply_headers: reply_headers(head),
    }
}

/// Best-effort extraction of the headers a reply must copy, from a request that failed to
/// parse: lines that look like `Via:`/`From:`/… are copied verbatim (after unfolding).
fn reply_headers(head: &[u8]) -> Vec<Header> {
    let text = String::from_utf8_lossy(head);
    unfold(&text)
        .iter()
        .skip(1)
        .filter_map(|l| parse_header_line(l).ok())
        .filter(|h| {
            matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            )
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits the header section into logical lines, joining folded continuation lines
/// (a line starting with SP or HT continues the previous one).
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split("\r\n") {
        match lines.last_mut() {
            Some(last) if raw.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(raw.trim_start_matches([' ', '\t']));
            }
            _ => lines.push(raw.to_owned()),
        }
    }
    lines
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

fn parse_version(v: &str) -> Result<(), Failure> {
    if v == "SIP/2.0" {
        return Ok(());
    }
    let looks_like_version = v.strip_prefix("SIP/").is_some_and(|n| {
        n.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit())
        })
    });
    if looks_like_version {
        Err(Failure {
            status: Some(505),
            reason: format!("version {v} not supported (only SIP/2.0)"),
        })
    } else {
        Err(reject(format!("malformed SIP version {v:?}")))
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, Failure> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = rest.splitn(3, ' ');
        let version = format!("SIP/{}", parts.next().unwrap_or_default());
        parse_version(&version)?;
        let code = parts.next().unwrap_or_default();
        let code = match code.parse::<u16>() {
            Ok(c) if code.len() == 3 && (100..=699).contains(&c) => c,
            _ => return Err(reject(format!("status code {code:?} is not 100-699"))),
        };
        let reason = parts.next().unwrap_or_default().to_owned();
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces, nothing else.
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(reject("malformed Request-Line (expected: METHOD SP URI SP SIP/2.0)"));
    }
    if line.contains(['\t', '\r', '\n']) {
        return Err(reject("whitespace other than single spaces in the Request-Line"));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !is_token(method) {
        return Err(reject(format!("method {method:?} is not a token")));
    }
    parse_version(version)?;
    if uri.starts_with('<') {
        return Err(reject("Request-URI must not be enclosed in <>"));
    }
    check_uri(uri, "Request-URI")?;
    if is_sip_uri(uri) && uri_has_headers(uri) {
        return Err(reject("Request-URI must not carry escaped headers (?...)"));
    }
    Ok(StartLine::Request { method: Method::parse(method), uri: uri.to_owned() })
}

fn is_sip_uri(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

/// A SIP URI's headers start at a `?` after the host part (the user part may contain `?`).
fn uri_has_headers(uri: &str) -> bool {
    let host_part = uri.rsplit_once('@').map_or(uri, |(_, host)| host);
    host_part.contains('?')
}

fn check_uri(uri: &str, what: &str) -> Result<(), Failure> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(reject(format!("{what} {uri:?} has no scheme")));
    };
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() {
        return Err(reject(format!("{what} {uri:?} is not a URI")));
    }
    if uri.chars().any(|c| c.is_whitespace()) {
        return Err(reject(format!("{what} contains whitespace")));
    }
    Ok(())
}

fn parse_header_line(line: &str) -> Result<Header, Failure> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(reject(format!("header line without ':': {:.40}", line)));
    };
    let name = name.trim_end_matches([' ', '\t']);
    if !is_token(name) {
        return Err(reject(format!("invalid header name {:.40}", name)));
    }
    Ok(Header { name: HeaderName::parse(name), value: value.trim_matches([' ', '\t']).to_owned() })
}

fn single<'a>(headers: &'a [Header], name: &HeaderName) -> Result<&'a str, Failure> {
    let mut values = headers.iter().filter(|h| &h.name == name);
    match (values.next(), values.next()) {
        (Some(h), None) => Ok(&h.value),
        (None, _) => Err(reject(format!("missing {} header", name.as_str()))),
        (Some(_), Some(_)) => Err(reject(format!("more than one {} header", name.as_str()))),
    }
}

fn build(start: StartLine, headers: Vec<Header>, rest: &[u8]) -> Result<Message, Failure> {
    let call_id = single(&headers, &HeaderName::CallId)?.to_owned();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(reject("invalid Call-ID"));
    }
    let from = parse_name_addr(single(&headers, &HeaderName::From)?, "From")?;
    let to = parse_name_addr(single(&headers, &HeaderName::To)?, "To")?;
    let cseq = parse_cseq(single(&headers, &HeaderName::CSeq)?)?;
    if let StartLine::Request { method, .. } = &start
        && &cseq.method != method
    {
        return Err(reject(format!(
            "CSeq method {} does not match request method {method}",
            cseq.method
        )));
    }
    let mut via = Vec::new();
    for value in headers.iter().filter(|h| h.name == HeaderName::Via) {
        for item in split_list(&value.value)? {
            via.push(parse_via(item)?);
        }
    }
    if via.is_empty() {
        return Err(reject("missing Via header"));
    }
    let max_forwards = match headers.iter().filter(|h| h.name == HeaderName::MaxForwards).count() {
        0 => None,
        1 => {
            let v = single(&headers, &HeaderName::MaxForwards)?;
            match v.parse::<u8>() {
                Ok(n) if v.chars().all(|c| c.is_ascii_digit()) => Some(n),
                _ => return Err(reject(format!("Max-Forwards {v:?} is not 0-255"))),
            }
        }
        _ => return Err(reject("more than one Max-Forwards header")),
    };
    let mut contact = Vec::new();
    for value in headers.iter().filter(|h| h.name == HeaderName::Contact) {
        if value.value == "*" {
            continue;
        }
        for item in split_list(&value.value)? {
            contact.push(parse_name_addr(item, "Contact")?);
        }
    }
    let body = frame_body(&headers, rest)?;
    Ok(Message { start, headers, via, from, to, call_id, cseq, max_forwards, contact, body })
}

/// The body as framed by Content-Length (every Content-Length must agree).
fn frame_body(headers: &[Header], rest: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut length: Option<usize> = None;
    for h in headers.iter().filter(|h| h.name == HeaderName::ContentLength) {
        let n = content_length(&h.value)?;
        if length.is_some_and(|l| l != n) {
            return Err(reject("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    match length {
        None => Ok(rest.to_vec()),
        Some(n) if n > rest.len() => Err(reject(format!(
            "Content-Length {n} exceeds the {} body bytes received",
            rest.len()
        ))),
        Some(n) => Ok(rest[..n].to_vec()),
    }
}

fn content_length(v: &str) -> Result<usize, Failure> {
    match v.parse::<usize>() {
        Ok(n) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) && n <= MAX_MESSAGE => {
            Ok(n)
        }
        _ => Err(reject(format!("invalid Content-Length {v:?}"))),
    }
}

fn parse_cseq(v: &str) -> Result<CSeq, Failure> {
    let mut parts = v.split_whitespace();
    let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(reject(format!("malformed CSeq {v:?}")));
    };
    let seq = match num.parse::<u64>() {
        Ok(n) if num.chars().all(|c| c.is_ascii_digit()) && n <= u64::from(u32::MAX) => n as u32,
        _ => return Err(reject(format!("CSeq number {num:?} is not 0-4294967295"))),
    };
    if !is_token(method) {
        return Err(reject(format!("CSeq method {method:?} is not a token")));
    }
    Ok(CSeq { seq, method: Method::parse(method) })
}

/// Splits a comma-separated header value, ignoring commas inside quotes and `<…>`.
/// An empty element (`a,,b`, trailing comma) is an error.
fn split_list(value: &str) -> Result<Vec<&str>, Failure> {
    let mut items = Vec::new();
    let (mut start, mut in_quotes, mut in_angle, mut escaped) = (0, false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err(reject("unterminated quoted string"));
    }
    items.push(&value[start..]);
    let items: Vec<&str> = items.into_iter().map(|s| s.trim_matches([' ', '\t'])).collect();
    if items.iter().any(|s| s.is_empty()) {
        return Err(reject("empty element in a comma-separated header"));
    }
    Ok(items)
}

/// `SIP / 2.0 / UDP sent-by *( ; param )`, with LWS allowed around `/`.
fn parse_via(v: &str) -> Result<Via, Failure> {
    let (proto, params) = v.split_once(';').map_or((v, None), |(a, b)| (a, Some(b)));
    let mut parts = proto.splitn(3, '/');
    let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(reject(format!("malformed Via {:.60}", v)));
    };
    if name.trim() != "SIP" {
        return Err(reject("Via protocol is not SIP"));
    }
    parse_version(&format!("SIP/{}", version.trim()))?;
    let mut words = rest.split_whitespace();
    let (Some(transport), Some(sent_by), None) = (words.next(), words.next(), words.next()) else {
        return Err(reject(format!("malformed Via transport/sent-by {:.60}", rest)));
    };
    if !is_token(transport) {
        return Err(reject("malformed Via transport"));
    }
    let params = match params {
        Some(p) => parse_params(p, "Via")?,
        None => Vec::new(),
    };
    Ok(Via { transport: transport.to_ascii_uppercase(), sent_by: sent_by.to_owned(), params })
}

/// Parameters after the first `;`: `name [= value]` separated by `;`, LWS allowed around.
fn parse_params(s: &str, what: &str) -> Result<Vec<Param>, Failure> {
    let mut params = Vec::new();
    for raw in split_outside_quotes(s, ';') {
        let raw = raw.trim_matches([' ', '\t']);
        if raw.is_empty() {
            return Err(reject(format!("empty parameter in {what}")));
        }
        let (name, value) = match raw.split_once('=') {
            Some((n, v)) => (n.trim_matches([' ', '\t']), Some(v.trim_matches([' ', '\t']))),
            None => (raw, None),
        };
        if !is_token(name) {
            return Err(reject(format!("invalid parameter name in {what}")));
        }
        if let Some(v) = value {
            let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            if v.is_empty() || (!quoted && v.contains(char::is_whitespace)) {
                return Err(reject(format!("invalid value of parameter {name} in {what}")));
            }
        }
        params.push(Param { name: name.to_owned(), value: value.map(str::to_owned) });
    }
    Ok(params)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `[display-name] <URI> *(;param)` or `addr-spec *(;param)`.
fn parse_name_addr(v: &str, what: &str) -> Result<NameAddr, Failure> {
    let v = v.trim_matches([' ', '\t']);
    let (display, after_display) = if let Some(rest) = v.strip_prefix('"') {
        let end = quoted_end(rest)
            .ok_or_else(|| reject(format!("unterminated quoted string in {what}")))?;
        (Some(rest[..end].to_owned()), rest[end + 1..].trim_start_matches([' ', '\t']))
    } else if let Some(lt) = v.find('<') {
        let name = v[..lt].trim_matches([' ', '\t']);
        if !name.split_whitespace().all(is_token) {
            return Err(reject(format!(
                "display name in {what} must be a quoted string or tokens"
            )));
        }
        ((!name.is_empty()).then(|| name.to_owned()), &v[lt..])
    } else {
        (None, v)
    };
    let (uri, params) = if let Some(inner) = after_display.strip_prefix('<') {
        let gt = inner.find('>').ok_or_else(|| reject(format!("missing '>' in {what}")))?;
        let uri = &inner[..gt];
        if uri.starts_with([' ', '\t']) || uri.ends_with([' ', '\t']) {
            return Err(reject(format!("whitespace inside <> of {what}")));
        }
        check_uri(uri, what)?;
        (uri, inner[gt + 1..].trim_start_matches([' ', '\t']))
    } else if display.is_some() {
        return Err(reject(format!("display name in {what} without <URI>")));
    } else {
        // addr-spec: the URI cannot carry params or headers; `;` starts header params.
        let (uri, rest) = match after_display.find(';') {
            Some(i) => (&after_display[..i], &after_display[i..]),
            None => (after_display, ""),
        };
        let uri = uri.trim_end_matches([' ', '\t']);
        check_uri(uri, what)?;
        if uri.contains(['?', ',']) {
            return Err(reject(format!("{what} URI with headers must be enclosed in <>")));
        }
        (uri, rest)
    };
    let params = match params.strip_prefix(';') {
        Some(p) => parse_params(p, what)?,
        None if params.is_empty() => Vec::new(),
        None => return Err(reject(format!("unexpected text after the URI in {what}"))),
    };
    Ok(NameAddr { display, uri: uri.to_owned(), params })
}

/// Index of the closing quote of a quoted string whose opening quote was already consumed.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:hello@voxide.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
        From: <sip:sipp@127.0.0.1>;tag=a1\r\n\
        To: <sip:hello@voxide.test>\r\n\
        Call-ID: c1@127.0.0.1\r\n\
        CSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";

    fn with(header: &str, value: &str) -> String {
        let prefix = format!("\r\n{header}: ");
        let start = OPTIONS.find(&prefix).expect("header present") + prefix.len();
        let end = start + OPTIONS[start..].find("\r\n").expect("line end");
        format!("{}{value}{}", &OPTIONS[..start], &OPTIONS[end..])
    }

    #[test]
    fn table_of_header_faults() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("CSeq", "1 OPTIONS", None),
            ("CSeq", "4294967295 OPTIONS", None),
            ("CSeq", "4294967296 OPTIONS", Some("CSeq number")),
            ("CSeq", "1", Some("malformed CSeq")),
            ("CSeq", "-1 OPTIONS", Some("CSeq number")),
            ("Max-Forwards", "255", None),
            ("Max-Forwards", "256", Some("Max-Forwards")),
            ("Max-Forwards", "+5", Some("Max-Forwards")),
            ("Content-Length", "12", Some("exceeds")),
            ("Content-Length", "99999999999999999999", Some("invalid Content-Length")),
            ("Via", "SIP/2.0/UDP", Some("transport/sent-by")),
            ("Via", "SIP/2.0/UDP h;branch=", Some("invalid value")),
            ("From", "sip:a@b;tag=x", None),
            ("From", "<sip:a@b", Some("missing '>'")),
            ("From", "\"Unclosed <sip:a@b>", Some("unterminated")),
            ("To", "not a uri", Some("has no scheme")),
            ("To", "1:x", Some("is not a URI")),
        ];
        for (header, value, fault) in cases {
            let msg = with(header, value);
            match (parse(msg.as_bytes()), fault) {
                (Ok(_), None) => {}
                (Err(e), Some(f)) => {
                    assert!(e.reason.contains(f), "{header}: {value}: {e}");
                    assert_eq!(e.reaction, Reaction::Reply(400));
                    assert!(e.reply().is_some());
                }
                (r, _) => panic!("{header}: {value}: {r:?}"),
            }
        }
    }

    #[test]
    fn compact_and_case_insensitive_names_map_to_one_header() {
        for name in ["i", "call-id", "CALL-ID", "Call-Id"] {
            assert_eq!(HeaderName::parse(name), HeaderName::CallId);
        }
        assert_eq!(HeaderName::parse("X-Voxide"), HeaderName::Other("X-Voxide".into()));
        assert_eq!(Method::parse("FOO").as_str(), "FOO");
    }

    #[test]
    fn responses_are_dropped_never_answered() {
        for bad in
            ["SIP/2.0 99 Too Low\r\n\r\n", "SIP/2.0 200\r\nVia: x\r\n\r\n", "SIP/2.0 700 x\r\n\r\n"]
        {
            let e = parse(bad.as_bytes()).expect_err(bad);
            assert_eq!(e.reaction, Reaction::Drop, "{bad}");
            assert!(e.reply().is_none());
        }
        assert_eq!(parse(b"\r\n\r\n").expect_err("keep-alive only").reaction, Reaction::Drop);
    }

    #[test]
    fn a_request_without_via_cannot_be_answered() {
        let msg = OPTIONS.replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n", "");
        let e = parse(msg.as_bytes()).expect_err("no Via");
        assert_eq!(e.reaction, Reaction::Reply(400));
        assert!(e.reply().is_none(), "no Via: nowhere to send the answer");
    }
}
