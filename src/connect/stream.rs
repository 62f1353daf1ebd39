//! What every stream transport (TCP, TLS, SCTP) does once connected: send
//! the OPTIONS probe and read until its answer, with the work a peer can
//! cause capped ([`PeerWork`], also used by the UDP probe), and the
//! classification of I/O errors from a stream that may be TLS.

use std::time::Duration;

use rustls::{CertificateError, Error as TlsError, OtherError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::ProbeResponse;
use crate::endpoint::{AttemptError, ErrorClass};
use crate::sip::{parse_request, parse_response, Frame, OptionsProbe, StreamFramer};

/// Messages a peer may send an attempt that are not the answer to its
/// OPTIONS (keep-alives, requests, responses to other transactions) before
/// the attempt gives up on it. A real server sends a handful at most; a
/// hostile one streaming them would otherwise keep a core busy until
/// Timer F.
pub const MAX_IGNORED_MESSAGES: u32 = 1000;
/// Bytes a peer may send an attempt in all (answer included): bounds what a
/// stream of bare line ends, which frames no message at all, can cost.
pub const MAX_PEER_BYTES: usize = 1024 * 1024;

/// The work a peer has made an attempt do, capped by
/// [`MAX_IGNORED_MESSAGES`] and [`MAX_PEER_BYTES`]. Shared by the UDP and
/// stream probes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerWork {
    /// Messages (datagrams, keep-alives, framed messages) that were not the answer.
    pub ignored: u32,
    /// Bytes received from the peer.
    pub bytes: usize,
}

impl PeerWork {
    /// Counts `n` received bytes; an error once the peer has sent too many.
    pub(crate) fn received(
        &mut self,
        n: usize,
        dst: std::net::SocketAddr,
    ) -> Result<(), AttemptError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_PEER_BYTES {
            return Err(AttemptError::new(
                ErrorClass::InvalidResponse,
                format!(
                    "{dst}: peer sent {} bytes without answering the OPTIONS (cap {MAX_PEER_BYTES})",
                    self.bytes
                ),
            ));
        }
        Ok(())
    }

    /// Counts one message that was not the answer; an error at the cap.
    pub(crate) fn ignored(&mut self, dst: std::net::SocketAddr) -> Result<(), AttemptError> {
        self.ignored += 1;
        if self.ignored >= MAX_IGNORED_MESSAGES {
            return Err(AttemptError::new(
                ErrorClass::InvalidResponse,
                format!(
                    "{dst}: peer sent {} non-matching messages (keep-alives, requests or \
                     other transactions' responses) without answering the OPTIONS",
                    self.ignored
                ),
            ));
        }
        Ok(())
    }
}

/// Sends `probe` on an established stream and reads until its response.
/// Shared with the other stream transports (TLS, SCTP).
pub(crate) async fn probe_stream<S>(
    stream: &mut S,
    probe: &OptionsProbe,
    timer_f: Duration,
    dst: std::net::SocketAddr,
) -> Result<ProbeResponse, AttemptError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    probe_stream_counted(stream, probe, timer_f, dst, &mut PeerWork::default()).await
}

/// [`probe_stream`], counting the peer's work in `work` (which the caps
/// bound: at most [`MAX_IGNORED_MESSAGES`] messages and [`MAX_PEER_BYTES`]
/// bytes plus one read are processed).
pub(super) async fn probe_stream_counted<S>(
    stream: &mut S,
    probe: &OptionsProbe,
    timer_f: Duration,
    dst: std::net::SocketAddr,
    work: &mut PeerWork,
) -> Result<ProbeResponse, AttemptError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sent_at = Instant::now();
    let exchange = async {
        stream
            .write_all(&probe.to_bytes())
            .await
            .map_err(|e| classify_io(&format!("send to {dst}"), &e))?;
        let mut framer = StreamFramer::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(frame) = framer.next_frame().map_err(|e| invalid(dst, &e))? {
                match frame {
                    Frame::KeepAlive => {}
                    Frame::Message(msg) if msg.starts_with(b"SIP/") => {
                        let resp = parse_response(&msg).map_err(|e| invalid(dst, &e))?;
                        if resp.matches(probe) {
                            return Ok(ProbeResponse {
                                status: resp.status,
                                reason: resp.reason,
                                rtt: sent_at.elapsed(),
                            });
                        }
                        tracing::debug!(%dst, status = resp.status, "ignoring a non-matching response");
                    }
                    Frame::Message(msg) => {
                        // A request from the server (e.g. its own OPTIONS) is legal: ignore it.
                        parse_request(&msg).map_err(|e| invalid(dst, &e))?;
                    }
                }
                work.ignored(dst)?;
            }
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| classify_io(&format!("read from {dst}"), &e))?;
            if n == 0 {
                return Err(AttemptError::new(
                    ErrorClass::Reset,
                    format!("{dst} closed the connection before answering the OPTIONS"),
                ));
            }
            work.received(n, dst)?;
            framer.push(&buf[..n]);
        }
    };
    match tokio::time::timeout(timer_f, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::new(
            ErrorClass::Timeout,
            format!("{dst}: no response to the OPTIONS in {timer_f:?} (Timer F)"),
        )),
    }
}

fn invalid(dst: std::net::SocketAddr, err: &crate::sip::SipParseError) -> AttemptError {
    AttemptError::new(ErrorClass::InvalidResponse, format!("{dst}: {err}"))
}

/// Classifies an I/O error from a TLS stream: rustls errors become
/// [`ErrorClass::Certificate`] or [`ErrorClass::Tls`], others as usual.
pub(crate) fn classify_io(context: &str, err: &std::io::Error) -> AttemptError {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) else {
        return AttemptError::io(context, err);
    };
    match tls {
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            AttemptError::new(ErrorClass::Certificate, format!("{context}: {inner}"))
        }
        TlsError::InvalidCertificate(c) => AttemptError::new(
            ErrorClass::Certificate,
            format!("{context}: certificate: {c:?}"),
        ),
        TlsError::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            AttemptError::new(
                ErrorClass::Tls,
                format!(
                    "{context}: the server requires a client certificate (--cert/--key): {tls}"
                ),
            )
        }
        other => AttemptError::new(ErrorClass::Tls, format!("{context}: {other}")),
    }
}
