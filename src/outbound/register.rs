//! The REGISTER of an Outbound flow (RFC 5626 §4.2) and what its answer
//! says (RFC 3261 §10.3, RFC 5626 §4.2.1, §5.4).

use std::time::Duration;

use crate::endpoint::Transport;
use crate::sip::{self, Response, BRANCH_MAGIC};

/// The parts of a registration that stay the same across its REGISTERs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The address-of-record, e.g. `sip:alice@example.test` (To and From).
    pub aor: String,
    /// The registrar's URI (the Request-URI), e.g. `sip:example.test`.
    pub registrar: String,
    /// The instance ID, `urn:uuid:…` (RFC 5626 §4.1), the same for every
    /// flow and every run of the same UA.
    pub instance: String,
    /// The From tag.
    pub from_tag: String,
    /// The expiry to ask for.
    pub expires: Duration,
}

/// One REGISTER on one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest<'a> {
    /// The registration.
    pub registration: &'a Registration,
    /// The flow's `reg-id` (1, 2).
    pub reg_id: u32,
    /// The flow's transport (Via and the Contact's `transport`).
    pub transport: Transport,
    /// Via sent-by and Contact host: a host name or an IP literal
    /// (IPv6 in brackets).
    pub local_host: String,
    /// The local port.
    pub local_port: u16,
    /// The flow's Call-ID: the same for every REGISTER of the flow (RFC
    /// 3261 §10.2), different between flows, since each flow's binding
    /// (instance, reg-id) has its own CSeq order at the registrar.
    pub call_id: String,
    /// The CSeq number (one more for every REGISTER of the Call-ID).
    pub cseq: u32,
    /// The Via branch (fresh per request; starts with the magic cookie).
    pub branch: String,
    /// `Expires: 0` to unregister.
    pub unregister: bool,
    /// An `Authorization` or `Proxy-Authorization` header (name, value).
    pub authorization: Option<(&'static str, String)>,
}

