//! SDP (RFC 4566) for audio calls, and the offer/answer rules Voxide follows (RFC 3264).
//!
//! Only what an audio-only B2BUA needs: the connection address, the first audio `m=` line
//! with its payload types, `rtpmap`/`fmtp`, `ptime` and the direction attribute. Parsing is
//! lenient about lines it does not use and strict about the ones it does: a malformed `m=`,
//! `c=` or `rtpmap` is an error that says which line, never a panic.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Why an SDP body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("SDP is not UTF-8 text")]
    NotText,
    #[error("SDP has no v=0 line")]
    NoVersion,
    #[error("malformed SDP line {line:?}: {why}")]
    Malformed { line: String, why: &'static str },
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("the audio stream has no connection address")]
    NoConnection,
    /// RFC 3264 §6: nothing in common; the INVITE gets 488 Not Acceptable Here.
    #[error("no common audio codec (offered: {0})")]
    NoCommonCodec(String),
}

/// Media direction (RFC 3264 §6.1; hold is `sendonly`/`inactive` from the holding side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(attr: &str) -> Option<Direction> {
        Some(match attr {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The answerer's direction for an offered one (RFC 3264 §6.1), given what we can do.
    pub fn answer(self, ours: Direction) -> Direction {
        let (we_send, we_recv) = (ours.sends(), ours.receives());
        match self {
            Direction::SendRecv => ours,
            Direction::SendOnly if we_recv => Direction::RecvOnly,
            Direction::RecvOnly if we_send => Direction::SendOnly,
            _ => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// An `a=rtpmap` entry (or a static payload type's implied one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub name: String,
    pub rate: u32,
    pub channels: u8,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Payload types in the offerer's order of preference.
    pub formats: Vec<u8>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
    /// A media-level `c=` (overrides the session's).
    pub connection: Option<IpAddr>,
}

impl Media {
    /// The rtpmap of `pt`: the explicit one, or RFC 3551's static assignment.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some(m.clone());
        }
        let (name, rate) = match pt {
            0 => ("PCMU", 8000),
            8 => ("PCMA", 8000),
            9 => ("G722", 8000),
            18 => ("G729", 8000),
            _ => return None,
        };
        Some(RtpMap { pt, name: name.into(), rate, channels: 1 })
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub origin_id: u64,
    pub origin_version: u64,
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<Media>,
}

impl Session {
    /// The first audio stream.
    pub fn audio(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == "audio")
    }

    /// The audio stream's direction (media level, else session level, else sendrecv).
    pub fn audio_direction(&self) -> Direction {
        self.audio().and_then(|m| m.direction).or(self.direction).unwrap_or_default()
    }

    /// Where the audio stream wants RTP; `None` when it is on hold the RFC 2543 way
    /// (`c=0.0.0.0`) or disabled (port 0).
    pub fn audio_addr(&self) -> Result<Option<SocketAddr>, SdpError> {
        let media = self.audio().ok_or(SdpError::NoAudio)?;
        let ip = media.connection.or(self.connection).ok_or(SdpError::NoConnection)?;
        if media.port == 0 || ip.is_unspecified() {
            return Ok(None);
        }
        Ok(Some(SocketAddr::new(ip, media.port)))
    }
}

fn malformed(line: &str, why: &'static str) -> SdpError {
    SdpError::Malformed { line: line.chars().take(80).collect(), why }
}

fn parse_connection(line: &str, value: &str) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut parts = value.split_whitespace();
    let (Some("IN"), Some(family), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed(line, "expected `c=IN IP4|IP6 address`"));
    };
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| malformed(line, "not an IP address"))?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(malformed(line, "address family does not match")),
    }
}

