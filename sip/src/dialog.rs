//! RFC 3261 §12 dialogs: the state two user agents share for one call, and how in-dialog
//! requests (BYE, re-INVITE, REFER, the ACK of a 2xx) are addressed and sequenced.
//!
//! Pure data and rules, like the transactions: the UA core creates a dialog when an INVITE
//! is answered (UAS) or a response with a To tag arrives (UAC), checks each in-dialog request
//! with [`Dialog::handle_request`], and builds its own with [`Dialog::request`].

use crate::message::{HeaderName, Message, Method, StartLine};

/// Identifies a dialog from our side: Call-ID, our tag, the peer's tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog an incoming in-dialog request belongs to (our tag is in its To).
    pub fn of_request(request: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.call_id.clone(),
            local_tag: request.to.tag()?.to_owned(),
            remote_tag: request.from.tag()?.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// A 2xx was sent or received.
    Confirmed,
    Terminated,
}

/// Why an in-dialog request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error("the INVITE has no Contact")]
    NoContact,
    #[error("the response has no To tag")]
    NoRemoteTag,
    #[error("the request has no From tag")]
    NoFromTag,
    /// RFC 3261 §12.2.2: a lower CSeq than the last one is answered 500.
    #[error("CSeq {got} is not above {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("the dialog is terminated")]
    Terminated,
}

impl DialogError {
    /// The response code for a refused in-dialog request.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::CSeqOutOfOrder { .. } => 500,
            DialogError::Terminated => 481,
            _ => 400,
        }
    }
}

/// One dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our From value in requests we send (URI and tag), as a header value.
    local: String,
    /// The peer's address as a header value (their tag included).
    remote: String,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    /// Where in-dialog requests go: the peer's Contact URI (updated by target refreshes).
    pub remote_target: String,
    /// Record-Route URIs (with their `<>`), in the order requests must carry them.
    pub route_set: Vec<String>,
}

fn contact_uri(message: &Message) -> Option<String> {
    message.contact.first().map(|c| c.uri.clone())
}

