//! A small hand-written SIP codec (RFC 3261 §7, §20), just what siprace needs:
//!
//! - [`OptionsProbe`]: builds the OPTIONS request a UDP/TCP attempt sends, and
//!   keeps the branch, Call-ID and CSeq a response must match.
//! - [`parse_response`] / [`Response`]: reads a status line and the headers that
//!   identify a transaction.
//! - [`parse_request`] / [`Request`]: reads a request for the responder, and
//!   [`Request::response`] builds the answer to it (RFC 3261 §8.2.6);
//!   [`reject_invalid_request`] builds the 400 (or 505) for what it refused.
//!   The checks follow RFC 3261's grammar where the torture messages of
//!   RFC 4475 and RFC 5118 probe it (see `tests/torture.rs`).
//! - [`StreamFramer`]: cuts a TCP byte stream into messages by Content-Length
//!   (RFC 3261 §18.3), skipping CRLF keep-alives (RFC 5626 §3.5.1).
//!
//! Every parser is bounded ([`MAX_MESSAGE_SIZE`], [`MAX_HEADERS`]) and returns an
//! error on malformed input; none of them panics on arbitrary bytes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

use crate::endpoint::Transport;

/// The largest message siprace reads or frames (header and body together).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// The most header fields (after unfolding) one message may carry.
pub const MAX_HEADERS: usize = 128;
/// RFC 3261 §8.1.1.7: every branch created by an RFC 3261 element starts with this.
pub const BRANCH_MAGIC: &str = "z9hG4bK";
/// The methods the responder knows, in the order its Allow header lists them.
pub const ALLOWED_METHODS: &str = "OPTIONS, REGISTER, INVITE, ACK, CANCEL, BYE";

/// The User-Agent / Server token siprace puts in its messages.
pub fn user_agent() -> String {
    format!("siprace/{}", env!("CARGO_PKG_VERSION"))
}

/// A random token of `len` alphanumeric characters (branch, tag, Call-ID).
pub fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Why bytes are not a (complete, acceptable) SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipParseError {
    /// The message (or the bytes buffered for it) is longer than the limit.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Bytes seen so far, header and body.
        size: usize,
        /// The limit in bytes ([`MAX_MESSAGE_SIZE`] unless the framer was given another).
        limit: usize,
    },
    /// The message has more header fields than the limit carried ([`MAX_HEADERS`]).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The message ends early; the text says what is missing (blank line, body...).
    #[error("incomplete message: {0}")]
    Incomplete(&'static str),
    /// The start line or a header field is not valid UTF-8.
    #[error("message head is not UTF-8")]
    NotUtf8,
    /// The request or status line is malformed (its first 80 bytes).
    #[error("invalid start line: {0:?}")]
    StartLine(String),
    /// A header line has no `name:` or breaks the grammar (its first 80 bytes).
    #[error("invalid header line: {0:?}")]
    HeaderLine(String),
    /// A header the message must carry is absent (its lowercase name).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header's value breaks its grammar (RFC 3261 §25.1).
    #[error("invalid {name} header: {value:?}")]
    InvalidHeader {
        /// The header's name as RFC 3261 spells it (`Via`, `CSeq`...).
        name: &'static str,
        /// The offending value (its first 80 bytes).
        value: String,
    },
    /// A single-valued header (Call-ID, CSeq, Content-Length...) appears more than once.
    #[error("more than one {0} header (it takes a single value)")]
    Repeated(&'static str),
}

fn truncated(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

// ---------------------------------------------------------------------------
// Headers

/// Header fields in message order. Names are stored lowercased, with compact
/// forms (RFC 3261 §7.3.3) expanded to their long names; values are trimmed and
/// unfolded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (case-insensitive, long or compact form).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header field named `name`, in order (one entry per header line).
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many header fields (one per header line, after unfolding).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no header fields at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every header field as (lowercase long name, value), in message order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Lowercases a header name and expands RFC 3261 §7.3.3 / RFC 3515 compact forms.
fn canonical_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let long = match lower.as_str() {
        "i" => "call-id",
        "l" => "content-length",
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "c" => "content-type",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        "o" => "event",
        "r" => "refer-to",
        "u" => "allow-events",
        _ => return lower,
    };
    long.to_string()
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// A parameter value (RFC 3261 §25.1 `gen-value`, and `via-received`'s bare
/// IPv6 address): a token, a host, or one whole quoted string. A stray quote
/// inside a value is refused, as it would swallow whatever parameter a
/// proxy or responder appends after it (`;received=`).
fn is_gen_value(value: &str) -> bool {
    if let Some(inner) = value.strip_prefix('"') {
        return closing_quote(inner).is_some_and(|end| end + 1 == inner.len());
    }
    is_token(value)
        || is_host_port(value) && !value.contains(':')
        || value
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .is_some_and(is_ipv6_reference_body)
        || value.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Linear white space inside a header value (after unfolding).
const LWS: [char; 2] = [' ', '\t'];

/// Whether `value` holds a control character (NUL, a bare CR, DEL...) that
/// is not escaped inside a quoted string. RFC 3261 §25.1 allows them only as
/// a quoted-pair (RFC 4475 §3.1.1.2 puts NUL, BEL and DEL in a display name
/// that way); anywhere else they are malformed, and echoing them back into a
/// response could split it.
fn has_stray_control(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if c == '\r' || c == '\n' {
                return true; // quoted-pair excludes CR and LF
            }
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '\t' => {}
            c if c.is_ascii_control() => return true,
            _ => {}
        }
    }
    false
}

/// The byte index of the quote closing a quoted string whose opening quote
/// came just before `s`, honouring backslash escapes.
fn closing_quote(s: &str) -> Option<usize> {
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

/// Splits `value` on `sep` outside quoted strings, keeping empty pieces (so
/// that callers can refuse `;;` or `,,`).
fn split_unquoted(value: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            quoted = true;
        } else if c == sep {
            out.push(&value[start..i]);
            start = i + sep.len_utf8();
        }
    }
    out.push(&value[start..]);
    out
}

/// A message head split into its start line and headers, plus where the body starts.
struct Head<'a> {
    start: &'a str,
    headers: Headers,
    body_offset: usize,
}

/// Finds the end of the head (the empty line). Returns (end of head text, body offset).
fn find_head_end(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            // "\n\n" or "\n\r\n" ends the head (lenient about bare LF).
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Skips CR and LF bytes before the start line (RFC 3261 §7.5).
fn skip_leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len())
}

fn parse_head(bytes: &[u8]) -> Result<Head<'_>, SipParseError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(SipParseError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_SIZE,
        });
    }
    let skip = skip_leading_crlf(bytes);
    if skip == bytes.len() {
        return Err(SipParseError::Incomplete("empty message"));
    }
    let (head_end, body_offset) = find_head_end(bytes, skip)
        .ok_or(SipParseError::Incomplete("no empty line after the headers"))?;
    let head = std::str::from_utf8(&bytes[skip..head_end]).map_err(|_| SipParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or("");
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            // Folded continuation of the previous header (RFC 3261 §7.3.1).
            let Some((_, value)) = fields.last_mut() else {
                return Err(SipParseError::HeaderLine(truncated(line)));
            };
            let more = line.trim();
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(SipParseError::HeaderLine(truncated(line)));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(SipParseError::HeaderLine(truncated(line)));
        }
        if fields.len() >= MAX_HEADERS {
            return Err(SipParseError::TooManyHeaders(MAX_HEADERS));
        }
        fields.push((canonical_name(name), value.trim().to_string()));
    }
    if let Some((_, value)) = fields.iter().find(|(_, v)| has_stray_control(v)) {
        return Err(SipParseError::HeaderLine(truncated(value)));
    }
    Ok(Head {
        start,
        headers: Headers(fields),
        body_offset,
    })
}

/// Splits a header value on commas that are outside quotes and angle
/// brackets; empty entries are dropped.
pub fn split_comma_list(value: &str) -> Vec<&str> {
    let mut out = comma_items(value);
    out.retain(|s| !s.is_empty());
    out
}

/// [`split_comma_list`] keeping empty entries, so that `a,,b` can be refused.
fn comma_items(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' => angle = true,
            '>' => angle = false,
            ',' if !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out
}

/// A CSeq header: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number, below 2**31 (RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// The method token, case kept as sent (`OPTIONS`, `INVITE`...).
    pub method: String,
}

