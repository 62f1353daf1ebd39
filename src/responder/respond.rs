//! The responder's answers, as pure functions of the bytes received: what a
//! message is (for the counters) and the response it gets, if any.

use std::net::SocketAddr;

use super::bindings::FlowRef;
use super::registrar::Registrar;
use crate::sip::{
    address_uri, is_sip_uri, parse_request, reject_invalid_request, split_comma_list, Request, Via,
    ALLOWED_METHODS,
};

/// What a received message was, as the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Too large, unparsable, or no request (a response, garbage).
    Invalid,
    /// A request; `options` if it is an OPTIONS.
    Request { options: bool },
}

/// A message's kind and the answer it gets, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub received: Received,
    pub reply: Option<Vec<u8>>,
    /// The request's top Via entry (for the RFC 5923 `alias`); None for
    /// anything that is no valid request.
    pub top_via: Option<Via>,
}

/// How the responder answers `bytes` from `peer`. A message larger than
/// `max_message` is dropped. One that is no valid request gets a 400 (or
/// 505) when it looks enough like a request to be answered; garbage and
/// responses get nothing. A request gets [`respond`]'s answer. A `silent`
/// responder answers nothing at all.
///
/// With a `registrar` (and the flow the message came over), a REGISTER
/// gets the registrar's answer instead of [`respond`]'s echo.
pub(crate) fn answer(
    bytes: &[u8],
    peer: SocketAddr,
    silent: bool,
    max_message: usize,
    registrar: Option<(&Registrar, FlowRef)>,
) -> Answer {
    let invalid = |reply| Answer {
        received: Received::Invalid,
        reply,
        top_via: None,
    };
    if bytes.len() > max_message {
        return invalid(None);
    }
    let req = match parse_request(bytes) {
        Ok(req) => req,
        Err(_) if silent => return invalid(None),
        Err(err) => {
            let reply = reject_invalid_request(bytes, Some(peer));
            tracing::debug!(%peer, %err, answered = reply.is_some(), "an invalid message");
            return invalid(reply);
        }
    };
    Answer {
        received: Received::Request {
            options: req.method == "OPTIONS",
        },
        reply: match registrar {
            _ if silent => None,
            Some((registrar, flow)) if req.method == "REGISTER" => {
                Some(refusal(&req, Some(peer)).unwrap_or_else(|| {
                    registrar.on_register(&req, flow, std::time::Instant::now())
                }))
            }
            _ => respond(&req, peer),
        },
        top_via: req
            .vias
            .first()
            .and_then(|line| split_comma_list(line).first().and_then(|v| Via::parse(v))),
    }
}

/// The methods the responder recognises but does not implement (405, with Allow).
const EXTENSION_METHODS: [&str; 8] = [
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "PUBLISH",
];

/// The response the responder gives to `req`, if any (never to ACK).
///
/// The checks run in RFC 3261 §8.2 order, so the answer names the first
/// thing wrong: method (§8.2.1: 405 or 501), Request-URI scheme (§8.2.2.1:
/// 416), Require (§8.2.2.3: 420, as no extension is supported), body type
/// (§8.2.3: 415, SDP only). Then OPTIONS gets 200, REGISTER 200 (echoing
/// its Contacts) if its To is a SIP address-of-record (else 400, RFC 4475
/// §3.3.4), INVITE 486, BYE and CANCEL 481.
pub fn respond(req: &Request, peer: SocketAddr) -> Option<Vec<u8>> {
    let src = Some(peer);
    let method = req.method.as_str();
    if method == "ACK" {
        return None;
    }
    if let Some(refused) = refusal(req, src) {
        return Some(refused);
    }
    let resp = match method {
        "OPTIONS" => return Some(req.options_ok(src)),
        "REGISTER" => {
            if !address_uri(&req.to).is_some_and(is_sip_uri) {
                req.response(400)
                    .reason("Bad Request (To is not a SIP address-of-record)")
                    .received(src)
            } else {
                let mut b = req.response(200).received(src);
                for contact in req.headers.get_all("contact") {
                    b = b.header("Contact", contact);
                }
                b
            }
        }
        "INVITE" => req.response(486).received(src),
        _ => req.response(481).received(src), // BYE, CANCEL: no dialog, no transaction
    };
    Some(resp.build())
}