impl RegisterRequest<'_> {
    /// A fresh branch for a new REGISTER.
    pub fn new_branch() -> String {
        format!("{BRANCH_MAGIC}{}", sip::random_token(22))
    }

    /// The Contact value: the `ob` URI parameter, `reg-id` and
    /// `+sip.instance` (RFC 5626 §4.2), and the expiry asked for.
    pub fn contact(&self) -> String {
        let user = aor_user(&self.registration.aor).unwrap_or("siprace");
        let transport = match self.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", t.as_str()),
        };
        format!(
            "<sip:{user}@{host}:{port}{transport};ob>;reg-id={reg_id};+sip.instance=\"<{instance}>\";expires={expires}",
            host = self.local_host,
            port = self.local_port,
            reg_id = self.reg_id,
            instance = self.registration.instance,
            expires = self.expires_secs(),
        )
    }

    fn expires_secs(&self) -> u64 {
        if self.unregister {
            0
        } else {
            self.registration.expires.as_secs()
        }
    }

    /// The request on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let r = self.registration;
        let mut out = format!(
            "REGISTER {registrar} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {host}:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             To: <{aor}>\r\n\
             From: <{aor}>;tag={tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: {contact}\r\n\
             Expires: {expires}\r\n\
             Supported: outbound, path\r\n\
             User-Agent: {ua}\r\n",
            registrar = r.registrar,
            transport = self.transport.via_token(),
            host = self.local_host,
            port = self.local_port,
            branch = self.branch,
            aor = r.aor,
            tag = r.from_tag,
            call_id = self.call_id,
            cseq = self.cseq,
            contact = self.contact(),
            expires = self.expires_secs(),
            ua = sip::user_agent(),
        );
        if let Some((name, value)) = &self.authorization {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

/// The user part of a `sip:`/`sips:` AOR.
fn aor_user(aor: &str) -> Option<&str> {
    let rest = aor
        .strip_prefix("sip:")
        .or_else(|| aor.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    (!user.is_empty()).then_some(user)
}

/// What the registrar answered to a flow's REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 2xx: registered for `expires`; `flow_timer` if the registrar sent
    /// one; `outbound` if it confirmed Outbound (`Require: outbound`).
    Registered {
        /// The expiry granted to our contact.
        expires: Duration,
        /// The `Flow-Timer` header (RFC 5626 §5.4).
        flow_timer: Option<Duration>,
        /// `Require: outbound` was present.
        outbound: bool,
    },
    /// 401 or 407: answer the challenges in this header.
    Challenged {
        /// `Authorization` (401) or `Proxy-Authorization` (407).
        answer_header: &'static str,
        /// The challenge values, in order.
        challenges: Vec<String>,
    },
    /// Any other final status.
    Rejected {
        /// The status.
        status: u16,
        /// Why, in words (the reason phrase, or what 439 means).
        reason: String,
    },
}

/// Reads a final response to `req`. Provisional responses are `None`.
pub fn outcome(response: &Response, req: &RegisterRequest<'_>) -> Option<RegisterOutcome> {
    match response.status {
        100..=199 => None,
        200..=299 => {
            let expires = granted_expiry(response, req).unwrap_or(req.registration.expires);
            let flow_timer = response
                .headers
                .get("Flow-Timer")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs);
            let outbound = response.headers.get_all("Require").any(|v| {
                sip::split_comma_list(v)
                    .iter()
                    .any(|o| o.trim().eq_ignore_ascii_case("outbound"))
            });
            Some(RegisterOutcome::Registered {
                expires,
                flow_timer,
                outbound,
            })
        }
        401 | 407 => {
            let (challenge, answer_header) = if response.status == 401 {
                ("WWW-Authenticate", "Authorization")
            } else {
                ("Proxy-Authenticate", "Proxy-Authorization")
            };
            Some(RegisterOutcome::Challenged {
                answer_header,
                challenges: response
                    .headers
                    .get_all(challenge)
                    .map(str::to_string)
                    .collect(),
            })
        }
        status => Some(RegisterOutcome::Rejected {
            status,
            reason: if status == 439 {
                "the first hop lacks Outbound support (RFC 5626 §11.6)".to_string()
            } else {
                response.reason.clone()
            },
        }),
    }
}

/// The `expires` the 200 gives our contact: the Contact entry with our
/// instance and reg-id, else the Expires header (RFC 3261 §10.2.4).
fn granted_expiry(response: &Response, req: &RegisterRequest<'_>) -> Option<Duration> {
    let instance = format!("<{}>", req.registration.instance);
    let reg_id = req.reg_id.to_string();
    let ours = response
        .headers
        .get_all("Contact")
        .flat_map(sip::split_comma_list)
        .find(|c| {
            let params = contact_params(c);
            params.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("+sip.instance") && v.trim_matches('"') == instance
            }) && params
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("reg-id") && *v == reg_id)
        });
    let secs = match ours {
        Some(c) => contact_params(c)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.parse::<u64>().ok()),
        None => response
            .headers
            .get("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok()),
    };
    secs.map(Duration::from_secs)
}

