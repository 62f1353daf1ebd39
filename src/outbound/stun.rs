//! The part of STUN (RFC 5389) that SIP Outbound's UDP keep-alives use
//! (RFC 5626 §4.4.2): a Binding request without authentication, and the
//! mapped address of its success response. A change of that address is a
//! flow failure (the NAT binding, and with it the flow, is gone).
//!
//! Keep-alives share the UDP 5-tuple with SIP; [`is_stun`] tells the two
//! apart (RFC 5626 §5.1.1: STUN messages start with two zero bits and carry
//! the magic cookie; SIP starts with a letter).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie every RFC 5389 message carries at bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_ERROR_CODE: u16 = 0x0009;

/// A 96-bit STUN transaction ID.
pub type TransactionId = [u8; 12];

/// A fresh random transaction ID (RFC 5389 §6: uniformly random).
pub fn new_transaction_id() -> TransactionId {
    rand::random()
}

/// A Binding request with no attributes.
pub fn binding_request(id: &TransactionId) -> [u8; HEADER_LEN] {
    let mut msg = [0u8; HEADER_LEN];
    msg[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length 0: no attributes.
    msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg[8..20].copy_from_slice(id);
    msg
}

/// True if `bytes` look like a STUN message rather than SIP (or a CRLF
/// keep-alive): the first two bits are zero and the magic cookie is there.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// What a Binding response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingResponse {
    /// A success response with the address the server saw us from.
    Mapped(SocketAddr),
    /// A success response without a (readable) mapped address.
    NoAddress,
    /// An error response, with its code (e.g. 400).
    Error(u16),
}

/// Why bytes are not the response to our request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a STUN message, or a truncated one.
    #[error("not a STUN message: {0}")]
    Malformed(&'static str),
    /// A STUN message, but not a Binding response.
    #[error("not a Binding response (type {0:#06x})")]
    NotBindingResponse(u16),
    /// A Binding response to another transaction.
    #[error("a response to another transaction")]
    OtherTransaction,
}

/// Reads the response to the Binding request `id`. Every length is
/// checked against the datagram, so hostile input is an error, never a
/// panic or an out-of-bounds read.
pub fn parse_binding_response(
    bytes: &[u8],
    id: &TransactionId,
) -> Result<BindingResponse, StunError> {
    if !is_stun(bytes) {
        return Err(StunError::Malformed("no STUN header"));
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    let body_len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if body_len % 4 != 0 || HEADER_LEN + body_len > bytes.len() {
        return Err(StunError::Malformed("bad message length"));
    }
    if kind != BINDING_SUCCESS && kind != BINDING_ERROR {
        return Err(StunError::NotBindingResponse(kind));
    }
    if bytes[8..20] != id[..] {
        return Err(StunError::OtherTransaction);
    }
    let mut mapped = None;
    let mut xor_mapped = None;
    let mut error_code = None;
    let mut rest = &bytes[HEADER_LEN..HEADER_LEN + body_len];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(StunError::Malformed("a truncated attribute header"));
        }
        let attr = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = len.div_ceil(4) * 4;
        if rest.len() < 4 + padded {
            return Err(StunError::Malformed("a truncated attribute"));
        }
        let value = &rest[4..4 + len];
        match attr {
            ATTR_XOR_MAPPED_ADDRESS => xor_mapped = read_address(value, Some(id)),
            ATTR_MAPPED_ADDRESS => mapped = read_address(value, None),
            ATTR_ERROR_CODE if value.len() >= 4 => {
                error_code = Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
            }
            _ => {}
        }
        rest = &rest[4 + padded..];
    }
    if kind == BINDING_ERROR {
        return Ok(BindingResponse::Error(error_code.unwrap_or(0)));
    }
    // RFC 5389 §15.2: XOR-MAPPED-ADDRESS is what servers must send;
    // MAPPED-ADDRESS is for RFC 3489 servers.
    Ok(xor_mapped
        .or(mapped)
        .map_or(BindingResponse::NoAddress, BindingResponse::Mapped))
}

/// The transaction ID of a Binding request, the server side of the
/// keep-alive (a registrar or edge proxy answering RFC 5626 §4.4.2 pings).
/// `None` for anything else: another STUN method or class, a truncated
/// message, or a length that disagrees with the datagram.
pub fn parse_binding_request(bytes: &[u8]) -> Option<TransactionId> {
    if !is_stun(bytes) || u16::from_be_bytes([bytes[0], bytes[1]]) != BINDING_REQUEST {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if body_len % 4 != 0 || HEADER_LEN + body_len != bytes.len() {
        return None;
    }
    bytes[8..20].try_into().ok()
}

/// The Binding success response to request `id`, telling the client the
/// address its request came from (`mapped`) in an XOR-MAPPED-ADDRESS
/// attribute (RFC 5389 §7.3.1, §15.2).
pub fn binding_success(id: &TransactionId, mapped: SocketAddr) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let (family, address): (u8, Vec<u8>) = match mapped.ip() {
        IpAddr::V4(v4) => (
            0x01,
            v4.octets().iter().zip(cookie).map(|(o, k)| o ^ k).collect(),
        ),
        IpAddr::V6(v6) => {
            let key = cookie.iter().chain(id.iter());
            (
                0x02,
                v6.octets().iter().zip(key).map(|(o, k)| o ^ k).collect(),
            )
        }
    };
    let port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let value_len = 4 + address.len();
    let mut msg = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    msg.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    // Always a multiple of 4 (8 or 20 bytes of value): no padding.
    msg.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    msg.extend_from_slice(&cookie);
    msg.extend_from_slice(id);
    msg.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    msg.extend_from_slice(&(value_len as u16).to_be_bytes());
    msg.extend_from_slice(&[0, family]);
    msg.extend_from_slice(&port.to_be_bytes());
    msg.extend_from_slice(&address);
    msg
}