fn record_routes(message: &Message) -> Vec<String> {
    message
        .header_values(&HeaderName::RecordRoute)
        .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

fn header(message: &Message, name: &HeaderName) -> String {
    message.header_values(name).next().unwrap_or_default().to_owned()
}

impl Dialog {
    /// The UAS side of a dialog created by an INVITE we answer with `local_tag` in the To
    /// (`confirmed`: a 2xx, otherwise an early dialog from a 1xx).
    pub fn uas(invite: &Message, local_tag: &str, confirmed: bool) -> Result<Dialog, DialogError> {
        let remote_tag = invite.from.tag().ok_or(DialogError::NoFromTag)?.to_owned();
        let remote_target = contact_uri(invite).ok_or(DialogError::NoContact)?;
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id.clone(),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            state: if confirmed { DialogState::Confirmed } else { DialogState::Early },
            local: format!("{};tag={local_tag}", header(invite, &HeaderName::To)),
            remote: header(invite, &HeaderName::From),
            // Our own requests in this dialog start their own CSeq space.
            local_cseq: 1,
            remote_cseq: Some(invite.cseq.seq),
            remote_target,
            route_set: record_routes(invite),
        })
    }

    /// The UAC side, from the INVITE we sent and a response carrying the peer's To tag.
    pub fn uac(invite: &Message, response: &Message) -> Result<Dialog, DialogError> {
        let remote_tag = response.to.tag().ok_or(DialogError::NoRemoteTag)?.to_owned();
        let local_tag = invite.from.tag().ok_or(DialogError::NoFromTag)?.to_owned();
        let confirmed = response.status().is_some_and(|c| (200..300).contains(&c));
        let mut route_set = record_routes(response);
        route_set.reverse();
        Ok(Dialog {
            id: DialogId { call_id: invite.call_id.clone(), local_tag, remote_tag },
            state: if confirmed { DialogState::Confirmed } else { DialogState::Early },
            local: header(invite, &HeaderName::From),
            remote: header(response, &HeaderName::To),
            local_cseq: invite.cseq.seq,
            remote_cseq: None,
            remote_target: contact_uri(response).unwrap_or_else(|| match &invite.start {
                StartLine::Request { uri, .. } => uri.clone(),
                StartLine::Response { .. } => String::new(),
            }),
            route_set,
        })
    }

    /// A 2xx confirmed the early dialog.
    pub fn confirm(&mut self) {
        if self.state == DialogState::Early {
            self.state = DialogState::Confirmed;
        }
    }

    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// Checks an incoming in-dialog request and updates the dialog: CSeq must increase
    /// (ACK and CANCEL reuse theirs), BYE terminates, a re-INVITE or UPDATE with a Contact
    /// refreshes the remote target.
    pub fn handle_request(&mut self, request: &Message) -> Result<(), DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        let method = request.method().cloned().unwrap_or(Method::Ack);
        if !matches!(method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_cseq
                && request.cseq.seq <= last
            {
                return Err(DialogError::CSeqOutOfOrder { got: request.cseq.seq, last });
            }
            self.remote_cseq = Some(request.cseq.seq);
        }
        match method {
            Method::Bye => self.terminate(),
            Method::Invite | Method::Update => {
                if let Some(target) = contact_uri(request) {
                    self.remote_target = target;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Builds an in-dialog request. `via` is our Via value (with a fresh branch), `contact`
    /// our Contact URI; `extra` headers and `body` (with its content type) are appended.
    /// The ACK of a 2xx reuses the INVITE's CSeq number (`ack_of`).
    pub fn request(
        &mut self,
        method: Method,
        via: &str,
        contact: &str,
        extra: &[(HeaderName, String)],
        body: Option<(&str, &[u8])>,
        ack_of: Option<u32>,
    ) -> Vec<u8> {
        let seq = match (&method, ack_of) {
            (Method::Ack, Some(seq)) => seq,
            _ => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        // Loose routing (;lr) keeps the remote target as Request-URI; a strict router in
        // front gets the Request-URI and the target moves to the end of the Route set.
        let strict = self.route_set.first().is_some_and(|r| !r.contains(";lr"));
        let (uri, routes): (String, Vec<String>) = if strict {
            let first = self.route_set[0].trim_start_matches('<').trim_end_matches('>').to_owned();
            let mut rest: Vec<String> = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut out = format!("{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n");
        for r in &routes {
            out.push_str(&format!("Route: {r}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\nContact: <{contact}>\r\n",
            self.local, self.remote, self.id.call_id
        ));
        for (name, value) in extra {
            out.push_str(&format!("{}: {value}\r\n", name.as_str()));
        }
        let mut bytes = match body {
            Some((content_type, body)) => {
                out.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                ));
                let mut b = out.into_bytes();
                b.extend_from_slice(body);
                b
            }
            None => {
                out.push_str("Content-Length: 0\r\n\r\n");
                out.into_bytes()
            }
        };
        bytes.shrink_to_fit();
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    const INVITE: &str = "INVITE sip:hello@voxide.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-1\r\n\
        Record-Route: <sip:p2.test;lr>, <sip:p1.test;lr>\r\n\
        From: \"Alice\" <sip:alice@a.test>;tag=fa\r\n\
        To: <sip:hello@voxide.test>\r\n\
        Call-ID: dlg-1\r\n\
        CSeq: 10 INVITE\r\n\
        Contact: <sip:alice@10.0.0.9:5070>\r\n\
        Content-Length: 0\r\n\r\n";

    fn msg(s: &str) -> Message {
        parse(s.as_bytes()).expect("valid message")
    }

    fn in_dialog(method: &str, cseq: u32, extra: &str) -> Message {
        msg(&format!(
            "{method} sip:hello@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-{cseq}\r\n\
             From: <sip:alice@a.test>;tag=fa\r\nTo: <sip:hello@voxide.test>;tag=vx\r\n\
             Call-ID: dlg-1\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn uas_bye_goes_to_the_contact_through_the_record_route_in_order() {
        let mut d = Dialog::uas(&msg(INVITE), "vx", true).unwrap();
        assert_eq!(
            d.id,
            DialogId { call_id: "dlg-1".into(), local_tag: "vx".into(), remote_tag: "fa".into() }
        );
        let bye = msg(std::str::from_utf8(&d.request(
            Method::Bye,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-b1",
            "sip:hello@192.0.2.1:5060",
            &[],
            None,
            None,
        ))
        .unwrap());
        assert!(
            matches!(&bye.start, StartLine::Request { uri, .. } if uri == "sip:alice@10.0.0.9:5070")
        );
        let routes: Vec<&str> = bye.header_values(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:p2.test;lr>", "<sip:p1.test;lr>"]);
        assert_eq!(bye.from.tag(), Some("vx"), "our tag in From");
        assert_eq!(bye.to.tag(), Some("fa"), "their tag in To");
        assert_eq!(bye.to.display.as_deref(), Some("Alice"));
        assert_eq!(bye.cseq, crate::message::CSeq { seq: 2, method: Method::Bye });
        let next = msg(std::str::from_utf8(&d.request(
            Method::Info,
            "SIP/2.0/UDP h;branch=z9hG4bK-b2",
            "sip:h",
            &[],
            None,
            None,
        ))
        .unwrap());
        assert_eq!(next.cseq.seq, 3, "our CSeq increases per request");
    }

    #[test]
    fn uac_reverses_the_route_set_and_acks_with_the_invite_cseq() {
        let invite =
            msg(&INVITE.replace("Record-Route: <sip:p2.test;lr>, <sip:p1.test;lr>\r\n", ""));
        let ok = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-1\r\n\
            Record-Route: <sip:p2.test;lr>\r\nRecord-Route: <sip:p1.test;lr>\r\n\
            From: \"Alice\" <sip:alice@a.test>;tag=fa\r\nTo: <sip:hello@voxide.test>;tag=tb\r\n\
            Call-ID: dlg-1\r\nCSeq: 10 INVITE\r\nContact: <sip:bob@198.51.100.7>\r\nContent-Length: 0\r\n\r\n");
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.route_set, ["<sip:p1.test;lr>", "<sip:p2.test;lr>"]);
        let ack = msg(std::str::from_utf8(&d.request(
            Method::Ack,
            "SIP/2.0/UDP h;branch=z9hG4bK-a",
            "sip:h",
            &[],
            None,
            Some(10),
        ))
        .unwrap());
        assert_eq!(ack.cseq.seq, 10);
        assert!(
            matches!(&ack.start, StartLine::Request { uri, .. } if uri == "sip:bob@198.51.100.7")
        );
        let bye = msg(std::str::from_utf8(&d.request(
            Method::Bye,
            "SIP/2.0/UDP h;branch=z9hG4bK-b",
            "sip:h",
            &[],
            None,
            None,
        ))
        .unwrap());
        assert_eq!(bye.cseq.seq, 11);
    }

    #[test]
    fn strict_routers_get_the_request_uri() {
        let invite =
            msg(&INVITE.replace("<sip:p2.test;lr>, <sip:p1.test;lr>", "<sip:strict.test>"));
        let mut d = Dialog::uas(&invite, "vx", true).unwrap();
        let bye = msg(std::str::from_utf8(&d.request(
            Method::Bye,
            "SIP/2.0/UDP h;branch=z9hG4bK-s",
            "sip:h",
            &[],
            None,
            None,
        ))
        .unwrap());
        assert!(matches!(&bye.start, StartLine::Request { uri, .. } if uri == "sip:strict.test"));
        assert_eq!(
            bye.header_values(&HeaderName::Route).collect::<Vec<_>>(),
            ["<sip:alice@10.0.0.9:5070>"]
        );
    }

    #[test]
    fn in_dialog_requests_are_sequenced_and_bye_ends_the_dialog() {
        let mut d = Dialog::uas(&msg(INVITE), "vx", true).unwrap();
        assert_eq!(DialogId::of_request(&in_dialog("BYE", 11, "")), Some(d.id.clone()));
        // A re-INVITE (hold) with a new Contact refreshes the target.
        d.handle_request(&in_dialog("INVITE", 11, "Contact: <sip:alice@10.0.0.10>\r\n")).unwrap();
        assert_eq!(d.remote_target, "sip:alice@10.0.0.10");
        // Its ACK reuses CSeq 11 and is fine.
        d.handle_request(&in_dialog("ACK", 11, "")).unwrap();
        // A stale CSeq is refused with 500.
        let err = d.handle_request(&in_dialog("INFO", 11, "")).unwrap_err();
        assert_eq!(err.status(), 500);
        d.handle_request(&in_dialog("BYE", 12, "")).unwrap();
        assert_eq!(d.state, DialogState::Terminated);
        assert_eq!(d.handle_request(&in_dialog("BYE", 13, "")).unwrap_err().status(), 481);
    }

    #[test]
    fn dialogs_need_the_tags_and_contact_they_are_made_of() {
        assert_eq!(
            Dialog::uas(
                &msg(&INVITE.replace("Contact: <sip:alice@10.0.0.9:5070>\r\n", "")),
                "vx",
                true
            ),
            Err(DialogError::NoContact)
        );
        assert_eq!(
            Dialog::uas(&msg(&INVITE.replace(";tag=fa", "")), "vx", true),
            Err(DialogError::NoFromTag)
        );
        let early = Dialog::uas(&msg(INVITE), "vx", false).unwrap();
        assert_eq!(early.state, DialogState::Early);
    }
}