impl CSeq {
    /// Parses a CSeq value (`4711 OPTIONS`); None if it is not exactly a
    /// number below 2**31 and a method token.
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut parts = value.split_whitespace();
        let seq = parts.next()?;
        let method = parts.next()?;
        if parts.next().is_some() || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_token(method) {
            return None;
        }
        let seq: u32 = seq.parse().ok()?;
        if seq > i32::MAX as u32 {
            return None; // RFC 3261 §8.1.1.5: less than 2**31
        }
        Some(CSeq {
            seq,
            method: method.to_string(),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// One Via entry (RFC 3261 §20.42): `SIP/2.0/UDP host:port;param=value...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token as sent (`UDP`, `TCP`, ...).
    pub transport: String,
    /// `host[:port]` as sent.
    pub sent_by: String,
    /// Parameters in order; names lowercased.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via entry. RFC 3261 §25.1 allows white space around the
    /// `/` of sent-protocol and the `:` of sent-by (SLASH and COLON are
    /// `SWS x SWS`; RFC 4475 §3.1.1.1 does it); sent-by must be a host and
    /// port, and every parameter needs a name (RFC 4475 §3.1.2.1's `;;` is
    /// invalid).
    pub fn parse(value: &str) -> Option<Via> {
        let mut pieces = split_unquoted(value, ';').into_iter();
        let proto_by = squeeze_separators(pieces.next()?);
        let mut parts = proto_by.split(' ');
        let (proto, sent_by) = (parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_host_port(sent_by) {
            return None;
        }
        let mut proto = proto.splitn(3, '/');
        let (name, version, transport) = (proto.next()?, proto.next()?, proto.next()?);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || !is_token(transport) {
            return None;
        }
        let mut params = Vec::new();
        for p in pieces {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v.trim().to_string())),
                None => (p, None),
            };
            let n = n.trim();
            if !is_token(n) || v.as_deref().is_some_and(|v| !is_gen_value(v)) {
                return None;
            }
            params.push((n.to_ascii_lowercase(), v));
        }
        Some(Via {
            transport: transport.to_string(),
            sent_by: sent_by.to_string(),
            params,
        })
    }

    /// The parameter `name` (case-insensitive): None if absent, `Some(None)` if
    /// present without a value (`;rport`), `Some(Some(v))` otherwise.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `branch` parameter (RFC 3261 §8.1.1.7), if present with a value.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// The host part of sent-by (IPv6 without brackets).
    pub fn sent_by_host(&self) -> &str {
        let s = self.sent_by.as_str();
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        s.split(':').next().unwrap_or(s)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by)?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Removes the white space RFC 3261 allows around `/` and `:` and collapses
/// the rest to single spaces: `SIP / 2.0 / UDP host : 5060` becomes
/// `SIP/2.0/UDP host:5060`.
fn squeeze_separators(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(LWS).filter(|w| !w.is_empty()) {
        let glued = out.ends_with(['/', ':']) || word.starts_with(['/', ':']);
        if !out.is_empty() && !glued {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The value of the `tag` parameter of a From/To header, if any.
pub fn tag_param(value: &str) -> Option<&str> {
    // Parameters follow the closing '>' of a name-addr, or the addr-spec itself.
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
    })
}

// ---------------------------------------------------------------------------
// URIs (RFC 3261 §19.1, §25.1), checked as far as a UAS needs

/// A character a URI may carry unescaped: unreserved, reserved, and the
/// brackets of an IPv6 reference. `%` starts an escape, checked separately.
fn is_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'();/?:@&=+$,[]".contains(&b)
}

/// Every character of `uri` is a URI character and every `%` is followed by
/// two hex digits (RFC 3261 `escaped`). No white space, quotes or `<>`.
fn has_uri_chars(uri: &str) -> bool {
    let b = uri.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else if is_uri_char(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Splits an absolute URI into its scheme (lowercased) and the rest, if it
/// has the shape `scheme ":" ...` with URI characters only.
fn uri_scheme(uri: &str) -> Option<(String, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first_is_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_is_alpha
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        || !has_uri_chars(uri)
    {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), rest))
}

/// Whether `uri` is a `sip:` or `sips:` URI (any shape).
pub fn is_sip_uri(uri: &str) -> bool {
    matches!(uri_scheme(uri), Some((scheme, _)) if scheme == "sip" || scheme == "sips")
}

/// The text inside an IPv6 reference's brackets. RFC 5118 §4.10: the
/// `IPv6address` rule RFC 3261 took from RFC 2373 also derives `:::` before
/// an embedded IPv4 address (`2001:db8:::192.0.2.1`); implementations are to
/// accept that form as well as the correct one.
fn is_ipv6_reference_body(text: &str) -> bool {
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    match text.split_once(":::") {
        Some((head, v4)) => {
            v4.parse::<std::net::Ipv4Addr>().is_ok()
                && format!("{head}::{v4}")
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()
        }
        None => false,
    }
}

/// `host [":" port]`: a host name or IPv4 address, or an IPv6 reference in
/// brackets; the port, if any, 1 to 5 digits.
fn is_host_port(text: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (is_ipv6_reference_body(v6), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        // Host names and IPv4 addresses; '_' is tolerated as many stacks emit it.
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        (host_ok, port)
    };
    host_ok
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a Request-URI (RFC 3261 §25.1 `Request-URI`): a URI with a
/// scheme, URI characters only (RFC 4475 §3.1.2.7 `<sip:...>` fails here),
/// and for `sip:`/`sips:` a valid host and port (RFC 5118 §4.2: an IPv6
/// address needs its brackets) and no headers: RFC 3261 §19.1.1 does not
/// allow them in a Request-URI (RFC 4475 §3.1.2.11 allows rejecting them).
fn is_request_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri_scheme(uri) else {
        return false;
    };
    if scheme != "sip" && scheme != "sips" {
        return true; // other schemes are opaque here; the UAS answers 416
    }
    // The user part cannot hold an unescaped '@', so the first one ends it.
    let after_user = match rest.split_once('@') {
        Some((user, after)) if !user.is_empty() => after,
        Some(_) => return false,
        None => rest,
    };
    !after_user.contains('?') && is_host_port(after_user.split(';').next().unwrap_or(""))
}

/// Generic parameters after a URI or a Via (`;name[=value]`...): none empty
/// (RFC 4475 §3.1.2.1 `;;`), every name a token.
fn are_params(params: &str) -> bool {
    split_unquoted(params, ';').into_iter().all(|p| {
        let name = p.split('=').next().unwrap_or("").trim_matches(LWS);
        is_token(name)
    })
}

/// True if `value` is a valid From, To or Contact entry (see [`address_uri`]).
fn is_address(value: &str) -> bool {
    address_uri(value).is_some()
}

/// The URI of a valid From, To or Contact entry (RFC 3261 §20.10, §25.1):
/// `name-addr` or `addr-spec`, then parameters; None if the entry is invalid.
/// What RFC 4475 §3.1.2 calls invalid fails here: an unterminated quote
/// (§3.1.2.6), white space inside `<>` (§3.1.2.14), an unquoted display name
/// that is not tokens (§3.1.2.15), a URI with `?` or `,` outside `<>`
/// (§3.1.2.13), empty parameters (§3.1.2.1).
pub fn address_uri(value: &str) -> Option<&str> {
    let v = value.trim_matches(LWS);
    // The URI, and what follows it (parameters).
    let (uri, after) = if let Some(quoted) = v.strip_prefix('"') {
        let end = closing_quote(quoted)?;
        let rest = quoted[end + 1..].trim_start_matches(LWS);
        rest.strip_prefix('<')?.split_once('>')?
    } else if let Some(lt) = v.find('<') {
        if !v[..lt].split(LWS).filter(|w| !w.is_empty()).all(is_token) {
            return None;
        }
        v[lt + 1..].split_once('>')?
    } else {
        // addr-spec: its parameters are the header's, so the URI ends at ';'.
        let end = v.find(';').unwrap_or(v.len());
        let uri = v[..end].trim_end_matches(LWS);
        if uri.contains(['?', ',']) {
            return None;
        }
        (uri, &v[end..])
    };
    let after = after.trim_start_matches(LWS);
    let params_ok = after.is_empty() || after.strip_prefix(';').is_some_and(are_params);
    (uri_scheme(uri).is_some() && params_ok).then_some(uri)
}

// ---------------------------------------------------------------------------
// Header values

fn required<'a>(headers: &'a Headers, name: &'static str) -> Result<&'a str, SipParseError> {
    headers.get(name).ok_or(SipParseError::MissingHeader(name))
}

fn parse_cseq(headers: &Headers) -> Result<CSeq, SipParseError> {
    let v = required(headers, "cseq")?;
    CSeq::parse(v).ok_or_else(|| SipParseError::InvalidHeader {
        name: "CSeq",
        value: truncated(v),
    })
}

/// Header fields that take one value (RFC 3261 §20; RFC 4475 §3.3.8): a
/// second one makes the message ambiguous, so it is refused, never guessed.
const SINGLE_VALUED: [(&str, &str); 7] = [
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("from", "From"),
    ("to", "To"),
    ("max-forwards", "Max-Forwards"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
];

fn check_single_valued(headers: &Headers) -> Result<(), SipParseError> {
    for (name, display) in SINGLE_VALUED {
        if headers.get_all(name).nth(1).is_some() {
            return Err(SipParseError::Repeated(display));
        }
    }
    Ok(())
}

/// The Call-ID (RFC 3261 §25.1 `callid = word ["@" word]`): not empty, and
/// neither white space nor a comma, which would mean several values.
fn parse_call_id(headers: &Headers) -> Result<String, SipParseError> {
    let v = non_empty(headers, "call-id")?;
    if v.contains([' ', '\t', ',']) {
        return Err(SipParseError::InvalidHeader {
            name: "Call-ID",
            value: truncated(v),
        });
    }
    Ok(v.to_string())
}

/// The Content-Length, if present. A second Content-Length is an error even
/// if it agrees (RFC 4475 §3.3.9): on a stream, framing must never depend on
/// which of two values a parser picks.
fn parse_content_length(headers: &Headers) -> Result<Option<usize>, SipParseError> {
    let mut values = headers.get_all("content-length");
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SipParseError::Repeated("Content-Length"));
    }
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SipParseError::InvalidHeader {
            name: "Content-Length",
            value: truncated(v),
        });
    }
    v.parse()
        .map(Some)
        .map_err(|_| SipParseError::InvalidHeader {
            name: "Content-Length",
            value: truncated(v),
        })
}

