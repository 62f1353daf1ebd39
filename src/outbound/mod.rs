//! SIP Outbound (RFC 5626): the pure parts of keeping a registration
//! reachable over one flow per address family.
//!
//! - [`flows`]: the sans-IO machine that owns every timing rule (keep-alive
//!   intervals, pong timeout, STUN retransmission, back-off, refresh) and
//!   decides which family each flow is raced in;
//! - [`register`]: the REGISTER of a flow and what its answer says;
//! - [`digest`]: digest authentication (RFC 8760: MD5, SHA-256, SHA-512/256);
//! - [`stun`]: the STUN Binding keep-alive of UDP flows (RFC 5389).
//!
//! - [`agent`]: runs the machine over real connections (each flow raced,
//!   kept as a [`crate::keep::SipConnection`], pinged, re-raced): the
//!   library behind `siprace register`.

pub mod agent;
pub mod digest;
pub mod flows;
pub mod register;
pub mod stun;
pub mod udp_flow;