/// Reads a (XOR-)MAPPED-ADDRESS value; `xor_with` is the transaction ID
/// for the XOR form. `None` for an unknown family or a wrong length.
fn read_address(value: &[u8], xor_with: Option<&TransactionId>) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor_with.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (value[1], &value[4..]) {
        (0x01, addr) if addr.len() == 4 => {
            let mut octets: [u8; 4] = addr.try_into().ok()?;
            if xor_with.is_some() {
                octets.iter_mut().zip(cookie).for_each(|(o, k)| *o ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (0x02, addr) if addr.len() == 16 => {
            let mut octets: [u8; 16] = addr.try_into().ok()?;
            if let Some(id) = xor_with {
                let key = cookie.iter().chain(id.iter());
                octets.iter_mut().zip(key).for_each(|(o, k)| *o ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.2's sample IPv4 response, without its MESSAGE-INTEGRITY
    /// and FINGERPRINT attributes (which this client does not check), so
    /// the length field says 28 instead of 60.
    #[test]
    fn rfc5769_ipv4_response() {
        let id: TransactionId = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let mut msg = vec![0x01, 0x01, 0x00, 0x1c, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&[
            0x80, 0x22, 0x00, 0x0b, b't', b'e', b's', b't', b' ', b'v', b'e', b'c', b't', b'o',
            b'r', b' ', // SOFTWARE "test vector" + 1 byte of padding
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ]);
        assert_eq!(
            parse_binding_response(&msg, &id),
            Ok(BindingResponse::Mapped("192.0.2.1:32853".parse().unwrap()))
        );
        let mut other = id;
        other[0] ^= 1;
        assert_eq!(
            parse_binding_response(&msg, &other),
            Err(StunError::OtherTransaction)
        );
    }

    /// An IPv6 XOR-MAPPED-ADDRESS, built by hand: the address XORed with
    /// the cookie and the transaction ID, the port with the cookie's top half.
    #[test]
    fn ipv6_xor_mapped_address() {
        let id: TransactionId = *b"0123456789ab";
        let addr: Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
        let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
        key.extend_from_slice(&id);
        let xored: Vec<u8> = addr.octets().iter().zip(&key).map(|(a, k)| a ^ k).collect();
        let port = 5060u16 ^ 0x2112;
        let mut msg = vec![0x01, 0x01, 0x00, 0x18];
        msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&[0x00, 0x20, 0x00, 0x14, 0x00, 0x02]);
        msg.extend_from_slice(&port.to_be_bytes());
        msg.extend_from_slice(&xored);
        assert_eq!(
            parse_binding_response(&msg, &id),
            Ok(BindingResponse::Mapped(SocketAddr::new(addr.into(), 5060)))
        );
    }

    #[test]
    fn request_layout_and_demultiplexing() {
        let id = new_transaction_id();
        let req = binding_request(&id);
        assert_eq!(&req[0..4], &[0x00, 0x01, 0x00, 0x00]);
        assert!(is_stun(&req));
        assert_eq!(&req[8..], &id);
        assert!(!is_stun(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\n\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
        // Our own request is not a response.
        assert_eq!(
            parse_binding_response(&req, &id),
            Err(StunError::NotBindingResponse(BINDING_REQUEST))
        );
    }

    #[test]
    fn error_responses_and_truncations() {
        let id: TransactionId = [7; 12];
        let mut err = vec![0x01, 0x11, 0x00, 0x08];
        err.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        err.extend_from_slice(&id);
        err.extend_from_slice(&[0x00, 0x09, 0x00, 0x04, 0x00, 0x00, 0x04, 0x00]);
        assert_eq!(
            parse_binding_response(&err, &id),
            Ok(BindingResponse::Error(400))
        );
        // Length beyond the datagram; an attribute beyond the body.
        let mut long = err.clone();
        long[3] = 0x0c;
        assert!(parse_binding_response(&long, &id).is_err());
        let mut cut = err.clone();
        cut[23] = 0x40; // the ERROR-CODE attribute claims 64 bytes
        assert!(parse_binding_response(&cut, &id).is_err());
    }

    /// The server side: a request is recognised, and the success built for
    /// it reads back (through the client's parser) as the peer's address,
    /// in both families; anything but a well-formed Binding request is not
    /// answered.
    #[test]
    fn server_side_request_and_success_round_trip() {
        let id = new_transaction_id();
        let req = binding_request(&id);
        assert_eq!(parse_binding_request(&req), Some(id));
        for peer in ["192.0.2.7:40000", "[2001:db8::7]:5060"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let success = binding_success(&id, peer);
            assert_eq!(success.len() % 4, 0);
            assert_eq!(
                parse_binding_response(&success, &id),
                Ok(BindingResponse::Mapped(peer))
            );
            // A success is not a request.
            assert_eq!(parse_binding_request(&success), None);
        }
        let mut truncated = req.to_vec();
        truncated[3] = 4; // claims an attribute the datagram lacks
        assert_eq!(parse_binding_request(&truncated), None);
        assert_eq!(parse_binding_request(b"\r\n\r\n"), None);
        assert_eq!(parse_binding_request(&req[..19]), None);
    }

    proptest::proptest! {
        #[test]
        fn hostile_datagrams_never_panic(mut bytes in proptest::collection::vec(0u8..=255, 0..120)) {
            let id = [0u8; 12];
            if bytes.len() >= 20 {
                bytes[0] &= 0x01;
                bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                bytes[8..20].copy_from_slice(&id);
            }
            let _ = parse_binding_response(&bytes, &id);
            let _ = parse_binding_request(&bytes);
        }
    }
}