/// Parses an SDP body.
pub fn parse(body: &[u8]) -> Result<Session, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let mut session = Session {
        origin_id: 0,
        origin_version: 0,
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut saw_version = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(malformed(line, "expected `x=value`"));
        };
        match kind {
            "v" => {
                if value.trim() != "0" {
                    return Err(malformed(line, "only v=0 exists"));
                }
                saw_version = true;
            }
            "o" => {
                let fields: Vec<&str> = value.split_whitespace().collect();
                if fields.len() < 6 {
                    return Err(malformed(line, "o= needs 6 fields"));
                }
                session.origin_id = fields[1].parse().unwrap_or(0);
                session.origin_version = fields[2].parse().unwrap_or(0);
            }
            "c" => {
                let ip = parse_connection(line, value)?;
                match session.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => session.connection = Some(ip),
                }
            }
            "m" => {
                let mut parts = value.split_whitespace();
                let (Some(media), Some(port), Some(proto)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(malformed(line, "expected `m=media port proto fmt...`"));
                };
                // `port/count` is allowed; we use the first port.
                let port = port.split('/').next().unwrap_or(port);
                let port: u16 = port.parse().map_err(|_| malformed(line, "bad port"))?;
                let formats = if proto.contains("RTP") {
                    parts
                        .map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| malformed(line, "bad payload type"))?
                } else {
                    Vec::new()
                };
                session.media.push(Media {
                    kind: media.to_owned(),
                    port,
                    proto: proto.to_owned(),
                    formats,
                    rtpmaps: Vec::new(),
                    fmtps: Vec::new(),
                    ptime: None,
                    direction: None,
                    connection: None,
                });
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                if let Some(direction) = Direction::parse(name) {
                    match session.media.last_mut() {
                        Some(m) => m.direction = Some(direction),
                        None => session.direction = Some(direction),
                    }
                    continue;
                }
                let Some(media) = session.media.last_mut() else { continue };
                match name {
                    "rtpmap" => {
                        let (pt, enc) = arg
                            .split_once(' ')
                            .ok_or_else(|| malformed(line, "expected `rtpmap:pt name/rate`"))?;
                        let pt: u8 = pt
                            .parse()
                            .ok()
                            .filter(|pt| *pt < 128)
                            .ok_or_else(|| malformed(line, "bad payload type"))?;
                        let mut enc = enc.trim().split('/');
                        let name = enc.next().unwrap_or_default().to_owned();
                        let rate = enc
                            .next()
                            .and_then(|r| r.parse().ok())
                            .ok_or_else(|| malformed(line, "bad clock rate"))?;
                        let channels = enc.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                        media.rtpmaps.push(RtpMap { pt, name, rate, channels });
                    }
                    "fmtp" => {
                        if let Some((pt, params)) = arg.split_once(' ')
                            && let Ok(pt) = pt.parse()
                        {
                            media.fmtps.push((pt, params.trim().to_owned()));
                        }
                    }
                    "ptime" => media.ptime = arg.trim().parse().ok(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::NoVersion);
    }
    Ok(session)
}

/// Audio codecs Voxide can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// RTP clock rate.
    pub fn rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The payload type we use when we offer it.
    pub fn default_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        }
    }

    fn matches(self, map: &RtpMap) -> bool {
        map.name.eq_ignore_ascii_case(self.name()) && map.rate == self.rate()
    }
}

/// The telephone-event payload type we offer (RFC 4733).
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// What both sides agreed on for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP; `None` while the peer holds with `c=0.0.0.0` or port 0.
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    /// The payload type of `codec` on the wire (the offerer's number).
    pub pt: u8,
    /// RFC 4733 events' payload type, if both sides do them (8 kHz).
    pub telephone_event: Option<u8>,
    /// Packetization time in ms (20 unless the peer asked for another).
    pub ptime_ms: u32,
    /// Our direction.
    pub direction: Direction,
}

/// Our side of a stream: where we receive RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub addr: SocketAddr,
    /// o= session id and version (bump the version for every new offer/answer).
    pub session_id: u64,
    pub version: u64,
}

fn write_header(out: &mut String, local: &Local) {
    let ip = local.addr.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        out,
        "v=0\r\no=voxide {} {} IN {family} {ip}\r\ns=voxide\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id, local.version
    );
}

/// An offer of `codecs` (in our order of preference) plus telephone-event.
pub fn offer(local: &Local, codecs: &[Codec], direction: Direction) -> String {
    let mut out = String::with_capacity(256);
    write_header(&mut out, local);
    let pts: Vec<String> = codecs
        .iter()
        .map(|c| c.default_pt())
        .chain([TELEPHONE_EVENT_PT])
        .map(|pt| pt.to_string())
        .collect();
    let _ = write!(out, "m=audio {} RTP/AVP {}\r\n", local.addr.port(), pts.join(" "));
    for codec in codecs {
        let channels = if *codec == Codec::Opus { "/2" } else { "" };
        let _ = write!(
            out,
            "a=rtpmap:{} {}/{}{channels}\r\n",
            codec.default_pt(),
            codec.name(),
            codec.rate()
        );
    }
    let _ = write!(
        out,
        "a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000\r\na=fmtp:{TELEPHONE_EVENT_PT} 0-16\r\n\
         a=ptime:20\r\na={}\r\n",
        direction.as_str()
    );
    out
}