fn non_empty<'a>(headers: &'a Headers, name: &'static str) -> Result<&'a str, SipParseError> {
    let v = required(headers, name)?;
    if v.is_empty() {
        return Err(SipParseError::InvalidHeader {
            name,
            value: String::new(),
        });
    }
    Ok(v)
}

/// Checks the body against Content-Length and returns it. A datagram may carry
/// extra bytes after the body (ignored, RFC 3261 §18.3); fewer bytes are an error.
fn take_body(bytes: &[u8], offset: usize, cl: Option<usize>) -> Result<Vec<u8>, SipParseError> {
    let rest = &bytes[offset.min(bytes.len())..];
    match cl {
        Some(n) if n > rest.len() => Err(SipParseError::Incomplete(
            "body shorter than Content-Length",
        )),
        Some(n) => Ok(rest[..n].to_vec()),
        None => Ok(rest.to_vec()),
    }
}

// ---------------------------------------------------------------------------
// Responses

/// A parsed SIP response: what identifies its transaction, plus every header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100 to 699.
    pub status: u16,
    /// The reason phrase, trimmed; may be empty. Peer text: escape before printing.
    pub reason: String,
    /// The branch of the top Via, if it has one.
    pub branch: Option<String>,
    /// The Call-ID header value.
    pub call_id: String,
    /// The CSeq header.
    pub cseq: CSeq,
    /// The Content-Length value; None if the header is absent (the body is then
    /// the rest of the bytes).
    pub content_length: Option<usize>,
    /// The tag of the To header, if any.
    pub to_tag: Option<String>,
    /// Every header field, in message order.
    pub headers: Headers,
    /// The body: Content-Length bytes after the blank line (or the rest if absent).
    pub body: Vec<u8>,
}

impl Response {
    /// True if this response answers `probe`: same top-Via branch, Call-ID and
    /// CSeq (number and method). RFC 3261 §17.1.3 matches on the branch and the
    /// CSeq method; the Call-ID check guards against a confused peer.
    pub fn matches(&self, probe: &OptionsProbe) -> bool {
        self.branch.as_deref() == Some(probe.branch())
            && self.call_id == probe.call_id()
            && self.cseq.seq == probe.cseq()
            && self.cseq.method == "OPTIONS"
    }
}

/// `SIP/2.0`; the version is case-insensitive (RFC 3261 §7.1).
fn is_sip_2_0(version: &str) -> bool {
    version.eq_ignore_ascii_case("SIP/2.0")
}

/// Parses a complete response (e.g. one UDP datagram or one framed TCP message).
pub fn parse_response(bytes: &[u8]) -> Result<Response, SipParseError> {
    let head = parse_head(bytes)?;
    let bad_start = || SipParseError::StartLine(truncated(head.start));
    let (version, rest) = head.start.split_once(' ').ok_or_else(bad_start)?;
    if !is_sip_2_0(version) {
        return Err(bad_start());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    // A reason phrase is text: control characters have no business there
    // (and it may end up on a terminal).
    if code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
        || reason.chars().any(|c| c.is_control() && c != '\t')
    {
        return Err(bad_start());
    }
    let status: u16 = code.parse().map_err(|_| bad_start())?;
    if !(100..=699).contains(&status) {
        return Err(bad_start());
    }
    let headers = head.headers;
    check_single_valued(&headers)?;
    let top_via = required(&headers, "via")?;
    let top_via = split_comma_list(top_via)
        .first()
        .and_then(|v| Via::parse(v))
        .ok_or_else(|| SipParseError::InvalidHeader {
            name: "Via",
            value: truncated(top_via),
        })?;
    let call_id = parse_call_id(&headers)?;
    let cseq = parse_cseq(&headers)?;
    let content_length = parse_content_length(&headers)?;
    let to_tag = headers.get("to").and_then(tag_param).map(str::to_string);
    let body = take_body(bytes, head.body_offset, content_length)?;
    Ok(Response {
        status,
        reason: reason.trim().to_string(),
        branch: top_via.branch().map(str::to_string),
        call_id,
        cseq,
        content_length,
        to_tag,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// The OPTIONS probe

/// An OPTIONS request (RFC 3261 §11) used as a reachability probe, with the
/// identifiers its response must echo. Retransmissions reuse the same bytes
/// (same branch), as RFC 3261 §17.1.2.2 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionsProbe {
    request_uri: String,
    transport: Transport,
    local: SocketAddr,
    branch: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The host name for Via sent-by and From (RFC 5923 wants a name the
    /// client's certificate can prove); `None`: the local IP literal.
    local_name: Option<String>,
    /// Add `;alias` to the Via (RFC 5923 §5): only honoured over TLS.
    alias: bool,
}

/// Whether `name` can stand as a host in Via sent-by and a From URI: a
/// host name (letters, digits, `-` and `.`, labels of 1 to 63 characters,
/// at most 253 in all). Nothing else reaches a header, so a configured
/// name can never inject one.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `host` as it appears in a URI or sent-by: IPv6 in brackets.
pub fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl OptionsProbe {
    /// A probe for `request_uri` sent over `transport` from `local`, with a fresh
    /// random branch, From tag and Call-ID, and a random CSeq number.
    pub fn new(request_uri: impl Into<String>, transport: Transport, local: SocketAddr) -> Self {
        OptionsProbe {
            request_uri: request_uri.into(),
            transport,
            local,
            branch: format!("{BRANCH_MAGIC}{}", random_token(22)),
            call_id: format!("{}@siprace", random_token(24)),
            from_tag: random_token(12),
            cseq: rand::rng().random_range(1..=65_535),
            local_name: None,
            alias: false,
        }
    }

    /// Puts `name` in Via sent-by and From instead of the local IP (RFC 5923
    /// §4: a host name the certificate can prove). A name that is not a
    /// host name ([`is_host_name`]) is ignored: configuration checks it first.
    pub fn with_local_name(mut self, name: Option<&str>) -> Self {
        self.local_name = name.filter(|n| is_host_name(n)).map(str::to_string);
        self
    }

    /// Asks the server to reuse this connection for requests to us (the
    /// Via `alias` parameter, RFC 5923 §5). Written only over TLS: RFC 5923
    /// restricts alias to TLS, so plain TCP, SCTP and UDP never carry it.
    pub fn with_alias(mut self, alias: bool) -> Self {
        self.alias = alias;
        self
    }

    /// Sets the CSeq number (kept below 2**31 as RFC 3261 §8.1.1.5 requires).
    pub fn with_cseq(mut self, cseq: u32) -> Self {
        self.cseq = cseq.min(i32::MAX as u32);
        self
    }

    /// The branch of the Via header (starts with [`BRANCH_MAGIC`]).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The Call-ID the response must echo.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The CSeq number the response must echo.
    pub fn cseq(&self) -> u32 {
        self.cseq
    }

    /// The tag of the From header.
    pub fn from_tag(&self) -> &str {
        &self.from_tag
    }

    /// The Request-URI (also the To URI).
    pub fn request_uri(&self) -> &str {
        &self.request_uri
    }

    /// The transport named in the Via header.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The local address put into Via and From.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The host in Via sent-by and From: the local name, else the local IP.
    pub fn sent_by_host(&self) -> String {
        match &self.local_name {
            Some(name) => name.clone(),
            None => uri_host(self.local.ip()),
        }
    }

    /// The request on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let host = self.sent_by_host();
        let alias = if self.alias && self.transport == Transport::Tls {
            ";alias"
        } else {
            ""
        };
        format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {host}:{port};branch={branch};rport{alias}\r\n\
             Max-Forwards: 70\r\n\
             To: <{uri}>\r\n\
             From: <sip:siprace@{host}>;tag={tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} OPTIONS\r\n\
             Accept: application/sdp\r\n\
             User-Agent: {ua}\r\n\
             Content-Length: 0\r\n\
             \r\n",
            uri = self.request_uri,
            transport = self.transport.via_token(),
            port = self.local.port(),
            branch = self.branch,
            tag = self.from_tag,
            call_id = self.call_id,
            cseq = self.cseq,
            ua = user_agent(),
        )
        .into_bytes()
    }
}

// ---------------------------------------------------------------------------
// Requests (responder side)

/// A parsed SIP request with the headers a UAS needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method token as sent (`OPTIONS`, `INVITE`...).
    pub method: String,
    /// The Request-URI as sent.
    pub uri: String,
    /// Every Via header line's value, in order (a line may hold several entries).
    pub vias: Vec<String>,
    /// The From header value, echoed in the response.
    pub from: String,
    /// The To header value, echoed in the response (with a tag added if it has none).
    pub to: String,
    /// The Call-ID header value.
    pub call_id: String,
    /// The CSeq header; its method equals [`Request::method`].
    pub cseq: CSeq,
    /// The Content-Length value; None if the header is absent.
    pub content_length: Option<usize>,
    /// The Max-Forwards value; None if absent or not a number.
    pub max_forwards: Option<u32>,
    /// Every header field, in message order.
    pub headers: Headers,
    /// The body: Content-Length bytes after the blank line (or the rest if absent).
    pub body: Vec<u8>,
}

/// Parses a complete request (one datagram or one framed TCP message).
///
/// Beyond framing, it checks what a UAS needs to trust before answering
/// (RFC 3261 §8.2, and the RFC 4475 / RFC 5118 torture messages): the
/// Request-Line (single spaces, a real URI, SIP/2.0), every Via entry, From
/// and To and each Contact as addresses, single-valued headers appearing
/// once, and a CSeq whose method is the request's (RFC 3261 §8.1.1.5).
/// A message refused here may still deserve a 400: see
/// [`reject_invalid_request`].
pub fn parse_request(bytes: &[u8]) -> Result<Request, SipParseError> {
    let head = parse_head(bytes)?;
    let bad_start = || SipParseError::StartLine(truncated(head.start));
    let mut parts = head.start.split(' ');
    let (method, uri, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => return Err(bad_start()),
    };
    if !is_token(method) || !is_request_uri(uri) || !is_sip_2_0(version) {
        return Err(bad_start());
    }
    let headers = head.headers;
    check_single_valued(&headers)?;
    let vias: Vec<String> = headers.get_all("via").map(str::to_string).collect();
    if vias.is_empty() {
        return Err(SipParseError::MissingHeader("via"));
    }
    if let Some(bad) = vias.iter().find(|v| {
        !comma_items(v)
            .iter()
            .all(|entry| Via::parse(entry).is_some())
    }) {
        return Err(SipParseError::InvalidHeader {
            name: "Via",
            value: truncated(bad),
        });
    }
    let from = address(&headers, "from", "From")?.to_string();
    let to = address(&headers, "to", "To")?.to_string();
    for contact in headers.get_all("contact") {
        let entries = comma_items(contact);
        let star = entries == ["*"];
        if !star && !entries.iter().all(|e| is_address(e)) {
            return Err(SipParseError::InvalidHeader {
                name: "Contact",
                value: truncated(contact),
            });
        }
    }
    let call_id = parse_call_id(&headers)?;
    let cseq = parse_cseq(&headers)?;
    if cseq.method != method {
        return Err(SipParseError::InvalidHeader {
            name: "CSeq",
            value: format!(
                "method {}, request method {}",
                cseq.method,
                truncated(method)
            ),
        });
    }
    let content_length = parse_content_length(&headers)?;
    // RFC 4475 §3.1.2.4: a Max-Forwards that is not a number may be treated as absent.
    let max_forwards = headers.get("max-forwards").and_then(|v| v.parse().ok());
    let body = take_body(bytes, head.body_offset, content_length)?;
    Ok(Request {
        method: method.to_string(),
        uri: uri.to_string(),
        vias,
        from,
        to,
        call_id,
        cseq,
        content_length,
        max_forwards,
        headers,
        body,
    })
}

/// A From or To value that must be present and a valid address.
fn address<'a>(
    headers: &'a Headers,
    name: &'static str,
    display: &'static str,
) -> Result<&'a str, SipParseError> {
    let v = non_empty(headers, name)?;
    if !is_address(v) {
        return Err(SipParseError::InvalidHeader {
            name: display,
            value: truncated(v),
        });
    }
    Ok(v)
}