/// RFC 3261 §8.2's checks every request passes before its method is served
/// (the registrar's REGISTERs too, §10.3 step 2): a method we know (405 or
/// 501), a SIP Request-URI (416), nothing required that we lack (420), a
/// body we can read (415). The refusal to send, if any. Not for ACK.
fn refusal(req: &Request, src: Option<SocketAddr>) -> Option<Vec<u8>> {
    let method = req.method.as_str();
    if !matches!(method, "OPTIONS" | "REGISTER" | "INVITE" | "BYE" | "CANCEL") {
        let status = if EXTENSION_METHODS.contains(&method) {
            405
        } else {
            501
        };
        return Some(
            req.response(status)
                .received(src)
                .header("Allow", ALLOWED_METHODS)
                .build(),
        );
    }
    if !is_sip_uri(&req.uri) {
        return Some(req.response(416).received(src).build());
    }
    // ACK and CANCEL never carry Require (RFC 3261 §8.2.2.3).
    let required: Vec<&str> = req
        .headers
        .get_all("require")
        .flat_map(split_comma_list)
        .collect();
    if !required.is_empty() && method != "CANCEL" {
        return Some(
            req.response(420)
                .received(src)
                .header("Unsupported", required.join(", "))
                .build(),
        );
    }
    let sdp = req.headers.get("content-type").is_none_or(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/sdp")
    });
    if !req.body.is_empty() && !sdp {
        return Some(
            req.response(415)
                .received(src)
                .header("Accept", "application/sdp")
                .build(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str) -> Request {
        let raw = format!(
            "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKm;rport\r\n\
             From: <sip:a@x>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m@x\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:a@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
        );
        parse_request(raw.as_bytes()).unwrap()
    }

    #[test]
    fn the_registrar_refuses_what_any_request_is_refused_for() {
        use super::super::registrar::{Registrar, RegistrarConfig};
        let registrar = Registrar::new(RegistrarConfig::default());
        let flow = FlowRef {
            transport: crate::endpoint::Transport::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            peer: "127.0.0.1:5999".parse().unwrap(),
            connection: None,
        };
        let peer = flow.peer;
        let register = |extra: &str| {
            format!(
                "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKr\r\n\
                 From: <sip:a@x>;tag=f\r\nTo: <sip:a@x>\r\nCall-ID: r@x\r\nCSeq: 1 REGISTER\r\n\
                 Contact: <sip:a@127.0.0.1:5999>\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        let status = |raw: String| {
            let a = answer(raw.as_bytes(), peer, false, 65535, Some((&registrar, flow)));
            crate::sip::parse_response(&a.reply.expect("an answer"))
                .unwrap()
                .status
        };
        assert_eq!(status(register("Require: foo\r\n")), 420);
        assert_eq!(status(register("")), 200);
        assert_eq!(registrar.bindings_of("sip:a@x").len(), 1);
    }

    #[test]
    fn what_a_message_is_and_what_it_gets() {
        let peer: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        let options = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKm\r\n\
             From: <sip:a@x>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m@x\r\nCSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n";
        // The status code from the status line: a 400 echoes the broken
        // header, so the whole response need not parse.
        let status = |a: &Answer| {
            a.reply.as_ref().map(|r| {
                let line = std::str::from_utf8(r).unwrap().lines().next().unwrap();
                line.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
            })
        };
        let a = answer(options.as_bytes(), peer, false, 65_535, None);
        assert_eq!(a.received, Received::Request { options: true });
        assert_eq!(status(&a), Some(200));
        // Silent: counted as a request, never answered.
        let a = answer(options.as_bytes(), peer, true, 65_535, None);
        assert_eq!(
            (a.received, a.reply),
            (Received::Request { options: true }, None)
        );
        // Over the size bound: dropped unread.
        let a = answer(options.as_bytes(), peer, false, options.len() - 1, None);
        assert_eq!((a.received, a.reply), (Received::Invalid, None));
        // A request with a broken header gets a 400; garbage and responses nothing.
        let broken = options.replacen("CSeq: 1 OPTIONS", "CSeq: x", 1);
        let a = answer(broken.as_bytes(), peer, false, 65_535, None);
        assert_eq!((a.received, status(&a)), (Received::Invalid, Some(400)));
        assert_eq!(
            answer(broken.as_bytes(), peer, true, 65_535, None).reply,
            None
        );
        for junk in [
            &b"\x00\x01garbage"[..],
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        ] {
            let a = answer(junk, peer, false, 65_535, None);
            assert_eq!((a.received, a.reply), (Received::Invalid, None));
        }
    }

    #[test]
    fn every_method_gets_a_sensible_answer() {
        let peer: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        let status = |m: &str| {
            respond(&request(m), peer).map(|b| crate::sip::parse_response(&b).unwrap().status)
        };
        assert_eq!(status("OPTIONS"), Some(200));
        assert_eq!(status("REGISTER"), Some(200));
        assert_eq!(status("INVITE"), Some(486));
        assert_eq!(status("BYE"), Some(481));
        assert_eq!(status("CANCEL"), Some(481));
        assert_eq!(status("MESSAGE"), Some(405));
        assert_eq!(status("FROB"), Some(501));
        assert_eq!(status("ACK"), None);
        let reg =
            crate::sip::parse_response(&respond(&request("REGISTER"), peer).unwrap()).unwrap();
        assert_eq!(reg.headers.get("contact"), Some("<sip:a@127.0.0.1:5999>"));
    }

    /// `request(method)` with one line replaced.
    fn altered(method: &str, from: &str, to: &str) -> Request {
        let raw = format!(
            "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKm\r\n\
             From: <sip:a@x>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: m@x\r\nCSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        assert!(raw.contains(from), "{from}");
        parse_request(raw.replacen(from, to, 1).as_bytes()).unwrap()
    }

    #[test]
    fn checks_run_in_rfc3261_order() {
        let peer: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        /// A header the answer must carry.
        type Carries = Option<(&'static str, &'static str)>;
        // (method, line replaced, by, status, a header the answer carries)
        let cases: [(&str, &str, &str, u16, Carries); 8] = [
            // §8.2.2.1: a scheme other than sip/sips.
            (
                "OPTIONS",
                "OPTIONS sip:x@127.0.0.1",
                "OPTIONS mailto:x@example.test",
                416,
                None,
            ),
            // §8.2.2.3: every Require option-tag is unsupported, and listed...
            (
                "OPTIONS",
                "Content-Length: 0",
                "Require: foo, bar\r\nRequire: baz\r\nProxy-Require: p\r\nContent-Length: 0",
                420,
                Some(("unsupported", "foo, bar, baz")),
            ),
            // ...except on CANCEL; Proxy-Require is for proxies.
            (
                "CANCEL",
                "Content-Length: 0",
                "Require: foo\r\nContent-Length: 0",
                481,
                None,
            ),
            (
                "OPTIONS",
                "Content-Length: 0",
                "Proxy-Require: foo\r\nContent-Length: 0",
                200,
                None,
            ),
            // §8.2.3: a body that is not SDP; SDP (with parameters) is fine.
            (
                "INVITE",
                "Content-Length: 0",
                "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
                415,
                Some(("accept", "application/sdp")),
            ),
            (
                "INVITE",
                "Content-Length: 0",
                "Content-Type: Application/SDP; charset=x\r\nContent-Length: 3\r\n\r\nv=0",
                486,
                None,
            ),
            // The method comes first: an unknown method with Require is a 501.
            (
                "FROB",
                "Content-Length: 0",
                "Require: foo\r\nContent-Length: 0",
                501,
                None,
            ),
            // REGISTER needs a SIP address-of-record in To.
            (
                "REGISTER",
                "To: <sip:x@127.0.0.1>",
                "To: <mailto:x@example.test>",
                400,
                None,
            ),
        ];
        for (method, from, to, status, header) in cases {
            let answer = respond(&altered(method, from, to), peer).unwrap();
            let r = crate::sip::parse_response(&answer).unwrap();
            assert_eq!(r.status, status, "{method} with {to:?}");
            if let Some((name, value)) = header {
                assert_eq!(r.headers.get(name), Some(value), "{method} with {to:?}");
            }
        }
    }
}