/// The header parameters after a Contact's `<uri>` (`;name=value`).
pub(crate) fn contact_params(contact: &str) -> Vec<(&str, &str)> {
    let after_uri = contact.find('>').map_or(contact, |i| &contact[i + 1..]);
    after_uri
        .split(';')
        .skip(1)
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (n.trim(), v.trim())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            aor: "sip:alice@example.test".into(),
            registrar: "sip:example.test".into(),
            instance: "urn:uuid:00000000-0000-1000-8000-000A95A0E128".into(),
            from_tag: "t1".into(),
            expires: Duration::from_secs(600),
        }
    }

    fn request(reg: &Registration, reg_id: u32) -> RegisterRequest<'_> {
        RegisterRequest {
            registration: reg,
            reg_id,
            transport: Transport::Tcp,
            local_host: "ua.example.test".into(),
            local_port: 40001,
            call_id: "c1@siprace".into(),
            cseq: 3,
            branch: "z9hG4bKabc".into(),
            unregister: false,
            authorization: None,
        }
    }

    #[test]
    fn the_register_carries_instance_reg_id_ob_and_supported() {
        let reg = registration();
        let bytes = request(&reg, 2).to_bytes();
        let parsed = sip::parse_request(&bytes).expect("a valid request");
        assert_eq!(parsed.method, "REGISTER");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("REGISTER sip:example.test SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\r\nContact: <sip:alice@ua.example.test:40001;transport=tcp;ob>;reg-id=2;\
             +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";expires=600\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("\r\nSupported: outbound, path\r\n"));
        assert!(
            text.contains("\r\nVia: SIP/2.0/TCP ua.example.test:40001;branch=z9hG4bKabc;rport\r\n")
        );
        assert!(text.contains("\r\nCSeq: 3 REGISTER\r\n"));
    }

    #[test]
    fn unregister_asks_for_zero_and_authorization_is_added() {
        let reg = registration();
        let mut req = request(&reg, 1);
        req.unregister = true;
        req.authorization = Some(("Authorization", "Digest username=\"alice\"".into()));
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(
            text.contains(";expires=0\r\n") && text.contains("\r\nExpires: 0\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAuthorization: Digest username=\"alice\"\r\n"));
    }

    fn response(status: u16, headers: &str) -> Response {
        let text = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/TCP ua.example.test:40001;branch=z9hG4bKabc\r\n\
             Call-ID: c1@siprace\r\nCSeq: 3 REGISTER\r\nFrom: <sip:alice@example.test>;tag=t1\r\n\
             To: <sip:alice@example.test>;tag=s\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        sip::parse_response(text.as_bytes()).expect("a valid response")
    }

    #[test]
    fn the_200_gives_our_contacts_expiry_and_the_flow_timer() {
        let reg = registration();
        let req = request(&reg, 2);
        let r = response(
            200,
            "Contact: <sip:alice@ua.example.test:40001;transport=tcp;ob>;reg-id=1;\
             +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";expires=500, \
             <sip:alice@ua.example.test:40001;transport=tcp;ob>;reg-id=2;\
             +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";expires=300\r\n\
             Expires: 900\r\nFlow-Timer: 25\r\nRequire: outbound\r\n",
        );
        assert_eq!(
            outcome(&r, &req),
            Some(RegisterOutcome::Registered {
                expires: Duration::from_secs(300),
                flow_timer: Some(Duration::from_secs(25)),
                outbound: true,
            })
        );
        // No Contact of ours: the Expires header; no Flow-Timer, no Require.
        let r = response(200, "Expires: 900\r\n");
        assert_eq!(
            outcome(&r, &req),
            Some(RegisterOutcome::Registered {
                expires: Duration::from_secs(900),
                flow_timer: None,
                outbound: false,
            })
        );
    }

    #[test]
    fn challenges_rejections_and_provisionals() {
        let reg = registration();
        let req = request(&reg, 1);
        let r = response(
            407,
            "Proxy-Authenticate: Digest realm=\"a\", nonce=\"1\", algorithm=SHA-256\r\n\
             Proxy-Authenticate: Digest realm=\"a\", nonce=\"2\"\r\n",
        );
        assert_eq!(
            outcome(&r, &req),
            Some(RegisterOutcome::Challenged {
                answer_header: "Proxy-Authorization",
                challenges: vec![
                    "Digest realm=\"a\", nonce=\"1\", algorithm=SHA-256".into(),
                    "Digest realm=\"a\", nonce=\"2\"".into()
                ],
            })
        );
        assert!(matches!(
            outcome(&response(439, ""), &req),
            Some(RegisterOutcome::Rejected { status: 439, reason }) if reason.contains("Outbound")
        ));
        assert_eq!(outcome(&response(100, ""), &req), None);
    }
}