/// The standard reason phrase for the status codes the responder uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// Builds a response to a [`Request`] (RFC 3261 §8.2.6.2): Via(s), From, To
/// (with a tag), Call-ID and CSeq copied, Content-Length 0.
#[derive(Debug, Clone)]
pub struct ResponseBuilder<'a> {
    request: &'a Request,
    status: u16,
    reason: String,
    to_tag: Option<String>,
    received: Option<SocketAddr>,
    extra: Vec<(String, String)>,
}

impl Request {
    /// Starts a response with `status` and its standard reason phrase.
    pub fn response(&self, status: u16) -> ResponseBuilder<'_> {
        ResponseBuilder {
            request: self,
            status,
            reason: reason_phrase(status).to_string(),
            to_tag: None,
            received: None,
            extra: Vec::new(),
        }
    }

    /// The 200 OK to an OPTIONS request, with Allow, Accept and Supported.
    pub fn options_ok(&self, source: Option<SocketAddr>) -> Vec<u8> {
        self.response(200)
            .received(source)
            .header("Allow", ALLOWED_METHODS)
            .header("Accept", "application/sdp")
            .header("Accept-Language", "en")
            .header("Supported", "")
            .build()
    }
}

impl ResponseBuilder<'_> {
    /// Replaces the standard reason phrase.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The To tag to add if the request's To has none (default: random).
    pub fn to_tag(mut self, tag: impl Into<String>) -> Self {
        self.to_tag = Some(tag.into());
        self
    }

    /// The packet's source: adds `received` (RFC 3261 §18.2.1) and fills in an
    /// empty `rport` (RFC 3581) on the top Via.
    pub fn received(mut self, source: Option<SocketAddr>) -> Self {
        self.received = source;
        self
    }

    /// Adds a header field after the copied ones (e.g. Allow, Supported).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// The response on the wire.
    pub fn build(self) -> Vec<u8> {
        let req = self.request;
        let echoed = Echoed {
            vias: &req.vias,
            from: Some(&req.from),
            to: Some(&req.to),
            call_id: Some(&req.call_id),
            cseq: Some(req.cseq.to_string()),
        };
        write_response(
            self.status,
            &self.reason,
            &echoed,
            self.to_tag,
            self.received,
            &self.extra,
        )
    }
}

/// The request headers a response copies (RFC 3261 §8.2.6.2), as found.
struct Echoed<'a> {
    vias: &'a [String],
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<String>,
}