fn telephone_event(media: &Media) -> Option<u8> {
    media.formats.iter().copied().find(|pt| {
        media
            .rtpmap(*pt)
            .is_some_and(|m| m.name.eq_ignore_ascii_case("telephone-event") && m.rate == 8000)
    })
}

/// Answers `offer` (RFC 3264 §6): the first offered codec we support (the offerer's
/// preference), telephone-event if offered, the mirrored direction. Returns our SDP and what
/// was agreed; `NoCommonCodec` means 488.
pub fn answer(
    offer: &Session,
    local: &Local,
    supported: &[Codec],
    ours: Direction,
) -> Result<(String, Negotiated), SdpError> {
    let media = offer.audio().ok_or(SdpError::NoAudio)?;
    let remote = offer.audio_addr()?;
    let (codec, pt) = media
        .formats
        .iter()
        .find_map(|pt| {
            let map = media.rtpmap(*pt)?;
            supported.iter().find(|c| c.matches(&map)).map(|c| (*c, *pt))
        })
        .ok_or_else(|| {
            let offered: Vec<String> = media
                .formats
                .iter()
                .map(|pt| media.rtpmap(*pt).map_or(pt.to_string(), |m| m.name))
                .collect();
            SdpError::NoCommonCodec(offered.join(", "))
        })?;
    let te = telephone_event(media);
    let direction = offer.audio_direction().answer(ours);
    let ptime_ms = media.ptime.filter(|p| (10..=60).contains(p) && p % 10 == 0).unwrap_or(20);
    let mut out = String::with_capacity(256);
    write_header(&mut out, local);
    let mut pts = vec![pt.to_string()];
    pts.extend(te.map(|t| t.to_string()));
    let _ = write!(out, "m=audio {} RTP/AVP {}\r\n", local.addr.port(), pts.join(" "));
    let channels = if codec == Codec::Opus { "/2" } else { "" };
    let _ = write!(out, "a=rtpmap:{pt} {}/{}{channels}\r\n", codec.name(), codec.rate());
    if let Some(te) = te {
        let _ = write!(out, "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n");
    }
    let _ = write!(out, "a=ptime:{ptime_ms}\r\na={}\r\n", direction.as_str());
    Ok((out, Negotiated { remote, codec, pt, telephone_event: te, ptime_ms, direction }))
}

