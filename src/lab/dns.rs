//! The lab's authoritative DNS server: one zone served over UDP and TCP by
//! hickory-server, with per-record-type faults injected in front of it.
//!
//! Used by the integration tests (on `127.0.0.1:0`) and by `siprace lab dns`.
//!
//! # Zone
//!
//! Standard master-file text (RFC 1035 §5) as hickory parses it: `$ORIGIN`,
//! `$TTL`, an SOA, then any records (NAPTR, SRV, A, AAAA, CNAME...). Use
//! `$TTL 0` and an SOA minimum of 0 so that no layer caches anything:
//!
//! ```text
//! $ORIGIN example.test.
//! $TTL 0
//! @     IN SOA ns.example.test. admin.example.test. 1 60 60 60 0
//! @     IN NAPTR 10 50 "s" "SIP+D2T" "" _sip._tcp.example.test.
//! _sip._tcp IN SRV 0 10 5060 sip1.example.test.
//! sip1  IN AAAA ::1
//! sip1  IN A    127.0.0.1
//! ```
//!
//! # Fault specification
//!
//! A comma-separated list of `TYPE=FAULT[+FAULT...]` items; the same type
//! may appear several times and its faults accumulate. `TYPE` is a record
//! type name (`NAPTR`, `SRV`, `AAAA`, `A`, or any other hickory knows), case
//! insensitive. `FAULT` is one of:
//!
//! | fault            | effect |
//! |------------------|--------|
//! | `delay:DURATION` | wait before answering (`300ms`, `1.5s`, `250us`); delays add up and combine with the other faults |
//! | `drop`           | never answer (the query is read and ignored) |
//! | `servfail`       | answer SERVFAIL |
//! | `nxdomain`       | answer NXDOMAIN (no SOA) |
//! | `truncate`       | over UDP answer a header-only response with the TC bit; over TCP answer normally |
//!
//! At most one of the non-delay faults applies: the first listed wins.
//! Example: `AAAA=delay:300ms,A=drop`, `SRV=truncate,NAPTR=delay:50ms+servfail`.
//!
//! # Counting
//!
//! [`DnsServer::queries`] counts every query received, per record type and
//! per protocol. UDP retransmissions by the client count too.

use std::collections::HashMap;
use std::fmt;
use std::iter;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::{Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, ZoneType,
};
use hickory_server::Server;

/// One misbehaviour applied to every query of a record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFault {
    /// Wait this long before answering (adds up with other delays).
    Delay(Duration),
    /// Never answer.
    Drop,
    /// Answer SERVFAIL.
    ServFail,
    /// Answer NXDOMAIN.
    NxDomain,
    /// Over UDP: a header-only answer with the TC bit set. Over TCP: the full answer.
    Truncate,
}

impl DnsFault {
    /// Parses one fault token (see the module docs).
    pub fn parse(token: &str) -> Result<DnsFault, DnsLabError> {
        let t = token.trim().to_ascii_lowercase();
        let fault = match t.as_str() {
            "drop" => DnsFault::Drop,
            "servfail" => DnsFault::ServFail,
            "nxdomain" => DnsFault::NxDomain,
            "truncate" | "tc" => DnsFault::Truncate,
            _ => match t.strip_prefix("delay:") {
                Some(d) => DnsFault::Delay(parse_duration(d).ok_or_else(|| {
                    DnsLabError::Fault(format!(
                        "{d:?} is not a duration (expected e.g. 300ms, 1.5s, 250us)"
                    ))
                })?),
                None => {
                    return Err(DnsLabError::Fault(format!(
                        "unknown fault {token:?} (expected delay:DURATION, drop, servfail, nxdomain or truncate)"
                    )))
                }
            },
        };
        Ok(fault)
    }
}