/// Writes a response: status line, the echoed headers (the top Via stamped
/// with `received`/`rport` for `source`, a To tag added unless the request
/// had one or this is a 100), Server, `extra`, and an empty body.
fn write_response(
    status: u16,
    reason: &str,
    echoed: &Echoed<'_>,
    to_tag: Option<String>,
    source: Option<SocketAddr>,
    extra: &[(String, String)],
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for (i, via) in echoed.vias.iter().enumerate() {
        let value = match (i, source) {
            (0, Some(src)) => stamp_top_via(via, src),
            _ => via.clone(),
        };
        out.push_str(&format!("Via: {value}\r\n"));
    }
    if let Some(from) = echoed.from {
        out.push_str(&format!("From: {from}\r\n"));
    }
    if let Some(to) = echoed.to {
        if tag_param(to).is_some() || status == 100 {
            out.push_str(&format!("To: {to}\r\n"));
        } else {
            let tag = to_tag.unwrap_or_else(|| random_token(10));
            out.push_str(&format!("To: {to};tag={tag}\r\n"));
        }
    }
    if let Some(call_id) = echoed.call_id {
        out.push_str(&format!("Call-ID: {call_id}\r\n"));
    }
    if let Some(cseq) = &echoed.cseq {
        out.push_str(&format!("CSeq: {cseq}\r\n"));
    }
    out.push_str(&format!("Server: {}\r\n", user_agent()));
    for (n, v) in extra {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// The answer a UAS gives to bytes that [`parse_request`] refused but that
/// still look like a request it can answer: `505 Version Not Supported` for
/// another SIP version (RFC 4475 §3.1.2.16), else `400 Bad Request`
/// (RFC 3261 §8.2, RFC 4475 §3.1.2 and §3.3). The headers a response copies
/// are copied as found, even malformed, and missing ones are left out
/// (RFC 4475 §3.3.1 lacks From, To and Call-ID): the sender matches its
/// transaction by the Via branch.
///
/// `None` when nothing can be answered: the head cannot be read (not UTF-8,
/// too large, no end), the start line is a response's or not a request's,
/// the method is ACK (never answered, RFC 3261 §17.2.1), or there is no Via
/// to send the answer along.
pub fn reject_invalid_request(bytes: &[u8], source: Option<SocketAddr>) -> Option<Vec<u8>> {
    let head = parse_head(bytes).ok()?;
    let mut parts = head.start.split(' ').filter(|p| !p.is_empty());
    let method = parts.next()?;
    if !is_token(method) || method == "ACK" || method.to_ascii_uppercase().starts_with("SIP/") {
        return None;
    }
    let headers = &head.headers;
    let vias: Vec<String> = headers
        .get_all("via")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    if vias.is_empty() {
        return None;
    }
    let version = head.start.split(' ').nth(2).unwrap_or("");
    let other_version = !is_sip_2_0(version)
        && version
            .strip_prefix("SIP/")
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(major, minor)| {
                [major, minor]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
    let status = if other_version { 505 } else { 400 };
    // The top Via is stamped only if it parses; otherwise it goes back as sent.
    let source = source.filter(|_| {
        split_comma_list(&vias[0])
            .first()
            .is_some_and(|v| Via::parse(v).is_some())
    });
    let echoed = Echoed {
        vias: &vias,
        from: headers.get("from"),
        to: headers.get("to"),
        call_id: headers.get("call-id"),
        cseq: headers.get("cseq").map(str::to_string),
    };
    Some(write_response(
        status,
        reason_phrase(status),
        &echoed,
        None,
        source,
        &[],
    ))
}

/// Adds `received` and fills `rport` on the first entry of a Via header value.
fn stamp_top_via(value: &str, src: SocketAddr) -> String {
    let entries = split_comma_list(value);
    let Some(mut via) = entries.first().and_then(|v| Via::parse(v)) else {
        return value.to_string();
    };
    let src_ip = match src.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    };
    let mut add_received = via.sent_by_host().parse::<IpAddr>().ok() != Some(src_ip);
    if let Some(slot) = via.params.iter_mut().find(|(n, _)| n == "rport") {
        if slot.1.is_none() {
            slot.1 = Some(src.port().to_string());
            add_received = true;
        }
    }
    if add_received && via.param("received").is_none() {
        via.params
            .push(("received".into(), Some(src_ip.to_string())));
    }
    let mut out = via.to_string();
    for rest in &entries[1..] {
        out.push_str(", ");
        out.push_str(rest);
    }
    out
}

// ---------------------------------------------------------------------------
// Stream framing

/// One unit cut from a stream by [`StreamFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message: head plus Content-Length bytes of body.
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping (RFC 5626 §3.5.1); answer with one CRLF.
    KeepAlive,
}

/// Accumulates bytes from a stream transport and yields complete messages,
/// framed by Content-Length (RFC 3261 §18.3; a missing Content-Length counts
/// as 0). Any error is fatal for the stream: the caller should close it.
///
/// Consumed bytes are dropped lazily (an offset moves, the buffer is
/// compacted on the next push), so a peer streaming keep-alives or stray
/// line ends costs linear time, not quadratic.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Where the unconsumed bytes start in `buf`.
    start: usize,
    max: usize,
    /// Where to resume the search for the end of the head, relative to `start`.
    scanned: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            start: 0,
            max: max_message,
            scanned: 0,
        }
    }

    /// Appends received bytes. Call [`next_frame`](Self::next_frame) until it
    /// returns `Ok(None)` afterwards.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet part of a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The bytes held that are not yet part of a complete message (after an
    /// error: the message that could not be framed, from its first byte).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SipParseError> {
        // Leading CRLFs: a double CRLF is a keep-alive ping, a lone one (e.g. a
        // pong or stray line ending) is skipped.
        loop {
            let rest = self.pending();
            if rest.starts_with(b"\r\n\r\n") {
                self.consume(4);
                return Ok(Some(Frame::KeepAlive));
            }
            match rest {
                [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => self.consume(2),
                [b'\n', ..] => self.consume(1),
                _ => break,
            }
        }
        let from = self.scanned.saturating_sub(2);
        let Some((_, head_len)) = find_head_end(self.pending(), from) else {
            self.scanned = self.buffered();
            if self.buffered() > self.max {
                return Err(SipParseError::TooLarge {
                    size: self.buffered(),
                    limit: self.max,
                });
            }
            return Ok(None);
        };
        let head = parse_head(&self.pending()[..head_len])?;
        let cl = parse_content_length(&head.headers)?.unwrap_or(0);
        let total = head_len.saturating_add(cl);
        if total > self.max {
            return Err(SipParseError::TooLarge {
                size: total,
                limit: self.max,
            });
        }
        if self.buffered() < total {
            return Ok(None);
        }
        let msg = self.pending()[..total].to_vec();
        self.consume(total);
        Ok(Some(Frame::Message(msg)))
    }

    /// While `expected` pings of ours are unanswered, takes up to that many
    /// keep-alive pongs (RFC 5626 §3.5.1: a single CRLF answering our
    /// double-CRLF ping) that lead the held bytes, and returns how many there
    /// were. A double CRLF is left for [`next_frame`](Self::next_frame) as a
    /// ping.
    pub fn take_pongs(&mut self, expected: usize) -> usize {
        let mut pongs = 0;
        while pongs < expected
            && self.pending().starts_with(b"\r\n")
            && !self.pending().starts_with(b"\r\n\r\n")
        {
            self.consume(2);
            pongs += 1;
        }
        pongs
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pongs_are_taken_and_pings_left_for_framing() {
        let mut f = super::StreamFramer::default();
        f.push(b"\r\n");
        assert_eq!(f.take_pongs(0), 0, "no ping of ours is out: not a pong");
        assert_eq!(f.take_pongs(2), 1);
        assert_eq!(f.buffered(), 0);
        f.push(b"\r\nSIP/2.0 200 OK\r\n");
        assert_eq!(f.take_pongs(1), 1);
        assert!(f.pending().starts_with(b"SIP/2.0"));
        let mut g = super::StreamFramer::default();
        g.push(b"\r\n\r\n");
        assert_eq!(g.take_pongs(1), 0);
        assert_eq!(g.next_frame(), Ok(Some(super::Frame::KeepAlive)));
    }

    use super::*;
    use proptest::prelude::*;

    fn local4() -> SocketAddr {
        "192.0.2.10:5070".parse().unwrap()
    }

    #[test]
    fn via_parameter_values_are_tokens_hosts_or_whole_quoted_strings() {
        let via = |params: &str| Via::parse(&format!("SIP/2.0/UDP h.example.test{params}"));
        for good in [
            ";branch=z9hG4bK-1.x",
            ";received=192.0.2.1",
            ";received=2001:db8::1",
            ";maddr=[2001:db8::1]",
            ";x=\"a;b \\\" c\"",
            ";rport",
        ] {
            assert!(via(good).is_some(), "{good}");
        }
        // Found by fuzzing (fuzz/regressions/sip_request): the stray quote
        // swallowed the `;received=` a responder appends after it.
        for bad in [
            ";branch=z9hG4\"Kx",
            ";branch=\"open",
            ";x=a\"b\"",
            ";branch=a b",
        ] {
            assert!(via(bad).is_none(), "{bad}");
        }
    }

    fn probe() -> OptionsProbe {
        OptionsProbe::new("sip:example.test", Transport::Udp, local4())
    }

    /// What a well-behaved server would answer to `probe`.
    fn answer(p: &OptionsProbe, status: u16) -> Vec<u8> {
        let req = parse_request(&p.to_bytes()).unwrap();
        req.response(status)
            .received(Some("198.51.100.1:40000".parse().unwrap()))
            .build()
    }

    #[test]
    fn probe_has_the_rfc3261_shape() {
        let p = OptionsProbe::new(
            "sip:example.test",
            Transport::Tcp,
            "[2001:db8::1]:5080".parse().unwrap(),
        )
        .with_cseq(7);
        let text = String::from_utf8(p.to_bytes()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "OPTIONS sip:example.test SIP/2.0");
        assert_eq!(
            lines[1],
            format!(
                "Via: SIP/2.0/TCP [2001:db8::1]:5080;branch={};rport",
                p.branch()
            )
        );
        assert!(p.branch().starts_with("z9hG4bK") && p.branch().len() > 7 + 16);
        assert!(text.contains("\r\nMax-Forwards: 70\r\n"));
        assert!(text.contains("\r\nTo: <sip:example.test>\r\n"));
        assert!(text.contains(&format!(
            "\r\nFrom: <sip:siprace@[2001:db8::1]>;tag={}\r\n",
            p.from_tag()
        )));
        assert!(text.contains(&format!("\r\nCall-ID: {}\r\n", p.call_id())));
        assert!(p.call_id().ends_with("@siprace"));
        assert!(text.contains("\r\nCSeq: 7 OPTIONS\r\n"));
        assert!(text.contains("\r\nAccept: application/sdp\r\n"));
        assert!(text.contains(&format!(
            "\r\nUser-Agent: siprace/{}\r\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.ends_with("\r\nContent-Length: 0\r\n\r\n"));
        // Two probes never share identifiers.
        let q = OptionsProbe::new("sip:example.test", Transport::Tcp, local4());
        assert_ne!(p.branch(), q.branch());
        assert_ne!(p.call_id(), q.call_id());
        assert_ne!(p.from_tag(), q.from_tag());
    }

    #[test]
    fn local_name_goes_into_via_and_from_and_alias_only_over_tls() {
        let local: SocketAddr = "[2001:db8::1]:5080".parse().unwrap();
        let named = |transport, alias| {
            let p = OptionsProbe::new("sip:example.test", transport, local)
                .with_local_name(Some("ua.example.test"))
                .with_alias(alias)
                .with_cseq(3);
            let text = String::from_utf8(p.to_bytes()).unwrap();
            (p, text)
        };
        let (p, text) = named(Transport::Tls, true);
        assert!(
            text.contains(&format!(
                "\r\nVia: SIP/2.0/TLS ua.example.test:5080;branch={};rport;alias\r\n",
                p.branch()
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "\r\nFrom: <sip:siprace@ua.example.test>;tag={}\r\n",
            p.from_tag()
        )));
        assert!(!text.contains("2001:db8::1"), "{text}");
        // RFC 5923: alias is for TLS only; plain TCP, SCTP and UDP never carry it.
        for transport in [Transport::Tcp, Transport::Udp, Transport::Sctp] {
            let (p, text) = named(transport, true);
            assert!(
                text.contains(&format!(
                    "\r\nVia: SIP/2.0/{} ua.example.test:5080;branch={};rport\r\n",
                    transport.via_token(),
                    p.branch()
                )),
                "{text}"
            );
            assert!(!text.contains("alias"), "{text}");
        }
        // No alias asked: none written, over TLS too.
        let (_, text) = named(Transport::Tls, false);
        assert!(!text.contains("alias"), "{text}");
        // A name that is not a host name never reaches a header.
        let p = OptionsProbe::new("sip:example.test", Transport::Tcp, local)
            .with_local_name(Some("evil\r\nX-Injected: 1"));
        let text = String::from_utf8(p.to_bytes()).unwrap();
        assert!(!text.contains("Injected"));
        assert!(text.contains("Via: SIP/2.0/TCP [2001:db8::1]:5080;"));
        // The request with a name parses as one, and its Via keeps the alias flag.
        let (_, text) = named(Transport::Tls, true);
        let req = parse_request(text.as_bytes()).unwrap();
        let via = Via::parse(req.headers.get("via").unwrap()).unwrap();
        assert_eq!(via.sent_by_host(), "ua.example.test");
        assert_eq!(via.param("alias"), Some(None));
    }

    #[test]
    fn host_names() {
        for good in ["a", "ua.example.test", "x-1.example", "192.0.2.1"] {
            assert!(is_host_name(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join(".");
        for bad in [
            "",
            "a..b",
            ".a",
            "-a.test",
            "a-.test",
            "a b",
            "a;b",
            "a\r\nb",
            "[::1]",
            "ü.test",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn response_round_trip_matches_probe() {
        let p = probe();
        let r = parse_response(&answer(&p, 200)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert!(r.matches(&p));
        assert!(r.to_tag.is_some());
        assert_eq!(r.content_length, Some(0));
        // The top Via got received and rport stamped.
        let via = Via::parse(r.headers.get("via").unwrap()).unwrap();
        assert_eq!(via.param("rport"), Some(Some("40000")));
        assert_eq!(via.param("received"), Some(Some("198.51.100.1")));
        // Another probe's response does not match.
        assert!(!r.matches(&probe()));
    }

    #[test]
    fn matching_needs_branch_call_id_and_cseq() {
        let p = probe().with_cseq(10);
        let good = String::from_utf8(answer(&p, 404)).unwrap();
        assert!(parse_response(good.as_bytes()).unwrap().matches(&p));
        let variants = [
            good.replace(p.branch(), "z9hG4bKother"),
            good.replace(p.call_id(), "other@x"),
            good.replace("CSeq: 10 OPTIONS", "CSeq: 11 OPTIONS"),
            good.replace("CSeq: 10 OPTIONS", "CSeq: 10 INVITE"),
        ];
        for v in variants {
            let r = parse_response(v.as_bytes()).unwrap();
            assert!(!r.matches(&p), "{v}");
        }
    }

    #[test]
    fn parses_compact_forms_folding_and_multi_via() {
        let raw = "\r\nSIP/2.0 180 Ringing\r\n\
                   v: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKabc;received=::1, SIP/2.0/UDP p:5060;branch=z9hG4bKp\r\n\
                   Via: SIP/2.0/TCP q\r\n\
                   i: abc@host\r\n\
                   t: \"Bob\" <sip:bob@x>;tag=42\r\n\
                   CSeq:\t3\r\n   INVITE\r\n\
                   l: 4\r\n\r\nbodyEXTRA";
        let r = parse_response(raw.as_bytes()).unwrap();
        assert_eq!(r.status, 180);
        assert_eq!(r.reason, "Ringing");
        assert_eq!(r.branch.as_deref(), Some("z9hG4bKabc"));
        assert_eq!(r.call_id, "abc@host");
        assert_eq!(
            r.cseq,
            CSeq {
                seq: 3,
                method: "INVITE".into()
            }
        );
        assert_eq!(r.content_length, Some(4));
        assert_eq!(r.body, b"body");
        assert_eq!(r.to_tag.as_deref(), Some("42"));
        assert_eq!(r.headers.get_all("VIA").count(), 2);
    }

    #[test]
    fn rejects_bad_responses() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert!(parse_response(ok.as_bytes()).is_ok());
        let bad = [
            "",
            "\r\n\r\n",
            "hello world",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n",                       // no empty line
            "SIP/2.0 099 Low\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "SIP/2.0 700 High\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "SIP/1.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",                  // no Via
            "SIP/2.0 200 OK\r\nVia: garbage\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 X\r\n\r\n",           // no Call-ID
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\n\r\n",          // no CSeq
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: x X\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 4294967295 X\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\nContent-Length: -1\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\nContent-Length: 5\r\n\r\nab",
            "SIP/2.0 200 OK\r\nNoColonHere\r\n\r\n",
            " folded-first: x\r\n\r\n",
        ];
        for b in bad {
            assert!(parse_response(b.as_bytes()).is_err(), "{b:?}");
        }
        let mut invalid_utf8 = ok.as_bytes().to_vec();
        invalid_utf8[20] = 0xff;
        assert_eq!(parse_response(&invalid_utf8), Err(SipParseError::NotUtf8));
    }

    #[test]
    fn caps_header_count_and_size() {
        let mut many = String::from("SIP/2.0 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_response(many.as_bytes()),
            Err(SipParseError::TooManyHeaders(MAX_HEADERS))
        );
        let huge = vec![b'a'; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            parse_response(&huge),
            Err(SipParseError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_request(&huge),
            Err(SipParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn request_parse_and_response_copy_headers() {
        let raw = "INVITE sip:bob@example.test SIP/2.0\r\n\
                   Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n\
                   Via: SIP/2.0/UDP proxy.test;branch=z9hG4bK0\r\n\
                   Max-Forwards: 69\r\n\
                   From: <sip:alice@example.test>;tag=a1\r\n\
                   To: <sip:bob@example.test>\r\n\
                   Call-ID: call-1\r\n\
                   CSeq: 5 INVITE\r\n\
                   Content-Length: 3\r\n\r\nabc";
        let req = parse_request(raw.as_bytes()).unwrap();
        assert_eq!(req.method, "INVITE");
        assert_eq!(req.uri, "sip:bob@example.test");
        assert_eq!(req.vias.len(), 2);
        assert_eq!(req.max_forwards, Some(69));
        assert_eq!(req.body, b"abc");
        let resp = req
            .response(486)
            .to_tag("t9")
            .received(Some("10.0.0.99:6000".parse().unwrap()))
            .build();
        let text = String::from_utf8(resp.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"));
        assert!(text.contains(
            "\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=6000;received=10.0.0.99\r\n"
        ));
        assert!(text.contains("\r\nVia: SIP/2.0/UDP proxy.test;branch=z9hG4bK0\r\n"));
        assert!(text.contains("\r\nFrom: <sip:alice@example.test>;tag=a1\r\n"));
        assert!(text.contains("\r\nTo: <sip:bob@example.test>;tag=t9\r\n"));
        assert!(text.contains("\r\nCall-ID: call-1\r\nCSeq: 5 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let parsed = parse_response(&resp).unwrap();
        assert_eq!(parsed.branch.as_deref(), Some("z9hG4bK1"));
        assert_eq!(parsed.to_tag.as_deref(), Some("t9"));
    }

    #[test]
    fn existing_to_tag_is_kept_and_options_ok_has_allow() {
        let p = probe();
        let text = String::from_utf8(p.to_bytes())
            .unwrap()
            .replace("To: <sip:example.test>", "To: <sip:example.test>;tag=keep");
        let req = parse_request(text.as_bytes()).unwrap();
        let r = parse_response(&req.options_ok(None)).unwrap();
        assert_eq!(r.to_tag.as_deref(), Some("keep"));
        assert_eq!(r.headers.get("allow"), Some(ALLOWED_METHODS));
        assert_eq!(r.headers.get("accept"), Some("application/sdp"));
        assert!(r.matches(&p));
    }

    #[test]
    fn rejects_bad_requests() {
        let bad = [
            "OPTIONS sip:x SIP/2.0\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n", // no Via
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
            "OPTIONS  sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
            "OPTIONS sip:x SIP/3.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
            "OPT(IONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ];
        for b in bad {
            assert!(parse_request(b.as_bytes()).is_err(), "{b:?}");
        }
    }

    #[test]
    fn framer_splits_by_content_length_and_skips_keepalives() {
        let a = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        let b = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n".to_vec();
        let mut stream = b"\r\n\r\n\r\n".to_vec(); // one ping, then a lone CRLF
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        // Feed one byte at a time: framing must not depend on chunking.
        let mut f = StreamFramer::default();
        let mut frames = Vec::new();
        for byte in &stream {
            f.push(std::slice::from_ref(byte));
            while let Some(frame) = f.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![Frame::KeepAlive, Frame::Message(a), Frame::Message(b)]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn framer_enforces_max_size() {
        let mut f = StreamFramer::new(100);
        f.push(&[b'x'; 101]);
        assert!(matches!(
            f.next_frame(),
            Err(SipParseError::TooLarge { .. })
        ));
        let mut f = StreamFramer::new(100);
        f.push(b"SIP/2.0 200 OK\r\nContent-Length: 1000\r\n\r\n");
        assert!(matches!(
            f.next_frame(),
            Err(SipParseError::TooLarge { .. })
        ));
        let mut f = StreamFramer::new(100);
        f.push(b"SIP/2.0 200 OK\r\nContent-Length: lots\r\n\r\n");
        assert!(f.next_frame().is_err());
    }

    /// A response head with `extra` header lines, and `body`.
    fn response_with(extra: &str, body: &str) -> String {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCall-ID: c\r\n\
             CSeq: 1 OPTIONS\r\n{extra}\r\n{body}"
        )
    }

    #[test]
    fn response_parser_survives_hostile_input() {
        use SipParseError as E;
        let repeated = |name| Err(E::Repeated(name));
        let cases: Vec<(String, Result<(), SipParseError>)> = vec![
            // Content-Length: huge, larger than the bytes, negative, repeated.
            (
                response_with("Content-Length: 99999999999999999999\r\n", ""),
                Err(E::InvalidHeader {
                    name: "Content-Length",
                    value: "99999999999999999999".into(),
                }),
            ),
            (
                response_with("Content-Length: 4294967295\r\n", "short"),
                Err(E::Incomplete("body shorter than Content-Length")),
            ),
            (
                response_with("Content-Length: -5\r\n", "abcde"),
                Err(E::InvalidHeader {
                    name: "Content-Length",
                    value: "-5".into(),
                }),
            ),
            (
                response_with("Content-Length: 5\r\nContent-Length: 7\r\n", "1234567"),
                repeated("Content-Length"),
            ),
            // Agreeing, but in long and compact form: still two values.
            (
                response_with("l: 0\r\nContent-Length: 0\r\n", ""),
                repeated("Content-Length"),
            ),
            (response_with("i: other\r\n", ""), repeated("Call-ID")),
            (response_with("CSeq: 2 OPTIONS\r\n", ""), repeated("CSeq")),
            (
                response_with("Content-Length: 0,5\r\n", ""),
                Err(E::InvalidHeader {
                    name: "Content-Length",
                    value: "0,5".into(),
                }),
            ),
            // NUL, a bare CR, DEL in a header value; NUL in the reason phrase.
            (
                response_with("X-Nul: a\0b\r\n", ""),
                Err(E::HeaderLine("a\0b".into())),
            ),
            (
                response_with("X-Cr: a\rInjected: b\r\n", ""),
                Err(E::HeaderLine("a\rInjected: b".into())),
            ),
            (
                response_with("X-Del: \x7f\r\n", ""),
                Err(E::HeaderLine("\x7f".into())),
            ),
            (
                "SIP/2.0 200 O\0K\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n".into(),
                Err(E::StartLine("SIP/2.0 200 O\0K".into())),
            ),
            // Folding: continuation lines join their header; a fold cannot come first.
            (
                "SIP/2.0 200 OK\r\n folded: first\r\nVia: SIP/2.0/UDP h\r\n\r\n".into(),
                Err(E::HeaderLine(" folded: first".into())),
            ),
            (response_with("X-Long: a\r\n  \r\n\t b\r\n", ""), Ok(())),
            // NUL bytes in a body are just bytes.
            (response_with("Content-Length: 3\r\n", "\0\0\0"), Ok(())),
            // Call-ID holding two values.
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCall-ID: a, b\r\nCSeq: 1 X\r\n\r\n".into(),
                Err(E::InvalidHeader {
                    name: "Call-ID",
                    value: "a, b".into(),
                }),
            ),
        ];
        for (text, expected) in cases {
            let got = parse_response(text.as_bytes()).map(|_| ());
            assert_eq!(got, expected, "{text:?}");
        }
        let folded =
            parse_response(response_with("X-Long: a\r\n  \r\n\t b\r\n", "").as_bytes()).unwrap();
        assert_eq!(folded.headers.get("x-long"), Some("a b"));

        // An overlong line: within the size limit it is just long, beyond it refused.
        let long = "v".repeat(MAX_MESSAGE_SIZE - 200);
        let r =
            parse_response(response_with(&format!("X-Long: {long}\r\n"), "").as_bytes()).unwrap();
        assert_eq!(r.headers.get("x-long").map(str::len), Some(long.len()));
        let longer = "v".repeat(MAX_MESSAGE_SIZE);
        assert!(matches!(
            parse_response(response_with(&format!("X-Long: {longer}\r\n"), "").as_bytes()),
            Err(E::TooLarge { .. })
        ));
        // Many headers, many of them folded: the cap counts fields.
        let many: String = (0..=MAX_HEADERS)
            .map(|i| format!("X-{i}: a\r\n b\r\n"))
            .collect();
        assert_eq!(
            parse_response(response_with(&many, "").as_bytes()),
            Err(E::TooManyHeaders(MAX_HEADERS))
        );
    }

    #[test]
    fn framer_survives_hostile_streams() {
        // A huge Content-Length fails as soon as the head is complete: the
        // framer never waits for (or buffers) the promised bytes.
        let mut f = StreamFramer::default();
        f.push(response_with("Content-Length: 4294967295\r\n", "").as_bytes());
        assert!(matches!(
            f.next_frame(),
            Err(SipParseError::TooLarge { .. })
        ));
        // Two Content-Lengths: no guessing which frames the stream.
        let mut f = StreamFramer::default();
        let text = response_with("Content-Length: 1\r\nl: 7\r\n", "1234567");
        f.push(text.as_bytes());
        assert_eq!(
            f.next_frame(),
            Err(SipParseError::Repeated("Content-Length"))
        );
        // After an error the message that failed is still there, from its start.
        assert_eq!(f.pending(), text.as_bytes());
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r\nSIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlive)));
        assert!(f.next_frame().is_err());
        assert!(f.pending().starts_with(b"SIP/2.0 200 OK"));
        // A NUL in the head.
        let mut f = StreamFramer::default();
        f.push(response_with("X: \0\r\n", "").as_bytes());
        assert!(matches!(f.next_frame(), Err(SipParseError::HeaderLine(_))));
        // A head that never ends is refused once it passes the limit.
        let mut f = StreamFramer::new(4096);
        f.push(b"SIP/2.0 200 OK\r\n");
        let mut refused = false;
        for _ in 0..1000 {
            f.push(b"X-Endless: 0123456789abcdef\r\n");
            match f.next_frame() {
                Ok(None) => {}
                Err(SipParseError::TooLarge { .. }) => {
                    refused = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(refused && f.buffered() <= 4096 + 64);
        // A megabyte of keep-alives is a quarter million pings, each cut in
        // constant time; a megabyte of bare line ends is nothing at all.
        let mut f = StreamFramer::default();
        f.push(&b"\r\n\r\n".repeat(256 * 1024));
        let mut pings = 0;
        while let Some(frame) = f.next_frame().unwrap() {
            assert_eq!(frame, Frame::KeepAlive);
            pings += 1;
        }
        assert_eq!((pings, f.buffered()), (256 * 1024, 0));
        f.push(&[b'\n'; 1 << 20]);
        assert_eq!((f.next_frame(), f.buffered()), (Ok(None), 0));
    }

    /// A request that parses; `replace` swaps one of its lines.
    fn request_text(replace: &[(&str, &str)]) -> String {
        let mut text = "OPTIONS sip:bob@example.test SIP/2.0\r\n\
                        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1\r\n\
                        From: \"Alice\" <sip:alice@example.test>;tag=a\r\n\
                        To: <sip:bob@example.test>\r\n\
                        Call-ID: r1@example.test\r\n\
                        CSeq: 1 OPTIONS\r\n\
                        Contact: <sip:alice@192.0.2.1>\r\n\
                        Content-Length: 0\r\n\r\n"
            .to_string();
        for (from, to) in replace {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        text
    }

    #[test]
    fn request_parser_follows_the_rfc3261_grammar() {
        assert!(parse_request(request_text(&[]).as_bytes()).is_ok());
        let accepted = [
            // LWS around Via's '/' and ':' and around parameters.
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP / 2.0 / UDP 192.0.2.1 : 5060 ; branch = z9hG4bKr1",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;",
                "Via: SIP/2.0/UDP [2001:db8::1]:5060;received=[2001:db8::2];",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;",
                "Via: SIP/2.0/UDP [2001:db8::1];received=2001:db8::2;",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5061",
            ),
            // Addresses: display names, quoted-pairs, addr-spec with parameters, '*'.
            ("From: \"Alice\" <", "From: Alice  Liddell<"),
            (
                "From: \"Alice\" <",
                "From: \"A \\\"quoted\\\" \\\\ name\" <",
            ),
            (
                "To: <sip:bob@example.test>",
                "To: sip:bob@example.test ; tag = 7",
            ),
            ("Contact: <sip:alice@192.0.2.1>", "Contact: *"),
            (
                "Contact: <sip:alice@192.0.2.1>",
                "Contact: <sip:a@h;lr>;q=0.5, sip:b@h;expires=60",
            ),
            (
                "Contact: <sip:alice@192.0.2.1>",
                "Contact: <sip:a@h?Route=%3Csip:p%3E>",
            ),
            // Request-URIs: IPv6 references (RFC 5118 §4.3, §4.10), other schemes.
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:[2001:db8::10:5070] SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:u@[2001:db8:::192.0.2.1]:5060 SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS tel:+15551234 SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:a%20b;x=y@host;lr sip/2.0",
            ),
        ];
        for (from, to) in accepted {
            let text = request_text(&[(from, to)]);
            assert!(parse_request(text.as_bytes()).is_ok(), "{text}");
        }
        let refused = [
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP/2.0/UDP 192.0.2.1;;branch=z9hG4bKr1",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1,,SIP/2.0/UDP b",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP/2.0/UDP 2001:db8::1;branch=z9hG4bKr1",
            ),
            (
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
                "Via: SIP/2.0/UDP h:99999x",
            ),
            ("From: \"Alice\" <", "From: \"Alice <"),
            ("From: \"Alice\" <", "From: Smith, Alice <"),
            ("To: <sip:bob@example.test>", "To: < sip:bob@example.test >"),
            ("To: <sip:bob@example.test>", "To: <sip:bob@example.test"),
            (
                "To: <sip:bob@example.test>",
                "To: sip:bob@example.test?Route=x",
            ),
            ("To: <sip:bob@example.test>", "To: <sip:bob@example.test>;;"),
            (
                "Contact: <sip:alice@192.0.2.1>",
                "Contact: <sip:a@h>,,<sip:b@h>",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS <sip:bob@example.test> SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:2001:db8::10 SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:bob@example.test?Subject=x SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:b%zz@example.test SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS sip:@example.test SIP/2.0",
            ),
            (
                "OPTIONS sip:bob@example.test SIP/2.0",
                "OPTIONS 1sip:bob SIP/2.0",
            ),
            ("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
            ("CSeq: 1 OPTIONS", "CSeq: 1 options"),
            (
                "To: <sip:bob@example.test>",
                "To: <sip:bob@example.test>\r\nt: <sip:carol@example.test>",
            ),
            (
                "Call-ID: r1@example.test",
                "Call-ID: r1@example.test\r\nMax-Forwards: 70\r\nMax-Forwards: 69",
            ),
        ];
        for (from, to) in refused {
            let text = request_text(&[(from, to)]);
            assert!(parse_request(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn invalid_requests_get_400_or_505_when_answerable() {
        let src: SocketAddr = "198.51.100.7:5999".parse().unwrap();
        let status_of = |bytes: &[u8]| -> u16 {
            let text = std::str::from_utf8(bytes).unwrap();
            text.split(' ').nth(1).unwrap().parse().unwrap()
        };
        // The copied headers come back as sent (a malformed To too), the top
        // Via stamped, the To tagged.
        let text = request_text(&[(
            "To: <sip:bob@example.test>",
            "To: \"Bob <sip:bob@example.test>",
        )]);
        assert!(parse_request(text.as_bytes()).is_err());
        let reply = reject_invalid_request(text.as_bytes(), Some(src)).unwrap();
        let r = String::from_utf8(reply).unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"), "{r}");
        assert!(
            r.contains(
                "\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1;received=198.51.100.7\r\n"
            ),
            "{r}"
        );
        assert!(
            r.contains("\r\nTo: \"Bob <sip:bob@example.test>;tag="),
            "{r}"
        );
        assert!(
            r.contains("\r\nCall-ID: r1@example.test\r\nCSeq: 1 OPTIONS\r\n"),
            "{r}"
        );
        // Another SIP version: 505. Missing headers are left out.
        let text = request_text(&[(
            "sip:bob@example.test SIP/2.0",
            "sip:bob@example.test SIP/3.0",
        )]);
        assert_eq!(
            status_of(&reject_invalid_request(text.as_bytes(), Some(src)).unwrap()),
            505
        );
        let text = request_text(&[
            ("Call-ID: r1@example.test\r\n", ""),
            ("To: <sip:bob@example.test>\r\n", ""),
        ]);
        let r =
            String::from_utf8(reject_invalid_request(text.as_bytes(), Some(src)).unwrap()).unwrap();
        assert!(
            r.starts_with("SIP/2.0 400 ") && !r.contains("Call-ID") && !r.contains("\r\nTo:"),
            "{r}"
        );
        // Nothing to answer: ACK, a response, no Via, garbage, no end of head.
        for text in [
            request_text(&[
                (
                    "OPTIONS sip:bob@example.test SIP/2.0",
                    "ACK sip:bob@example.test SIP/2.0",
                ),
                ("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
            ])
            .replace("Contact: ", "Contact: ,"),
            response_with("", ""),
            request_text(&[
                ("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1\r\n", ""),
                ("CSeq: 1 OPTIONS", "CSeq: 1 X"),
            ]),
            "\u{1}\u{2}garbage\r\n\r\n".to_string(),
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n".to_string(),
        ] {
            assert!(parse_request(text.as_bytes()).is_err(), "{text}");
            assert_eq!(
                reject_invalid_request(text.as_bytes(), Some(src)),
                None,
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_response(&bytes);
            let _ = parse_request(&bytes);
            let mut f = StreamFramer::new(1024);
            f.push(&bytes);
            for _ in 0..64 {
                match f.next_frame() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn sip_like_text_never_panics(
            lines in proptest::collection::vec("[A-Za-z:;=<>@ \\t\\r\\n0-9./,\"-]{0,40}", 0..20),
            start in prop_oneof![Just("SIP/2.0 200 OK".to_string()), Just("OPTIONS sip:x SIP/2.0".to_string()), "[ -~]{0,20}"],
        ) {
            let text = format!("{start}\r\n{}\r\n\r\n", lines.join("\r\n"));
            let _ = parse_response(text.as_bytes());
            let _ = parse_request(text.as_bytes());
        }

        #[test]
        fn probe_response_round_trip(
            status in 100u16..=699,
            cseq in 1u32..=0x7fff_ffff,
            v6 in any::<bool>(),
            port in 1u16..,
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9]{0,10}){0,3}",
            tcp in any::<bool>(),
        ) {
            let local: SocketAddr = if v6 {
                SocketAddr::new("2001:db8::5".parse().unwrap(), port)
            } else {
                SocketAddr::new("203.0.113.5".parse().unwrap(), port)
            };
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let p = OptionsProbe::new(format!("sip:{host}"), transport, local).with_cseq(cseq);
            let bytes = p.to_bytes();
            let req = parse_request(&bytes).unwrap();
            prop_assert_eq!(&req.method, "OPTIONS");
            prop_assert_eq!(&req.uri, &format!("sip:{host}"));
            prop_assert_eq!(req.cseq.seq, cseq);
            prop_assert_eq!(&req.call_id, p.call_id());
            prop_assert_eq!(tag_param(&req.from), Some(p.from_tag()));
            let top = Via::parse(&req.vias[0]).unwrap();
            prop_assert_eq!(top.branch(), Some(p.branch()));
            prop_assert_eq!(top.transport.as_str(), transport.via_token());
            // The response built by the responder side matches the probe.
            let resp = req.response(status).received(Some(local)).build();
            let r = parse_response(&resp).unwrap();
            prop_assert_eq!(r.status, status);
            prop_assert!(r.matches(&p));
            // And it frames as exactly one message on a stream.
            let mut f = StreamFramer::default();
            f.push(&resp);
            f.push(&bytes);
            prop_assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(resp)));
            prop_assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(bytes)));
            prop_assert_eq!(f.next_frame().unwrap(), None);
        }
    }
}