/// What an answer to our [`offer`] of `codecs` agreed on.
pub fn accept(answer: &Session, codecs: &[Codec], ours: Direction) -> Result<Negotiated, SdpError> {
    let media = answer.audio().ok_or(SdpError::NoAudio)?;
    let remote = answer.audio_addr()?;
    let (codec, pt) = media
        .formats
        .iter()
        .find_map(|pt| {
            let map = media.rtpmap(*pt)?;
            codecs.iter().find(|c| c.matches(&map)).map(|c| (*c, *pt))
        })
        .ok_or_else(|| SdpError::NoCommonCodec("the answer's".into()))?;
    let direction = match answer.audio_direction() {
        Direction::SendRecv => ours,
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        Direction::Inactive => Direction::Inactive,
    };
    let ptime_ms = media.ptime.filter(|p| (10..=60).contains(p) && p % 10 == 0).unwrap_or(20);
    Ok(Negotiated {
        remote,
        codec,
        pt,
        telephone_event: telephone_event(media),
        ptime_ms,
        direction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    const PHONE: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.5\r\ns=call\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 111 8 0 101\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
        a=ptime:20\r\na=sendrecv\r\n";

    fn local() -> Local {
        Local { addr: "192.0.2.1:10000".parse().unwrap(), session_id: 7, version: 1 }
    }

    #[test]
    fn parses_what_peers_send() {
        let s = parse(SIPP.as_bytes()).unwrap();
        assert_eq!(s.audio_addr().unwrap(), Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(s.audio().unwrap().rtpmap(0).unwrap().name, "PCMU");
        let p = parse(PHONE.as_bytes()).unwrap();
        let m = p.audio().unwrap();
        assert_eq!(m.formats, [111, 8, 0, 101]);
        assert_eq!(m.rtpmap(111).unwrap().channels, 2);
        assert_eq!(m.rtpmap(8).unwrap().name, "PCMA", "static payload types are implied");
        assert_eq!(m.ptime, Some(20));
        assert_eq!(p.audio_direction(), Direction::SendRecv);
    }

    #[test]
    fn answer_takes_the_offerers_first_supported_codec_and_telephone_event() {
        let offer = parse(PHONE.as_bytes()).unwrap();
        let (sdp, n) =
            answer(&offer, &local(), &[Codec::Pcmu, Codec::Pcma], Direction::SendRecv).unwrap();
        assert_eq!((n.codec, n.pt, n.telephone_event), (Codec::Pcma, 8, Some(101)));
        assert_eq!(n.remote, Some("10.0.0.5:40000".parse().unwrap()));
        let ours = parse(sdp.as_bytes()).unwrap();
        assert_eq!(ours.audio().unwrap().formats, [8, 101]);
        assert_eq!(ours.audio_addr().unwrap(), Some(local().addr));
        // With Opus supported, the phone's first choice wins.
        let (_, n) =
            answer(&offer, &local(), &[Codec::Pcmu, Codec::Opus], Direction::SendRecv).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Opus, 111));
    }

    #[test]
    fn hold_and_resume_directions_are_mirrored() {
        for (offered, answered) in [
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
            ("sendrecv", Direction::SendRecv),
        ] {
            let sdp = SIPP.replace(
                "a=rtpmap:0 PCMU/8000\r\n",
                &format!("a=rtpmap:0 PCMU/8000\r\na={offered}\r\n"),
            );
            let offer = parse(sdp.as_bytes()).unwrap();
            let (text, n) = answer(&offer, &local(), &[Codec::Pcmu], Direction::SendRecv).unwrap();
            assert_eq!(n.direction, answered, "{offered}");
            assert!(text.contains(&format!("a={}\r\n", answered.as_str())));
        }
        // RFC 2543 hold: c=0.0.0.0 means "do not send".
        let held =
            parse(SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0").as_bytes()).unwrap();
        assert_eq!(held.audio_addr().unwrap(), None);
    }

    #[test]
    fn no_common_codec_names_what_was_offered() {
        let sdp = SIPP.replace("RTP/AVP 0", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000\r\n", "");
        let offer = parse(sdp.as_bytes()).unwrap();
        let err = answer(&offer, &local(), &[Codec::Pcmu], Direction::SendRecv).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec("G729".into()));
    }

    #[test]
    fn our_offer_round_trips_and_an_answer_is_accepted() {
        let text = offer(&local(), &[Codec::Pcmu, Codec::Pcma], Direction::SendRecv);
        let ours = parse(text.as_bytes()).unwrap();
        assert_eq!(ours.audio().unwrap().formats, [0, 8, TELEPHONE_EVENT_PT]);
        let (reply, _) = answer(
            &ours,
            &Local { addr: "198.51.100.2:7000".parse().unwrap(), session_id: 1, version: 1 },
            &[Codec::Pcma],
            Direction::SendRecv,
        )
        .unwrap();
        let n = accept(
            &parse(reply.as_bytes()).unwrap(),
            &[Codec::Pcmu, Codec::Pcma],
            Direction::SendRecv,
        )
        .unwrap();
        assert_eq!((n.codec, n.pt, n.telephone_event), (Codec::Pcma, 8, Some(TELEPHONE_EVENT_PT)));
        assert_eq!(n.remote, Some("198.51.100.2:7000".parse().unwrap()));
    }

    #[test]
    fn malformed_lines_are_errors_never_panics() {
        for bad in [
            "v=0\r\nm=audio x RTP/AVP 0\r\n",
            "v=0\r\nm=audio 1 RTP/AVP 300\r\n",
            "v=0\r\nc=IN IP4 nonsense\r\n",
            "v=0\r\nc=IN IP6 127.0.0.1\r\n",
            "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0\r\n",
            "v=1\r\n",
            "no equals sign",
            "",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&[0xff, 0xfe]), Err(SdpError::NotText));
        // Every prefix of a valid body parses or fails cleanly.
        for i in 0..PHONE.len() {
            let _ = parse(&PHONE.as_bytes()[..i]);
        }
    }
}