impl fmt::Display for DnsFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsFault::Delay(d) => write!(f, "delay:{}ms", d.as_millis()),
            DnsFault::Drop => f.write_str("drop"),
            DnsFault::ServFail => f.write_str("servfail"),
            DnsFault::NxDomain => f.write_str("nxdomain"),
            DnsFault::Truncate => f.write_str("truncate"),
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

/// Parses a fault specification such as `AAAA=delay:300ms,A=drop`.
pub fn parse_faults(spec: &str) -> Result<HashMap<RecordType, Vec<DnsFault>>, DnsLabError> {
    let mut faults: HashMap<RecordType, Vec<DnsFault>> = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (rtype, list) = item.split_once('=').ok_or_else(|| {
            DnsLabError::Fault(format!(
                "{item:?} is not TYPE=FAULT (e.g. AAAA=delay:300ms)"
            ))
        })?;
        let rtype: RecordType =
            rtype.trim().to_ascii_uppercase().parse().map_err(|_| {
                DnsLabError::Fault(format!("unknown record type {:?}", rtype.trim()))
            })?;
        let entry = faults.entry(rtype).or_default();
        for token in list.split('+') {
            entry.push(DnsFault::parse(token)?);
        }
    }
    Ok(faults)
}

/// Errors of the lab DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsLabError {
    #[error("zone: {0}")]
    Zone(String),
    #[error("fault specification: {0}")]
    Fault(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the lab DNS server serves and how it misbehaves.
#[derive(Debug, Clone)]
pub struct DnsServerConfig {
    /// Zone-file text (with `$ORIGIN` and an SOA).
    pub zone: String,
    /// Faults per queried record type.
    pub faults: HashMap<RecordType, Vec<DnsFault>>,
    /// Keep the A/AAAA additionals hickory adds to SRV answers (true), or
    /// strip every additional record so clients must query for themselves.
    pub srv_additionals: bool,
}

impl DnsServerConfig {
    /// A zone with no faults and hickory's usual additionals.
    pub fn new(zone: impl Into<String>) -> Self {
        DnsServerConfig {
            zone: zone.into(),
            faults: HashMap::new(),
            srv_additionals: true,
        }
    }

    /// A zone plus a fault specification (see the module docs). The zone is
    /// checked here, so a bad file is reported before any socket is bound.
    pub fn parse(zone: &str, fault_spec: &str) -> Result<Self, DnsLabError> {
        parse_zone(zone)?;
        Ok(DnsServerConfig {
            zone: zone.to_string(),
            faults: parse_faults(fault_spec)?,
            srv_additionals: true,
        })
    }

    /// Adds a fault for a record type.
    pub fn with_fault(mut self, rtype: RecordType, fault: DnsFault) -> Self {
        self.faults.entry(rtype).or_default().push(fault);
        self
    }

    /// Sets [`DnsServerConfig::srv_additionals`].
    pub fn with_srv_additionals(mut self, on: bool) -> Self {
        self.srv_additionals = on;
        self
    }
}

fn parse_zone(zone: &str) -> Result<Catalog, DnsLabError> {
    let (origin, records) = Parser::new(zone, None, None).parse().map_err(|e| {
        let error = e.to_string();
        match zone_error_line(zone, &error) {
            Some(line) => DnsLabError::Zone(format!("line {line}: {error}")),
            None => DnsLabError::Zone(error),
        }
    })?;
    let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
        origin.clone(),
        records,
        ZoneType::Primary,
        AxfrPolicy::Deny,
    )
    .map_err(DnsLabError::Zone)?;
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(handler)]);
    Ok(catalog)
}

/// Zones longer than this are not searched for the line of an error.
const ZONE_LINES_SEARCHED: usize = 2000;

/// The line (1-based) of a zone's parse error, which hickory's parser does
/// not report: the first line at which the zone's beginning fails with the
/// same error as the whole zone. (A beginning cut inside a parenthesised
/// record fails differently, so it is not taken for the culprit.)
fn zone_error_line(zone: &str, error: &str) -> Option<usize> {
    let ends: Vec<usize> = zone
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(zone.len()))
        .take(ZONE_LINES_SEARCHED)
        .collect();
    ends.iter().position(|&end| {
        matches!(Parser::new(&zone[..end], None, None).parse(), Err(e) if e.to_string() == error)
    })
    .map(|index| index + 1)
}

/// Queries received, per protocol and record type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryCounts {
    pub udp: HashMap<RecordType, u64>,
    pub tcp: HashMap<RecordType, u64>,
}

impl QueryCounts {
    /// Queries of this type over any protocol.
    pub fn get(&self, rtype: RecordType) -> u64 {
        self.udp.get(&rtype).copied().unwrap_or(0) + self.tcp.get(&rtype).copied().unwrap_or(0)
    }

    /// Queries of this type over TCP.
    pub fn tcp(&self, rtype: RecordType) -> u64 {
        self.tcp.get(&rtype).copied().unwrap_or(0)
    }

    /// All queries received.
    pub fn total(&self) -> u64 {
        self.udp.values().chain(self.tcp.values()).sum()
    }
}

struct LabHandler {
    catalog: Catalog,
    faults: HashMap<RecordType, Vec<DnsFault>>,
    srv_additionals: bool,
    counts: Arc<Mutex<QueryCounts>>,
}

/// A response handler that only records the encoded answer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

fn not_sent(request: &Request) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata: Metadata::response_from_request(&request.metadata),
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for LabHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let (rtype, protocol) = match request.request_info() {
            Ok(info) => (info.query.query_type(), info.protocol),
            Err(_) => {
                return self
                    .catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let map = if protocol == Protocol::Tcp {
                &mut counts.tcp
            } else {
                &mut counts.udp
            };
            *map.entry(rtype).or_insert(0) += 1;
        }

        let faults = self.faults.get(&rtype).map(Vec::as_slice).unwrap_or(&[]);
        let delay: Duration = faults
            .iter()
            .filter_map(|f| match f {
                DnsFault::Delay(d) => Some(*d),
                _ => None,
            })
            .sum();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let terminal = faults.iter().find(|f| !matches!(f, DnsFault::Delay(_)));

        let builder = MessageResponseBuilder::from_message_request(request);
        let sent = match terminal {
            Some(DnsFault::Drop) => return not_sent(request),
            Some(DnsFault::ServFail) => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, ResponseCode::ServFail))
                    .await
            }
            Some(DnsFault::NxDomain) => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, ResponseCode::NXDomain))
                    .await
            }
            Some(DnsFault::Truncate) if protocol == Protocol::Udp => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.truncation = true;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            _ if self.srv_additionals => {
                return self
                    .catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            _ => {
                // Let the catalog answer into a buffer, then resend it without additionals.
                let capture = Capture::default();
                self.catalog
                    .handle_request::<Capture, T>(request, capture.clone())
                    .await;
                let bytes = capture.0.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(msg) = bytes.and_then(|b| Message::from_vec(&b).ok()) else {
                    return not_sent(request);
                };
                let builder = MessageResponseBuilder::new(&request.queries, msg.edns.as_ref());
                response_handle
                    .send_response(builder.build(
                        msg.metadata,
                        msg.answers.iter(),
                        msg.authorities.iter(),
                        iter::empty(),
                        iter::empty(),
                    ))
                    .await
            }
        };
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "lab dns: sending a response failed");
                not_sent(request)
            }
        }
    }
}

/// A running lab DNS server.
pub struct DnsServer {
    server: Server<LabHandler>,
    addrs: Vec<SocketAddr>,
    counts: Arc<Mutex<QueryCounts>>,
}

impl DnsServer {
    /// Serves `cfg` over UDP and TCP on each address. Port 0 picks a free
    /// port, the same for UDP and TCP.
    pub async fn start(cfg: DnsServerConfig, bind: &[SocketAddr]) -> Result<Self, DnsLabError> {
        let catalog = parse_zone(&cfg.zone)?;
        let counts = Arc::new(Mutex::new(QueryCounts::default()));
        let mut server = Server::new(LabHandler {
            catalog,
            faults: cfg.faults,
            srv_additionals: cfg.srv_additionals,
            counts: counts.clone(),
        });
        let mut addrs = Vec::new();
        for &addr in bind {
            let (udp, tcp) = bind_pair(addr).await?;
            addrs.push(udp.local_addr().map_err(|e| io_err("local address", e))?);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(10), 64);
        }
        Ok(DnsServer {
            server,
            addrs,
            counts,
        })
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Queries received so far.
    pub fn queries(&self) -> QueryCounts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops serving and waits for the server's tasks to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "lab dns: shutdown");
        }
    }
}

fn io_err(context: &str, source: std::io::Error) -> DnsLabError {
    DnsLabError::Io {
        context: context.to_string(),
        source,
    }
}

/// Binds UDP then TCP on the same port; with port 0, retries a few times if
/// the port UDP got is taken for TCP.
async fn bind_pair(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsLabError> {
    let mut last = None;
    for _ in 0..16 {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| io_err(&format!("bind UDP {addr}"), e))?;
        let local = udp.local_addr().map_err(|e| io_err("local address", e))?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(io_err(&format!("bind TCP {local}"), e)),
        }
    }
    Err(io_err(
        &format!("bind TCP next to UDP on {addr}"),
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec_syntax() {
        let f =
            parse_faults("AAAA=delay:300ms, a=drop,SRV=delay:1.5s+servfail,AAAA=truncate").unwrap();
        assert_eq!(
            f[&RecordType::AAAA],
            vec![
                DnsFault::Delay(Duration::from_millis(300)),
                DnsFault::Truncate
            ]
        );
        assert_eq!(f[&RecordType::A], vec![DnsFault::Drop]);
        assert_eq!(
            f[&RecordType::SRV],
            vec![
                DnsFault::Delay(Duration::from_millis(1500)),
                DnsFault::ServFail
            ]
        );
        assert!(parse_faults("").unwrap().is_empty());
        assert!(parse_faults("NAPTR=nxdomain").is_ok());
        assert!(parse_faults("AAAA").is_err());
        assert!(parse_faults("BOGUS=drop").is_err());
        assert!(parse_faults("A=delay:fast").is_err());
        assert!(parse_faults("A=explode").is_err());
        assert!(parse_faults("A=delay:-1s").is_err());
    }

    #[test]
    fn zone_errors_are_reported() {
        assert!(matches!(
            DnsServerConfig::parse("this is not a zone", ""),
            Err(DnsLabError::Zone(_))
        ));
    }

    #[test]
    fn zone_errors_name_their_line() {
        let zone = "$ORIGIN example.test.\n$TTL 0\n\
                    @ IN SOA ns admin 1 60 60 60 0\n\
                    ; a comment\n\
                    sip1 IN A 192.0.2.1\n\
                    sip2 IN A not-an-address\n\
                    sip3 IN A 192.0.2.3\n";
        match DnsServerConfig::parse(zone, "") {
            Err(DnsLabError::Zone(e)) => assert!(e.starts_with("line 6: "), "{e}"),
            other => panic!("the bad zone parsed: {other:?}"),
        }
        // A record spread over lines in parentheses is not blamed on the
        // line where its beginning stops.
        let multi = "$ORIGIN example.test.\n$TTL 0\n\
                     @ IN SOA ns admin (\n 1 60\n 60 60 0 )\n\
                     x IN AAAA 192.0.2.1\n";
        match DnsServerConfig::parse(multi, "") {
            Err(DnsLabError::Zone(e)) => assert!(e.starts_with("line 6: "), "{e}"),
            other => panic!("the bad zone parsed: {other:?}"),
        }
    }
}
